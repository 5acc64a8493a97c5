"""Scoring class-id masks against box labels and pseudo-masks. Numpy and OpenCV only (no torch).

Box labels cannot score pixels, so each predicted class mask is turned into connected-component boxes
which are scored like detections: AP at IoU 0.5 per class (all-point interpolated, as PASCAL VOC
2010+), against the human boxes. Mean IoU against the pseudo-masks is reported beside it, but it
measures agreement with our own guess of the object pixels, not with people's labels.
Usable on the run-time output too (e.g. by bag evaluation): without probabilities a component's
score is its size relative to the largest component, a weak but monotone confidence.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from sage_ros.training.segmentation.boxes import IGNORE, Box


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


def average_precision(
    detections: Sequence[Sequence[Detection]],
    ground_truth: Sequence[Sequence[Box]],
    class_id: int,
    iou_threshold: float = 0.5,
) -> tuple[float, int]:
    """AP of one class over a set of images (lists aligned by image); returns (AP, number of GT boxes).

    Greedy matching by descending score, each GT box matched at most once; AP is the area under the
    precision envelope (all-point interpolation). NaN when the class has no GT box (left out of means).
    """
    if len(detections) != len(ground_truth):
        raise ValueError("detections and ground truth must list the same images")
    gts = [[g.as_xyxy() for g in image if g.class_id == class_id] for image in ground_truth]
    n_gt = sum(len(g) for g in gts)
    ranked = sorted(
        ((d.score, i, d.as_xyxy()) for i, image in enumerate(detections) for d in image if d.class_id == class_id),
        key=lambda t: -t[0],
    )
    if n_gt == 0:
        return math.nan, 0
    used = [np.zeros(len(g), dtype=bool) for g in gts]
    tp = np.zeros(len(ranked))
    for k, (_, image, box) in enumerate(ranked):
        best, best_j = iou_threshold, -1
        for j, gt in enumerate(gts[image]):
            if used[image][j]:
                continue
            iou = box_iou(box, gt)
            if iou >= best:
                best, best_j = iou, j
        if best_j >= 0:
            used[image][best_j] = True
            tp[k] = 1.0
    if not ranked:
        return 0.0, n_gt
    cum_tp = np.cumsum(tp)
    recall = cum_tp / n_gt
    precision = cum_tp / np.arange(1, len(ranked) + 1)
    # Precision envelope, then the area under the step curve at each recall change.
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    for i in range(len(p) - 2, -1, -1):
        p[i] = max(p[i], p[i + 1])
    steps = np.where(r[1:] != r[:-1])[0]
    return float(np.sum((r[steps + 1] - r[steps]) * p[steps + 1])), n_gt


def confusion_matrix(pred: np.ndarray, target: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes, num_classes) counts, rows = target, columns = prediction; IGNORE skipped."""
    pred = np.asarray(pred).ravel().astype(np.int64)
    target = np.asarray(target).ravel().astype(np.int64)
    valid = (target != IGNORE) & (target < num_classes) & (pred < num_classes)
    index = target[valid] * num_classes + pred[valid]
    return np.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def iou_per_class(confusion: np.ndarray) -> np.ndarray:
    """IoU of each class; NaN for classes absent from both target and prediction."""
    inter = np.diag(confusion).astype(np.float64)
    union = confusion.sum(0) + confusion.sum(1) - np.diag(confusion)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.maximum(union, 1), np.nan)


def nanmean(values: Iterable[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


@dataclass
class SegScores:
    """AP50 per class (class id -> AP, NaN if no GT) and its mean; IoU per class and mIoU."""

    ap50: dict[int, float]
    n_gt: dict[int, int]
    mean_ap50: float
    iou: dict[int, float]
    miou: float
    images: int


def score_images(
    detections: Sequence[Sequence[Detection]],
    ground_truth: Sequence[Sequence[Box]],
    predictions: Sequence[np.ndarray] | None,
    targets: Sequence[np.ndarray] | None,
    num_classes: int,
    iou_threshold: float = 0.5,
) -> SegScores:
    """Box AP per object class (ids 1..num_classes-1) plus mIoU of id maps vs target masks."""
    ap, n_gt = {}, {}
    for cls in range(1, num_classes):
        ap[cls], n_gt[cls] = average_precision(detections, ground_truth, cls, iou_threshold)
    iou = {c: math.nan for c in range(num_classes)}
    if predictions is not None and targets is not None:
        confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
        for pred, target in zip(predictions, targets, strict=True):
            confusion += confusion_matrix(pred, target, num_classes)
        iou = dict(enumerate(iou_per_class(confusion).tolist()))
    return SegScores(ap, n_gt, nanmean(ap.values()), iou, nanmean(iou.values()), len(detections))


# ---------------------------------------------------------------------------------------------
# The operating point: mask components as they are published, matched to human boxes at IoU 0.5.


def match_components(
    detections: Sequence[Detection], ground_truth: Sequence[Box], class_id: int, iou_threshold: float = 0.5
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
    detections: Sequence[Sequence[Detection]],
    ground_truth: Sequence[Sequence[Box]],
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
