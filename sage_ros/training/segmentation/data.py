"""Samples for the segmentation network: the three candidate inputs, a target mask and the human boxes.

The network is trained on the fused output of the FROZEN released student, so that output is computed
once per pair and cached as .npz (in the user cache, never in git); visible Y and IR come from the
same imaging functions the run-time pipeline uses. Targets are pixel labels where the dataset has
them (MSRS/FMB folder layouts, via sage_ros.training.datasets) or pseudo-masks from YOLO boxes.
"""

from __future__ import annotations

import csv
import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sage_ros.image.imaging import infrared_to_grey, visible_to_ycrcb
from sage_ros.paths import cache_dir
from sage_ros.training.datasets import PairRecord, read_pair, records_for
from sage_ros.training.segmentation.boxes import (
    BOX_SOURCES,
    IGNORE,
    MSRS_YOLO_TO_ID,
    Box,
    box_dir,
    pseudo_mask,
    read_yolo,
)

log = logging.getLogger(__name__)

INPUT_KINDS = ("fused", "visible", "infrared")


@dataclass
class SegSample:
    """One pair at full resolution; images are HxW float32 in [0, 1]."""

    name: str
    light: str  # 'day' | 'night' | 'unknown'
    inputs: dict[str, np.ndarray]  # INPUT_KINDS -> image
    mask: np.ndarray  # HxW uint8 class ids, IGNORE where unknown
    boxes: dict[str, list[Box]] = field(default_factory=dict)  # annotation source -> human boxes


def read_lights(splits_csv: Path) -> dict[str, str]:
    """name -> 'day' | 'night' from the shared MSRS splits.csv (column `light`)."""
    if not splits_csv.is_file():
        return {}
    with splits_csv.open(newline="") as handle:
        return {row["name"]: row.get("light", "unknown") or "unknown" for row in csv.DictReader(handle)}


def _light_from_name(name: str) -> str:
    # MSRS names end in D (day) or N (night).
    return {"D": "day", "N": "night"}.get(name[-1:].upper(), "unknown")


def checkpoint_tag(checkpoint: Path) -> str:
    """A short content hash of the student weights, so a new checkpoint never reuses stale fusions."""
    digest = hashlib.sha256()
    with checkpoint.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:12]


def default_cache_root() -> Path:
    return cache_dir() / "cache" / "seg_fused"


class FusedCache:
    """Fused Y of the frozen student per pair name, computed once and kept as .npz on disk."""

    def __init__(self, checkpoint: str | Path, root: str | Path | None = None, threads: int = 1) -> None:
        self.checkpoint = Path(checkpoint)
        self.root = Path(root or default_cache_root()) / checkpoint_tag(self.checkpoint)
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


def load_msrs_boxes(
    msrs_root: str | Path,
    split: str,
    checkpoint: str | Path,
    box_source: str = "infrared",
    pseudo_mode: str = "thermal",
    cache_root: str | Path | None = None,
    names: list[str] | None = None,
    threads: int = 1,
) -> list[SegSample]:
    """The shared MSRS subset with pseudo-masks from `box_source` boxes and every source's boxes.

    Pairs without any box file in `box_source` are skipped (the 5 'unlabeled' pairs have none).
    """
    if box_source not in BOX_SOURCES:
        raise ValueError(f"box source must be one of {BOX_SOURCES}, not {box_source!r}")
    msrs_root = Path(msrs_root)
    records = records_for("msrs", msrs_root, split)
    if names is not None:
        wanted = set(names)
        records = [r for r in records if r.name in wanted]
    lights = read_lights(msrs_root / "splits.csv")
    cache = FusedCache(checkpoint, cache_root, threads=threads)
    samples = []
    for record in records:
        if not (box_dir(msrs_root, box_source) / f"{record.name}.txt").is_file():
            log.info("skipping %s: no %s boxes", record.name, box_source)
            continue
        raw = read_pair(record)
        h, w = raw["ir_u8"].shape
        boxes = {
            src: read_yolo(box_dir(msrs_root, src) / f"{record.name}.txt", w, h, MSRS_YOLO_TO_ID)
            for src in BOX_SOURCES
        }
        mask = pseudo_mask(boxes[box_source], (h, w), raw["ir_u8"], mode=pseudo_mode)
        samples.append(_make_sample(record, raw, mask, boxes, lights, cache))
    return samples


def load_pixel_labels(
    layout: str,
    root: str | Path,
    split: str,
    checkpoint: str | Path,
    num_classes: int,
    cache_root: str | Path | None = None,
    threads: int = 1,
) -> list[SegSample]:
    """A dataset with pixel labels (MSRS `Segmentation_labels`, FMB `Label`); ids >= num_classes ignored."""
    records = [r for r in records_for(layout, root, split) if r.label_path is not None]
    if not records:
        raise ValueError(f"{layout} dataset at {root} (split {split}) has no label images")
    cache = FusedCache(checkpoint, cache_root, threads=threads)
    samples = []
    for record in records:
        raw = read_pair(record, with_label=True)
        label = raw["label"]
        mask = np.where((label >= 0) & (label < num_classes), label, IGNORE).astype(np.uint8)
        samples.append(_make_sample(record, raw, mask, {}, {}, cache))
    return samples


def _make_sample(
    record: PairRecord,
    raw: dict[str, np.ndarray],
    mask: np.ndarray,
    boxes: dict[str, list[Box]],
    lights: dict[str, str],
    cache: FusedCache,
) -> SegSample:
    vis = visible_to_ycrcb(raw["vis_bgr"])
    ir = infrared_to_grey(raw["ir_u8"])
    fused = cache.get(record.name, vis.y, ir)
    light = lights.get(record.name) or _light_from_name(record.name)
    inputs = {"fused": fused, "visible": vis.y, "infrared": ir}
    return SegSample(record.name, light, inputs, mask, boxes)
