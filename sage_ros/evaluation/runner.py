"""Replay a bag through the node's synchroniser and fusion pipeline; score and record every pair.

The path a frame takes here is the node's: header stamps into `sage_ros.pairing.sync.ApproximateTimeSync`
(same slop, queue size and thermal offset semantics), `sage_ros.image.encodings` to decode,
`sage_ros.image.thermal.ThermalNormalizer` for 16-bit/float thermal, `sage_ros.pipeline.FusionPipeline`
to fuse. Nothing that goes wrong with one message stops the run: it is counted by cause in
`problems` and the next message is read.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from sage_ros.bags import BagReadError, BagWriter, image_message, open_bag, stamp_of
from sage_ros.bags.messages import COMPRESSED_TYPE, IMAGE_TYPE, decode_any, deserialize
from sage_ros.evaluation.baselines import luminance_of_bgr, luminance_of_rgb, score_methods
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


def _auto_thermal(options: EvalOptions, gt_topic: str | None) -> EvalOptions:
    if options.thermal.mode != "percentile":
        return replace(options, thermal_reason="as given")
    if gt_topic is not None:
        return replace(options, thermal=replace(options.thermal, ema_alpha=1.0),
                       thermal_reason=f"auto: per frame, because the bag has {gt_topic} (a dataset of unrelated "
                       "frames, where a window carried across frames would mix scenes)")
    return replace(options, thermal_reason="auto: smoothed across frames as in the node, because the bag has no "
                   "ground-truth topic (a camera stream); use --thermal-mode per-frame for a dataset bag")


@dataclass
class EvalOptions:
    thermal_topic: str = "/thermal/image_raw"
    rgb_topic: str = "/rgb/image_raw"
    gt_topic: str = "/segmentation/ground_truth"
    slop_s: float = 0.05
    queue_size: int = 10
    thermal_offset_ms: float = 0.0  # added to thermal stamps before pairing (node parameter semantics)
    thermal: NormalizerConfig = field(default_factory=NormalizerConfig)
    # auto: per-frame percentile windows for a dataset bag (it has the ground-truth topic: frames are
    # unrelated images, so a window smoothed across them mixes scenes), the node's smoothed window for
    # a camera stream. thermal_reason then says which and why (in the report).
    thermal_auto: bool = False
    thermal_reason: str = ""
    compute_metrics: bool = True
    output_bag: Path | None = None  # None: no output bag
    output_storage: str | None = None  # None: same as the input bag
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
    thumbnails: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)
    gt_frames: int = 0
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
    ) -> None:
        self.pipeline = pipeline
        self.result = result
        self.table = class_table
        self.labels = labels
        self.writer = writer
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
            index, rgb_stamp, th_stamp, (ir.shape[1], ir.shape[0]), pipeline_ms, fused.inference_ms
        )
        ir_u8 = ir if ir.dtype == np.uint8 else unit_to_uint8(ir)
        vis_y = luminance_of_bgr(vis_bgr)
        fused_y = luminance_of_rgb(fused.fused_rgb)
        if res.options.compute_metrics:
            record.metrics = score_methods(ir_u8, vis_y, fused_y)
        self._segmentation(record, fused.class_ids, rgb_stamp, where)
        res.pairs.append(record)
        fused_bgr = cv2.cvtColor(fused.fused_rgb, cv2.COLOR_RGB2BGR)
        res.thumbnails[index] = (_thumb(ir_u8), _thumb(vis_bgr), _thumb(fused_bgr))
        if self.writer is not None:
            self._write_outputs(rgb_msg, max(th_time, rgb_time), fused)

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
        n = max(len(self.table.names), int(truth.max()) + 1, int(class_ids.max()) + 1)
        cm = confusion_matrix(truth, class_ids, n, ignore_index=255)
        if self.confusion is None or self.confusion.shape[0] < n:
            grown = np.zeros((n, n), np.int64)
            if self.confusion is not None:
                k = self.confusion.shape[0]
                grown[:k, :k] = self.confusion
            self.confusion = grown
        self.confusion[:n, :n] += cm
        record.miou = segmentation_score(cm).miou

    def _write_outputs(self, rgb_msg: Any, log_time: int, fused: Any) -> None:
        # Outputs carry the RGB frame's stamp and frame_id (what the node publishes); their log time
        # is when the pair was complete, so the bag stays in time order.
        stamp, frame = stamp_of(rgb_msg), rgb_msg.header.frame_id
        self.writer.write(FUSED_TOPIC, log_time, image_message(fused.fused_rgb, "rgb8", stamp, frame))
        if fused.class_ids is not None:
            self.writer.write(CLASS_TOPIC, log_time, image_message(fused.class_ids, "mono8", stamp, frame))
            blend = overlay(fused.fused_rgb, fused.class_ids, self.table)
            self.writer.write(OVERLAY_TOPIC, log_time, image_message(blend, "rgb8", stamp, frame))

    def finish(self) -> None:
        if self.confusion is not None:
            score = segmentation_score(self.confusion)
            self.result.segmentation = {
                "miou": score.miou,
                "pixel_accuracy": score.pixel_accuracy,
                "iou": {self.table.name(c): v for c, v in score.iou.items()},
                "pairs": sum(1 for p in self.result.pairs if p.miou is not None),
            }


def _read_labels(source: Any, topic: str, result: EvalResult) -> dict[int, np.ndarray]:
    labels: dict[int, np.ndarray] = {}
    for m in source.messages([topic]):
        try:
            msg = deserialize(m.raw, m.msgtype)
            image, _ = decode_any(msg, m.msgtype)
            if image.ndim != 2 or image.dtype != np.uint8:
                raise ImageInputError(f"ground truth must be mono8 class ids, got {msg.encoding}")
            labels[stamp_of(msg)] = image
        except Exception as exc:  # noqa: BLE001 - one bad label must not end the run
            result.problem("ground-truth", f"label at log time {m.log_time_ns / 1e9:.3f}s unreadable: {exc}")
    return labels


def evaluate_bag(
    bag: str | Path,
    pipeline: FusionPipeline,
    options: EvalOptions | None = None,
    class_table: ClassTable | None = None,
    progress: Callable[[int], Any] | None = None,
) -> EvalResult:
    """Replay `bag` through the synchroniser and `pipeline`; see the module docstring.

    `progress(total)` may return a tqdm-like object (with `update()`); it is advanced per message read.
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
            backend=pipeline.backend.description,
            has_segmentation=pipeline.backend.has_segmentation,
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
        if options.thermal_auto:
            options = _auto_thermal(options, gt_topic)
            result.options = options
        labels: dict[int, np.ndarray] = {}
        if gt_topic is not None:
            labels = _read_labels(source, gt_topic, result)
            result.gt_frames = len(labels)
        topics = [t for t in (thermal_topic, rgb_topic, gt_topic) if t is not None]
        writer = None
        if options.output_bag is not None:
            writer = BagWriter(options.output_bag, storage=options.output_storage or source.storage)
            writer.__enter__()
        replay = _Replay(pipeline, result, class_table, labels, writer)
        sync = ApproximateTimeSync(
            2,
            queue_size=options.queue_size,
            slop=options.slop_s,
            callback=replay.on_pair,
            offsets_ns=[seconds_to_ns(options.thermal_offset_ms / 1000.0), 0],
        )
        bar = progress(source.message_count(topics) or None) if progress else None
        try:
            for m in source.messages(topics):
                if bar is not None:
                    bar.update()
                if writer is not None:
                    writer.write_raw(m.topic, m.log_time_ns, m.raw, m.msgtype)
                if m.topic == gt_topic:
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
        finally:
            if bar is not None and hasattr(bar, "close"):
                bar.close()
            if writer is not None:
                writer.__exit__(None, None, None)
        # The label pass and the main pass meet the same damage: report each problem once.
        for p in dict.fromkeys(source.problems[known_problems:]):
            result.problem(f"bag-{p.kind}", p.detail)
        if labels and not pipeline.backend.has_segmentation:
            log.info("ground truth present but the model has no segmentation head: no mIoU")
        replay.finish()
        result.sync_stats = sync.stats.as_dict()
        result.wall_s = time.perf_counter() - started
        return result
    finally:
        source.close()
