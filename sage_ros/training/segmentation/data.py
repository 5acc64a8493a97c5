"""Frames for the segmentation network at its working resolution (1/4 of 640x480), and their targets.

A full-resolution MSRS pair becomes one 160x120 frame (4x4 area averages of the fused Y, visible Y and IR,
what the graph's AveragePool computes); each 128x128 MSRS train thumbnail is resized to 160x120 and fused
there. The frozen student's fused Y is cached on disk. Targets are built from the human boxes at that
resolution (docs/segmentation.md, "Training from boxes").
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from sage_ros.evaluation.boxes import MSRS_YOLO_TO_ID, Box, box_dir, msrs_lights, read_yolo, yolo_rows
from sage_ros.evaluation.components import IGNORE
from sage_ros.image.imaging import infrared_to_grey, visible_to_ycrcb
from sage_ros.image.tone_range import tone_bounds
from sage_ros.networks.seg_net import downsample
from sage_ros.paths import cache_dir
from sage_ros.training.datasets import read_pair, records_for

log = logging.getLogger(__name__)

LOW_HW = (120, 160)
FULL_HW = (480, 640)


@dataclass
class LowFrame:
    """One frame at the network's working resolution; boxes (K, 5): class id, x0, y0, x1, y1 in [0, 1]."""

    name: str
    light: str  # 'day' | 'night' | 'unknown'
    source: str  # 'msrs' (full-resolution pair) or 'thumb' (128x128 train thumbnail)
    inputs: dict[str, np.ndarray]  # 'fused' | 'visible' | 'infrared' -> (h, w) float32 in [0, 1]
    boxes: np.ndarray
    label: np.ndarray | None = None  # (h, w) uint8 pixel labels (IGNORE where unknown), when the data has them


@dataclass
class SplitData:
    frames: list[LowFrame]
    boxes: list[list[Box]]  # full-resolution human boxes of the scored annotation set, per frame


def checkpoint_tag(checkpoint: Path) -> str:
    """A short content hash of the student weights, so a new checkpoint never reuses stale fusions."""
    digest = hashlib.sha256()
    with checkpoint.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:12]


class FusedCache:
    """Fused Y of the frozen student per pair name, computed once and kept as .npz on disk."""

    def __init__(self, checkpoint: str | Path, root: str | Path | None = None, threads: int = 1) -> None:
        self.checkpoint = Path(checkpoint)
        self.root = Path(root or cache_dir() / "cache" / "seg_fused") / checkpoint_tag(self.checkpoint)
        self.threads = threads
        self._student = None

    def _model(self):
        if self._student is None:
            import torch

            from sage_ros.networks.checkpoint import load_student

            torch.set_num_threads(self.threads)
            self._student = load_student(self.checkpoint)
        return self._student

    def get(self, name: str, y: np.ndarray, ir: np.ndarray) -> np.ndarray:
        path = self.root / f"{name}.npz"
        if path.is_file():
            with np.load(path) as data:
                fused = data["fused"]
            if fused.shape == y.shape:
                return fused
        import torch

        with torch.inference_mode():
            out = self._model()(torch.from_numpy(y)[None, None], torch.from_numpy(ir)[None, None])[0]
        # Clamped exactly as FusionPipeline does, so training sees what the run-time network sees.
        fused = np.clip(out[0, 0].numpy(), 0.0, 1.0).astype(np.float32)
        self.root.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, fused=fused)
        return fused


def _light_from_name(name: str) -> str:
    # MSRS names end in D (day) or N (night).
    return {"D": "day", "N": "night"}.get(name[-1:].upper(), "unknown")


def _low_inputs(name: str, raw: dict[str, np.ndarray], cache: FusedCache) -> dict[str, np.ndarray]:
    """The three candidate inputs of a full-resolution pair, averaged down by 4 as the exported graph does."""
    vis_y = visible_to_ycrcb(raw["vis_bgr"]).y
    ir = infrared_to_grey(raw["ir_u8"])
    full = {"fused": cache.get(name, vis_y, ir), "visible": vis_y, "infrared": ir}
    return {k: downsample(v) for k, v in full.items()}


def load_split(
    msrs_root: str | Path, split: str, checkpoint: str | Path, box_source: str = "fusion",
    cache_root: str | Path | None = None, threads: int = 1, names: Sequence[str] | None = None,
) -> SplitData:
    """The pairs of one split of the shared MSRS subset (those named in `names`, default all) that have a
    `box_source` box file (the 'unlabeled' pairs have none), with those boxes."""
    msrs_root = Path(msrs_root)
    records = [r for r in records_for("msrs", msrs_root, split) if names is None or r.name in names]
    lights = msrs_lights(msrs_root) if (msrs_root / "splits.csv").is_file() else {}
    cache = FusedCache(checkpoint, cache_root, threads=threads)
    frames, boxes = [], []
    for record in records:
        box_file = box_dir(msrs_root, box_source) / f"{record.name}.txt"
        if not box_file.is_file():
            log.info("skipping %s: no %s boxes", record.name, box_source)
            continue
        raw = read_pair(record)
        h, w = raw["ir_u8"].shape
        pixel_boxes = read_yolo(box_file, w, h)
        rows = [(b.class_id, b.x0 / w, b.y0 / h, b.x1 / w, b.y1 / h) for b in pixel_boxes]
        frames.append(LowFrame(record.name, lights.get(record.name) or _light_from_name(record.name), "msrs",
                               _low_inputs(record.name, raw, cache), np.asarray(rows, np.float32).reshape(-1, 5)))
        boxes.append(pixel_boxes)
    return SplitData(frames, boxes)


def load_pixel_labels(
    layout: str, root: str | Path, split: str, checkpoint: str | Path, num_classes: int,
    cache_root: str | Path | None = None, threads: int = 1,
) -> list[LowFrame]:
    """A dataset with pixel labels (MSRS `Segmentation_labels`, FMB `Label`) as frames whose 4x4 cells take
    the label at their centre; ids >= num_classes are IGNORE."""
    records = [r for r in records_for(layout, root, split) if r.label_path is not None]
    if not records:
        raise ValueError(f"{layout} dataset at {root} (split {split}) has no label images")
    cache = FusedCache(checkpoint, cache_root, threads=threads)
    frames = []
    for record in records:
        raw = read_pair(record, with_label=True)
        label = raw["label"]
        mask = np.where((label >= 0) & (label < num_classes), label, IGNORE).astype(np.uint8)
        inputs = _low_inputs(record.name, raw, cache)
        lh, lw = inputs["fused"].shape
        frames.append(LowFrame(record.name, _light_from_name(record.name), "msrs", inputs, np.zeros((0, 5), np.float32),
                               np.ascontiguousarray(mask[2::4, 2::4][:lh, :lw])))
    return frames


def load_thumbnails(
    root: str | Path,
    checkpoint: str | Path,
    box_source: str = "fusion",
    cache_root: str | Path | None = None,
    threads: int = 1,
) -> list[LowFrame]:
    """The 128x128 MSRS train thumbnails resized to 160x120 and fused there (fused Y cached on disk).

    Thumbnails without a box file in `box_source` are skipped; an empty file is a frame with no object.
    """
    root = Path(root)
    names = sorted(p.stem for p in (root / "ir").glob("*.png"))
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


def load_training_frames(
    msrs_root: str | Path, thumbs_root: str | Path | None, checkpoint: str | Path, box_source: str = "fusion",
    cache_root: str | Path | None = None, threads: int = 1,
) -> tuple[SplitData, list[LowFrame]]:
    """(train split at full resolution, train split + thumbnails as training frames)."""
    train = load_split(msrs_root, "train", checkpoint, box_source, cache_root, threads)
    frames = list(train.frames)
    if thumbs_root is not None and Path(thumbs_root).is_dir():
        frames += load_thumbnails(thumbs_root, checkpoint, box_source, cache_root, threads)
    return train, frames


# Percentile window over the training frames of each quantile level, per input: the narrowest pair whose MSRS
# train-split mean F1 (with both abstentions on) stays within 0.01 of no range at all (docs/segmentation.md,
# "The tone range").
TONE_WINDOWS = {"vis_y": (15.0, 85.0), "ir": (20.0, 80.0)}


def input_tone(msrs_root: Path, split: str = "train",
               windows: dict[str, tuple[float, float]] | None = None) -> dict:
    """The tone range of the network's run-time inputs (`image.tone_range`): for the visible Y and the IR, a
    percentile window (`TONE_WINDOWS`) over this split's full-resolution pairs of each quantile level. The
    segmentation stage brings another camera's frames into it (docs/segmentation.md, "Other cameras"); it goes
    in the sidecar."""
    windows = TONE_WINDOWS if windows is None else windows
    planes: dict[str, list[np.ndarray]] = {"vis_y": [], "ir": []}
    for record in records_for("msrs", msrs_root, split):
        raw = read_pair(record)
        planes["vis_y"].append(visible_to_ycrcb(raw["vis_bgr"]).y)
        planes["ir"].append(infrared_to_grey(raw["ir_u8"]))
    ranges = {name: tone_bounds(frames, *windows[name]).to_json() for name, frames in planes.items()}
    said = ", ".join(f"{name} {lo:g}th-{hi:g}th" for name, (lo, hi) in windows.items())
    return {**ranges, "from": f"MSRS {split} split, {len(planes['ir'])} pairs, percentile over frames: {said}"}


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
    band: float = 0.5,
    separation: float = 0.0,
    lines: np.ndarray | None = None,
    gap_lines: float = 0.0,
) -> np.ndarray:
    """Boxes (normalised) -> (h, w) uint8 target: 0 background, class ids, IGNORE where unsure.

    Every pixel whose centre is inside a box gets its class, except a ring of `band` pixels on either
    side of the box's outline (human boxes are a few pixels loose or tight), which is IGNORE. Larger boxes
    are painted first so a smaller (usually nearer) object wins; pixels outside every box are background.

    `separation` > 0: where a box lies on a larger object of the same class (parked cars in a row,
    people walking together), the pixels within `separation` pixels outside its outline become
    background. The metric counts one component per object, and a filled-box target merges touching
    objects of one class into one component (the target's own score on MSRS drops from 0.96 to 0.83
    mean F1 through merging alone); these lines teach the network to leave a gap. `lines`, an (h, w)
    bool array, receives where they were drawn (for a heavier loss weight there).
    """
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
