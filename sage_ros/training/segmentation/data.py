"""Training frames for the segmentation network, at its own working resolution (1/4 of 640x480).

The network averages its inputs down by 4 before anything else, so training can happen entirely at
160x120: a full-resolution MSRS pair becomes one 160x120 frame (4x4 area averages of the fused Y,
visible Y and IR, exactly what the graph's AveragePool computes), and each 128x128 thumbnail of the
MSRS *train* split (a whole 640x480 frame squashed) is resized to 160x120 and fused there by the
student (cached on disk once). Targets are built from the human boxes at that resolution.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from sage_ros.image.imaging import infrared_to_grey, visible_to_ycrcb
from sage_ros.networks.seg_net import downsample
from sage_ros.training.segmentation.boxes import IGNORE, MSRS_YOLO_TO_ID, box_dir, thermal_region, yolo_rows
from sage_ros.training.segmentation.data import FusedCache, SegSample, _light_from_name, checkpoint_tag

log = logging.getLogger(__name__)

LOW_HW = (120, 160)
TARGET_MODES = ("box", "thermal")


@dataclass
class LowFrame:
    """One frame at the network's working resolution; boxes (K, 5): class id, x0, y0, x1, y1 in [0, 1]."""

    name: str
    light: str
    source: str  # 'msrs' (full-resolution pair) or 'thumb' (128x128 train thumbnail)
    inputs: dict[str, np.ndarray]  # 'fused' | 'visible' | 'infrared' -> (h, w) float32 in [0, 1]
    boxes: np.ndarray
    label: np.ndarray | None = None  # (h, w) uint8 pixel labels (IGNORE where unknown), when the data has them


def _norm_boxes(boxes, width: int, height: int) -> np.ndarray:
    rows = [(b.class_id, b.x0 / width, b.y0 / height, b.x1 / width, b.y1 / height) for b in boxes]
    return np.asarray(rows, np.float32).reshape(-1, 5)


def frames_from_samples(
    samples: Sequence[SegSample], box_source: str = "fusion", pixel_labels: bool = False
) -> list[LowFrame]:
    """Full-resolution samples -> frames averaged down by 4 (as the exported graph does).

    With `pixel_labels` the samples' masks are real labels: each 4x4 cell takes the label at its centre.
    """
    frames = []
    for s in samples:
        h, w = s.mask.shape
        inputs = {k: downsample(v) for k, v in s.inputs.items()}
        label = None
        if pixel_labels:
            lh, lw = next(iter(inputs.values())).shape
            label = np.ascontiguousarray(s.mask[2::4, 2::4][:lh, :lw])
        frames.append(LowFrame(s.name, s.light, "msrs", inputs, _norm_boxes(s.boxes.get(box_source, []), w, h),
                               label))
    return frames


def load_thumbnails(
    root: str | Path,
    checkpoint: str | Path,
    box_source: str = "fusion",
    cache_root: str | Path | None = None,
    threads: int = 1,
    limit: int | None = None,
) -> list[LowFrame]:
    """The 128x128 MSRS train thumbnails resized to 160x120 and fused there (fused Y cached on disk).

    Thumbnails without a box file in `box_source` are skipped; an empty file is a frame with no object.
    """
    root = Path(root)
    names = sorted(p.stem for p in (root / "ir").glob("*.png"))
    if limit is not None:
        names = names[:limit]
    cache = FusedCache(checkpoint, cache_root, threads=threads)
    cache.root = cache.root.parent / f"thumbs_{LOW_HW[1]}x{LOW_HW[0]}_{checkpoint_tag(Path(checkpoint))}"
    frames = []
    size = (LOW_HW[1], LOW_HW[0])
    for name in names:
        box_file = box_dir(root, box_source) / f"{name}.txt"
        if not box_file.is_file():
            continue
        ir_u8 = cv2.imread(str(root / "ir" / f"{name}.png"), cv2.IMREAD_GRAYSCALE)
        vis = cv2.imread(str(root / "vi" / f"{name}.png"), cv2.IMREAD_COLOR)
        if ir_u8 is None or vis is None:
            log.warning("skipping thumbnail %s: unreadable image", name)
            continue
        ir_u8 = cv2.resize(ir_u8, size, interpolation=cv2.INTER_LINEAR)
        vis = cv2.resize(vis, size, interpolation=cv2.INTER_LINEAR)
        vis_y = visible_to_ycrcb(vis).y
        ir = infrared_to_grey(ir_u8)
        fused = cache.get(name, vis_y, ir)
        frames.append(LowFrame(name, _light_from_name(name), "thumb",
                               {"fused": fused, "visible": vis_y, "infrared": ir}, _float_boxes(box_file)))
    return frames


def _float_boxes(path: Path) -> np.ndarray:
    # Normalised YOLO boxes kept as floats (read_yolo rounds to whole pixels, too coarse at 160x120);
    # the lines are read by the same parser as every other YOLO file, so a malformed one is an error.
    rows = []
    for yolo_class, cx, cy, bw, bh in yolo_rows(path.read_text(), str(path)):
        cls = MSRS_YOLO_TO_ID.get(yolo_class)
        if cls is None:
            continue
        rows.append((cls, max(cx - bw / 2, 0.0), max(cy - bh / 2, 0.0), min(cx + bw / 2, 1.0), min(cy + bh / 2, 1.0)))
    return np.asarray(rows, np.float32).reshape(-1, 5)


def build_target(
    boxes: np.ndarray,
    hw: tuple[int, int],
    mode: str = "box",
    band: float = 0.5,
    ir: np.ndarray | None = None,
    separation: float = 0.0,
    lines: np.ndarray | None = None,
    gap_lines: float = 0.0,
) -> np.ndarray:
    """Boxes (normalised) -> (h, w) uint8 target: 0 background, class ids, IGNORE where unsure.

    'box': every pixel whose centre is inside a box gets its class, except a ring of `band` pixels on
    either side of the box's outline (human boxes are a few pixels loose or tight), which is IGNORE.
    'thermal': inside each box only the warm pixels (Otsu on the IR crop, falling back to the whole
    box when implausible) get the class, the rest of the box is IGNORE. Larger boxes are painted first
    so a smaller (usually nearer) object wins; pixels outside every box are background.

    `separation` > 0: where a box lies on a larger object of the same class (parked cars in a row,
    people walking together), the pixels within `separation` pixels outside its outline become
    background. The metric counts one component per object, and a filled-box target merges touching
    objects of one class into one component (the target's own score on MSRS drops from 0.96 to 0.83
    mean F1 through merging alone); these lines teach the network to leave a gap. `lines`, an (h, w)
    bool array, receives where they were drawn (for a heavier loss weight there).
    """
    if mode not in TARGET_MODES:
        raise ValueError(f"target mode must be one of {TARGET_MODES}, not {mode!r}")
    h, w = hw
    target = np.zeros((h, w), np.uint8)
    if len(boxes) == 0:
        return target
    ys = np.arange(h, dtype=np.float32) + 0.5
    xs = np.arange(w, dtype=np.float32) + 0.5
    order = np.argsort(-(boxes[:, 3] - boxes[:, 1]) * (boxes[:, 4] - boxes[:, 2]))
    labelled = np.zeros((h, w), bool)
    for k in order:
        cls, x0, y0, x1, y1 = boxes[k]
        x0, x1, y0, y1 = x0 * w, x1 * w, y0 * h, y1 * h
        # Distance of each pixel centre inside the box to its outline (negative outside).
        dx = np.minimum(xs - x0, x1 - xs)
        dy = np.minimum(ys - y0, y1 - ys)
        inside = (dy[:, None] > 0) & (dx[None, :] > 0)
        depth = np.minimum(dy[:, None], dx[None, :])
        ring = np.abs(depth) <= band
        core = inside & ~ring
        if mode == "thermal" and ir is not None and core.any():
            rows, cols = np.nonzero(inside)
            window = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
            crop = np.clip(ir[window] * 255.0, 0, 255).astype(np.uint8)
            warm = np.zeros((h, w), bool)
            warm[window] = thermal_region(crop, 0.15, 0.9, 12.0)
            ring = ring | (core & ~warm)
            core = core & warm
        target[ring & ~labelled] = IGNORE
        if separation > 0:
            line = (depth <= 0) & (depth > -separation) & (target == int(cls)) & labelled
            target[line] = 0
            labelled &= ~line
            if lines is not None:
                lines |= line
        target[core] = int(cls)
        labelled |= core
        if lines is not None:
            lines &= ~core
    if gap_lines > 0 and len(boxes) > 1:
        _draw_gap_lines(target, boxes, hw, gap_lines, lines)
    return target


def _draw_gap_lines(target: np.ndarray, boxes: np.ndarray, hw: tuple[int, int], gap: float,
                    lines: np.ndarray | None) -> None:
    """Background lines in the gaps between facing boxes of one class (build_target's `gap_lines`)."""
    h, w = hw
    px = boxes.copy()
    px[:, [1, 3]] *= w
    px[:, [2, 4]] *= h
    for i in range(len(px)):
        for j in range(i + 1, len(px)):
            if px[i, 0] != px[j, 0]:
                continue
            _, x0i, y0i, x1i, y1i = px[i]
            _, x0j, y0j, x1j, y1j = px[j]
            for axis in (0, 1):
                if axis == 0:  # side by side: a vertical line
                    near, far = (x1i, x0j) if x0i <= x0j else (x1j, x0i)
                    shared0, shared1 = max(y0i, y0j), min(y1i, y1j)
                else:  # one above the other: a horizontal line
                    near, far = (y1i, y0j) if y0i <= y0j else (y1j, y0i)
                    shared0, shared1 = max(x0i, x0j), min(x1i, x1j)
                width = far - near
                if width < 0.0 or width > gap or shared1 - shared0 < 1.0:
                    continue  # overlapping (separation's case), too far apart, or barely facing
                centre = int(np.clip(round(0.5 * (near + far) - 0.5), 0, (w if axis == 0 else h) - 1))
                start, stop = int(np.ceil(shared0 - 0.5)), int(np.floor(shared1 - 0.5)) + 1
                where = (slice(start, stop), centre) if axis == 0 else (centre, slice(start, stop))
                target[where] = 0
                if lines is not None:
                    lines[where] = True
