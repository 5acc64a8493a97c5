"""Scoring class-id masks against box labels and pseudo-masks. Numpy and OpenCV only (no torch).

Box labels cannot score pixels, so each predicted class mask is turned into connected-component boxes
which are scored like detections: AP at IoU 0.5 per class (all-point interpolated, as PASCAL VOC
2010+), against the human boxes. Mean IoU against the pseudo-masks is reported beside it, but it
measures agreement with our own guess of the object pixels, not with people's labels.
The components, the one-to-one matching at IoU 0.5 and the per-class F1 live in
`sage_ros.evaluation.components` (bag evaluation scores the published mask with them, without torch)
and are re-exported here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# The component-vs-box scoring lives in the run-time package (bag evaluation uses it without torch);
# re-exported here so that every existing import of these names keeps working.
from sage_ros.evaluation.components import (  # noqa: F401 - re-exports
    IGNORE,
    Box,
    ClassF1,
    Detection,
    F1Scores,
    box_iou,
    components_to_detections,
    f1_scores,
    match_components,
    nanmean,
)


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
