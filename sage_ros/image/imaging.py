"""Pure numpy/OpenCV image math of the SAGE pipeline (no torch, no ROS).

Everything here follows the released SAGE test pipeline (docs: SAGE_SPEC section 1):
the network sees the visible luminance and the infrared grey level, both in [0, 1], and colour
comes back from the visible image's chroma.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# BT.601 YCrCb -> RGB coefficients used by the upstream saving step (Cr/Cb centred on 0.5).
_CR_TO_R = 1.403
_CR_TO_G = -0.714
_CB_TO_G = -0.344
_CB_TO_B = 1.773


class ImageInputError(ValueError):
    """An input image that the pipeline cannot use (wrong shape, dtype, size, NaN...)."""


@dataclass(frozen=True)
class VisibleChannels:
    """A visible frame split as the network wants it: luminance plus the chroma kept for colour."""

    y: np.ndarray  # HxW float32 in [0, 1]
    cr: np.ndarray  # HxW float32 in [0, 1]
    cb: np.ndarray  # HxW float32 in [0, 1]


def _check_image(name: str, image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray):
        raise ImageInputError(f"{name}: expected a numpy array, got {type(image).__name__}")
    if image.size == 0 or image.ndim not in (2, 3):
        raise ImageInputError(f"{name}: expected an HxW or HxWxC image, got shape {image.shape}")


def visible_to_ycrcb(vis_bgr: np.ndarray) -> VisibleChannels:
    """Split an 8-bit BGR (or grey) visible image into Y, Cr, Cb scaled to [0, 1].

    Uses OpenCV's integer BT.601 conversion on the 8-bit image, as the released pipeline does,
    so the luminance fed to the network is bit-identical to upstream's.
    """
    _check_image("visible image", vis_bgr)
    if vis_bgr.dtype != np.uint8:
        raise ImageInputError(f"visible image: expected uint8, got {vis_bgr.dtype}")
    if vis_bgr.ndim == 2 or vis_bgr.shape[2] == 1:
        # The same arithmetic as the colour path below, so a mono8 camera and the same frame sent as bgr8 give
        # the same bytes.
        grey = vis_bgr.reshape(vis_bgr.shape[:2]).astype(np.float32) * np.float32(1.0 / 255.0)
        half = np.full_like(grey, 128.0 / 255.0)
        return VisibleChannels(grey, half, half)
    if vis_bgr.shape[2] == 4:
        vis_bgr = cv2.cvtColor(vis_bgr, cv2.COLOR_BGRA2BGR)
    elif vis_bgr.shape[2] != 3:
        raise ImageInputError(f"visible image: expected 1, 3 or 4 channels, got {vis_bgr.shape[2]}")
    ycrcb = cv2.cvtColor(vis_bgr, cv2.COLOR_BGR2YCrCb).astype(np.float32) * np.float32(1.0 / 255.0)
    return VisibleChannels(ycrcb[..., 0], ycrcb[..., 1], ycrcb[..., 2])


def infrared_to_grey(ir: np.ndarray) -> np.ndarray:
    """Infrared frame -> HxW float32 grey in [0, 1].

    Accepts 8-bit grey or 3-channel (grey stored as BGR, as in the SAGE samples), or float in [0, 1]
    (already normalised, e.g. mono16 after windowing). NaN/inf are rejected rather than propagated.
    """
    _check_image("infrared image", ir)
    if ir.ndim == 3:
        if ir.shape[2] == 1:
            ir = ir[..., 0]
        elif ir.shape[2] in (3, 4):
            code = cv2.COLOR_BGR2GRAY if ir.shape[2] == 3 else cv2.COLOR_BGRA2GRAY
            ir = cv2.cvtColor(ir, code)
        else:
            raise ImageInputError(f"infrared image: expected 1, 3 or 4 channels, got {ir.shape[2]}")
    if ir.dtype == np.uint8:
        return ir.astype(np.float32) * np.float32(1.0 / 255.0)
    if ir.dtype in (np.float32, np.float64):
        if not np.isfinite(ir).all():
            raise ImageInputError("infrared image: contains NaN or inf values")
        return np.clip(ir, 0.0, 1.0).astype(np.float32, copy=False)
    raise ImageInputError(
        f"infrared image: expected uint8 or float in [0, 1], got {ir.dtype}"
        " (normalise 16-bit thermal first, see sage_ros.node.thermal)"
    )


def check_pair_sizes(ir_grey: np.ndarray, vis: VisibleChannels) -> None:
    """Raise a clear error when the two modalities are not the same size (not registered)."""
    if ir_grey.shape != vis.y.shape:
        raise ImageInputError(
            f"infrared {ir_grey.shape[1]}x{ir_grey.shape[0]} and visible "
            f"{vis.y.shape[1]}x{vis.y.shape[0]} differ in size: register or resize them first"
        )


def unit_to_uint8(x: np.ndarray) -> np.ndarray:
    """[0, 1] float -> uint8 the way the upstream saving step does it: floor(255 x + 0.5), clamped."""
    return np.floor(np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def ycrcb_to_rgb(y: np.ndarray, cr: np.ndarray, cb: np.ndarray) -> np.ndarray:
    """Fused Y + visible chroma (all [0, 1]) -> HxWx3 float32 RGB in [0, 1] (SAGE_SPEC section 1)."""
    dcr = cr - np.float32(0.5)
    dcb = cb - np.float32(0.5)
    rgb = np.empty((*y.shape, 3), dtype=np.float32)
    rgb[..., 0] = y + _CR_TO_R * dcr
    rgb[..., 1] = y + _CR_TO_G * dcr + _CB_TO_G * dcb
    rgb[..., 2] = y + _CB_TO_B * dcb
    np.clip(rgb, 0.0, 1.0, out=rgb)
    return rgb


def fused_to_rgb8(fused_y: np.ndarray, vis: VisibleChannels, block_pixels: int = 1 << 16) -> np.ndarray:
    """The final fused colour image, HxWx3 uint8 RGB, exactly as upstream writes it.

    Same arithmetic as `unit_to_uint8(ycrcb_to_rgb(...))`, operation for operation in float32, one
    channel at a time in place, over bands of rows of about `block_pixels` pixels: a band's temporaries
    stay in the CPU cache between the seven passes (at 1280x720 whole-frame passes took 16-21 ms here,
    bands of 64 k pixels 5-6 ms; every element is computed the same way, so the bytes are identical).
    """
    if fused_y.shape != vis.y.shape:
        raise ImageInputError(f"fused Y {fused_y.shape} does not match visible {vis.y.shape}")
    y = fused_y.astype(np.float32, copy=False)
    height, width = y.shape
    out = np.empty((height, width, 3), dtype=np.uint8)
    rows = max(1, min(height, int(block_pixels) // max(1, width)))
    chan = np.empty((rows, width), np.float32)
    term = np.empty_like(chan)
    dcr = np.empty_like(chan)
    dcb = np.empty_like(chan)
    for top in range(0, height, rows):
        band = slice(top, min(height, top + rows))
        n = band.stop - band.start
        yb, c, t, r, b = y[band], chan[:n], term[:n], dcr[:n], dcb[:n]
        np.subtract(vis.cr[band], np.float32(0.5), out=r)
        np.subtract(vis.cb[band], np.float32(0.5), out=b)
        for index, (k_cr, k_cb) in enumerate(((_CR_TO_R, 0.0), (_CR_TO_G, _CB_TO_G), (0.0, _CB_TO_B))):
            if k_cr:
                np.multiply(r, k_cr, out=t)
                np.add(yb, t, out=c)
            else:
                c[...] = yb
            if k_cb:
                np.multiply(b, k_cb, out=t)
                c += t
            np.clip(c, 0.0, 1.0, out=c)
            c *= np.float32(255.0)
            c += np.float32(0.5)
            np.floor(c, out=c)
            out[band, :, index] = c
    return out
