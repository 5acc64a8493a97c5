"""The one small interface every inference backend implements.

A backend runs the exported student graph: inputs `vis_y` and `ir`, each (1, 1, H, W) float32 in
[0, 1]; output `fused_y` (1, 1, H, W) float32 (other outputs of a model are ignored). Backends never see
colour, ROS or files other than the model.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np

INPUT_NAMES = ("vis_y", "ir")
FUSED_OUTPUT = "fused_y"


class BackendError(RuntimeError):
    """A backend that cannot be created or cannot run (missing package, bad model, device error)."""


class BackendUnavailable(BackendError):
    """The backend's runtime package or device is not present on this machine."""


@dataclass
class BackendOutput:
    """One inference result, at input resolution."""

    fused_y: np.ndarray  # HxW float32 (Tanh output, the caller clamps to [0, 1])


class FusionBackend(abc.ABC):
    """Runs the fusion model on one (Y, IR) pair at a time."""

    #: short name used on the command line and in diagnostics, e.g. "onnxruntime"
    name: str = "base"
    #: why this precision was chosen when the user asked for `auto` (logged at start-up), else None
    precision_note: str | None = None

    @property
    def description(self) -> str:
        """Human-readable description (backend, precision, device) for logs and diagnostics."""
        return self.name

    @abc.abstractmethod
    def _infer(self, vis_y: np.ndarray, ir: np.ndarray) -> BackendOutput:
        """Run on contiguous float32 (1, 1, H, W) arrays."""

    def infer(self, vis_y: np.ndarray, ir: np.ndarray) -> BackendOutput:
        """Run the model on HxW float32 luminance and infrared in [0, 1]."""
        if vis_y.shape != ir.shape or vis_y.ndim != 2:
            raise BackendError(f"expected two HxW arrays of one size, got {vis_y.shape} and {ir.shape}")
        h, w = vis_y.shape
        y4 = np.ascontiguousarray(vis_y, dtype=np.float32).reshape(1, 1, h, w)
        ir4 = np.ascontiguousarray(ir, dtype=np.float32).reshape(1, 1, h, w)
        return self._infer(y4, ir4)

    def close(self) -> None:
        """Release device resources (contexts, streams); safe to call twice."""


def squeeze_outputs(fused: np.ndarray) -> BackendOutput:
    """Turn a raw (1,1,H,W) backend output into a BackendOutput of an HxW array."""
    return BackendOutput(np.asarray(fused, dtype=np.float32).reshape(fused.shape[-2:]))
