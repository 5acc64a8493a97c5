"""Human boxes and mask components: reading YOLO box files, and scoring class-id masks against boxes.

Box labels cannot score pixels, so each predicted class mask is turned into connected-component
boxes, matched one-to-one to the human boxes at IoU 0.5, and counted per class (precision, recall,
F1). This is the operating point a user of the published mask sees. Numpy and OpenCV only: used by
`sage-ros eval-bag` (run-time side, no torch) and, re-exported, by the training code's `seg eval`,
so both report the same numbers for the same masks.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

#: Label value meaning "not scored" (pixels of a box that are not sure to be the object).
IGNORE = 255
#: YOLO classes of the MSRS detection labels (boxes/classes.txt: 0 person, 1 bicycle, 2 car)
#: mapped to MSRS pixel-label ids (1 car, 2 person, 3 bike).
MSRS_YOLO_TO_ID = {0: 2, 1: 3, 2: 1}
_EPS = 1e-6


class LabelledBox(Protocol):
    """What scoring needs of a box: its class id and (x0, y0, x1, y1) with exclusive right/bottom."""

    @property
    def class_id(self) -> int: ...

    def as_xyxy(self) -> tuple[float, float, float, float]: ...


@dataclass(frozen=True)
class Box:
    """A labelled box in pixels: class id (already mapped), [x0, x1) x [y0, y1)."""

    class_id: int
    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def area(self) -> int:
        return max(self.x1 - self.x0, 0) * max(self.y1 - self.y0, 0)

    def as_xyxy(self) -> tuple[float, float, float, float]:
        return float(self.x0), float(self.y0), float(self.x1), float(self.y1)


class BoxFileError(ValueError):
    """A YOLO label file with a malformed line."""


def parse_yolo(
    text: str, width: int, height: int, class_map: dict[int, int] | None = None, source: str = "<text>"
) -> list[Box]:
    """Parse YOLO lines `class cx cy w h` (normalised) into pixel boxes clipped to the image.

    Classes missing from `class_map` are skipped (a dataset may label more than the head predicts).
    """
    boxes: list[Box] = []
    for number, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 5:
            raise BoxFileError(f"{source}:{number}: expected 'class cx cy w h', got {line!r}")
        try:
            yolo_class = int(parts[0])
            cx, cy, bw, bh = (float(p) for p in parts[1:])
        except ValueError as exc:
            raise BoxFileError(f"{source}:{number}: not numbers: {line!r}") from exc
        class_id = class_map.get(yolo_class) if class_map is not None else yolo_class
        if class_id is None:
            continue
        # Outward to whole pixels; the epsilon keeps 0.15 * 100 = 15.000000000000002 at 15.
        x0 = int(np.clip(np.floor((cx - bw / 2) * width + _EPS), 0, width))
        x1 = int(np.clip(np.ceil((cx + bw / 2) * width - _EPS), 0, width))
        y0 = int(np.clip(np.floor((cy - bh / 2) * height + _EPS), 0, height))
        y1 = int(np.clip(np.ceil((cy + bh / 2) * height - _EPS), 0, height))
        if x1 > x0 and y1 > y0:
            boxes.append(Box(class_id, x0, y0, x1, y1))
    return boxes


def read_yolo(
    path: str | Path, width: int, height: int, class_map: dict[int, int] | None = MSRS_YOLO_TO_ID
) -> list[Box]:
    """Boxes of one YOLO file; a missing file means no boxes (images without objects have none)."""
    path = Path(path)
    if not path.is_file():
        return []
    return parse_yolo(path.read_text(), width, height, class_map, source=str(path))


@dataclass(frozen=True)
class Detection:
    class_id: int
    score: float
    x0: float
    y0: float
    x1: float
    y1: float

    def as_xyxy(self) -> tuple[float, float, float, float]:
        return self.x0, self.y0, self.x1, self.y1


def components_to_detections(
    class_ids: np.ndarray,
    probs: np.ndarray | None = None,
    classes: Iterable[int] | None = None,
    min_area: int = 6,
) -> list[Detection]:
    """One detection per 8-connected component of each non-background class in an HxW id map.

    probs: optional (C, H, W) class probabilities; the score is then the mean probability of the
    class over the component. Components smaller than `min_area` pixels are dropped (speckle).
    Without probabilities a component's score is its size relative to the largest component of its
    class, a weak but monotone confidence.
    """
    class_ids = np.asarray(class_ids)
    if classes is None:
        classes = [int(c) for c in np.unique(class_ids) if c not in (0, IGNORE)]
    detections: list[Detection] = []
    for cls in classes:
        binary = (class_ids == cls).astype(np.uint8)
        count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
        if count <= 1:
            continue
        areas = stats[:, cv2.CC_STAT_AREA]
        largest = float(areas[1:].max())
        if probs is not None:
            # Mean probability of every component in one pass (a mask per component is O(N * HW)).
            sums = np.bincount(labels.ravel(), weights=probs[cls].ravel(), minlength=count)
        for index in range(1, count):
            x, y, w, h, area = (int(v) for v in stats[index])
            if area < min_area:
                continue
            score = float(sums[index] / area) if probs is not None else area / largest
            detections.append(Detection(int(cls), score, x, y, x + w, y + h))
    return detections


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two (x0, y0, x1, y1) boxes with exclusive right/bottom edges."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def nanmean(values: Iterable[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def match_components(
    detections: Sequence[LabelledBox], ground_truth: Sequence[LabelledBox], class_id: int, iou_threshold: float = 0.5
) -> tuple[int, int, int]:
    """(true positives, predicted components, human boxes) of one class in one image.

    One-to-one matching, greedy by descending IoU over every (component, box) pair at or above the
    threshold, so a person split into two components counts one match and one false component.
    """
    dets = [d.as_xyxy() for d in detections if d.class_id == class_id]
    gts = [g.as_xyxy() for g in ground_truth if g.class_id == class_id]
    pairs = sorted(
        ((box_iou(d, g), i, j) for i, d in enumerate(dets) for j, g in enumerate(gts)), key=lambda t: -t[0]
    )
    used_d, used_g, tp = set(), set(), 0
    for iou, i, j in pairs:
        if iou < iou_threshold:
            break
        if i in used_d or j in used_g:
            continue
        used_d.add(i)
        used_g.add(j)
        tp += 1
    return tp, len(dets), len(gts)


@dataclass
class ClassF1:
    tp: int
    predicted: int
    boxes: int

    @property
    def precision(self) -> float:
        return self.tp / self.predicted if self.predicted else math.nan

    @property
    def recall(self) -> float:
        return self.tp / self.boxes if self.boxes else math.nan

    @property
    def f1(self) -> float:
        # 2TP / (P + G): 0 when something was predicted or expected but nothing matched.
        total = self.predicted + self.boxes
        return 2 * self.tp / total if total else math.nan


@dataclass
class F1Scores:
    """Component-vs-box scores of a set of images at one IoU threshold."""

    per_class: dict[int, ClassF1]
    images: int
    components_per_image: float
    boxes_per_image: float
    empty_frames: int  # frames without any human box of the scored classes
    false_components_per_empty_frame: float

    @property
    def mean_f1(self) -> float:
        return nanmean(c.f1 for c in self.per_class.values())

    def to_json(self) -> dict:
        return {
            "images": self.images,
            "mean_f1": self.mean_f1,
            "components_per_image": self.components_per_image,
            "boxes_per_image": self.boxes_per_image,
            "empty_frames": self.empty_frames,
            "false_components_per_empty_frame": self.false_components_per_empty_frame,
            "classes": {
                str(c): {"tp": s.tp, "predicted": s.predicted, "boxes": s.boxes, "precision": s.precision,
                         "recall": s.recall, "f1": s.f1}
                for c, s in self.per_class.items()
            },
        }


def f1_scores(
    detections: Sequence[Sequence[LabelledBox]],
    ground_truth: Sequence[Sequence[LabelledBox]],
    classes: Sequence[int] = (1, 2, 3),
    iou_threshold: float = 0.5,
) -> F1Scores:
    """Per-class precision/recall/F1 of components vs boxes, plus the counts a user reads first."""
    if len(detections) != len(ground_truth):
        raise ValueError("detections and ground truth must list the same images")
    counts = {c: [0, 0, 0] for c in classes}
    n_det = n_gt = empty = empty_false = 0
    for dets, gts in zip(detections, ground_truth, strict=True):
        dets = [d for d in dets if d.class_id in counts]
        gts = [g for g in gts if g.class_id in counts]
        n_det += len(dets)
        n_gt += len(gts)
        if not gts:
            empty += 1
            empty_false += len(dets)
        for c in classes:
            for k, v in enumerate(match_components(dets, gts, c, iou_threshold)):
                counts[c][k] += v
    n = max(len(detections), 1)
    return F1Scores(
        {c: ClassF1(*v) for c, v in counts.items()},
        len(detections),
        n_det / n,
        n_gt / n,
        empty,
        empty_false / empty if empty else math.nan,
    )
