"""Image pair in, fused colour image (and, on request, class ids) out: the imaging math around the students.

The single fusion path of `sage-ros fuse`, the node and bag evaluation (identical pixels for identical inputs);
`builder.build_pipeline` decides what goes into it. Resolution `rgb` fuses at the RGB size (the released
pipeline, bit for bit); `thermal` (default) at about the thermal camera's pixel count, below the RGB size with
the `reduced` (scale-adapted) student when there is one, then adds the RGB camera's detail back
(`upsample_with_detail`); `WxH` fixes the size (docs/speed.md). Students start on first use.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from sage_ros.backends.base import BackendError, FusionBackend
from sage_ros.image.imaging import (
    ImageInputError,
    check_pair_sizes,
    fused_to_rgb8,
    infrared_to_grey,
    visible_to_ycrcb,
)

log = logging.getLogger(__name__)

RESOLUTION_MODES = ("thermal", "rgb")
DEFAULT_RESOLUTION = "thermal"
MIN_SIDE = 16  # the student pools twice; below this there is nothing left to fuse


def parse_resolution(value: str | tuple[int, int]) -> str | tuple[int, int]:
    """'thermal' | 'rgb' | 'WxH' -> the mode name, or (height, width). Raises ValueError with the rule."""
    if isinstance(value, tuple):
        h, w = (int(v) for v in value)
    else:
        text = str(value).strip().lower()
        if text in RESOLUTION_MODES:
            return text
        parts = text.split("x")
        try:
            w, h = (int(p) for p in parts)
        except ValueError:
            raise ValueError(
                f"resolution {value!r} is invalid: use thermal, rgb or WIDTHxHEIGHT (e.g. 640x360)"
            ) from None
    if min(h, w) < MIN_SIDE:
        raise ValueError(f"resolution {w}x{h} is too small: both sides must be >= {MIN_SIDE}")
    return (h, w)


def fusion_size(
    resolution: str | tuple[int, int], rgb_hw: tuple[int, int], thermal_hw: tuple[int, int] | None = None
) -> tuple[int, int]:
    """(height, width) the model runs at for an RGB frame of rgb_hw and a thermal camera of thermal_hw.

    `thermal`: the RGB frame's aspect with (about) the thermal camera's pixel count, never more than the
    RGB frame itself (a higher-resolution thermal camera gains nothing from upsampling the visible).
    A fixed (height, width) is capped at the RGB frame's size, side by side.
    """
    rh, rw = int(rgb_hw[0]), int(rgb_hw[1])
    if isinstance(resolution, tuple):
        # Never above the RGB frame: upsampling the inputs adds cost and no information.
        return min(int(resolution[0]), rh), min(int(resolution[1]), rw)
    if resolution == "rgb" or thermal_hw is None:
        return rh, rw
    th, tw = int(thermal_hw[0]), int(thermal_hw[1])
    scale = ((th * tw) / float(rh * rw)) ** 0.5
    if scale >= 1.0:
        return rh, rw
    return max(MIN_SIDE, round(rh * scale)), max(MIN_SIDE, round(rw * scale))


def resize_area(image: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Downsample with pixel averaging (no aliasing); identity at the same size."""
    if image.shape[:2] == tuple(hw):
        return image
    return cv2.resize(image, (hw[1], hw[0]), interpolation=cv2.INTER_AREA)


def finest_band(image: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """The image minus its Gaussian blur: the band the detail gain weighs and `unsharp` scales."""
    return image - cv2.GaussianBlur(image, (0, 0), sigma)


def detail_gain(fused_small: np.ndarray, vis_y_small: np.ndarray, sigma: float = 1.0,
                fused_band: np.ndarray | None = None) -> float:
    """How strongly the student passes the visible image's finest detail into its output (about 1).

    Least-squares slope of the fused image's finest band on the visible Y's finest band, both measured
    at the fusion size (band = image minus its Gaussian blur), clamped to [0, 1.5]. Applying the
    student's own gain to the detail it never saw keeps the final image's sharpness where full-resolution
    fusion puts it (measured: AG within 1.5 % of full resolution, 4 % too sharp with a gain of 1).
    """
    band_f = finest_band(fused_small, sigma) if fused_band is None else fused_band
    band_y = finest_band(vis_y_small, sigma)
    den = float(np.dot(band_y.ravel(), band_y.ravel()))
    if den <= 1e-9:
        return 1.0  # a flat visible image has no detail to weigh
    return float(np.clip(np.dot(band_f.ravel(), band_y.ravel()) / den, 0.0, 1.5))


def unsharp(image: np.ndarray, amount: float, sigma: float = 1.0, band: np.ndarray | None = None) -> np.ndarray:
    """image + amount * finest_band(image): a negative amount softens the finest band, a positive one sharpens
    it; 0 returns the image itself. Not clipped (the upsampler clips the final image). band: that band, when
    the caller has it already."""
    if amount == 0.0:
        return image
    return image + np.float32(amount) * (finest_band(image, sigma) if band is None else band)


def upsample_with_detail(
    fused_small: np.ndarray, vis_y: np.ndarray, vis_y_small: np.ndarray, gain: float | None = None
) -> np.ndarray:
    """Fused Y at low resolution -> full resolution, with the visible Y's high-frequency layer added back.

    detail = vis_y - up(vis_y_small) is exactly what the downsampling removed from the visible luminance;
    the fused image at full resolution would carry it (the thermal camera has none at that scale), scaled
    by the student's own detail gain (`detail_gain`, unless given).
    """
    rh, rw = vis_y.shape
    gain = detail_gain(fused_small, vis_y_small) if gain is None else gain
    detail = vis_y - cv2.resize(vis_y_small, (rw, rh), interpolation=cv2.INTER_LINEAR)
    up = cv2.resize(fused_small, (rw, rh), interpolation=cv2.INTER_LINEAR)
    if gain != 1.0:
        detail *= np.float32(gain)
    up += detail
    np.clip(up, 0.0, 1.0, out=up)
    return up


class Student:
    """One fusion network on one backend, started on first use (thread-safe) and closed once.

    make: builds the backend (e.g. `lambda: create_backend(config)`), or an already started backend.
    detail_gain / detail_reference: below the RGB size, the detail layer's gain for this network (None:
    measured per frame, `detail_gain`); with a reference the fixed gain is scaled by min(1, measured /
    reference), the network's mean measured gain on its training frames (scale_student.detail_reference).
    small_unsharp: below the RGB size, the `unsharp` amount applied to the network's output before the
    upsampler (its training calibrates it: a fixed in-graph sharpening chosen at full size overshoots there).
    """

    def __init__(self, make: Callable[[], FusionBackend] | FusionBackend, label: str = "student",
                 detail_gain: float | None = None, detail_reference: float | None = None,
                 small_unsharp: float = 0.0) -> None:
        self.label = label
        self.detail_gain = detail_gain
        self.detail_reference = detail_reference
        self.small_unsharp = float(small_unsharp)
        self._make = None if isinstance(make, FusionBackend) else make
        self._backend: FusionBackend | None = make if isinstance(make, FusionBackend) else None
        self._lock = threading.Lock()

    @property
    def started(self) -> bool:
        return self._backend is not None

    @property
    def backend(self) -> FusionBackend:
        """The running backend, started now if this is its first use."""
        with self._lock:
            if self._backend is None:
                if self._make is None:
                    raise BackendError(f"the {self.label} was closed")
                self._backend = self._make()
                note = getattr(self._backend, "precision_note", None)
                log.info("%s started: %s%s", self.label, self._backend.description, f" ({note})" if note else "")
            return self._backend

    def gain_for(self, fused_small: np.ndarray, y_small: np.ndarray, fused_band: np.ndarray | None = None) -> float:
        """The detail layer's gain for this frame, from the network's own output (before `small_unsharp`)."""
        if self.detail_gain is None:
            return detail_gain(fused_small, y_small, fused_band=fused_band)
        if self.detail_reference is None:
            return self.detail_gain
        return self.detail_gain * min(1.0, detail_gain(fused_small, y_small, fused_band=fused_band)
                                      / self.detail_reference)

    def below_rgb_size(self, fused_small: np.ndarray, vis_y: np.ndarray, y_small: np.ndarray) -> np.ndarray:
        """This network's output at the fusion size -> the fused Y at the RGB size (gain, softening, upsampler)."""
        # The measured gain and the softening weigh the same band of the output: one blur per frame for both.
        band = finest_band(fused_small) if self.small_unsharp else None
        gain = self.gain_for(fused_small, y_small, band)
        return upsample_with_detail(unsharp(fused_small, self.small_unsharp, band=band), vis_y, y_small, gain)

    def close(self) -> None:
        with self._lock:
            backend, self._backend = self._backend, None
            self._make = None  # closed for good: a late call must not start it again
        if backend is not None:
            backend.close()


@dataclass
class FusionResult:
    fused_rgb: np.ndarray  # HxWx3 uint8, RGB order, at the visible image's size
    fused_y: np.ndarray  # HxW float32 in [0, 1], at the visible image's size
    class_ids: np.ndarray | None  # HxW uint8 at the visible image's size, when asked for and available
    inference_ms: float  # time spent in the student's backend call alone
    fusion_hw: tuple[int, int] | None = None  # (height, width) the student ran at
    # With `classes=False` and a segmentation stage: computes the class ids on request (the node publishes
    # the fused image first, then segments only for its mask/overlay subscribers).
    segment_later: Callable[[], np.ndarray] | None = None


class FusionPipeline:
    """Pre-process, run a student, post-process; class ids from the segmentation stage on request.

    student: the main student (a `Student` or a started backend), used at the RGB size and, without a
    `reduced` one, below it. segmenter: callable (visible Y at the RGB size, IR at the size it was fused at)
    -> class ids at the RGB size, or None (no class ids). notes: start-up lines saying what was chosen and why.
    """

    def __init__(self, student: Student | FusionBackend, resolution: str | tuple[int, int] = DEFAULT_RESOLUTION,
                 reduced: Student | None = None,
                 segmenter: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
                 notes: tuple[str, ...] = ()) -> None:
        self.student = student if isinstance(student, Student) else Student(student)
        self.resolution = parse_resolution(resolution)
        self.reduced = reduced
        self.segmenter = segmenter
        self.notes = notes

    @property
    def description(self) -> str:
        """The backends started so far (a student starts with the first pair it fuses)."""
        started = [s for s in (self.student, self.reduced) if s is not None and s.started]
        if not started:
            return "not started yet (each student starts with the first pair it fuses)"
        return " + ".join(s.backend.description if s is self.student else f"{s.label} on {s.backend.description}"
                          for s in started)

    def fusion_hw(self, rgb_hw: tuple[int, int], thermal_hw: tuple[int, int] | None) -> tuple[int, int]:
        return fusion_size(self.resolution, rgb_hw, thermal_hw)

    def close(self) -> None:
        for part in (self.student, self.reduced, self.segmenter):
            close = getattr(part, "close", None)
            if close is not None:
                close()

    def fuse(
        self, ir: np.ndarray, vis_bgr: np.ndarray, thermal_hw: tuple[int, int] | None = None, classes: bool = True
    ) -> FusionResult:
        """Fuse a registered pair.

        ir: HxW (or HxWx3 grey) uint8, or HxW float32 already normalised to [0, 1], either at the visible
        image's size or already at the fusion size (the node registers straight onto that grid).
        vis_bgr: HxWx3 uint8 BGR (OpenCV order), HxWx4 BGRA, or HxW grey.
        thermal_hw: the thermal camera's native (height, width) for `resolution=thermal`; default: ir's size.
        classes: whether class ids are wanted now; False defers them to `result.segment_later`.
        """
        vis = visible_to_ycrcb(vis_bgr)
        ir_grey = infrared_to_grey(ir)
        rgb_hw = vis.y.shape
        fhw = self.fusion_hw(rgb_hw, thermal_hw or ir_grey.shape)
        if fhw == rgb_hw:
            # The released pipeline, operation for operation (bit-identical to upstream's outputs).
            check_pair_sizes(ir_grey, vis)
            fused_y, inference_ms = self._run(self.student, vis.y, ir_grey)
        else:
            if ir_grey.shape == rgb_hw:
                ir_grey = resize_area(ir_grey, fhw)
            elif ir_grey.shape != fhw:
                raise ImageInputError(
                    f"infrared {ir_grey.shape[1]}x{ir_grey.shape[0]} is neither the visible size "
                    f"{rgb_hw[1]}x{rgb_hw[0]} nor the fusion size {fhw[1]}x{fhw[0]}: register it first"
                )
            y_small = resize_area(vis.y, fhw)
            student = self.reduced or self.student
            fused_small, inference_ms = self._run(student, y_small, ir_grey)
            fused_y = student.below_rgb_size(fused_small, vis.y, y_small)
        result = FusionResult(fused_to_rgb8(fused_y, vis), fused_y, None, inference_ms, fhw)
        if self.segmenter is not None:
            # The IR as fused (at the fusion size below the RGB size): the stage resizes it straight to its
            # working size, never through an RGB-size copy.
            segmenter, vis_y, ir_fused = self.segmenter, vis.y, ir_grey

            def segment() -> np.ndarray:
                return segmenter(vis_y, ir_fused)

            if classes:
                result.class_ids = segment()
            else:
                result.segment_later = segment
        return result

    @staticmethod
    def _run(student: Student, y: np.ndarray, ir: np.ndarray) -> tuple[np.ndarray, float]:
        backend = student.backend  # started outside the timing on first use
        start = time.perf_counter()
        out = backend.infer(y, ir)
        inference_ms = (time.perf_counter() - start) * 1000.0
        return np.clip(out.fused_y, 0.0, 1.0), inference_ms
