"""Mask components against human boxes: precision/recall/F1 at IoU 0.5, and the pixels spilled outside boxes.

Box labels cannot score pixels, so each predicted class mask is turned into connected-component
boxes, matched one-to-one to the human boxes at IoU 0.5, and counted per class (precision, recall,
F1). This is the operating point a user of the published mask sees. Beside it, "spill": the share of
the frame given a class outside every box of that class, which F1 cannot see (a component far larger
than its box still counts once). The box files themselves are read by `sage_ros.evaluation.boxes`.
Numpy and OpenCV only: used by `sage-ros eval-bag` (run-time side, no torch), `seg eval` and the training
code, so all report the same numbers for the same masks.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

# The box readers live in `sage_ros.evaluation.boxes`; MSRS_YOLO_TO_ID, Box, parse_yolo and read_yolo are
# re-exported for make-bag and the bag evaluation's callers.
from sage_ros.evaluation.boxes import MSRS_YOLO_TO_ID, Box, LabelledSet, parse_yolo, read_yolo  # noqa: F401
from sage_ros.pipeline.detection import Detection, box_iou  # noqa: F401 - box_iou re-exported for callers

#: Label value meaning "not scored" (pixels of a box that are not sure to be the object).
IGNORE = 255


class LabelledBox(Protocol):
    """What scoring needs of a box: its class id and (x0, y0, x1, y1) with exclusive right/bottom."""

    @property
    def class_id(self) -> int: ...

    def as_xyxy(self) -> tuple[float, float, float, float]: ...


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
    # Mean over frames of the share of the frame a class covers outside its boxes; None: not measured
    # (only detections were given).
    spill: dict[int, float] | None = None

    @property
    def spill_total(self) -> float:
        return float(sum(self.spill.values())) if self.spill else math.nan

    @property
    def mean_f1(self) -> float:
        return nanmean(c.f1 for c in self.per_class.values())

    def to_json(self) -> dict:
        out = {
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
        if self.spill is not None:
            # Keys only when measured, so that detection-only scores keep their JSON as it was.
            out["spill"] = self.spill_total
            for c, value in self.spill.items():
                out["classes"][str(c)]["spill"] = value
        return out


def spill_fractions(class_ids: np.ndarray, boxes: Sequence[LabelledBox], classes: Sequence[int] = (1, 2, 3)
                    ) -> dict[int, float]:
    """Per class, the share of the frame's pixels given that class outside every box of that class.

    Box corners are taken as whole pixels ([x0, x1) x [y0, y1), clipped to the frame). A frame without
    any box of a class counts every pixel of that class as spilled.
    """
    class_ids = np.asarray(class_ids)
    height, width = class_ids.shape
    fractions = {}
    for c in classes:
        inside = np.zeros((height, width), dtype=bool)
        for b in boxes:
            if b.class_id != c:
                continue
            x0, y0, x1, y1 = b.as_xyxy()
            inside[max(int(y0), 0):max(int(y1), 0), max(int(x0), 0):max(int(x1), 0)] = True
        fractions[c] = float(np.count_nonzero((class_ids == c) & ~inside)) / max(height * width, 1)
    return fractions


def f1_scores(
    detections: Sequence[Sequence[LabelledBox]],
    ground_truth: Sequence[Sequence[LabelledBox]],
    classes: Sequence[int] = (1, 2, 3),
    iou_threshold: float = 0.5,
    frame_spill: Sequence[dict[int, float]] | None = None,
) -> F1Scores:
    """Per-class precision/recall/F1 of components vs boxes, plus the counts a user reads first; with
    each image's `spill_fractions` (aligned by image; computed per frame so that no mask is kept), the
    mean spill per class too."""
    if len(detections) != len(ground_truth):
        raise ValueError("detections and ground truth must list the same images")
    spill = None
    if frame_spill is not None:
        if len(frame_spill) != len(ground_truth):
            raise ValueError("spill fractions and ground truth must list the same images")
        spill = {c: float(np.mean([f[c] for f in frame_spill])) if frame_spill else math.nan for c in classes}
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
        spill,
    )


#: Names of our scored class ids, for tables.
CLASS_NAMES = {1: "car", 2: "person", 3: "bike"}


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2f}"


def _percent(value: float | None) -> str:
    # Spill is a small share of the frame: percent with two decimals reads better than 0.00.
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.2f}%"


def f1_table(rows: dict[str, dict]) -> str:
    """Markdown: one row per (name, light) from `F1Scores.to_json()` dicts per light (day, night, all).

    Spill columns are added when some row measured it ('-' in the rows that did not).
    """
    header = ["model", "light", "F1 car", "F1 person", "F1 bike", "mean F1", "P person", "R person",
              "comps/img", "boxes/img", "false comps / empty frame"]
    with_spill = any("spill" in s for per_light in rows.values() for s in per_light.values() if isinstance(s, dict))
    if with_spill:
        header += ["spill car", "spill person", "spill bike", "spill total"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, per_light in rows.items():
        for light in ("day", "night", "all"):
            s = per_light.get(light)
            if s is None:
                continue
            c = s["classes"]
            row = [name, f"{light} ({s['images']})"] + [_fmt(c[str(k)]["f1"]) for k in CLASS_NAMES] + [
                _fmt(s["mean_f1"]), _fmt(c["2"]["precision"]), _fmt(c["2"]["recall"]),
                f"{s['components_per_image']:.2f}", f"{s['boxes_per_image']:.2f}",
                _fmt(s["false_components_per_empty_frame"]) + f" ({s['empty_frames']})",
            ]
            if with_spill:
                measured = "spill" in s
                row += [_percent(c[str(k)].get("spill")) if measured else "-" for k in CLASS_NAMES]
                row.append(_percent(s["spill"]) if measured else "-")
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


@dataclass
class FolderScores:
    """A folder of masks scored against a labelled set, with what could not be scored."""

    scores: F1Scores
    unmapped: Counter  # boxes per dataset class that the class map leaves out
    unlabelled_masks: list[str]  # masks of images the labels do not cover (not scored)
    labelled_without_mask: list[str]  # labelled images with no mask in the folder (not scored)

    def to_json(self) -> dict:
        return self.scores.to_json() | {
            "unmapped_boxes": dict(sorted(self.unmapped.items())),
            "unlabelled_masks": len(self.unlabelled_masks),
            "labelled_without_mask": len(self.labelled_without_mask),
        }


def score_mask_folder(
    masks_dir: str | Path,
    labels: LabelledSet,
    class_map: dict[str, int],
    classes: Sequence[int] = (1, 2, 3),
    min_area: int = 6,
    iou_threshold: float = 0.5,
) -> FolderScores:
    """Every NAME.png class-id mask of a folder against the boxes of image NAME: F1 and spill.

    Raises ValueError when a mask is not a single-channel image (a folder of fused images given by
    mistake) or when no mask has labels.
    """
    masks_dir = Path(masks_dir)
    paths = sorted(masks_dir.glob("*.png"))
    dets, gts, spill, unlabelled = [], [], [], []
    unmapped: Counter = Counter()
    for path in paths:
        mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if mask is None or mask.ndim != 2:
            raise ValueError(f"{path}: not a single-channel class-id mask")
        boxes = labels.pixel_boxes(path.stem, mask.shape[1], mask.shape[0], class_map)
        if boxes is None:
            unlabelled.append(path.stem)
            continue
        gts.append(boxes[0])
        unmapped.update(boxes[1])
        dets.append(components_to_detections(mask, None, classes, min_area=min_area))
        spill.append(spill_fractions(mask, boxes[0], classes))
    if not gts:
        raise ValueError(f"no mask in {masks_dir} ({len(paths)} PNGs) has labels in {labels.source}")
    stems = {p.stem for p in paths}
    without_mask = sorted(name for name in labels.images if name not in stems)
    return FolderScores(f1_scores(dets, gts, classes, iou_threshold, spill), unmapped, unlabelled, without_mask)
