"""A folder dataset -> a ROS 2 bag of thermal, RGB and ground-truth streams (labels, boxes, pair names).

Stamps follow a nominal frame rate; optional uniform jitter and a fixed thermal offset make the
two streams arrive the way real drivers deliver them, so bag evaluation exercises the synchroniser.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from sage_ros.bags.detections import (
    BOXES_TOPIC,
    DETECTIONS_TYPE,
    STRING_TYPE,
    detections_message,
    pair_name_message,
)
from sage_ros.bags.messages import IMAGE_TYPE, image_message
from sage_ros.bags.writer import BagWriter
from sage_ros.model.classes import class_table
from sage_ros.pairing.datasets import FolderDataset, read_infrared, read_label, read_visible

log = logging.getLogger(__name__)

THERMAL_TOPIC = "/thermal/image_raw"
RGB_TOPIC = "/rgb/image_raw"
GT_TOPIC = "/segmentation/ground_truth"
THERMAL_FRAME, RGB_FRAME = "thermal_camera", "rgb_camera"

#: Boxes of one pair: (name, image width, image height) -> boxes (objects with class_id and
#: as_xyxy(), in pixels), or None when the pair has no box file (then no message is written).
BoxSource = Callable[[str, int, int], Sequence[Any] | None]


@dataclass
class MakeBagOptions:
    storage: str = "mcap"
    rate_hz: float = 10.0
    start_ns: int = 1_700_000_000 * 1_000_000_000
    jitter_ms: float = 0.0  # each stamp moves by a uniform amount in [-jitter, +jitter]
    thermal_offset_ms: float = 0.0  # thermal stamps late (positive) or early relative to RGB
    thermal_encoding: str = "mono8"  # mono8 | mono16
    rgb_encoding: str = "bgr8"  # bgr8 | rgb8
    # mono16 from 8-bit images: counts = offset + gain * grey (defaults stay in 14 bits, as raw cameras)
    mono16_offset: int = 1000
    mono16_gain: int = 60
    thermal_topic: str = THERMAL_TOPIC
    rgb_topic: str = RGB_TOPIC
    gt_topic: str = GT_TOPIC
    boxes_topic: str = BOXES_TOPIC
    # One std_msgs/String per pair holding its name, log time = the pair's RGB stamp; None: not written.
    pair_name_topic: str | None = None
    seed: int = 0

    def validate(self) -> None:
        if self.rate_hz <= 0:
            raise ValueError(f"rate must be > 0 Hz, got {self.rate_hz}")
        if self.jitter_ms < 0:
            raise ValueError(f"jitter must be >= 0 ms, got {self.jitter_ms}")
        if not 0 <= self.mono16_offset + 255 * self.mono16_gain <= 65535 or self.mono16_gain <= 0:
            raise ValueError("mono16 offset + 255 * gain must fit 16 bits (gain > 0)")


@dataclass
class MakeBagSummary:
    path: Path
    frames: int
    counts: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # pair name -> reason
    box_errors: dict[str, str] = field(default_factory=dict)  # pair name -> why its boxes were left out


def frame_stamps(n: int, options: MakeBagOptions) -> tuple[np.ndarray, np.ndarray]:
    """(rgb_stamps, thermal_stamps) in ns for n frames: nominal rate + jitter, thermal + offset."""
    rng = np.random.default_rng(options.seed)
    nominal = options.start_ns + np.rint(np.arange(n) * (1e9 / options.rate_hz)).astype(np.int64)
    jitter = options.jitter_ms * 1e6
    rgb = nominal + np.rint(rng.uniform(-jitter, jitter, n)).astype(np.int64)
    thermal = nominal + int(round(options.thermal_offset_ms * 1e6))
    thermal = thermal + np.rint(rng.uniform(-jitter, jitter, n)).astype(np.int64)
    return rgb, thermal


def _thermal_image(ir: np.ndarray, options: MakeBagOptions) -> np.ndarray:
    if options.thermal_encoding == "mono16":
        if ir.dtype == np.uint16:
            return ir
        return (options.mono16_offset + options.mono16_gain * ir.astype(np.uint32)).astype(np.uint16)
    if ir.dtype != np.uint8:
        raise ValueError("16-bit infrared image: write it as mono16 (--thermal-encoding mono16)")
    return ir


def write_dataset_bag(
    dataset: FolderDataset,
    out: str | Path,
    options: MakeBagOptions | None = None,
    on_frame: Callable[[str], None] | None = None,
    boxes: BoxSource | None = None,
) -> MakeBagSummary:
    """Write every pair of `dataset` as one thermal, one RGB and (if labelled) one label message.

    `boxes` adds a vision_msgs/Detection2DArray per pair that has boxes (an empty array for a pair
    whose box list is empty: a frame without objects), stamped like the RGB frame; a box source that
    raises ValueError (a malformed file) leaves that pair's boxes out and is reported in `box_errors`.
    With `options.pair_name_topic` each pair's name is written too (std_msgs/String).
    Messages are written in log-time order (log time = header stamp, as a recorder on the same
    clock would see them). A pair that cannot be read is skipped and reported, the rest written.
    """
    options = options or MakeBagOptions()
    options.validate()
    pairs = dataset.pairs
    rgb_stamps, th_stamps = frame_stamps(len(pairs), options)
    # (log time, order within a frame, frame index, kind): one sorted schedule of every message.
    schedule = []
    for i, pair in enumerate(pairs):
        schedule.append((int(th_stamps[i]), 0, i, "thermal"))
        schedule.append((int(rgb_stamps[i]), 1, i, "rgb"))
        if pair.label_path is not None:
            schedule.append((int(rgb_stamps[i]), 2, i, "label"))
        if boxes is not None:
            schedule.append((int(rgb_stamps[i]), 3, i, "boxes"))
        if options.pair_name_topic:
            schedule.append((int(rgb_stamps[i]), 4, i, "name"))
    schedule.sort()
    # Box class id -> the class_id string of its hypothesis (MSRS: "car", "person", "bike").
    class_names = class_table("msrs").names
    rgb_sizes: dict[int, tuple[int, int]] = {}  # frame index -> (width, height), for normalised boxes
    summary = MakeBagSummary(Path(out), frames=0)
    with BagWriter(out, storage=options.storage) as writer:
        for t, _, i, kind in schedule:
            pair = pairs[i]
            if pair.name in summary.skipped:
                continue
            msgtype = IMAGE_TYPE
            try:
                if kind == "boxes":
                    if i not in rgb_sizes:
                        continue
                    try:
                        found = boxes(pair.name, *rgb_sizes[i])
                    except ValueError as exc:
                        summary.box_errors[pair.name] = str(exc)
                        log.warning("boxes of pair %s left out: %s", pair.name, exc)
                        continue
                    if found is None:
                        continue
                    msg = detections_message(found, t, RGB_FRAME, class_names)
                    topic, msgtype = options.boxes_topic, DETECTIONS_TYPE
                elif kind == "name":
                    msg, topic, msgtype = pair_name_message(pair.name), options.pair_name_topic, STRING_TYPE
                elif kind == "thermal":
                    image = _thermal_image(read_infrared(pair.ir_path), options)
                    msg = image_message(image, options.thermal_encoding, t, THERMAL_FRAME)
                    topic = options.thermal_topic
                elif kind == "rgb":
                    image = read_visible(pair.vis_path)
                    if options.rgb_encoding == "rgb8":
                        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
                    msg = image_message(image, options.rgb_encoding, t, RGB_FRAME)
                    topic = options.rgb_topic
                    rgb_sizes[i] = (image.shape[1], image.shape[0])
                else:
                    msg = image_message(read_label(pair.label_path), "mono8", t, RGB_FRAME)
                    topic = options.gt_topic
            except ValueError as exc:
                summary.skipped[pair.name] = str(exc)
                log.warning("skipping pair %s: %s", pair.name, exc)
                continue
            writer.write(topic, t, msg, msgtype)
            if on_frame is not None and kind == "rgb":
                on_frame(pair.name)
        summary.counts = dict(writer.counts)
    summary.frames = sum(1 for p in pairs if p.name not in summary.skipped)
    return summary
