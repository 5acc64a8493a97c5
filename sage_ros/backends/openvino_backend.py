"""OpenVINO backend (CPU), with an f32 or bf16 inference precision hint.

On CPUs with AMX/AVX-512-BF16 the bf16 hint is several times faster at about 40-50 dB PSNR
against fp32; on CPUs without them OpenVINO silently runs f32.
"""

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

_PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16"}


class OpenVinoBackend(FusionBackend):
    name = "openvino"

    def __init__(self, onnx_path: Path, precision: str = "fp32", threads: int | None = None) -> None:
        try:
            import openvino as ov
        except ImportError as exc:
            raise BackendUnavailable("openvino is not installed: pip install openvino") from exc
        if precision not in _PRECISION_HINTS:
            raise BackendError(f"openvino precision must be fp32 or bf16, not {precision!r}")
        core = ov.Core()
        config: dict[str, str] = {
            "INFERENCE_PRECISION_HINT": _PRECISION_HINTS[precision],
            # One frame at a time from a camera: optimise for latency, not throughput.
            "PERFORMANCE_HINT": "LATENCY",
        }
        if threads:
            config["INFERENCE_NUM_THREADS"] = str(threads)
        try:
            model = core.read_model(str(onnx_path))
            self._compiled = core.compile_model(model, "CPU", config)
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses of its own
            raise BackendError(f"openvino could not load {onnx_path}: {exc}") from exc
        names = {n for out in self._compiled.outputs for n in out.get_names()}
        if FUSED_OUTPUT not in names:
            raise BackendError(f"{onnx_path} has no '{FUSED_OUTPUT}' output (outputs: {names})")
        self._request = self._compiled.create_infer_request()
        self._precision = precision
        try:  # what the compiled model really runs: bf16 asked on a CPU without it runs f32
            ran = str(self._compiled.get_property("INFERENCE_PRECISION_HINT")).lower()
            self._precision = "bf16" if "bf" in ran else "fp32" if ("f32" in ran or "float32" in ran) else precision
        except Exception:  # noqa: BLE001 - an older OpenVINO without the property: keep the request
            pass
        self._path = Path(onnx_path)

    @property
    def precision(self) -> str:
        """fp32 or bf16: the inference precision in force (other stages can run at the same one)."""
        return self._precision

    @property
    def description(self) -> str:
        return f"openvino {self._path.name} (CPU {self._precision})"

    def _infer(self, vis_y: np.ndarray, ir: np.ndarray) -> BackendOutput:
        self._request.infer({"vis_y": vis_y, "ir": ir})
        # The request reuses its buffers: copy before the next call overwrites them.
        return squeeze_outputs(self._request.get_tensor(FUSED_OUTPUT).data.copy())
