"""ONNX Runtime backend (the default on CPU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sage_ros.backends.base import (
    FUSED_OUTPUT,
    BackendError,
    BackendOutput,
    BackendUnavailable,
    FusionBackend,
    squeeze_outputs,
)


def _graph_nodes(path: Path) -> list:
    try:
        import onnx
    except ImportError:  # onnx is optional at run time; precision then reads as fp32
        return []
    return list(onnx.load(str(path), load_external_data=False).graph.node)


class OnnxRuntimeBackend(FusionBackend):
    name = "onnxruntime"

    def __init__(self, onnx_path: Path, threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendUnavailable("onnxruntime is not installed: pip install onnxruntime") from exc
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        try:
            self._session = ort.InferenceSession(
                str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise BackendError(f"onnxruntime could not load {onnx_path}: {exc}") from exc
        self._outputs = [o.name for o in self._session.get_outputs()]
        if FUSED_OUTPUT not in self._outputs:
            raise BackendError(f"{onnx_path} has no '{FUSED_OUTPUT}' output (outputs: {self._outputs})")
        self._path = Path(onnx_path)
        # A QDQ graph (sage_ros.graphs.quantize) runs int8 kernels; say so in logs and diagnostics.
        graph_ops = {n.op_type for n in _graph_nodes(self._path)}
        self._precision = "int8 QDQ" if "QuantizeLinear" in graph_ops else "fp32"

    @property
    def description(self) -> str:
        return f"onnxruntime {self._path.name} (CPU {self._precision})"

    def _infer(self, vis_y: np.ndarray, ir: np.ndarray) -> BackendOutput:
        return squeeze_outputs(self._session.run([FUSED_OUTPUT], {"vis_y": vis_y, "ir": ir})[0])
