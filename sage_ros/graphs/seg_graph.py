"""The segmentation network on disk and as an ONNX graph, with numpy and onnx alone (no PyTorch).

On disk: one network is `X.npz` (plain arrays, no pickle) + the sidecar `X.json`. An ensemble is its
members, `X.m0.npz`, `X.m1.npz`, ... (each a plain SegNet state), listed under `member_files` in the
one sidecar `X.json`; `X.npz` itself does not exist. Members are separate files because the shipped
ensemble is five networks: one array file of all of them would be a 7 MB blob in the repository.

The graph is built here from those arrays, so the robot path (`sage-ros weights fetch` without
PyTorch) and the training path (`sage-ros train seg`) write the same graph: AveragePool 4x4 of the
concatenated inputs, minus 0.5, per member an encoder to 1/32 and a U-Net decoder back to 1/4 (BatchNorm
folded, float64 maths), the members' logits averaged and turned into class probabilities (Softmax) at a
quarter of the input size. Ops: Concat, AveragePool, Sub, Conv, Relu, Shape, Slice, Resize, Sum, Mul,
Softmax (opset 17: ONNX Runtime, OpenVINO, TensorRT 8.6+).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from sage_ros.graphs.npz_weights import read_sidecar, sidecar_path
from sage_ros.graphs.onnx_builder import OPSET, GraphParts, fold_conv_bn
from sage_ros.paths import sha256_of

NET_FORMAT = "sage_ros.seg_net/1"
#: Input names of the ONNX graph per input kind (the names the compose contract defines).
INPUT_NAMES = {"fused": "fused_y", "infrared": "ir", "visible": "vis_y"}
DOWNSAMPLE = 4

# The encoder/decoder blocks of one SegNet in graph order: (block, number of conv-BN-ReLU units,
# dilations). Keys in a state dict: "<block>.<unit>.0.weight" (conv) and "<block>.<unit>.1.*" (BN);
# the stem is a single unit without the unit index ("stem.0.weight").
_ENCODER = (("enc1", (1, 1), (2, 1)), ("enc2", (1, 1), (2, 1)), ("enc3", (1, 2, 4), (2, 1, 1)))
_DECODER = ("dec2", "dec1", "dec0")


class SegNetError(RuntimeError):
    """A segmentation network file that is missing, corrupt or does not match the architecture."""


def read_metadata(path: str | Path) -> dict:
    return read_sidecar(path, NET_FORMAT, SegNetError, "segmentation network")


def member_file_name(path: str | Path, index: int) -> str:
    return f"{Path(path).stem}.m{index}.npz"


def weight_files(path: str | Path, meta: dict | None = None) -> list[Path]:
    """The array files of the network named `path`: itself, or its ensemble members."""
    path = Path(path)
    meta = read_metadata(path) if meta is None else meta
    names = meta.get("member_files")
    if names is None:
        return [path]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and "/" not in n for n in names):
        raise SegNetError(f"{sidecar_path(path)}: 'member_files' must be a non-empty list of file names")
    if len(names) != meta.get("members"):
        raise SegNetError(f"{sidecar_path(path)}: {len(names)} member files for {meta.get('members')} members")
    return [path.parent / n for n in names]


def weights_present(path: str | Path) -> bool:
    """True when `path` names network weights whose sidecar and array files all exist."""
    try:
        return all(f.is_file() for f in weight_files(path))
    except SegNetError:
        return False


def weights_sha256(path: str | Path) -> str:
    """sha256 of a single network's file, or of its members' sha256 list for an ensemble."""
    files = weight_files(path)
    if files == [Path(path)]:
        return sha256_of(Path(path))
    return hashlib.sha256("\n".join(sha256_of(f) for f in files).encode()).hexdigest()


def read_member_arrays(path: str | Path) -> tuple[dict, list[dict[str, np.ndarray]]]:
    """(sidecar, one state dict of numpy arrays per member) of the network named `path`."""
    path = Path(path)
    if not sidecar_path(path).is_file() and not path.is_file():
        raise SegNetError(f"segmentation network weights {path} do not exist")
    meta = read_metadata(path)
    states = []
    for file in weight_files(path, meta):
        if not file.is_file():
            raise SegNetError(f"segmentation network weights {file} do not exist")
        try:
            with np.load(file, allow_pickle=False) as data:
                states.append({k: data[k] for k in data.files})
        except (OSError, ValueError) as exc:
            raise SegNetError(f"segmentation network weights {file} could not be read: {exc}") from exc
    return meta, states


def _fold(state: Mapping[str, np.ndarray], unit: str) -> tuple[np.ndarray, np.ndarray]:
    """Conv (no bias) + eval BatchNorm of one conv-BN-ReLU unit -> conv weight and bias."""
    try:
        return fold_conv_bn(state, f"{unit}.0", f"{unit}.1")
    except KeyError as exc:
        raise SegNetError(f"segmentation network weights lack {exc.args[0]}") from exc


def build_seg_graph(states: Sequence[Mapping[str, np.ndarray]], input_names: Sequence[str]):
    """The standalone seg graph (inputs `input_names`, output `probs` at 1/4 size) of one or more members."""
    import onnx
    from onnx import TensorProto, helper

    parts = GraphParts("/seg")
    node, const = parts.node, parts.const

    def conv(x: str, weight: np.ndarray, bias: np.ndarray, prefix: str, dilation: int = 1, stride: int = 1) -> str:
        k = weight.shape[-1]
        pad = dilation * (k // 2)
        return node("Conv", [x, const(f"{prefix}.weight", weight), const(f"{prefix}.bias", bias)],
                    kernel_shape=[k, k], pads=[pad] * 4, strides=[stride] * 2, dilations=[dilation] * 2)

    def unit(x: str, state: Mapping[str, np.ndarray], key: str, prefix: str, dilation: int = 1, stride: int = 1):
        w, b = _fold(state, key)
        return node("Relu", [conv(x, w, b, f"{prefix}{key}", dilation, stride)])

    starts = const("/seg/c/starts", np.array([0], np.int64))
    mids = const("/seg/c/mid", np.array([2], np.int64))
    ends = const("/seg/c/ends", np.array([4], np.int64))

    def up(x: str, like: str) -> str:
        # To the reference's own size (odd sizes work): sizes = N, C of x and H, W of the reference.
        sizes = node("Concat", [node("Slice", [node("Shape", [x]), starts, mids]),
                                node("Slice", [node("Shape", [like]), mids, ends])], axis=0)
        return node("Resize", [x, "", "", sizes], mode="linear", coordinate_transformation_mode="half_pixel")

    image = input_names[0] if len(input_names) == 1 else node("Concat", list(input_names), axis=1)
    pooled = node("AveragePool", [image], kernel_shape=[DOWNSAMPLE] * 2, strides=[DOWNSAMPLE] * 2)
    low = node("Sub", [pooled, const("/seg/c/half", np.array(0.5, np.float32))])
    logits = []
    for index, state in enumerate(states):
        prefix = f"m{index}." if len(states) > 1 else ""
        skips = [unit(low, state, "stem", prefix)]
        for block, dilations, strides in _ENCODER:
            x = skips[-1]
            for i, (dilation, stride) in enumerate(zip(dilations, strides, strict=True)):
                x = unit(x, state, f"{block}.{i}", prefix, dilation, stride)
            skips.append(x)
        x = skips.pop()
        for block in _DECODER:
            skip = skips.pop()
            x = node("Concat", [up(x, skip), skip], axis=1)
            x = unit(unit(x, state, f"{block}.0", prefix), state, f"{block}.1", prefix)
        try:
            weight, bias = state["classifier.weight"], state["classifier.bias"]
        except KeyError as exc:
            raise SegNetError(f"segmentation network weights lack {exc.args[0]}") from exc
        logits.append(conv(x, weight.astype(np.float32), bias.astype(np.float32), f"{prefix}classifier"))
    mean = logits[0]
    if len(logits) > 1:
        mean = node("Mul", [node("Sum", logits), const("/seg/c/inv_k", np.array(1.0 / len(logits), np.float32))])
    # Class probabilities at a quarter of the input size: the run-time stage brings them to the RGB size,
    # takes the most probable class and abstains below a confidence (sage_ros/pipeline/segmentation.py).
    parts.nodes.append(helper.make_node("Softmax", [mean], ["probs"], name="/seg/Softmax_out", axis=1))
    dims = ["batch", 1, "height", "width"]
    graph = helper.make_graph(
        parts.nodes, "sage_ros_seg_net",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, dims) for n in input_names],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", "classes", "height_4", "width_4"])],
        parts.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="sage_ros.seg_graph")
    model.ir_version = 8  # as the student's graph: TensorRT 8.6 parses it
    onnx.checker.check_model(model)
    return model


def write_seg_graph(states: Sequence[Mapping[str, np.ndarray]], input_names: Sequence[str], out_onnx: str | Path,
                    metadata: dict | None = None) -> Path:
    """Write the graph of these member states to `out_onnx`, with a sidecar: `metadata` (the weights'
    own, usually) plus the graph's interface and `sha256`."""
    import onnx

    out_onnx = Path(out_onnx)
    out_onnx.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(build_seg_graph(states, input_names), str(out_onnx))
    # The graph's own interface last: a network's metadata may carry an older graph's.
    info = dict(metadata or {}) | {"model": "sage_ros_seg_net", "inputs": list(input_names), "outputs": ["probs"],
                                   "opset": OPSET, "sha256": sha256_of(out_onnx)}
    out_onnx.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n")
    return out_onnx


def graph_from_weights(weights: str | Path, out_onnx: str | Path) -> Path:
    """The graph of the network named `weights` (its .npz name; sidecar beside it), torch-free."""
    meta, states = read_member_arrays(weights)
    names = [INPUT_NAMES[k] for k in meta["input_kinds"]]
    return write_seg_graph(states, names, out_onnx, meta | {"weights_sha256": weights_sha256(weights)})
