"""Bring the thermal frame into the RGB camera's pixel grid (pure OpenCV, no ROS).

Datasets ship registered pairs; real rigs do not. For a rigid side-by-side rig a 3x3 homography from
calibration (thermal pixel -> RGB pixel) covers the common case. Without one, the thermal frame is
only resized, which is right solely when both cameras see the same field of view; a different aspect
ratio proves they do not, so that case is refused with a message saying what to configure.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from sage_ros.image.imaging import ImageInputError

__all__ = ["Registration", "RegistrationError", "parse_homography"]


class RegistrationError(ImageInputError):
    """The thermal frame cannot be mapped onto the RGB frame with the current settings."""


def parse_homography(values: Sequence[float] | np.ndarray | None) -> np.ndarray | None:
    """9 numbers (row-major, as a ROS double-array parameter) or a 3x3 array -> 3x3 float64, or None.

    An empty sequence or None means "no homography". The matrix is scaled so H[2,2] == 1.
    """
    if values is None:
        return None
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        return None
    if arr.size != 9:
        raise ValueError(f"homography needs 9 numbers (row-major 3x3), got {arr.size}")
    h = arr.reshape(3, 3)
    if not np.isfinite(h).all():
        raise ValueError("homography contains NaN or inf")
    if abs(np.linalg.det(h)) < 1e-12:
        raise ValueError("homography is singular (determinant ~0): check the calibration")
    if abs(h[2, 2]) > 1e-12:
        h = h / h[2, 2]
    return h


class Registration:
    """Maps HxW thermal images (any dtype OpenCV warps: uint8, uint16, float32) onto the RGB grid."""

    def __init__(
        self, homography: Sequence[float] | np.ndarray | None = None, aspect_tolerance: float = 0.02
    ) -> None:
        self.homography = parse_homography(homography)
        if aspect_tolerance < 0:
            raise ValueError(f"aspect_tolerance must be >= 0, got {aspect_tolerance}")
        self.aspect_tolerance = aspect_tolerance

    def check(self, thermal_hw: tuple[int, int], rgb_hw: tuple[int, int]) -> None:
        """Raise RegistrationError if resize-only registration would distort the picture."""
        if self.homography is not None:
            return
        th, tw = thermal_hw
        rh, rw = rgb_hw
        ta, ra = tw / th, rw / rh
        if abs(ta - ra) > self.aspect_tolerance * ra:
            raise RegistrationError(
                f"thermal {tw}x{th} (aspect {ta:.3f}) and RGB {rw}x{rh} (aspect {ra:.3f}) differ in "
                "aspect ratio and no homography is set: set registration.homography (3x3, thermal "
                "pixels -> RGB pixels, from calibration) or crop one camera to match"
            )

    def to_rgb_grid(self, thermal: np.ndarray, rgb_hw: tuple[int, int]) -> np.ndarray:
        """Warp (homography) or resize (same aspect) `thermal` to rgb_hw = (height, width)."""
        if thermal.ndim != 2:
            raise RegistrationError(f"thermal image must be HxW, got shape {thermal.shape}")
        rh, rw = int(rgb_hw[0]), int(rgb_hw[1])
        if self.homography is not None:
            # Pixels outside the thermal field of view become 0 (coldest): the fused image there is
            # driven by the visible camera alone.
            return cv2.warpPerspective(
                thermal, self.homography, (rw, rh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
            )
        self.check(thermal.shape, (rh, rw))
        if thermal.shape == (rh, rw):
            return thermal
        # INTER_AREA averages when shrinking (no aliasing); INTER_LINEAR when enlarging.
        interp = cv2.INTER_AREA if thermal.shape[0] > rh else cv2.INTER_LINEAR
        return cv2.resize(thermal, (rw, rh), interpolation=interp)
