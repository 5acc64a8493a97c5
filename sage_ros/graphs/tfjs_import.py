"""A TensorFlow.js graph model (model.json + weight shards) as an ONNX graph, with numpy and onnx alone.

Used for the object detector the segmentation stage runs on the visible and thermal planes (NanoDet, COCO,
published in TensorFlow.js form on the npm registry): a robot needs neither TensorFlow nor a converter. Only
the op set of convolutional detectors is translated (convolutions, pooling, padding, concatenation, bilinear
resizing, splits, reshapes, activations); any other op is refused by name, so a different model fails here
with a clear message instead of producing a wrong graph. The source layout is kept (NHWC convolutions get a
transpose on each side, which ONNX Runtime and OpenVINO fold). Resizes become scale factors, so the graph runs
at any input size that the network's strides divide.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

OPSET = 17

_DTYPES = {"float32": np.float32, "int32": np.int32, "int64": np.int64, "bool": np.bool_, "float16": np.float16,
           "uint8": np.uint8, "uint16": np.uint16}


class TfjsImportError(RuntimeError):
    """A TensorFlow.js model that is unreadable, truncated, or uses an op this importer does not translate."""


def read_weights(manifest: list, shards: Mapping[str, bytes]) -> dict[str, np.ndarray]:
    """The named arrays of a weights manifest, dequantised to their original dtype."""
    arrays: dict[str, np.ndarray] = {}
    for group in manifest:
        try:
            data = b"".join(shards[p] for p in group["paths"])
        except KeyError as exc:
            raise TfjsImportError(f"weight shard {exc.args[0]} is missing") from None
        offset = 0
        for entry in group["weights"]:
            shape = [int(s) for s in entry["shape"]]
            count = int(np.prod(shape)) if shape else 1
            quant = entry.get("quantization")
            stored = _DTYPES.get((quant or {}).get("dtype") or entry["dtype"])
            if stored is None:
                raise TfjsImportError(f"weight {entry['name']}: dtype {entry['dtype']} is not supported")
            size = count * np.dtype(stored).itemsize
            if offset + size > len(data):
                raise TfjsImportError(f"weight {entry['name']} runs past the end of its shard (truncated file?)")
            value = np.frombuffer(data, stored, count, offset).reshape(shape)
            offset += size
            if quant and quant.get("dtype") in ("uint8", "uint16"):
                value = value.astype(np.float32) * np.float32(quant["scale"]) + np.float32(quant["min"])
            arrays[entry["name"]] = np.asarray(value, _DTYPES[entry["dtype"]])
    return arrays


def _attr(node: dict, key: str, default=None):
    value = node.get("attr", {}).get(key)
    if value is None:
        return default
    if "list" in value:
        items = value["list"]
        return [int(i) for i in items.get("i", [])] or [float(f) for f in items.get("f", [])]
    if "s" in value:
        import base64

        return base64.b64decode(value["s"]).decode()
    if "f" in value:
        return float(value["f"])
    if "i" in value:
        return int(value["i"])
    if "b" in value:
        return bool(value["b"])
    return default


def _source(name: str) -> tuple[str, int]:
    """'node:1' -> ('node', 1); control inputs ('^node') are not data."""
    base, _, index = name.partition(":")
    return base, int(index or 0)


def _conv_out(size: int, kernel: int, stride: int, dilation: int, padding: str) -> int:
    if padding == "SAME":
        return -(-size // stride)
    return (size - dilation * (kernel - 1) - 1) // stride + 1


def tfjs_to_onnx(model: dict, weights: Mapping[str, np.ndarray], name: str = "tfjs_model"):
    """The ONNX ModelProto of a TensorFlow.js graph model (its parsed model.json and `read_weights`).

    The input keeps its name and layout with free height and width; outputs keep their signature names."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    topology = model.get("modelTopology", {})
    nodes = {n["name"]: n for n in topology.get("node", [])}
    if not nodes:
        raise TfjsImportError("model.json has no graph (modelTopology.node)")
    signature = model.get("signature") or {}
    out_names = [v["name"] for v in signature.get("outputs", {}).values()]
    in_names = [v["name"] for v in signature.get("inputs", {}).values()]
    if not out_names or len(in_names) != 1:
        raise TfjsImportError("model.json needs a signature with one input and its outputs")

    consts: dict[str, np.ndarray] = {}  # known values (weights and folded constants)
    shapes: dict[str, tuple[int, ...]] = {}  # static shapes at the model's own input size
    tensor: dict[str, str] = {}  # tfjs tensor name -> ONNX value name
    onnx_nodes: list = []
    initializers: list = []
    counter = [0]

    def fresh(base: str) -> str:
        counter[0] += 1
        return f"{base}__{counter[0]}"

    def emit(op: str, inputs: list[str], outputs: list[str] | None = None, **attrs) -> list[str]:
        outputs = outputs or [fresh(op)]
        onnx_nodes.append(helper.make_node(op, inputs, outputs, **attrs))
        return outputs

    def const_value(value: np.ndarray, base: str) -> str:
        key = fresh(base.replace("/", "_"))
        initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), key))
        return key

    def value_of(ref: str) -> str:
        base, index = _source(ref)
        key = f"{base}:{index}"
        if key in tensor:
            return tensor[key]
        if key in consts:
            tensor[key] = const_value(consts[key], base)
            return tensor[key]
        raise TfjsImportError(f"input {ref} is not produced by any translated node")

    def known(ref: str) -> np.ndarray | None:
        base, index = _source(ref)
        return consts.get(f"{base}:{index}")

    def shape(ref: str) -> tuple[int, ...]:
        base, index = _source(ref)
        value = consts.get(f"{base}:{index}")
        return tuple(value.shape) if value is not None else shapes[f"{base}:{index}"]

    def nhwc(op: str, x: str, **attrs) -> str:
        t = emit("Transpose", [x], perm=[0, 3, 1, 2])[0]
        y = emit(op, [t] + attrs.pop("extra_inputs", []), **attrs)[0]
        return emit("Transpose", [y], perm=[0, 2, 3, 1])[0]

    def set_out(node_name: str, value: str, out_shape: tuple[int, ...], index: int = 0) -> None:
        tensor[f"{node_name}:{index}"] = value
        shapes[f"{node_name}:{index}"] = tuple(int(s) for s in out_shape)

    handlers: dict[str, Callable[[dict, list[str]], None]] = {}

    def op(*names: str):
        def register(fn):
            for n in names:
                handlers[n] = fn
            return fn
        return register

    @op("Identity")
    def _identity(node, ins):
        value = known(ins[0])
        if value is not None:
            consts[f"{node['name']}:0"] = value
        else:
            set_out(node["name"], value_of(ins[0]), shape(ins[0]))

    @op("Add", "AddV2")
    def _add(node, ins):
        a, b = known(ins[0]), known(ins[1])
        if a is not None and b is not None:
            consts[f"{node['name']}:0"] = np.asarray(a + b)
            return
        out_shape = np.broadcast_shapes(shape(ins[0]), shape(ins[1]))
        set_out(node["name"], emit("Add", [value_of(ins[0]), value_of(ins[1])])[0], out_shape)

    @op("SparseToDense")
    def _sparse_to_dense(node, ins):
        indices, out_shape, values, default = (known(i) for i in ins[:4])
        if any(v is None for v in (indices, out_shape, values, default)):
            raise TfjsImportError(f"{node['name']}: SparseToDense of values known only at run time")
        dense = np.full(tuple(int(s) for s in np.atleast_1d(out_shape)), default, dtype=np.asarray(default).dtype)
        indices, values = np.asarray(indices), np.asarray(values)
        if indices.size:
            idx = indices.reshape(indices.shape[0], -1) if indices.ndim > 1 else indices.reshape(-1, 1)
            for i, v in zip(idx, np.broadcast_to(values, (len(idx),)), strict=True):
                dense[tuple(i)] = v
        consts[f"{node['name']}:0"] = dense

    @op("LeakyRelu")
    def _leaky(node, ins):
        set_out(node["name"], emit("LeakyRelu", [value_of(ins[0])], alpha=float(_attr(node, "alpha", 0.2)))[0],
                shape(ins[0]))

    @op("Sigmoid", "Relu", "Relu6")
    def _activation(node, ins):
        x = value_of(ins[0])
        if node["op"] == "Relu6":
            y = emit("Clip", [x, const_value(np.float32(0), "zero"), const_value(np.float32(6), "six")])[0]
        else:
            y = emit(node["op"], [x])[0]
        set_out(node["name"], y, shape(ins[0]))

    @op("Pad", "PadV2")
    def _pad(node, ins):
        pads = known(ins[1])
        if pads is None:
            raise TfjsImportError(f"{node['name']}: padding known only at run time")
        pads = np.asarray(pads, np.int64).reshape(-1, 2)
        inputs = [value_of(ins[0]), const_value(np.concatenate([pads[:, 0], pads[:, 1]]), "pads")]
        if node["op"] == "PadV2":
            fill = known(ins[2])
            inputs.append(const_value(np.asarray(fill, np.float32).reshape(()), "pad_value"))
        out_shape = tuple(s + int(p.sum()) for s, p in zip(shape(ins[0]), pads, strict=True))
        set_out(node["name"], emit("Pad", inputs, mode="constant")[0], out_shape)

    @op("Transpose")
    def _transpose(node, ins):
        perm = [int(p) for p in np.asarray(known(ins[1])).ravel()]
        src = shape(ins[0])
        set_out(node["name"], emit("Transpose", [value_of(ins[0])], perm=perm)[0], tuple(src[p] for p in perm))

    @op("Conv2D")
    def _conv(node, ins):
        if _attr(node, "data_format", "NHWC") != "NHWC":
            raise TfjsImportError(f"{node['name']}: only NHWC convolutions are translated")
        kernel = known(ins[1])
        if kernel is None:
            raise TfjsImportError(f"{node['name']}: convolution weights known only at run time")
        padding = _attr(node, "padding", "VALID")
        if padding not in ("VALID", "SAME"):
            raise TfjsImportError(f"{node['name']}: padding {padding} is not translated")
        strides, dilations = _attr(node, "strides", [1, 1, 1, 1]), _attr(node, "dilations", [1, 1, 1, 1])
        kh, kw, cin, cout = kernel.shape
        n, h, w, c = shape(ins[0])
        groups = c // cin
        weight = const_value(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1), np.float32), "conv_w")
        attrs = dict(strides=strides[1:3], dilations=dilations[1:3], group=groups, kernel_shape=[kh, kw])
        attrs["auto_pad"] = "SAME_UPPER" if padding == "SAME" else "VALID"
        y = nhwc("Conv", value_of(ins[0]), extra_inputs=[weight], **attrs)
        out = (n, _conv_out(h, kh, strides[1], dilations[1], padding), _conv_out(w, kw, strides[2], dilations[2],
                                                                                 padding), cout)
        set_out(node["name"], y, out)

    @op("MaxPool")
    def _maxpool(node, ins):
        if _attr(node, "data_format", "NHWC") != "NHWC":
            raise TfjsImportError(f"{node['name']}: only NHWC pooling is translated")
        ksize, strides = _attr(node, "ksize"), _attr(node, "strides")
        padding = _attr(node, "padding", "VALID")
        attrs = dict(kernel_shape=ksize[1:3], strides=strides[1:3],
                     auto_pad="SAME_UPPER" if padding == "SAME" else "VALID")
        n, h, w, c = shape(ins[0])
        y = nhwc("MaxPool", value_of(ins[0]), **attrs)
        set_out(node["name"], y, (n, _conv_out(h, ksize[1], strides[1], 1, padding),
                                  _conv_out(w, ksize[2], strides[2], 1, padding), c))

    @op("ConcatV2")
    def _concat(node, ins):
        axis = int(np.asarray(known(ins[-1])))
        parts = ins[:-1]
        ranks = len(shape(parts[0]))
        axis %= ranks
        out = list(shape(parts[0]))
        out[axis] = sum(shape(p)[axis] for p in parts)
        set_out(node["name"], emit("Concat", [value_of(p) for p in parts], axis=axis)[0], tuple(out))

    @op("ResizeBilinear")
    def _resize(node, ins):
        size = known(ins[1])
        if size is None:
            raise TfjsImportError(f"{node['name']}: resize size known only at run time")
        n, h, w, c = shape(ins[0])
        oh, ow = (int(s) for s in np.asarray(size).ravel())
        # A scale factor, not a size: the same graph then runs at any input size.
        scales = const_value(np.asarray([1.0, oh / h, ow / w, 1.0], np.float32), "scales")
        if _attr(node, "align_corners", False):
            mode = "align_corners"
        elif _attr(node, "half_pixel_centers", False):
            mode = "half_pixel"
        else:
            mode = "asymmetric"
        y = emit("Resize", [value_of(ins[0]), "", scales], mode="linear", coordinate_transformation_mode=mode)[0]
        set_out(node["name"], y, (n, oh, ow, c))

    @op("SplitV")
    def _split(node, ins):
        sizes, axis = known(ins[1]), known(ins[2])
        if sizes is None or axis is None:
            raise TfjsImportError(f"{node['name']}: split sizes known only at run time")
        src = shape(ins[0])
        axis = int(np.asarray(axis)) % len(src)
        sizes = [int(s) for s in np.asarray(sizes).ravel()]
        if -1 in sizes:
            sizes[sizes.index(-1)] = src[axis] - (sum(sizes) + 1)
        outs = [fresh("split") for _ in sizes]
        emit("Split", [value_of(ins[0]), const_value(np.asarray(sizes, np.int64), "split")], outs, axis=axis)
        for i, (name, size) in enumerate(zip(outs, sizes, strict=True)):
            out = list(src)
            out[axis] = size
            set_out(node["name"], name, tuple(out), i)

    @op("Reshape")
    def _reshape(node, ins):
        target = known(ins[1])
        if target is None:
            raise TfjsImportError(f"{node['name']}: reshape target known only at run time")
        target = np.asarray(target, np.int64).ravel()
        src = shape(ins[0])
        if (target == 0).any():
            raise TfjsImportError(f"{node['name']}: reshape with copied dimensions is not translated")
        total = int(np.prod(src))
        out = [int(t) for t in target]
        if -1 in out:
            out[out.index(-1)] = total // int(np.prod([t for t in out if t != -1]))
        y = emit("Reshape", [value_of(ins[0]), const_value(target, "shape")])[0]
        set_out(node["name"], y, tuple(out))

    for ref, value in weights.items():
        consts[f"{ref}:0"] = np.asarray(value)
    graph_inputs = []
    for node in _topological(nodes):
        name, kind = node["name"], node["op"]
        ins = [i for i in node.get("input", []) if not i.startswith("^")]
        if kind == "Const":
            if f"{name}:0" not in consts:
                raise TfjsImportError(f"constant {name} has no weights in the shards")
            continue
        if kind == "Placeholder":
            dims = [int(d.get("size", -1)) for d in _attr_shape(node)]
            if len(dims) != 4:
                raise TfjsImportError(f"input {name}: a 4-D image tensor is expected, got {dims}")
            tensor[f"{name}:0"] = name
            shapes[f"{name}:0"] = tuple(dims)
            free = ["height", "width"]
            layout = [dims[0]] + (free + [dims[3]] if dims[3] in (1, 3) else [dims[1]] + free)
            graph_inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, layout))
            continue
        handler = handlers.get(kind)
        if handler is None:
            raise TfjsImportError(f"op {kind} (node {name}) is not translated: not a detector this importer knows")
        handler(node, ins)
    outputs = []
    for ref in out_names:
        base, index = _source(ref)
        value = value_of(f"{base}:{index}")
        public = base
        emit("Identity", [value], [public])
        rank = len(shapes.get(f"{base}:{index}", ()))
        outputs.append(helper.make_tensor_value_info(public, TensorProto.FLOAT, [f"{public}_{i}" for i in range(rank)]))
    graph = helper.make_graph(onnx_nodes, name, graph_inputs, outputs, initializers)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="sage_ros")
    proto.ir_version = 8
    onnx.checker.check_model(proto)
    return proto


def _attr_shape(node: dict) -> list[dict]:
    return node.get("attr", {}).get("shape", {}).get("shape", {}).get("dim", [])


def _topological(nodes: Mapping[str, dict]) -> list[dict]:
    """Nodes in an order where every input comes first (model.json does not promise one)."""
    order, state = [], {}
    for start in nodes:
        stack = [(start, False)]
        while stack:
            name, done = stack.pop()
            if done:
                state[name] = 2
                order.append(nodes[name])
                continue
            if state.get(name):
                continue
            state[name] = 1
            stack.append((name, True))
            for ref in nodes[name].get("input", []):
                base = _source(ref.lstrip("^"))[0]
                if base in nodes and not state.get(base):
                    stack.append((base, False))
    return order


def load_tfjs(model_json: str | Path) -> tuple[dict, dict[str, np.ndarray]]:
    """model.json and its shards (beside it) -> (model, arrays)."""
    path = Path(model_json)
    try:
        model = json.loads(path.read_text())
        shards = {p: (path.parent / p).read_bytes() for g in model["weightsManifest"] for p in g["paths"]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise TfjsImportError(f"{path}: not a readable TensorFlow.js graph model: {exc}") from exc
    return model, read_weights(model["weightsManifest"], shards)
