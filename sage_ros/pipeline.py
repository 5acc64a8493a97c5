"""Image pair in, fused colour image (and class ids) out: imaging math around one backend call.

This is the single fusion path shared by `sage-ros fuse`, the ROS node and bag evaluation, so
all three produce identical pixels for identical inputs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from sage_ros.backends.base import FusionBackend
from sage_ros.imaging import (
    check_pair_sizes,
    fused_to_rgb8,
    infrared_to_grey,
    visible_to_ycrcb,
)


@dataclass
class FusionResult:
    fused_rgb: np.ndarray  # HxWx3 uint8, RGB order
    fused_y: np.ndarray  # HxW float32 in [0, 1]
    class_ids: np.ndarray | None  # HxW uint8, when the model has a segmentation head
    inference_ms: float  # time spent in the backend call alone


class FusionPipeline:
    """Pre-process, run the backend, post-process."""

    def __init__(self, backend: FusionBackend) -> None:
        self.backend = backend

    def fuse(self, ir: np.ndarray, vis_bgr: np.ndarray) -> FusionResult:
        """Fuse a registered pair.

        ir: HxW (or HxWx3 grey) uint8, or HxW float32 already normalised to [0, 1].
        vis_bgr: HxWx3 uint8 BGR (OpenCV order), HxWx4 BGRA, or HxW grey.
        """
        vis = visible_to_ycrcb(vis_bgr)
        ir_grey = infrared_to_grey(ir)
        check_pair_sizes(ir_grey, vis)
        start = time.perf_counter()
        out = self.backend.infer(vis.y, ir_grey)
        inference_ms = (time.perf_counter() - start) * 1000.0
        fused_y = np.clip(out.fused_y, 0.0, 1.0)
        return FusionResult(fused_to_rgb8(fused_y, vis), fused_y, out.class_ids, inference_ms)
