"""Class ids from the segmentation network, its own graph, the same whatever student fused the published image.

The visible Y and registered IR are resized to a working size (the RGB aspect, ~`WORKING_PIXELS` px, the scale
the network learned) and, where the network's sidecar gives the tone range of its training frames, brought into
it (`image.tone_range`: another camera's gain and level; untouched inside the range), the released student
fuses them at a quarter of it (the grid the network pools its inputs to, and the fusion it was trained on),
the network gives class probabilities there; they are brought
back to the RGB size and each pixel takes its most probable class, or background below `min_confidence`; a
region of one class whose most confident pixel stays below `min_object_confidence` is background, and a kept
region loses its fringe below `PEAK_FRACTION` of that peak.
Both graphs run on a CPU runtime beside any student backend (docs/segmentation.md, docs/jetson.md). Torch-free.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import cv2
import numpy as np

from sage_ros.image.tone_range import ToneRange, into_tone_range
from sage_ros.model.classes import ClassTable, load_class_table
from sage_ros.pipeline.cpu_graph import CpuGraph, SegmentationError
from sage_ros.pipeline.detection import ObjectDetector, paint_boxes
from sage_ros.pipeline.fusion import resize_area

WORKING_PIXELS = 640 * 480  # the MSRS frame the network was trained on
# Below this class probability a pixel is background. Calibrated on the MSRS train split for precision
# (docs/segmentation.md, "Abstention"); 0 turns abstention off.
DEFAULT_MIN_CONFIDENCE = 0.6
# Object-level abstention: a connected region of one class is kept only where its most confident pixel reaches
# this, and then only its pixels of at least PEAK_FRACTION of that peak (a near car's region no longer runs on
# into the sky and road at 0.6-0.7). Chosen together on the MSRS train split by the same precision rule
# (docs/segmentation.md, "Object-level abstention"); 0 turns it off.
DEFAULT_MIN_OBJECT_CONFIDENCE = 0.8
PEAK_FRACTION = 0.7
_SIDE_MULTIPLE = 4  # the graph pools by 4 first: whole 4x4 blocks keep the probability grid aligned


def working_size(rgb_hw: tuple[int, int], pixels: int = WORKING_PIXELS) -> tuple[int, int]:
    """(height, width) the network runs at for an RGB frame of rgb_hw: its aspect, about `pixels` pixels,
    both sides multiples of 4."""
    h, w = int(rgb_hw[0]), int(rgb_hw[1])
    scale = (pixels / float(h * w)) ** 0.5
    return (max(_SIDE_MULTIPLE * 8, _SIDE_MULTIPLE * round(h * scale / _SIDE_MULTIPLE)),
            max(_SIDE_MULTIPLE * 8, _SIDE_MULTIPLE * round(w * scale / _SIDE_MULTIPLE)))


def resize_plane(plane: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """A float32 plane at (height, width): pixel averaging to shrink (`fusion.resize_area`), bilinear to enlarge."""
    plane = np.asarray(plane, np.float32)
    if hw[0] * hw[1] <= plane.shape[0] * plane.shape[1]:
        return np.ascontiguousarray(resize_area(plane, hw))
    return cv2.resize(plane, (hw[1], hw[0]), interpolation=cv2.INTER_LINEAR)


def ids_from_probabilities(probs: np.ndarray, out_hw: tuple[int, int], min_confidence: float = 0.0,
                           min_object_confidence: float = 0.0) -> np.ndarray:
    """(C, h, w) class probabilities -> HxW uint8 class ids at out_hw: bilinear, most probable class,
    background (0) where that class's probability is below min_confidence, then `drop_unsure_objects`."""
    best = ids = None
    for cls in range(probs.shape[0]):
        plane = cv2.resize(np.ascontiguousarray(probs[cls], np.float32), (out_hw[1], out_hw[0]),
                           interpolation=cv2.INTER_LINEAR)
        if best is None:
            best, ids = plane, np.zeros(out_hw, np.uint8)
            continue
        better = plane > best  # ties keep the lower id, as argmax does
        ids[better] = cls
        np.maximum(best, plane, out=best)
    if min_confidence > 0.0:
        ids[best < np.float32(min_confidence)] = 0
    if min_object_confidence > 0.0:
        drop_unsure_objects(ids, best, min_object_confidence)
    return ids


def drop_unsure_objects(ids: np.ndarray, confidence: np.ndarray, min_peak: float,
                        fraction: float = PEAK_FRACTION) -> None:
    """In place: each 8-connected region of one class becomes background unless its most confident pixel reaches
    min_peak; a kept region loses its pixels below `fraction` of that peak. confidence: HxW, the probability of
    each pixel's class."""
    present = np.flatnonzero(np.bincount(ids.ravel()))  # a sort-free np.unique: 1280x720 ids at every frame
    for cls in present[present > 0]:
        count, labels, stats, _ = cv2.connectedComponentsWithStats((ids == cls).view(np.uint8), connectivity=8)
        for index in range(1, count):
            x, y, w, h = (int(v) for v in stats[index, :4])
            region = labels[y:y + h, x:x + w] == index
            conf = confidence[y:y + h, x:x + w]
            peak = float(conf[region].max())
            drop = region if peak < min_peak else region & (conf < np.float32(fraction * peak))
            ids[y:y + h, x:x + w][drop] = 0


class Segmenter:
    """Callable (vis_y, ir) -> class ids (HxW uint8 at vis_y's size); both inputs HxW float32 in [0, 1], each at
    any size of the same registered frame (each is resized straight to the working size).

    graph: the segmentation graph (inputs among fused_y / ir / vis_y, output `probs` (1, C, h/4, w/4)) with its
    JSON sidecar (inputs, classes). student: the released student's fusion graph (vis_y, ir -> fused_y), which
    makes the network's fused input. The sessions start on first use, so a node without mask subscribers never
    loads them; the files and the sidecar are checked here.
    """

    def __init__(self, graph: str | Path, student: str | Path, runtime: str = "auto", threads: int = 0,
                 precision: str = "fp32", min_confidence: float = DEFAULT_MIN_CONFIDENCE,
                 working_pixels: int = WORKING_PIXELS,
                 min_object_confidence: float = DEFAULT_MIN_OBJECT_CONFIDENCE,
                 detector: ObjectDetector | None = None) -> None:
        self.path, self.student = Path(graph), Path(student)
        for what, path in (("segmentation graph", self.path), ("student graph", self.student)):
            if not path.is_file():
                raise SegmentationError(f"{what} {path} does not exist (`sage-ros weights fetch` builds it)")
        try:
            meta = json.loads(self.path.with_suffix(".json").read_text())
            self.inputs = [str(n) for n in meta["inputs"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SegmentationError(f"segmentation graph {self.path}: unreadable sidecar: {exc}") from exc
        if meta.get("outputs") != ["probs"] or not set(self.inputs) <= {"fused_y", "ir", "vis_y"}:
            raise SegmentationError(f"segmentation graph {self.path} is not a probability graph of fused_y/ir/vis_y "
                                    "(rebuild it: `sage-ros weights fetch` rebuilds the shipped one)")
        try:
            # Only the segmentation's inputs are remapped: the published fused image never is.
            self.tone = {k: ToneRange.from_json(v) for k, v in (meta.get("input_tone") or {}).items()
                         if k in ("vis_y", "ir")}
        except ValueError as exc:
            raise SegmentationError(f"segmentation graph {self.path}: bad input_tone in its sidecar: {exc}") from exc
        for name, value in (("min_confidence", min_confidence), ("min_object_confidence", min_object_confidence)):
            if not 0.0 <= float(value) < 1.0:
                raise SegmentationError(f"{name} {value} must be in [0, 1)")
        self.meta = meta
        self.min_confidence = float(min_confidence)
        self.min_object_confidence = float(min_object_confidence)
        self.working_pixels = int(working_pixels)
        self.detector = detector
        self._options = (runtime, threads, precision)
        self._graphs: tuple[CpuGraph, CpuGraph] | None = None
        self._lock = threading.Lock()

    @property
    def class_table(self) -> ClassTable:
        """The network's classes and colours (its sidecar's `classes`; the MSRS convention without)."""
        return load_class_table(self.path)

    @property
    def runtime(self) -> str:
        return self._graphs[0].runtime if self._graphs is not None else f"{self._options[0]} (not started)"

    def _sessions(self) -> tuple[CpuGraph, CpuGraph]:
        with self._lock:
            if self._graphs is None:
                try:
                    self._graphs = (CpuGraph(self.path, *self._options), CpuGraph(self.student, *self._options))
                except SegmentationError:
                    raise
                except Exception as exc:  # the runtimes raise their own types for a bad file
                    raise SegmentationError(f"segmentation graphs {self.path.name} + {self.student.name} could "
                                            f"not be loaded: {exc}") from exc
            return self._graphs

    def working_planes(self, vis_y: np.ndarray, ir: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The visible Y and IR resized to the working size (before any tone remap): the network's and the
        detector's input, made once per frame."""
        hw = working_size(vis_y.shape, self.working_pixels)
        return resize_plane(vis_y, hw), resize_plane(ir, hw)

    def probabilities(self, vis_y: np.ndarray, ir: np.ndarray) -> np.ndarray:
        """(C, h, w) class probabilities at a quarter of the working size."""
        return self._probabilities(*self.working_planes(vis_y, ir))

    def _probabilities(self, vis_w: np.ndarray, ir_w: np.ndarray) -> np.ndarray:
        hw = vis_w.shape
        low = (hw[0] // _SIDE_MULTIPLE, hw[1] // _SIDE_MULTIPLE)
        network, student = self._sessions()
        if "vis_y" in self.tone:
            vis_w = into_tone_range(vis_w, self.tone["vis_y"])
        if "ir" in self.tone:
            ir_w = into_tone_range(ir_w, self.tone["ir"])
        fused = student.run({"vis_y": resize_area(vis_w, low)[None, None], "ir": resize_area(ir_w, low)[None, None]})
        # Each fused pixel repeated over its 4x4 block (one nearest-neighbour pass): the network's first average
        # pool gives it back exactly.
        fused_w = cv2.resize(np.clip(fused[0][0, 0], 0.0, 1.0), (hw[1], hw[0]), interpolation=cv2.INTER_NEAREST)
        planes = {"fused_y": fused_w, "ir": ir_w, "vis_y": vis_w}
        feeds = {name: np.ascontiguousarray(planes[name], np.float32)[None, None] for name in self.inputs}
        return np.asarray(network.run(feeds)[0], np.float32)[0]

    def __call__(self, vis_y: np.ndarray, ir: np.ndarray) -> np.ndarray:
        vis_w, ir_w = self.working_planes(vis_y, ir)
        ids = ids_from_probabilities(self._probabilities(vis_w, ir_w), vis_y.shape, self.min_confidence,
                                     self.min_object_confidence)
        if self.detector is not None:
            # The detector's boxes replace the network's regions of their class that they touch: it knows cars
            # and people on any camera, the network only on the one it learned. It reads the same working-size
            # planes (its input is about that size), not the full frames again.
            paint_boxes(ids, self.detector(vis_w, ir_w, out_hw=vis_y.shape[:2]))
        return ids

    def close(self) -> None:
        with self._lock:
            self._graphs = None
            if self.detector is not None:
                self.detector.close()
