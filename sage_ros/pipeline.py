"""Image pair in, fused colour image (and class ids) out: imaging math around one backend call.

This is the single fusion path shared by `sage-ros fuse`, the ROS node and bag evaluation, so
all three produce identical pixels for identical inputs.

Fusion resolution (`resolution`): `thermal` (default) runs the model at about the thermal camera's own
pixel count in the RGB frame's aspect, then brings the fused luminance back to the RGB size keeping the
RGB camera's detail: the fused Y is upsampled and the visible Y's high-frequency layer (full-res Y minus
its own down-up-sampled copy) is added back; colour (chroma) is never downsampled. The student costs
~65 k multiply-adds per pixel, so a 640x512 thermal + 1280x720 RGB rig fuses 2.8x fewer pixels.
`rgb` fuses at the RGB size (the released pipeline, bit for bit); `WxH` fixes the size. When both
images already have the same size (folder pairs, MSRS), `thermal` and `rgb` are the same thing.
Scale-adapted student (`fusion.scale_adapted`, default on, sage_ros/model/scale_student.py): below the RGB
size the pipeline runs `ReducedScaleModel`, the released student fine-tuned to give there what the released one
gives at full resolution (same graph and cost); at the RGB size it always runs the released student.
Optional refiner (`fusion.refine`, sage_ros/model/refiner.py): a tiny learned stage at the RGB size after
the detail layer that brings the result a little closer to full-resolution fusion (+0.1 dB on the MSRS eval
split) for ~10 % more time; it only runs when the model ran below the RGB size.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from sage_ros.backends.base import FusionBackend
from sage_ros.image.imaging import (
    ImageInputError,
    VisibleChannels,
    check_pair_sizes,
    fused_to_rgb8,
    infrared_to_grey,
    visible_to_ycrcb,
)

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


def detail_gain(fused_small: np.ndarray, vis_y_small: np.ndarray, sigma: float = 1.0) -> float:
    """How strongly the student passes the visible image's finest detail into its output (about 1).

    Least-squares slope of the fused image's finest band on the visible Y's finest band, both measured
    at the fusion size (band = image minus its Gaussian blur), clamped to [0, 1.5]. Applying the
    student's own gain to the detail it never saw keeps the final image's sharpness where full-resolution
    fusion puts it (measured: AG within 1.5 % of full resolution, 4 % too sharp with a gain of 1).
    """
    band_f = fused_small - cv2.GaussianBlur(fused_small, (0, 0), sigma)
    band_y = vis_y_small - cv2.GaussianBlur(vis_y_small, (0, 0), sigma)
    den = float(np.dot(band_y.ravel(), band_y.ravel()))
    if den <= 1e-9:
        return 1.0  # a flat visible image has no detail to weigh
    return float(np.clip(np.dot(band_f.ravel(), band_y.ravel()) / den, 0.0, 1.5))


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


@dataclass(frozen=True)
class ReducedScaleModel:
    """What the pipeline runs when it fuses below the RGB size: the model, the detail gain that goes with it,
    and the class-id stage at the RGB size (sage_ros/model/seg_stage.py; None: the model's own ids, if any)."""

    backend: FusionBackend
    detail_gain: float | None = None  # None: measured per frame (`detail_gain`); a float: fixed
    segmenter: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None  # (fused Y, IR) at RGB size -> ids
    # With a fixed detail_gain: scaled by min(1, measured gain / this), the model's mean measured gain on its
    # training frames, so a scene whose fusion passes less fine detail gets less (scale_student.detail_reference).
    detail_reference: float | None = None

    def gain_for(self, fused_small: np.ndarray, y_small: np.ndarray) -> float | None:
        """The detail layer's gain for this frame (None: measured, as for the released student)."""
        if self.detail_gain is None or self.detail_reference is None:
            return self.detail_gain
        return self.detail_gain * min(1.0, detail_gain(fused_small, y_small) / self.detail_reference)

    def close(self) -> None:
        self.backend.close()


def reduced_scale_model(config, use: bool, threads: int = 0,
                        create: Callable | None = None) -> tuple[ReducedScaleModel | None, str]:
    """The scale-adapted student (+ its RGB-size segmentation) for the main model's BackendConfig, or None,
    with the start-up note that says which. `create` builds a backend from a config (default create_backend).
    Raises ScaleStudentError / BackendError / SegStageError for files that are missing or broken."""
    from sage_ros.backends import create_backend
    from sage_ros.model.scale_student import DETAIL_GAIN, reduced_scale_config
    from sage_ros.model.seg_stage import segmenter_beside

    plan = reduced_scale_config(config, use)
    if plan.config is None:
        return None, plan.why
    backend = (create or create_backend)(plan.config)
    try:
        segmenter = segmenter_beside(backend, plan.seg_graph, threads) if plan.seg_graph else None
    except Exception:
        backend.close()
        raise
    return ReducedScaleModel(backend, DETAIL_GAIN, segmenter, plan.detail_reference), plan.why


@dataclass
class FusionResult:
    fused_rgb: np.ndarray  # HxWx3 uint8, RGB order, at the visible image's size
    fused_y: np.ndarray  # HxW float32 in [0, 1], at the visible image's size
    class_ids: np.ndarray | None  # HxW uint8 at the visible image's size, when the model segments
    inference_ms: float  # time spent in the backend call alone
    fusion_hw: tuple[int, int] | None = None  # (height, width) the model ran at
    # Below the RGB size with `classes=False`: computes the class ids later on request (the node publishes the
    # fused image first, then segments for its mask/overlay subscribers). None when there is nothing to defer.
    segment_later: Callable[[], np.ndarray] | None = None


class FusionPipeline:
    """Pre-process, run the backend, post-process."""

    def __init__(
        self,
        backend: FusionBackend,
        resolution: str | tuple[int, int] = DEFAULT_RESOLUTION,
        refiner: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray] | None = None,
        reduced: ReducedScaleModel | None = None,
    ) -> None:
        self.backend = backend
        self.resolution = parse_resolution(resolution)
        self.refiner = refiner  # (fused Y, visible Y, IR) at the RGB size -> fused Y; None = detail layer only
        self.reduced = reduced  # None: `backend` at every size, with the measured detail gain

    def fusion_hw(self, rgb_hw: tuple[int, int], thermal_hw: tuple[int, int] | None) -> tuple[int, int]:
        return fusion_size(self.resolution, rgb_hw, thermal_hw)

    def fuse(
        self, ir: np.ndarray, vis_bgr: np.ndarray, thermal_hw: tuple[int, int] | None = None, classes: bool = True
    ) -> FusionResult:
        """Fuse a registered pair.

        ir: HxW (or HxWx3 grey) uint8, or HxW float32 already normalised to [0, 1], either at the visible
        image's size or already at the fusion size (the node registers straight onto that grid).
        vis_bgr: HxWx3 uint8 BGR (OpenCV order), HxWx4 BGRA, or HxW grey.
        thermal_hw: the thermal camera's native (height, width) for `resolution=thermal`; default: ir's size.
        classes: whether class ids are wanted now; False defers a separate segmentation stage to
        `result.segment_later` (the ids a one-graph model computes anyway are still returned).
        """
        vis = visible_to_ycrcb(vis_bgr)
        ir_grey = infrared_to_grey(ir)
        rgb_hw = vis.y.shape
        fhw = self.fusion_hw(rgb_hw, thermal_hw or ir_grey.shape)
        if fhw == rgb_hw:
            return self._fuse_full(ir_grey, vis)
        if ir_grey.shape == rgb_hw:
            ir_grey = resize_area(ir_grey, fhw)
        elif ir_grey.shape != fhw:
            raise ImageInputError(
                f"infrared {ir_grey.shape[1]}x{ir_grey.shape[0]} is neither the visible size "
                f"{rgb_hw[1]}x{rgb_hw[0]} nor the fusion size {fhw[1]}x{fhw[0]}: register it first"
            )
        y_small = resize_area(vis.y, fhw)
        backend = self.backend if self.reduced is None else self.reduced.backend
        start = time.perf_counter()
        out = backend.infer(y_small, ir_grey)
        inference_ms = (time.perf_counter() - start) * 1000.0
        fused_small = np.clip(out.fused_y, 0.0, 1.0)
        gain = None if self.reduced is None else self.reduced.gain_for(fused_small, y_small)
        fused_y = upsample_with_detail(fused_small, vis.y, y_small, gain)
        ir_full = None  # the IR as registered at the RGB size (bilinear from the fusion grid), when a stage needs it
        if self.refiner is not None:
            ir_full = cv2.resize(ir_grey, (rgb_hw[1], rgb_hw[0]), interpolation=cv2.INTER_LINEAR)
            fused_y = self.refiner(fused_y, vis.y, ir_full)
        segmenter = self.reduced.segmenter if self.reduced is not None else None
        segment_later = None
        if segmenter is not None:
            ir_small, ready_ir = ir_grey, ir_full

            def segment(fused=fused_y) -> np.ndarray:
                ir_rgb = ready_ir if ready_ir is not None else \
                    cv2.resize(ir_small, (rgb_hw[1], rgb_hw[0]), interpolation=cv2.INTER_LINEAR)
                return segmenter(fused, ir_rgb)

            class_ids = segment() if classes else None
            segment_later = None if classes else segment
        else:
            class_ids = out.class_ids
            if class_ids is not None:
                # Ids are labels: nearest neighbour, never interpolated.
                class_ids = cv2.resize(class_ids, (rgb_hw[1], rgb_hw[0]), interpolation=cv2.INTER_NEAREST)
        return FusionResult(fused_to_rgb8(fused_y, vis), fused_y, class_ids, inference_ms, fhw, segment_later)

    def _fuse_full(self, ir_grey: np.ndarray, vis: VisibleChannels) -> FusionResult:
        # The released pipeline, operation for operation (bit-identical to upstream's outputs).
        check_pair_sizes(ir_grey, vis)
        start = time.perf_counter()
        out = self.backend.infer(vis.y, ir_grey)
        inference_ms = (time.perf_counter() - start) * 1000.0
        fused_y = np.clip(out.fused_y, 0.0, 1.0)
        return FusionResult(fused_to_rgb8(fused_y, vis), fused_y, out.class_ids, inference_ms, vis.y.shape)
