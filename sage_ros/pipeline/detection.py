"""Cars, people and bikes as boxes, from a COCO object detector run on the visible and thermal planes.

The segmentation network learned one camera pair (MSRS); a detector trained on COCO's many cameras knows what
a car or a person looks like on any of them. The segmentation stage runs it once per pair on the mean of the
visible Y and the IR (a grey image: the stage has no colour; one pass finds what two passes, one per plane, found,
at half the cost), keeps the classes the masks use, and paints each box into the class ids (`paint_boxes`), after
the network's own regions of that class that the box touches are removed (`docs/segmentation.md`, "The object
detector"). Pure numpy decoding: NanoDet's per-level class scores and
distance distributions (GFL) at strides 8, 16, 32. Torch-free.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from sage_ros.pipeline.cpu_graph import CpuGraph, SegmentationError

# COCO class index -> our class id (1 car, 2 person, 3 bike): bus and truck are cars, a motorcycle is a bike,
# as the M3FD and MSRS labels count them.
COCO_TO_ID = {0: 2, 1: 3, 2: 1, 3: 3, 5: 1, 7: 1}
COCO_CLASSES = 80
STRIDES = (8, 16, 32)
# NanoDet's input normalisation (BGR order; the planes here are grey, so the order does not matter).
_MEAN = np.array([103.53, 116.28, 123.675], np.float32).reshape(3, 1, 1)
_STD = np.array([57.375, 57.12, 58.395], np.float32).reshape(3, 1, 1)
DEFAULT_INPUT_PIXELS = 640 * 480  # the segmentation's working size (416x416 finds fewer of M3FD's cars)
# A box is kept from this score on. Chosen on the MSRS train split with the detector alone (it never saw MSRS),
# among the scores that keep the published masks at <= 0.5 false components per object-free frame
# (docs/segmentation.md, "The object detector").
DEFAULT_MIN_SCORE = 0.45
NMS_IOU = 0.5


@dataclass(frozen=True)
class Detection:
    """A detected object: class id, score, corners in pixels (x1, y1 exclusive). The detector's boxes and the mask
    components that scoring matches to human boxes (`evaluation.components`) are both this."""

    class_id: int
    score: float
    x0: float
    y0: float
    x1: float
    y1: float

    def as_xyxy(self) -> tuple[float, float, float, float]:
        return self.x0, self.y0, self.x1, self.y1

    @property
    def area(self) -> float:
        return max(self.x1 - self.x0, 0.0) * max(self.y1 - self.y0, 0.0)


def input_size(frame_hw: tuple[int, int], pixels: int = DEFAULT_INPUT_PIXELS, multiple: int = 32) -> tuple[int, int]:
    """(height, width) the detector runs at: the frame's aspect, about `pixels`, sides multiples of the coarsest
    stride."""
    h, w = int(frame_hw[0]), int(frame_hw[1])
    scale = (pixels / float(h * w)) ** 0.5
    return (max(multiple, multiple * round(h * scale / multiple)),
            max(multiple, multiple * round(w * scale / multiple)))


def _resized(plane: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    plane = np.asarray(plane, np.float32)
    if plane.shape[:2] == tuple(hw):
        return plane
    shrink = hw[0] * hw[1] < plane.shape[0] * plane.shape[1]
    return cv2.resize(plane, (hw[1], hw[0]), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def detector_input(vis_y: np.ndarray, ir: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """The detector's (1, 3, h, w) input: the mean of two HxW [0, 1] planes of one registered frame (any sizes),
    each resized to hw, as a grey image."""
    grey = np.clip(0.5 * (_resized(vis_y, hw) + _resized(ir, hw)), 0.0, 1.0) * np.float32(255.0)
    return ((grey[None] - _MEAN) / _STD)[None].astype(np.float32)


def decode(outputs: Sequence[np.ndarray], hw: tuple[int, int], min_score: float,
           class_map: dict[int, int] = COCO_TO_ID) -> list[Detection]:
    """NanoDet outputs (per stride: class scores (1, cells, classes) after the sigmoid, and box distributions
    (1, cells, 4 * (reg_max + 1))) -> boxes in input pixels with our class ids, before NMS."""
    cells_per_level = {(hw[0] // s) * (hw[1] // s): s for s in STRIDES}
    scores, dists = {}, {}
    for out in outputs:
        out = np.asarray(out)[0]
        stride = cells_per_level.get(out.shape[0])
        if stride is None:
            raise ValueError(f"detector output of {out.shape[0]} cells fits no stride at input {hw}")
        (scores if out.shape[1] == COCO_CLASSES else dists)[stride] = out
    if set(scores) != set(STRIDES) or set(dists) != set(STRIDES):
        raise ValueError("detector outputs are not NanoDet's class scores and box distributions per stride")
    keep_classes = np.array(sorted(class_map))
    boxes: list[Detection] = []
    for stride in STRIDES:
        cls = scores[stride][:, keep_classes]
        best = cls.argmax(1)
        score = cls[np.arange(len(cls)), best]
        cells = np.flatnonzero(score >= min_score)
        if cells.size == 0:
            continue
        bins = dists[stride][cells].reshape(len(cells), 4, -1)
        bins = np.exp(bins - bins.max(-1, keepdims=True))
        bins /= bins.sum(-1, keepdims=True)
        dist = (bins * np.arange(bins.shape[-1], dtype=np.float32)).sum(-1) * stride  # left, top, right, bottom
        columns = hw[1] // stride
        cy, cx = np.divmod(cells, columns)
        cx = (cx + 0.5) * stride
        cy = (cy + 0.5) * stride
        for k, cell in enumerate(cells):
            boxes.append(Detection(class_map[int(keep_classes[best[cell]])], float(score[cell]),
                                   float(cx[k] - dist[k, 0]), float(cy[k] - dist[k, 1]),
                                   float(cx[k] + dist[k, 2]), float(cy[k] + dist[k, 3])))
    return boxes


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two (x0, y0, x1, y1) boxes with exclusive right/bottom edges (suppression here, matching in
    `evaluation.components`)."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def non_max_suppression(boxes: Sequence[Detection], iou: float = NMS_IOU) -> list[Detection]:
    """Highest score first; a box overlapping a kept box of its class by more than `iou` is dropped."""
    kept: list[Detection] = []
    for box in sorted(boxes, key=lambda b: -b.score):
        if all(k.class_id != box.class_id or box_iou(k.as_xyxy(), box.as_xyxy()) <= iou for k in kept):
            kept.append(box)
    return kept


def scale_boxes(boxes: Sequence[Detection], sy: float, sx: float, hw: tuple[int, int]) -> list[Detection]:
    """Boxes multiplied by (sx, sy) and clipped to a frame of hw; empty ones dropped."""
    out = []
    for b in boxes:
        x0, x1 = np.clip([b.x0 * sx, b.x1 * sx], 0, hw[1])
        y0, y1 = np.clip([b.y0 * sy, b.y1 * sy], 0, hw[0])
        if x1 - x0 >= 1 and y1 - y0 >= 1:
            out.append(Detection(b.class_id, b.score, float(x0), float(y0), float(x1), float(y1)))
    return out


def paint_boxes(ids: np.ndarray, boxes: Sequence[Detection], ring: int = 1) -> np.ndarray:
    """In place and returned: each region of the network's class ids that a box of its class touches is removed,
    then each box is filled with its class, larger boxes first so that a nearer (smaller, overlapping) object
    stays on top, each inside a `ring`-pixel background outline so that touching objects stay separate regions."""
    h, w = ids.shape
    by_class: dict[int, list[Detection]] = {}
    for b in boxes:
        by_class.setdefault(b.class_id, []).append(b)
    for cls, group in by_class.items():
        count, labels, stats, _ = cv2.connectedComponentsWithStats((ids == cls).view(np.uint8), connectivity=8)
        if count <= 1:
            continue
        touched = np.zeros(count, bool)
        for b in group:
            x0, y0, x1, y1 = _pixels(b, h, w)
            touched[np.unique(labels[y0:y1, x0:x1])] = True
        touched[0] = False
        ids[touched[labels]] = 0
    for b in sorted(boxes, key=lambda b: -b.area):
        x0, y0, x1, y1 = _pixels(b, h, w)
        if x1 - x0 < 2 or y1 - y0 < 2:
            continue
        if ring > 0:
            ids[max(y0 - ring, 0):y1 + ring, max(x0 - ring, 0):x1 + ring] = 0
        ids[y0:y1, x0:x1] = b.class_id
    return ids


def _pixels(b: Detection, h: int, w: int) -> tuple[int, int, int, int]:
    return (min(max(int(round(b.x0)), 0), w), min(max(int(round(b.y0)), 0), h),
            min(max(int(round(b.x1)), 0), w), min(max(int(round(b.y1)), 0), h))


class ObjectDetector:
    """Callable (vis_y, ir) -> boxes: the detector once on the mean of the two HxW [0, 1] planes of one registered
    frame (any sizes), boxes in pixels of vis_y.

    graph: the detector's ONNX graph (`model.detector_files`); its session starts on first use.
    min_score: the lowest score kept."""

    def __init__(self, graph: str | Path, runtime: str = "auto", threads: int = 0, precision: str = "fp32",
                 min_score: float = DEFAULT_MIN_SCORE, input_pixels: int = DEFAULT_INPUT_PIXELS) -> None:
        self.path = Path(graph)
        if not self.path.is_file():
            raise FileNotFoundError(f"detector graph {self.path} does not exist (`sage-ros weights fetch` builds it)")
        if not 0.0 < float(min_score) < 1.0:
            raise ValueError(f"detector min score {min_score} must be in (0, 1)")
        self.min_score = float(min_score)
        self.input_pixels = int(input_pixels)
        self._options = (runtime, threads, precision)
        self._graph = None

    def _session(self) -> CpuGraph:
        if self._graph is None:
            try:
                self._graph = CpuGraph(self.path, *self._options)
            except SegmentationError:
                raise
            except Exception as exc:  # the runtimes raise their own types for a bad file
                raise SegmentationError(f"object detector graph {self.path} could not be loaded ({exc}): delete it "
                                        "and run `sage-ros weights fetch` to rebuild it") from exc
        return self._graph

    @property
    def runtime(self) -> str:
        return self._graph.runtime if self._graph is not None else f"{self._options[0]} (not started)"

    def __call__(self, vis_y: np.ndarray, ir: np.ndarray, out_hw: tuple[int, int] | None = None) -> list[Detection]:
        """Boxes in pixels of out_hw (default: vis_y's size; the planes may be a resized copy of that frame)."""
        out_hw = tuple(out_hw or vis_y.shape[:2])
        hw = input_size(vis_y.shape[:2], self.input_pixels)
        graph = self._session()
        outputs = graph.run({graph.input_name: detector_input(vis_y, ir, hw)})
        boxes = non_max_suppression(decode(outputs, hw, self.min_score))
        return scale_boxes(boxes, out_hw[0] / hw[0], out_hw[1] / hw[1], out_hw)

    def close(self) -> None:
        self._graph = None
