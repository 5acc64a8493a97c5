"""PyTorch backend (development, and the fp32 reference the other backends are checked against)."""

from __future__ import annotations

import numpy as np

from sage_ros import install_hint
from sage_ros.backends.base import BackendError, BackendOutput, BackendUnavailable, FusionBackend


class TorchBackend(FusionBackend):
    name = "torch"

    def __init__(self, config) -> None:  # BackendConfig; untyped to keep this import light
        try:
            import torch
        except ImportError as exc:
            raise BackendUnavailable(f"PyTorch is not installed: {install_hint('torch')}") from exc
        from sage_ros.networks.checkpoint import WeightsError, load_student

        if config.weights_path is None:
            raise BackendError("the torch backend needs --weights (a SAGE student checkpoint)")
        try:
            if str(config.weights_path).endswith(".npz"):
                # A fast student (sage_ros.networks.fast_student): plain arrays + its architecture.
                from sage_ros.networks.fast_student import FastWeightsError, load_fast_student

                try:
                    model = load_fast_student(config.weights_path)
                except FastWeightsError as exc:
                    raise WeightsError(str(exc)) from exc
            else:
                model = load_student(config.weights_path)
        except WeightsError as exc:
            raise BackendError(str(exc)) from exc
        device = torch.device(config.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailable("torch backend: CUDA requested but no CUDA device is available")
        self._half = config.precision == "fp16" and device.type == "cuda"
        self._model = model.to(device).half() if self._half else model.to(device)
        self._device = device
        if config.threads:
            torch.set_num_threads(int(config.threads))
        self._torch = torch

    @property
    def description(self) -> str:
        return f"torch eager ({self._device}, {'fp16' if self._half else 'fp32'})"

    def _infer(self, vis_y: np.ndarray, ir: np.ndarray) -> BackendOutput:
        torch = self._torch
        dtype = torch.float16 if self._half else torch.float32
        with torch.inference_mode():
            y = torch.from_numpy(vis_y).to(self._device, dtype)
            i = torch.from_numpy(ir).to(self._device, dtype)
            fused, _ = self._model(y, i)
            return BackendOutput(fused[0, 0].float().cpu().numpy())
