"""The full-resolution refiner (`fusion.refine`): a tiny residual CNN after the thermal-resolution path.

`fusion.resolution: thermal` fuses at the thermal camera's pixel count and adds the visible detail back
(sage_ros/pipeline.py), with the scale-adapted student below the RGB size by default. The refiner takes
(that fused Y, visible Y, registered IR) at the RGB size and returns fused Y + a learned correction,
trained offline to reproduce full-resolution fusion (sage_ros/training/refiner.py). Shipped as plain
arrays (`sage_ros/data/refiner_msrs.npz` + `.json`); the graph is built here with `onnx` and run on
OpenVINO or ONNX Runtime: no PyTorch at run time.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from sage_ros.model.cpu_graph import CpuGraph, runtime_beside
from sage_ros.model.npz_weights import read_sidecar
from sage_ros.model.onnx_builder import GraphParts

REFINER_FORMAT = "sage_ros.refiner.v1"
DEFAULT_REFINER = Path(__file__).resolve().parents[1] / "data" / "refiner_msrs.npz"
INPUT, OUTPUT = "refiner_input", "refined_y"


class RefinerError(RuntimeError):
    """Missing, corrupt or foreign refiner weights, or no runtime to run them."""


def layer_keys(n: int) -> list[tuple[str, str]]:
    return [(f"conv{i}.weight", f"conv{i}.bias") for i in range(n)]


def load_refiner_arrays(path: str | Path = DEFAULT_REFINER) -> tuple[list[tuple[np.ndarray, np.ndarray]], dict]:
    """[(weight, bias), ...] of the 3x3 convs, checked to chain 3 -> ... -> 1 channels; and the sidecar."""
    path = Path(path)
    if not path.is_file():
        raise RefinerError(f"refiner weights {path} not found")
    meta = read_sidecar(path, REFINER_FORMAT, RefinerError, "refiner")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: np.asarray(data[k], dtype=np.float32) for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise RefinerError(f"refiner weights {path} could not be read: {exc}") from exc
    n = len(arrays) // 2
    keys = layer_keys(n)
    if n < 1 or set(arrays) != {k for pair in keys for k in pair}:
        raise RefinerError(f"{path}: expected conv0..convN weight/bias arrays, found {sorted(arrays)[:6]}")
    layers, channels = [], 3
    for wkey, bkey in keys:
        w, b = arrays[wkey], arrays[bkey]
        if w.ndim != 4 or w.shape[1] != channels or w.shape[2:] != (3, 3) or b.shape != (w.shape[0],):
            raise RefinerError(f"{path}: {wkey} {w.shape} / {bkey} {b.shape} do not chain from {channels} channels")
        if not (np.isfinite(w).all() and np.isfinite(b).all()):
            raise RefinerError(f"{path}: {wkey} or {bkey} holds NaN/inf")
        layers.append((w, b))
        channels = w.shape[0]
    if channels != 1:
        raise RefinerError(f"{path}: the last conv gives {channels} channels, expected 1")
    return layers, meta


def build_refiner_proto(layers: list[tuple[np.ndarray, np.ndarray]]):
    """ONNX graph: refiner_input (1, 3, H, W) -> refined_y (1, 1, H, W) = channel 0 + convs(x)."""
    import onnx
    from onnx import TensorProto, helper

    parts = GraphParts("refiner")
    x = INPUT
    for i, (w, b) in enumerate(layers):
        x = parts.node("Conv", [x, parts.const(f"conv{i}.weight", w), parts.const(f"conv{i}.bias", b)],
                       kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1])
        if i < len(layers) - 1:
            x = parts.node("Relu", [x])
    starts, ends, axes = (parts.const(n, np.array([v], np.int64)) for n, v in
                          (("slice.starts", 0), ("slice.ends", 1), ("slice.axes", 1)))
    base = parts.node("Slice", [INPUT, starts, ends, axes])
    parts.nodes.append(helper.make_node("Add", [base, x], [OUTPUT], name="refiner/Add_out"))
    graph = helper.make_graph(
        parts.nodes, "sage_ros_refiner",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, [1, 3, "height", "width"])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, [1, 1, "height", "width"])],
        parts.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="sage_ros")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


class FullResRefiner:
    """Callable (fused_y, vis_y, ir) -> refined fused Y, all HxW float32 in [0, 1] at the RGB size."""

    def __init__(self, path: str | Path = DEFAULT_REFINER, runtime: str = "auto", threads: int = 0,
                 precision: str = "fp32") -> None:
        layers, self.meta = load_refiner_arrays(path)
        self.path = Path(path)
        self._input: np.ndarray | None = None  # (1, 3, H, W), reused while the frame size stays the same
        proto = build_refiner_proto(layers).SerializeToString()
        graph = CpuGraph(proto, runtime, threads, precision, error=RefinerError, what="fusion.refine")
        self.runtime = graph.runtime
        self._run = lambda x: graph.run({INPUT: x})[0]

    def __call__(self, fused_y: np.ndarray, vis_y: np.ndarray, ir: np.ndarray) -> np.ndarray:
        # One input buffer per frame size: the three planes are copied in, no 11 MB allocation per 1280x720 frame.
        if self._input is None or self._input.shape[2:] != fused_y.shape:
            self._input = np.empty((1, 3, *fused_y.shape), np.float32)
        for plane, image in zip(self._input[0], (fused_y, vis_y, ir), strict=True):
            plane[...] = image
        # A new array: the runtime may reuse its output buffer on the next call.
        return np.clip(np.asarray(self._run(self._input), dtype=np.float32)[0, 0], 0.0, 1.0)


def refiner_for_backend(backend, threads: int = 0, path: str | Path = DEFAULT_REFINER) -> FullResRefiner:
    """The refiner on the fusion backend's own runtime and precision where that is a CPU runtime
    (OpenVINO, ONNX Runtime); beside TensorRT or torch it runs on OpenVINO or ONNX Runtime on the CPU."""
    runtime, precision = runtime_beside(backend)
    return FullResRefiner(path, runtime=runtime, threads=threads, precision=precision)
