"""The one builder of a student's ONNX graph (released, fast, scale-adapted or trained here), without PyTorch.

A robot that only fuses needs ONNX Runtime or OpenVINO, not PyTorch (5.9 GB from PyPI with CUDA wheels).
This module reads the checkpoint's zip/pickle with a restricted unpickler that accepts only tensors and
plain containers (anything else, e.g. a pickled callable, is refused before it can run: a safety
property, like `torch.load(weights_only=True)`), folds BatchNorm into the convolutions in numpy and
writes the graph: inputs `vis_y`, `ir` (1, 1, height, width), output `fused_y`, opset 17, no
BatchNormalization node. Blocks of any depth and width (the fast student's) are read off the state dict.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import numpy as np

OPSET = 17
INPUT_NAMES = ("vis_y", "ir")
OUTPUT_NAME = "fused_y"
WIDTH = 32
NEGATIVE_SLOPE = 0.01
BN_EPS = 1e-5  # torch.nn.BatchNorm2d default, which the released student uses

# torch storage class names -> numpy dtypes (little-endian unless the archive says otherwise).
_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, truncated, corrupt, unsafe or not a SAGE student."""


class _StorageType:
    """Stands for `torch.FloatStorage` etc. while unpickling: only its dtype is used."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.dtype = np.dtype(_STORAGE_DTYPES[name])


def _rebuild_tensor(storage, storage_offset, size, stride, *_unused) -> np.ndarray:
    """numpy stand-in for torch._utils._rebuild_tensor_v2 / _rebuild_parameter's inner tensor."""
    if not isinstance(storage, np.ndarray):
        raise CheckpointError(f"tensor record refers to {type(storage).__name__}, not a storage")
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    count = int(np.prod(size)) if size else 1
    if count == 0:
        return np.zeros(size, storage.dtype)
    last = int(storage_offset) + sum((s - 1) * st for s, st in zip(size, stride, strict=True))
    if storage_offset < 0 or last >= storage.size:
        raise CheckpointError(
            f"tensor of shape {size} reaches element {last} of a storage of {storage.size} (corrupt file?)"
        )
    item = storage.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage[int(storage_offset):], shape=size, strides=tuple(st * item for st in stride)
    )
    return np.array(view)  # own the memory, in C order


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *_unused) -> np.ndarray:
    if not isinstance(data, np.ndarray):
        raise CheckpointError(f"parameter record wraps {type(data).__name__}, not a tensor")
    return data


# The only globals a plain state dict needs. Everything else is refused.
_ALLOWED = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, byteorder: str, source: Path):
        super().__init__(io.BytesIO(data))
        self._archive = archive
        self._prefix = prefix
        self._byteorder = byteorder
        self._source = source
        self._storages: dict[str, np.ndarray] = {}

    def find_class(self, module: str, name: str):  # noqa: D102 - pickle hook
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise CheckpointError(
            f"checkpoint {self._source} refers to {module}.{name}; only tensors and plain containers are "
            "accepted (a pickled object or callable could run code on load), so it was refused"
        )

    def persistent_load(self, pid):  # noqa: D102 - pickle hook
        # ('storage', storage_type, key, location, numel) as torch.save writes it.
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise CheckpointError(f"checkpoint {self._source}: unsupported persistent record {pid!r:.80}")
        storage_type, key = pid[1], str(pid[2])
        if not isinstance(storage_type, _StorageType):
            raise CheckpointError(f"checkpoint {self._source}: storage of unknown type {storage_type!r:.60}")
        if key not in self._storages:
            member = f"{self._prefix}data/{key}"
            try:
                raw = self._archive.read(member)
            except KeyError as exc:
                raise CheckpointError(
                    f"checkpoint {self._source} lacks the tensor data record {member} (truncated?)"
                ) from exc
            dtype = storage_type.dtype.newbyteorder("<" if self._byteorder == "little" else ">")
            if len(raw) % dtype.itemsize:
                raise CheckpointError(f"checkpoint {self._source}: record {member} has a partial element")
            self._storages[key] = np.frombuffer(raw, dtype=dtype).astype(storage_type.dtype, copy=False)
        return self._storages[key]


def read_checkpoint_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """Read a PyTorch zip checkpoint's state dict as numpy arrays, without PyTorch and without running code.

    Raises CheckpointError with the reason for a missing, empty, truncated, legacy-format or unsafe file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist: run `sage-ros weights fetch` or pass --weights")
    if path.stat().st_size == 0:
        raise CheckpointError(f"weights file {path} is empty (an interrupted download?)")
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise CheckpointError(
            f"weights file {path} is not a zip-format PyTorch checkpoint (truncated or corrupt, or the "
            f"pre-1.6 legacy format, which the torch-free reader does not read): {exc}"
        ) from exc
    with archive:
        names = archive.namelist()
        pkl = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
        if not pkl:
            raise CheckpointError(f"weights file {path} has no data.pkl record: not a PyTorch checkpoint")
        prefix = pkl[0][: -len("data.pkl")]
        byteorder = "little"
        if prefix + "byteorder" in names:
            byteorder = archive.read(prefix + "byteorder").decode("ascii", "replace").strip() or "little"
        try:
            data = archive.read(pkl[0])
            obj = _RestrictedUnpickler(data, archive, prefix, byteorder, path).load()
        except CheckpointError:
            raise
        except (zipfile.BadZipFile, EOFError, pickle.UnpicklingError, OSError, ValueError,
                TypeError, IndexError, KeyError, AttributeError) as exc:
            raise CheckpointError(f"weights file {path} could not be read (truncated or corrupt?): {exc}") from exc
    return _unwrap(obj, path)


def _unwrap(obj: object, path: Path) -> dict[str, np.ndarray]:
    # Same rules as model.checkpoint: training wraps the state dict; DataParallel prefixes 'module.'.
    if isinstance(obj, Mapping) and isinstance(obj.get("student"), Mapping):
        obj = obj["student"]
    elif isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"weights file {path}: expected a state dict, found {type(obj).__name__}")
    if obj and all(str(k).startswith("module.module") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    bad = [k for k, v in obj.items() if not isinstance(v, np.ndarray)]
    if bad:
        raise CheckpointError(f"weights file {path}: entries that are not tensors: {bad[:3]}")
    return dict(obj)


# ---------------------------------------------------------------------------------------------
# The student architecture (model/student.py) as (conv, batchnorm) pairs in state-dict names.

def _block(prefix: str, indices: tuple[int, ...] = (0, 3, 6)) -> list[tuple[str, str | None, int]]:
    # conv_block: Conv3x3 at indices 0/3/6 (the released student), each followed by BatchNorm2d.
    return [(f"{prefix}.{i}", f"{prefix}.{i + 1}", 1) for i in indices]


def _block_in(state: Mapping[str, np.ndarray], prefix: str) -> list[tuple[str, str | None, int]]:
    """The (conv, batchnorm) pairs of one block as the state dict has them (the fast student's are shallower)."""
    indices = sorted(int(k.split(".")[1]) for k, v in state.items()
                     if k.startswith(f"{prefix}.") and k.endswith(".weight") and np.ndim(v) == 4)
    return _block(prefix, tuple(indices))


def expected_keys() -> set[str]:
    keys: set[str] = set()
    convs = [c for m in ("module1", "module2", "module3", "module4", "module5") for c in _block(m)]
    convs += [("adjust_channels4.0", "adjust_channels4.1", 0), ("adjust_channels5.0", "adjust_channels5.1", 0)]
    for conv, bn, _ in convs:
        keys |= {f"{conv}.weight", f"{conv}.bias"}
        keys |= {f"{bn}.{k}" for k in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")}
    keys |= {"final_decoder.0.weight", "final_decoder.0.bias"}
    return keys


def fold_conv_bn(state: Mapping[str, np.ndarray], conv: str, bn: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Conv weights and bias with the following eval-mode BatchNorm folded in (float64 maths, float32 out).
    A conv without a bias (one followed by BatchNorm needs none) counts as bias 0."""
    w = state[f"{conv}.weight"].astype(np.float64)
    b = state[f"{conv}.bias"].astype(np.float64) if f"{conv}.bias" in state else np.zeros(w.shape[0])
    if bn is not None:
        var = state[f"{bn}.running_var"].astype(np.float64)
        scale = state[f"{bn}.weight"].astype(np.float64) / np.sqrt(var + BN_EPS)
        w = w * scale[:, None, None, None]
        b = (b - state[f"{bn}.running_mean"].astype(np.float64)) * scale + state[f"{bn}.bias"].astype(np.float64)
    return w.astype(np.float32), b.astype(np.float32)


def check_student_state(state: Mapping[str, np.ndarray], source: str = "checkpoint") -> None:
    expected = expected_keys()
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise CheckpointError(
            f"{source} is not a SAGE student checkpoint: {len(missing)} expected keys missing "
            f"(e.g. {missing[:3]}), {len(unexpected)} unexpected keys (e.g. {unexpected[:3]})"
        )
    first = state["module1.0.weight"].shape
    if tuple(first) != (WIDTH, 2, 3, 3):
        raise CheckpointError(f"{source}: module1.0.weight has shape {tuple(first)}, expected ({WIDTH}, 2, 3, 3)")


class GraphParts:
    """The nodes and initializers of a graph being built, with unique node names `<prefix>/<Op>_<n>`
    (shared by the student builder here and the segmentation graph builder, `seg_graph`)."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self.nodes: list = []
        self.initializers: list = []
        self._count = 0

    def node(self, op: str, inputs: list[str], **attrs) -> str:
        """Append an `op` node on `inputs`; returns its (single) output's name, which is also its name."""
        from onnx import helper

        self._count += 1
        out = f"{self.prefix}/{op}_{self._count}"
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def const(self, name: str, value: np.ndarray) -> str:
        """Add `value` as the initializer `name`; returns the name."""
        from onnx import numpy_helper

        self.initializers.append(numpy_helper.from_array(value, name))
        return name


def build_student_model_proto(state: Mapping[str, np.ndarray]):
    """The fusion-only student graph (BatchNorm folded) from a numpy state dict of any block depth and width."""
    import onnx
    from onnx import TensorProto, helper

    parts = GraphParts()

    def conv(x: str, conv_key: str, bn_key: str | None, pad: int) -> str:
        w, b = fold_conv_bn(state, conv_key, bn_key)
        k = int(w.shape[-1])
        return parts.node("Conv", [x, parts.const(f"{conv_key}.weight", w), parts.const(f"{conv_key}.bias", b)],
                          kernel_shape=[k, k], pads=[pad] * 4, strides=[1, 1], dilations=[1, 1], group=1)

    def leaky(x: str) -> str:
        return parts.node("LeakyRelu", [x], alpha=NEGATIVE_SLOPE)

    def block(x: str, prefix: str) -> str:
        for conv_key, bn_key, pad in _block_in(state, prefix):
            x = leaky(conv(x, conv_key, bn_key, pad))
        return x

    def adjust(x: str, prefix: str) -> str:
        return leaky(conv(x, f"{prefix}.0", f"{prefix}.1", 0))

    def concat(a: str, b: str) -> str:
        return parts.node("Concat", [a, b], axis=1)

    def maxpool(x: str) -> str:
        return parts.node("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])

    def resize_like(x: str, like: str) -> str:
        # Bilinear, align_corners=False, to the reference's own size (odd H, W work as in PyTorch).
        # Both tensors have WIDTH channels, so the reference's full shape is the target size.
        return parts.node("Resize", [x, "", "", parts.node("Shape", [like])], mode="linear",
                          coordinate_transformation_mode="half_pixel", nearest_mode="floor")

    x1 = block(concat("vis_y", "ir"), "module1")
    x2 = block(maxpool(x1), "module2")
    x3 = block(maxpool(x2), "module3")
    x4 = block(adjust(concat(resize_like(x3, x2), x2), "adjust_channels4"), "module4")
    x5 = block(adjust(concat(resize_like(x4, x1), x1), "adjust_channels5"), "module5")
    decoded = conv(x5, "final_decoder.0", None, 1)
    if "detail.weight" not in state:
        parts.nodes.append(helper.make_node("Tanh", [decoded], [OUTPUT_NAME], name="/Tanh"))
    else:
        # A fast student's fixed unsharp mask (networks/fast_student.py): reflected borders, then the kernel.
        kernel = np.asarray(state["detail.weight"], np.float32)
        r = int(kernel.shape[-1]) // 2
        padded = parts.node("Pad", [parts.node("Tanh", [decoded]),
                                    parts.const("detail.pads", np.array([0, 0, r, r, 0, 0, r, r], np.int64))],
                            mode="reflect")
        parts.nodes.append(helper.make_node("Conv", [padded, parts.const("detail.weight", kernel)], [OUTPUT_NAME],
                                            name="/DetailConv", kernel_shape=[2 * r + 1] * 2, pads=[0] * 4))

    dims = [1, 1, "height", "width"]
    graph = helper.make_graph(
        parts.nodes,
        "sage_student",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, dims) for n in INPUT_NAMES],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, dims)],
        parts.initializers,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="sage_ros.onnx_builder"
    )
    model.ir_version = 8  # what the PyTorch export writes; TensorRT 8.6 parses it
    onnx.checker.check_model(model)
    return model


def build_student_onnx(checkpoint: str | Path):
    """Checkpoint (.pt zip) -> fusion-only student onnx.ModelProto, without PyTorch."""
    state = read_checkpoint_arrays(checkpoint)
    try:
        check_student_state(state)
    except CheckpointError as exc:
        raise CheckpointError(f"weights file {checkpoint}: {exc}") from exc
    return build_student_model_proto(state)


def save_student_onnx(model, out_path: str | Path, metadata: dict) -> Path:
    """Write a built student graph and its JSON sidecar (interface + metadata)."""
    import json

    import onnx

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out_path))
    meta = {"inputs": list(INPUT_NAMES), "outputs": [OUTPUT_NAME], "opset": OPSET} | metadata
    out_path.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    return out_path
