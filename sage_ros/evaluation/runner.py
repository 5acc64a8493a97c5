"""Replay a bag through the node's synchroniser and fusion pipeline; score and record every pair.

The path a frame takes here is the node's: header stamps into `sage_ros.pairing.sync.ApproximateTimeSync`
(same slop, queue size and thermal offset semantics), `sage_ros.image.encodings` to decode,
`sage_ros.image.thermal.ThermalNormalizer` for 16-bit/float thermal, `sage_ros.pipeline.FusionPipeline`
to fuse. With a boxes topic (vision_msgs/Detection2DArray, e.g. from `make-bag --boxes`) and a model
that outputs class ids, each pair's mask is scored against the boxes with the RGB frame's stamp by
`sage_ros.evaluation.components`, the functions `sage-ros seg eval` uses. Nothing that goes wrong
with one message stops the run: it is counted by cause in `problems` and the next message is read.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from sage_ros.bags.detections import (
    BOXES_TOPIC,
    DETECTIONS_TYPE,
    PAIR_NAME_TOPIC,
    STRING_TYPE,
    DecodedBox,
    decode_detections,
)
from sage_ros.bags.messages import COMPRESSED_TYPE, IMAGE_TYPE, decode_any, deserialize, image_message, stamp_of
from sage_ros.bags.reader import BagReadError, open_bag
from sage_ros.bags.writer import BagWriter
from sage_ros.evaluation.baselines import luminance_of_bgr, luminance_of_rgb, score_methods
from sage_ros.evaluation.components import Detection, components_to_detections, f1_scores
from sage_ros.evaluation.metrics import confusion_matrix, segmentation_score
from sage_ros.image.encodings import to_bgr8
from sage_ros.image.imaging import ImageInputError, unit_to_uint8
from sage_ros.image.thermal import NormalizerConfig, ThermalNormalizer
from sage_ros.model.classes import ClassTable, overlay
from sage_ros.pairing.sync import ApproximateTimeSync, seconds_to_ns
from sage_ros.pipeline import FusionPipeline

log = logging.getLogger(__name__)

FUSED_TOPIC = "/fused/image_raw"
CLASS_TOPIC = "/segmentation/mask"  # the node's topic name: a bag replays like the node's output
OVERLAY_TOPIC = "/segmentation/overlay"
THUMB_WIDTH = 160  # contact-sheet thumbnails (keeps a 6-row sheet around 0.5 MB)
_MAX_DETAILS = 200  # problem descriptions kept verbatim; the counts keep going


@dataclass
class EvalOptions:
    thermal_topic: str = "/thermal/image_raw"
    rgb_topic: str = "/rgb/image_raw"
    gt_topic: str = "/segmentation/ground_truth"
    boxes_topic: str = BOXES_TOPIC  # vision_msgs/Detection2DArray human boxes (optional)
    pair_names_topic: str = PAIR_NAME_TOPIC  # std_msgs/String pair names, log time = RGB stamp (optional)
    box_min_area: int = 6  # mask components smaller than this are speckle (as `seg eval --min-area`)
    slop_s: float = 0.05
    queue_size: int = 10
    thermal_offset_ms: float = 0.0  # added to thermal stamps before pairing (node parameter semantics)
    # None (auto): per-frame percentile windows for a dataset bag (it has a ground-truth, boxes or pair
    # names topic: frames are unrelated images, so a window smoothed across them mixes scenes), the node's
    # smoothed window for a camera stream; EvalResult.thermal_reason says which and why (in the report).
    thermal: NormalizerConfig | None = None
    compute_metrics: bool = True
    output_bag: Path | None = None  # None: no output bag
    max_pairs: int | None = None


@dataclass
class PairRecord:
    index: int
    rgb_stamp_ns: int
    thermal_stamp_ns: int
    size: tuple[int, int]  # (width, height)
    pipeline_ms: float
    inference_ms: float
    metrics: dict[str, dict[str, float]] | None = None  # method -> metric -> value
    miou: float | None = None
    name: str | None = None  # the dataset pair's name, when the bag carries one for this stamp
    boxes: dict[str, int] | None = None  # components, boxes, matched: when scored against boxes


@dataclass
class EvalResult:
    bag: Path
    storage: str
    recovered: bool
    topics: dict[str, dict[str, Any]]
    backend: str
    has_segmentation: bool
    options: EvalOptions
    pairs: list[PairRecord] = field(default_factory=list)
    sync_stats: dict[str, Any] = field(default_factory=dict)
    problem_counts: Counter = field(default_factory=Counter)
    problem_details: list[dict[str, str]] = field(default_factory=list)
    segmentation: dict[str, Any] | None = None
    # index -> (IR, visible, fused) thumbnails, plus the class overlay when the model has class ids
    thumbnails: dict[int, tuple[np.ndarray, ...]] = field(default_factory=dict)
    gt_frames: int = 0
    boxes_topic: str | None = None  # the boxes topic found in the bag
    boxes: dict[str, Any] | None = None  # masks vs boxes scores (see `_Replay.finish`)
    thermal_reason: str = "as given"
    wall_s: float = 0.0

    def problem(self, kind: str, detail: str) -> None:
        self.problem_counts[kind] += 1
        if len(self.problem_details) < _MAX_DETAILS:
            self.problem_details.append({"kind": kind, "detail": detail})
        log.warning("%s: %s", kind, detail)


def _resolve_topic(name: str, topics: dict[str, str]) -> str | None:
    """Bag topics are absolute ('/rgb/image_raw'); accept the name with or without the slash."""
    for candidate in (name, "/" + name.lstrip("/"), name.lstrip("/")):
        if candidate in topics:
            return candidate
    return None


def _thumb(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    scale = THUMB_WIDTH / w
    return cv2.resize(image, (THUMB_WIDTH, max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


class _Replay:
    """State of one evaluation run; `on_pair` is the synchroniser's callback."""

    def __init__(
        self,
        pipeline: FusionPipeline,
        result: EvalResult,
        class_table: ClassTable,
        labels: dict[int, np.ndarray],
        writer: BagWriter | None,
        boxes: dict[int, list[DecodedBox]] | None = None,
        names: dict[int, str] | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.result = result
        self.table = class_table
        self.labels = labels
        self.writer = writer
        self.boxes = boxes or {}
        self.names = names or {}
        # Scored pairs in order: (pair name or None, mask components, human boxes).
        self.box_scored: list[tuple[str | None, list[Detection], list[DecodedBox]]] = []
        self.box_missing = 0
        self.normalizer = ThermalNormalizer(result.options.thermal)
        self.confusion: np.ndarray | None = None
        self.seen = 0
        self.done = False

    def on_pair(self, pair: tuple) -> None:
        (th_msg, th_type, th_time), (rgb_msg, rgb_type, rgb_time) = pair
        res = self.result
        if res.options.max_pairs is not None and len(res.pairs) >= res.options.max_pairs:
            self.done = True
            return
        index = self.seen  # order in which the synchroniser emitted the pair, skipped ones included
        self.seen += 1
        rgb_stamp, th_stamp = stamp_of(rgb_msg), stamp_of(th_msg)
        where = f"pair at t={rgb_stamp / 1e9:.3f}s"
        try:
            thermal, th_encoding = decode_any(th_msg, th_type)
            if th_type == COMPRESSED_TYPE and thermal.ndim == 3:
                # 8-bit thermal compressed as colour JPEG/PNG: grey stored in three channels.
                code = cv2.COLOR_BGRA2GRAY if thermal.shape[2] == 4 else cv2.COLOR_BGR2GRAY
                thermal = cv2.cvtColor(thermal, code)
            if thermal.ndim != 2:
                raise ImageInputError(f"thermal encoding {th_encoding!r} is not a single-channel image")
            ir = thermal if thermal.dtype == np.uint8 else self.normalizer.normalize(thermal)
            vis_bgr = to_bgr8(*decode_any(rgb_msg, rgb_type))
        except ImageInputError as exc:
            res.problem("decode", f"{where}: {exc}")
            return
        if ir.shape != vis_bgr.shape[:2]:
            res.problem(
                "size-mismatch",
                f"{where}: thermal {ir.shape[1]}x{ir.shape[0]} and RGB {vis_bgr.shape[1]}x{vis_bgr.shape[0]} "
                "differ in size (register or resize them); pair skipped",
            )
            return
        start = time.perf_counter()
        try:
            fused = self.pipeline.fuse(ir, vis_bgr)
        except (ImageInputError, RuntimeError) as exc:
            res.problem("pipeline", f"{where}: {exc}")
            return
        pipeline_ms = (time.perf_counter() - start) * 1000.0
        record = PairRecord(
            index, rgb_stamp, th_stamp, (ir.shape[1], ir.shape[0]), pipeline_ms, fused.inference_ms,
            name=self.names.get(rgb_stamp),
        )
        ir_u8 = ir if ir.dtype == np.uint8 else unit_to_uint8(ir)
        vis_y = luminance_of_bgr(vis_bgr)
        fused_y = luminance_of_rgb(fused.fused_rgb)
        if res.options.compute_metrics:
            record.metrics = score_methods(ir_u8, vis_y, fused_y)
        self._segmentation(record, fused.class_ids, rgb_stamp, where)
        self._score_boxes(record, fused.class_ids, rgb_stamp)
        res.pairs.append(record)
        # The node's overlay (class colours over the fused image), as /segmentation/overlay shows it.
        blend = None if fused.class_ids is None else overlay(fused.fused_rgb, fused.class_ids, self.table)
        colour = [cv2.cvtColor(c, cv2.COLOR_RGB2BGR) for c in (fused.fused_rgb, blend) if c is not None]
        res.thumbnails[index] = tuple(_thumb(t) for t in (ir_u8, vis_bgr, *colour))
        if self.writer is not None:
            # Outputs carry the RGB frame's stamp and frame_id (what the node publishes); their log time
            # is when the pair was complete, so the bag stays in time order.
            log_time, stamp, frame = max(th_time, rgb_time), rgb_stamp, rgb_msg.header.frame_id
            self.writer.write(FUSED_TOPIC, log_time, image_message(fused.fused_rgb, "rgb8", stamp, frame))
            if blend is not None:
                self.writer.write(CLASS_TOPIC, log_time, image_message(fused.class_ids, "mono8", stamp, frame))
                self.writer.write(OVERLAY_TOPIC, log_time, image_message(blend, "rgb8", stamp, frame))

    def _segmentation(self, record: PairRecord, class_ids: np.ndarray | None, stamp: int, where: str) -> None:
        if class_ids is None or not self.labels:
            return
        truth = self.labels.get(stamp)
        if truth is None:
            self.result.problem("ground-truth", f"{where}: no ground-truth label with the RGB frame's stamp")
            return
        if truth.shape != class_ids.shape:
            self.result.problem(
                "ground-truth", f"{where}: label {truth.shape} and prediction {class_ids.shape} differ"
            )
            return
        # Every uint8 id has a row: classes absent from truth and prediction drop out of the scores.
        cm = confusion_matrix(truth, class_ids, 256, ignore_index=255)
        self.confusion = cm if self.confusion is None else self.confusion + cm
        record.miou = segmentation_score(cm).miou

    def _score_boxes(self, record: PairRecord, class_ids: np.ndarray | None, stamp: int) -> None:
        if class_ids is None or not self.result.boxes_topic:
            return
        truth = self.boxes.get(stamp)
        if truth is None:
            self.box_missing += 1  # a dataset pair without a box file: not scored, counted
            return
        detections = components_to_detections(
            class_ids, None, self.scored_classes, min_area=self.result.options.box_min_area
        )
        self.box_scored.append((record.name, detections, truth))
        one = f1_scores([detections], [truth], self.scored_classes)
        record.boxes = {
            "components": sum(c.predicted for c in one.per_class.values()),
            "boxes": sum(c.boxes for c in one.per_class.values()),
            "matched": sum(c.tp for c in one.per_class.values()),
        }

    @property
    def scored_classes(self) -> tuple[int, ...]:
        """Object classes of the model's table (every id but 0): (1, 2, 3) for MSRS car/person/bike."""
        return tuple(range(1, len(self.table.names)))

    def finish(self) -> None:
        if self.confusion is not None:
            score = segmentation_score(self.confusion)
            self.result.segmentation = {
                "miou": score.miou,
                "pixel_accuracy": score.pixel_accuracy,
                "iou": {self.table.name(c): v for c, v in score.iou.items()},
                "pairs": sum(1 for p in self.result.pairs if p.miou is not None),
            }
        if self.result.boxes_topic and self.result.has_segmentation:
            self.result.boxes = self._box_summary()

    def _box_summary(self) -> dict[str, Any]:
        """Masks vs boxes over the scored pairs, as `sage-ros seg eval` reports them (by class name),
        split by day/night when every scored pair's name ends in D or N (the MSRS naming)."""
        scored = self.box_scored
        out: dict[str, Any] = {
            "topic": self.result.boxes_topic,
            "iou_threshold": 0.5,
            "min_area": self.result.options.box_min_area,
            "pairs_scored": len(scored),
            "pairs_without_boxes": self.box_missing,
        }
        groups: dict[str, list] = {"all": scored}
        names = [n for n, _, _ in scored]
        if names and all(n and n[-1] in "DN" for n in names):
            for light, suffix in (("day", "D"), ("night", "N")):
                chosen = [s for s in scored if s[0][-1] == suffix]
                if chosen:
                    groups[light] = chosen
        out["scores"] = {}
        for group, items in groups.items():
            if not items:
                continue
            scores = f1_scores([d for _, d, _ in items], [b for _, _, b in items], self.scored_classes)
            entry = scores.to_json()
            entry["classes"] = {self.table.name(int(c)): v for c, v in entry["classes"].items()}
            out["scores"][group] = _nan_to_none(entry)
        return out


def _nan_to_none(value: Any) -> Any:
    """NaN (a class with neither boxes nor components) as JSON null: report.json stays strict JSON."""
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, float) and value != value:
        return None
    return value


def _read_side(source: Any, topic: str, result: EvalResult | None, kind: str,
               decode: Callable[[Any], tuple[int, Any]]) -> dict[int, Any]:
    """stamp -> decode(message) for every message on a side topic. An unreadable one is a `kind` problem,
    or skipped silently without a `result` (pair names label the contact sheet, never worth an error)."""
    out: dict[int, Any] = {}
    for m in source.messages([topic]):
        try:
            stamp, value = decode(m)
        except Exception as exc:  # noqa: BLE001 - one bad message must not end the run
            if result is not None:
                result.problem(kind, f"{topic} at log time {m.log_time_ns / 1e9:.3f}s unreadable: {exc}")
            continue
        out[stamp] = value
    return out


def _label(m: Any) -> tuple[int, np.ndarray]:
    msg = deserialize(m.raw, m.msgtype)
    image, _ = decode_any(msg, m.msgtype)
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ImageInputError(f"ground truth must be mono8 class ids, got {msg.encoding}")
    return stamp_of(msg), image


def _pair_name(m: Any) -> tuple[int, str]:
    """Pair names by log time: make-bag writes each at its pair's RGB stamp."""
    if m.msgtype != STRING_TYPE:
        raise ValueError(f"holds {m.msgtype}, expected {STRING_TYPE}")
    return m.log_time_ns, str(deserialize(m.raw, m.msgtype).data)


def _read_boxes(
    source: Any, topic: str, result: EvalResult, class_names: tuple[str, ...]
) -> dict[int, list[DecodedBox]]:
    unknown: Counter = Counter()

    def decode(m: Any) -> tuple[int, list[DecodedBox]]:
        if m.msgtype != DETECTIONS_TYPE:
            raise ValueError(f"holds {m.msgtype}, expected {DETECTIONS_TYPE}")
        decoded = decode_detections(deserialize(m.raw, m.msgtype), class_names)
        unknown.update(decoded.unknown_classes)
        return decoded.stamp_ns, decoded.boxes

    boxes = _read_side(source, topic, result, "boxes", decode)
    for name, count in sorted(unknown.items()):
        result.problem("boxes", f"{count} box(es) on {topic} with class {name!r}, not a class of the model: left out")
    return boxes


def evaluate_bag(
    bag: str | Path,
    pipeline: FusionPipeline,
    options: EvalOptions | None = None,
    class_table: ClassTable | None = None,
    progress: Callable[[int], Any] | None = None,
) -> EvalResult:
    """Replay `bag` through the synchroniser and `pipeline`; see the module docstring.

    `progress(total)` may return a tqdm-like context manager (with `update()`), advanced per message read.
    Raises BagReadError only when the bag cannot be opened at all or lacks the thermal/RGB topics.
    """
    from sage_ros.model.classes import class_table as builtin_table

    options = options or EvalOptions()
    class_table = class_table or builtin_table("msrs")
    started = time.perf_counter()
    source = open_bag(bag)
    try:
        result = EvalResult(
            bag=Path(bag),
            storage=source.storage,
            recovered=source.recovered,
            topics={
                t: {"type": typ, "count": source.counts.get(t, 0)} for t, typ in sorted(source.topics.items())
            },
            backend=pipeline.description,  # updated once a pair has started the student
            has_segmentation=pipeline.segmenter is not None,
            options=options,
        )
        for p in source.problems:
            result.problem(f"bag-{p.kind}", p.detail)
        known_problems = len(source.problems)
        thermal_topic = _resolve_topic(options.thermal_topic, source.topics)
        rgb_topic = _resolve_topic(options.rgb_topic, source.topics)
        wanted = ((options.thermal_topic, thermal_topic), (options.rgb_topic, rgb_topic))
        missing = [name for name, found in wanted if found is None]
        if missing:
            available = ", ".join(f"{t} ({typ})" for t, typ in sorted(source.topics.items())) or "none"
            raise BagReadError(f"{bag}: topic(s) {', '.join(missing)} not in the bag; it has: {available}")
        for topic in (thermal_topic, rgb_topic):
            if source.topics[topic] not in (IMAGE_TYPE, COMPRESSED_TYPE):
                raise BagReadError(
                    f"{bag}: topic {topic} holds {source.topics[topic]}, "
                    f"expected {IMAGE_TYPE} or {COMPRESSED_TYPE}"
                )
        gt_topic = _resolve_topic(options.gt_topic, source.topics)
        boxes_topic = _resolve_topic(options.boxes_topic, source.topics) if options.boxes_topic else None
        names_topic = _resolve_topic(options.pair_names_topic, source.topics) if options.pair_names_topic else None
        if options.thermal is None:
            dataset_topic = gt_topic or boxes_topic or names_topic
            thermal = NormalizerConfig(ema_alpha=1.0) if dataset_topic else NormalizerConfig()
            options = result.options = replace(options, thermal=thermal)
            result.thermal_reason = (
                f"auto: per frame, because the bag has {dataset_topic} (a dataset of unrelated frames, where a "
                "window carried across frames would mix scenes)" if dataset_topic else "auto: smoothed across "
                "frames as in the node, because the bag has no ground-truth topic (a camera stream); use "
                "--thermal-mode per-frame for a dataset bag")
        labels = _read_side(source, gt_topic, result, "ground-truth", _label) if gt_topic else {}
        result.gt_frames = len(labels)
        boxes: dict[int, list[DecodedBox]] = {}
        if boxes_topic is not None:
            result.boxes_topic = boxes_topic
            boxes = _read_boxes(source, boxes_topic, result, class_table.names)
        names = _read_side(source, names_topic, None, "", _pair_name) if names_topic else {}
        # Side topics are copied into the output bag with the inputs; only images go to the synchroniser.
        side = {t for t in (gt_topic, boxes_topic, names_topic) if t is not None}
        topics = [t for t in (thermal_topic, rgb_topic, gt_topic, boxes_topic, names_topic) if t is not None]
        with ExitStack() as closing:
            writer = None
            if options.output_bag is not None:
                writer = closing.enter_context(BagWriter(options.output_bag, source.storage))  # the input's storage
            replay = _Replay(pipeline, result, class_table, labels, writer, boxes, names)
            sync = ApproximateTimeSync(
                2,
                queue_size=options.queue_size,
                slop=options.slop_s,
                callback=replay.on_pair,
                offsets_ns=[seconds_to_ns(options.thermal_offset_ms / 1000.0), 0],
            )
            bar = closing.enter_context(progress(source.message_count(topics) or None)) if progress else None
            for m in source.messages(topics):
                if bar is not None:
                    bar.update()
                if writer is not None:
                    writer.write_raw(m.topic, m.log_time_ns, m.raw, m.msgtype)
                if m.topic in side:
                    continue
                try:
                    msg = deserialize(m.raw, m.msgtype)
                except Exception as exc:  # noqa: BLE001 - damaged CDR raises assorted errors
                    where = f"{m.topic} at {m.log_time_ns / 1e9:.3f}s"
                    result.problem("deserialize", f"{where}: {type(exc).__name__}: {exc}")
                    continue
                sync.add(0 if m.topic == thermal_topic else 1, stamp_of(msg), (msg, m.msgtype, m.log_time_ns))
                if replay.done:
                    break
            sync.flush()
        # The label pass and the main pass meet the same damage: report each problem once.
        for p in dict.fromkeys(source.problems[known_problems:]):
            result.problem(f"bag-{p.kind}", p.detail)
        replay.finish()
        result.backend = pipeline.description
        result.sync_stats = sync.stats.as_dict()
        result.wall_s = time.perf_counter() - started
        return result
    finally:
        source.close()
