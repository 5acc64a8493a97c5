"""The TensorFlow.js importer (`graphs.tfjs_import`) against numpy references of the ops it translates.

A small graph model is written the way TensorFlow.js stores one (model.json + a binary shard, one weight stored
as float16): NCHW input, transposes to NHWC, padding, a convolution with bias and LeakyRelu, max pooling, a
bilinear resize back up, a concatenation with the unpooled branch, a split, a sigmoid and a reshape. Its ONNX
graph must give what numpy computes, at the model's own size and at another (resizes become scale factors).
A second model covers what NanoDet does not use but the importer translates (SAME padding, uint8 weights, Relu6,
align_corners, SplitV with -1), so that each translated path has a test that fails when it is wrong.
"""

from __future__ import annotations

import base64
import json

import cv2
import numpy as np
import pytest

from sage_ros.graphs.tfjs_import import TfjsImportError, load_tfjs, read_weights, tfjs_to_onnx

ort = pytest.importorskip("onnxruntime")

RNG = np.random.RandomState(7)
KERNEL = RNG.randn(3, 3, 3, 4).astype(np.float32) * 0.3  # HWIO
BIAS = RNG.randn(4).astype(np.float32) * 0.1
ALPHA = 0.1


def _s(text: str) -> dict:
    return {"s": base64.b64encode(text.encode()).decode()}


def _ints(values) -> dict:
    return {"list": {"i": [str(v) for v in values]}}


def _const(name: str, value: np.ndarray, weights: list, blobs: list, as_float16: bool = False) -> dict:
    entry = {"name": name, "shape": list(value.shape), "dtype": str(value.dtype)}
    if as_float16:
        entry["quantization"] = {"dtype": "float16", "original_dtype": "float32"}
        blobs.append(value.astype(np.float16).tobytes())
    else:
        blobs.append(value.tobytes())
    weights.append(entry)
    return {"name": name, "op": "Const", "attr": {"dtype": {"type": "DT_FLOAT"}}}


def _model(tmp_path, size: int = 8, extra_node: dict | None = None):
    weights, blobs = [], []
    nodes = [{"name": "image", "op": "Placeholder",
              "attr": {"shape": {"shape": {"dim": [{"size": "1"}, {"size": "3"}, {"size": str(size)},
                                                   {"size": str(size)}]}}}}]
    consts = {
        "to_nhwc": np.array([0, 2, 3, 1], np.int32), "to_nchw": np.array([0, 3, 1, 2], np.int32),
        "pads": np.array([[0, 0], [1, 1], [1, 1], [0, 0]], np.int32), "bias": BIAS,
        "up": np.array([size, size], np.int32), "axis": np.array(3, np.int32),
        "sizes": np.array([3, 5], np.int32), "split_axis": np.array(3, np.int32),
        "shape": np.array([1, -1, 8], np.int32),
    }
    for name, value in consts.items():
        nodes.append(_const(name, value, weights, blobs))
    nodes.append(_const("kernel", KERNEL, weights, blobs, as_float16=True))
    nodes += [
        {"name": "nhwc", "op": "Transpose", "input": ["image", "to_nhwc"]},
        {"name": "padded", "op": "Pad", "input": ["nhwc", "pads"]},
        {"name": "conv", "op": "Conv2D", "input": ["padded", "kernel"],
         "attr": {"padding": _s("VALID"), "strides": _ints([1, 1, 1, 1]), "data_format": _s("NHWC"),
                  "dilations": _ints([1, 1, 1, 1])}},
        {"name": "biased", "op": "Add", "input": ["conv", "bias"]},
        {"name": "act", "op": "LeakyRelu", "input": ["biased"], "attr": {"alpha": {"f": ALPHA}}},
        {"name": "pooled", "op": "MaxPool", "input": ["act"],
         "attr": {"ksize": _ints([1, 2, 2, 1]), "strides": _ints([1, 2, 2, 1]), "padding": _s("VALID"),
                  "data_format": _s("NHWC")}},
        {"name": "upsampled", "op": "ResizeBilinear", "input": ["pooled", "up"],
         "attr": {"half_pixel_centers": {"b": True}, "align_corners": {"b": False}}},
        {"name": "joined", "op": "ConcatV2", "input": ["act", "upsampled", "axis"]},
        {"name": "parts", "op": "SplitV", "input": ["joined", "sizes", "split_axis"],
         "attr": {"num_split": {"i": "2"}}},
        {"name": "gate", "op": "Sigmoid", "input": ["parts"]},
        {"name": "flat", "op": "Reshape", "input": ["parts:1", "shape"]},
        {"name": "out_gate", "op": "Identity", "input": ["gate"]},
        {"name": "out_flat", "op": "Identity", "input": ["flat"]},
    ]
    if extra_node is not None:
        nodes.append(extra_node)
    model = {"format": "graph-model",
             "signature": {"inputs": {"image:0": {"name": "image:0"}},
                           "outputs": {"out_gate:0": {"name": "out_gate:0"}, "out_flat:0": {"name": "out_flat:0"}}},
             "modelTopology": {"node": nodes[::-1]},  # model.json promises no order
             "weightsManifest": [{"paths": ["group1-shard1of1.bin"], "weights": weights}]}
    (tmp_path / "model.json").write_text(json.dumps(model))
    (tmp_path / "group1-shard1of1.bin").write_bytes(b"".join(blobs))
    return tmp_path / "model.json"


def _reference(image_nchw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = image_nchw[0].transpose(1, 2, 0)  # HWC
    h, w, _ = x.shape
    padded = np.pad(x, ((1, 1), (1, 1), (0, 0)))
    kernel = KERNEL.astype(np.float16).astype(np.float32)  # the shard holds it as float16
    conv = np.zeros((h, w, 4), np.float32)
    for dy in range(3):
        for dx in range(3):
            conv += padded[dy:dy + h, dx:dx + w] @ kernel[dy, dx]
    act = conv + BIAS
    act = np.where(act > 0, act, ALPHA * act)
    pooled = act.reshape(h // 2, 2, w // 2, 2, 4).max(axis=(1, 3))
    up = np.stack([cv2.resize(pooled[..., c], (w, h), interpolation=cv2.INTER_LINEAR) for c in range(4)], -1)
    joined = np.concatenate([act, up], -1)
    gate = 1.0 / (1.0 + np.exp(-joined[..., :3]))
    return gate[None], joined[..., 3:].reshape(1, -1, 8)


def _run(path, image: np.ndarray) -> dict[str, np.ndarray]:
    model, arrays = load_tfjs(path)
    proto = tfjs_to_onnx(model, arrays)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {session.get_inputs()[0].name: image}), strict=True))


@pytest.mark.parametrize("size", [8, 16])
def test_translated_graph_matches_numpy(tmp_path, size):
    path = _model(tmp_path)
    image = RNG.randn(1, 3, size, size).astype(np.float32)
    out = _run(path, image)
    gate, flat = _reference(image)
    assert set(out) == {"out_gate", "out_flat"}
    np.testing.assert_allclose(out["out_gate"], gate, atol=2e-5)
    np.testing.assert_allclose(out["out_flat"], flat, atol=2e-5)


def test_float16_weights_are_dequantised(tmp_path):
    model, arrays = load_tfjs(_model(tmp_path))
    assert arrays["kernel"].dtype == np.float32
    np.testing.assert_array_equal(arrays["kernel"], KERNEL.astype(np.float16).astype(np.float32))
    assert arrays["pads"].dtype == np.int32


def test_unknown_op_is_refused_by_name(tmp_path):
    path = _model(tmp_path, extra_node={"name": "weird", "op": "NonMaxSuppressionV5", "input": ["act"]})
    model, arrays = load_tfjs(path)
    with pytest.raises(TfjsImportError, match="op NonMaxSuppressionV5 .*weird.* not translated"):
        tfjs_to_onnx(model, arrays)


def test_truncated_shard_says_so(tmp_path):
    path = _model(tmp_path)
    shard = tmp_path / "group1-shard1of1.bin"
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(TfjsImportError, match="runs past the end of its shard"):
        load_tfjs(path)
    model = json.loads(path.read_text())
    with pytest.raises(TfjsImportError, match="shard .* is missing"):
        read_weights(model["weightsManifest"], {})


def test_unreadable_model_json(tmp_path):
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(TfjsImportError, match="not a readable TensorFlow.js graph model"):
        load_tfjs(tmp_path / "model.json")


# --- the paths NanoDet does not use: SAME padding, uint8 weights, Relu6, align_corners, SplitV with -1 -----
KERNEL_B = RNG.randn(3, 3, 3, 4).astype(np.float32)
Q_MIN, Q_SCALE = float(KERNEL_B.min()), float(np.ptp(KERNEL_B) / 255.0)
KERNEL_B_Q = np.round((KERNEL_B - Q_MIN) / Q_SCALE).astype(np.uint8)  # stored as uint8, dequantised on read


def _model_b(tmp_path, h: int, w: int):
    """NHWC input; SAME stride-2 convolution (uint8 weights) + bias, Relu6, SAME 3x3 stride-2 max pooling, an
    align_corners resize by 2 down the rows and 4 across, a split whose sizes SparseToDense builds ([1, -1])."""
    weights, blobs = [], []
    nodes = [{"name": "image", "op": "Placeholder",
              "attr": {"shape": {"shape": {"dim": [{"size": "1"}, {"size": str(h)}, {"size": str(w)},
                                                   {"size": "3"}]}}}}]
    weights.append({"name": "kernel", "shape": list(KERNEL_B.shape), "dtype": "float32",
                    "quantization": {"dtype": "uint8", "min": Q_MIN, "scale": Q_SCALE}})
    blobs.append(KERNEL_B_Q.tobytes())
    nodes.append({"name": "kernel", "op": "Const"})
    consts = {"bias": BIAS, "up_size": np.array([h // 2, w], np.int32), "idx": np.array([0], np.int32),
              "dense_shape": np.array([2], np.int32), "one": np.array([1], np.int32),
              "minus_one": np.array(-1, np.int32), "split_axis": np.array(3, np.int32)}
    for name, value in consts.items():
        nodes.append(_const(name, value, weights, blobs))
    nodes += [
        {"name": "conv", "op": "Conv2D", "input": ["image", "kernel"],
         "attr": {"padding": _s("SAME"), "strides": _ints([1, 2, 2, 1]), "data_format": _s("NHWC"),
                  "dilations": _ints([1, 1, 1, 1])}},
        {"name": "biased", "op": "AddV2", "input": ["conv", "bias"]},
        {"name": "act", "op": "Relu6", "input": ["biased"]},
        {"name": "pooled", "op": "MaxPool", "input": ["act"],
         "attr": {"ksize": _ints([1, 3, 3, 1]), "strides": _ints([1, 2, 2, 1]), "padding": _s("SAME"),
                  "data_format": _s("NHWC")}},
        {"name": "up", "op": "ResizeBilinear", "input": ["pooled", "up_size"],
         "attr": {"align_corners": {"b": True}, "half_pixel_centers": {"b": False}}},
        {"name": "sizes", "op": "SparseToDense", "input": ["idx", "dense_shape", "one", "minus_one"]},
        {"name": "parts", "op": "SplitV", "input": ["up", "sizes", "split_axis"], "attr": {"num_split": {"i": "2"}}},
        {"name": "first", "op": "Identity", "input": ["parts"]},
        {"name": "rest", "op": "Identity", "input": ["parts:1"]},
    ]
    model = {"format": "graph-model",
             "signature": {"inputs": {"image:0": {"name": "image:0"}},
                           "outputs": {"first:0": {"name": "first:0"}, "rest:0": {"name": "rest:0"}}},
             "modelTopology": {"node": nodes},
             "weightsManifest": [{"paths": ["b.bin"], "weights": weights}]}
    (tmp_path / "model.json").write_text(json.dumps(model))
    (tmp_path / "b.bin").write_bytes(b"".join(blobs))
    return tmp_path / "model.json"


def _resize_align_corners(x: np.ndarray, oh: int, ow: int) -> np.ndarray:
    h, w = x.shape[:2]
    ys = np.arange(oh) * ((h - 1) / (oh - 1) if oh > 1 else 0.0)
    xs = np.arange(ow) * ((w - 1) / (ow - 1) if ow > 1 else 0.0)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    top = x[y0][:, x0] * (1 - fx) + x[y0][:, x1] * fx
    bottom = x[y1][:, x0] * (1 - fx) + x[y1][:, x1] * fx
    return top * (1 - fy) + bottom * fy


def _reference_b(image_nhwc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = image_nhwc[0]
    h, w, _ = x.shape
    kernel = KERNEL_B_Q.astype(np.float32) * np.float32(Q_SCALE) + np.float32(Q_MIN)
    # SAME, stride 2, kernel 3 on even sides: TensorFlow pads one row and column at the bottom and right only.
    padded = np.pad(x, ((0, 1), (0, 1), (0, 0)))
    conv = np.zeros((h // 2, w // 2, 4), np.float32)
    for dy in range(3):
        for dx in range(3):
            conv += padded[dy:dy + h:2, dx:dx + w:2] @ kernel[dy, dx]
    act = np.clip(conv + BIAS, 0.0, 6.0)
    ph, pw = act.shape[:2]
    padded = np.pad(act, ((0, 1), (0, 1), (0, 0)), constant_values=-np.inf)  # SAME pooling pads past the end
    pooled = np.stack([np.stack([padded[2 * i:2 * i + 3, 2 * j:2 * j + 3].max(axis=(0, 1))
                                 for j in range(pw // 2)]) for i in range(ph // 2)])
    up = _resize_align_corners(pooled, h // 2, w)  # x2 down the rows, x4 across: each axis its own scale
    return up[None, ..., :1], up[None, ..., 1:]


@pytest.mark.parametrize("size", [(8, 12), (16, 20)])  # the model's own size, then another (non-square both)
def test_same_padding_uint8_weights_relu6_align_corners_and_split_sizes_match_numpy(tmp_path, size):
    h, w = size
    image = (RNG.randn(1, h, w, 3) * 4.0).astype(np.float32)  # large enough for Relu6 to clip
    out = _run(_model_b(tmp_path, 8, 12), image)
    first, rest = _reference_b(image)
    assert (first > 5.99).any() or (rest > 5.99).any()  # the clip at 6 is exercised
    np.testing.assert_allclose(out["first"], first, atol=2e-5)
    np.testing.assert_allclose(out["rest"], rest, atol=2e-5)
