"""One synchronised pair of image messages in, the fused frame (and class ids, overlay) out. No ROS import.

Works on any objects with sensor_msgs/Image fields, so the node, bag tools and tests share it.
Order matters: thermal is normalised at its native resolution (percentiles are not skewed by the
zero border a homography warp adds), then registered onto the RGB grid, then fused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from sage_ros.image.encodings import (
    THERMAL_ENCODINGS,
    InvalidPixelsError,
    UnsupportedEncodingError,
    decode_msg,
    to_bgr8,
)
from sage_ros.image.registration import Registration, RegistrationError
from sage_ros.image.thermal import ThermalNormalizer
from sage_ros.pipeline import FusionPipeline

# Drop causes, as counted in diagnostics; also the keys `classify_error` returns.
CAUSE_ENCODING = "unsupported_encoding"
CAUSE_MALFORMED = "malformed"
CAUSE_INVALID_PIXELS = "invalid_pixels"
CAUSE_SIZE_MISMATCH = "size_mismatch"
CAUSE_BAD_INPUT = "bad_input"


def classify_error(exc: Exception) -> str:
    """Map an input exception to a diagnostics drop cause."""
    from sage_ros.image.encodings import MalformedImageError

    if isinstance(exc, UnsupportedEncodingError):
        return CAUSE_ENCODING
    if isinstance(exc, MalformedImageError):
        return CAUSE_MALFORMED
    if isinstance(exc, InvalidPixelsError):
        return CAUSE_INVALID_PIXELS
    if isinstance(exc, RegistrationError):
        return CAUSE_SIZE_MISMATCH
    return CAUSE_BAD_INPUT


def scale_homography(h: np.ndarray, rgb_hw: tuple[int, int], grid_hw: tuple[int, int]) -> np.ndarray:
    """Thermal px -> RGB px homography turned into thermal px -> px of a resized RGB grid.

    Pixel centres map as OpenCV's resize maps them: x_grid = (x_rgb + 0.5) * sx - 0.5.
    """
    sy, sx = grid_hw[0] / rgb_hw[0], grid_hw[1] / rgb_hw[1]
    scale = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])
    return scale @ np.asarray(h, dtype=np.float64).reshape(3, 3)


@dataclass
class PairOutput:
    fused_rgb: np.ndarray  # HxWx3 uint8 RGB, at the RGB frame's size
    class_ids: np.ndarray | None  # HxW uint8
    inference_ms: float
    thermal_bounds: tuple[float, float] | None  # normalisation window used (input units)
    segment_later: Callable[[], np.ndarray] | None = None  # class ids on request (pipeline.FusionResult)


class PairProcessor:
    """Decode, normalise, register and fuse; raises ImageInputError subclasses on bad input."""

    def __init__(
        self,
        pipeline: FusionPipeline,
        normalizer: ThermalNormalizer | None = None,
        registration: Registration | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.normalizer = normalizer or ThermalNormalizer()
        self.registration = registration or Registration()
        self._scaled: Registration | None = None
        self._scaled_key: tuple | None = None

    def thermal_unit(self, msg: Any) -> np.ndarray:
        """Thermal message -> HxW float32 in [0, 1] at the thermal camera's resolution."""
        if msg.encoding not in THERMAL_ENCODINGS:
            raise UnsupportedEncodingError(
                f"thermal encoding {msg.encoding!r} not supported; use one of {', '.join(THERMAL_ENCODINGS)}"
            )
        return self.normalizer.normalize(decode_msg(msg))

    def visible_bgr(self, msg: Any) -> np.ndarray:
        return to_bgr8(decode_msg(msg), msg.encoding)

    def process(self, thermal_msg: Any, rgb_msg: Any, classes: bool = True) -> PairOutput:
        vis = self.visible_bgr(rgb_msg)
        rgb_hw = vis.shape[:2]
        thermal_hw = (int(thermal_msg.height), int(thermal_msg.width))
        self.registration.check(thermal_hw, rgb_hw)
        ir = self.thermal_unit(thermal_msg)
        # Register straight onto the grid the model runs at (the RGB grid, or a scaled copy of it for
        # fusion.resolution=thermal): one warp, and never a full-size IR that is shrunk again.
        fusion_hw = self.pipeline.fusion_hw(rgb_hw, thermal_hw)
        ir = self._registration_for(rgb_hw, fusion_hw).to_rgb_grid(ir, fusion_hw)
        result = self.pipeline.fuse(ir, vis, thermal_hw=thermal_hw, classes=classes)
        return PairOutput(result.fused_rgb, result.class_ids, result.inference_ms, self.normalizer.bounds,
                          result.segment_later)

    def _registration_for(self, rgb_hw: tuple[int, int], fusion_hw: tuple[int, int]) -> Registration:
        """The registration onto the fusion grid: the configured one, or its homography scaled to that grid."""
        if tuple(fusion_hw) == tuple(rgb_hw) or self.registration.homography is None:
            return self.registration  # resize-only registration targets any same-aspect size directly
        key = (tuple(rgb_hw), tuple(fusion_hw))
        if self._scaled_key != key:
            self._scaled = Registration(
                scale_homography(self.registration.homography, rgb_hw, fusion_hw),
                self.registration.aspect_tolerance,
            )
            self._scaled_key = key
        return self._scaled
