"""Boxes as ROS 2 `vision_msgs/msg/Detection2DArray` messages (Humble layout), and dataset pair names.

`rosbags` ships no vision_msgs, so the definitions below (vision_msgs 4.x, as in Humble and later:
the box centre is a vision_msgs/Pose2D whose position is a vision_msgs/Point2D) are registered in the
shared type store on import. Field order matters: CDR has no field names, so these must match the
upstream .msg files exactly for a bag to read in ROS.

The encode/decode helpers are pure functions. A box is pixels with exclusive right/bottom edges
(x0, y0, x1, y1); on the wire it is centre + size, so integer edges survive the round trip exactly.
Classes travel as names (`results[].hypothesis.class_id`, e.g. "car"); decoding also accepts
numeric id strings ("1"), as many detectors publish them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from rosbags.typesys import get_types_from_msg

from sage_ros.bags.messages import TYPESTORE, header, stamp_of

DETECTIONS_TYPE = "vision_msgs/msg/Detection2DArray"
STRING_TYPE = "std_msgs/msg/String"
BOXES_TOPIC = "/detections/ground_truth"
#: One std_msgs/String per dataset pair (its file name), log time = the pair's RGB stamp.
PAIR_NAME_TOPIC = "/dataset/pair_names"

# vision_msgs 4.x (ROS 2 Humble) message definitions, checked against ros-perception/vision_msgs.
_DEFINITIONS = {
    "vision_msgs/msg/Point2D": "float64 x\nfloat64 y\n",
    "vision_msgs/msg/Pose2D": "vision_msgs/Point2D position\nfloat64 theta\n",
    "vision_msgs/msg/BoundingBox2D": "vision_msgs/Pose2D center\nfloat64 size_x\nfloat64 size_y\n",
    "vision_msgs/msg/ObjectHypothesis": "string class_id\nfloat64 score\n",
    "vision_msgs/msg/ObjectHypothesisWithPose": (
        "vision_msgs/ObjectHypothesis hypothesis\ngeometry_msgs/PoseWithCovariance pose\n"
    ),
    "vision_msgs/msg/Detection2D": (
        "std_msgs/Header header\nvision_msgs/ObjectHypothesisWithPose[] results\n"
        "vision_msgs/BoundingBox2D bbox\nstring id\n"
    ),
    "vision_msgs/msg/Detection2DArray": "std_msgs/Header header\nvision_msgs/Detection2D[] detections\n",
}
TYPESTORE.register({k: v for name, text in _DEFINITIONS.items() for k, v in get_types_from_msg(text, name).items()})
_T = TYPESTORE.types


@dataclass(frozen=True)
class DecodedBox:
    """A box read from a Detection2D: class id, (x0, y0, x1, y1) in pixels, score."""

    class_id: int
    x0: float
    y0: float
    x1: float
    y1: float
    score: float = 1.0

    def as_xyxy(self) -> tuple[float, float, float, float]:
        return self.x0, self.y0, self.x1, self.y1


@dataclass
class DecodedDetections:
    stamp_ns: int
    boxes: list[DecodedBox] = field(default_factory=list)
    unknown_classes: list[str] = field(default_factory=list)  # class strings no table entry matched


def detections_message(boxes: Iterable[Any], stamp_ns: int, frame_id: str, class_names: Sequence[str]) -> Any:
    """A Detection2DArray of human-labelled pixel boxes (objects with `class_id` and `as_xyxy()`, such as
    `sage_ros.evaluation.boxes.Box`); class ids become names from `class_names`, every score is 1.0.
    Each detection carries the array's header (vision_msgs asks for it).
    """
    pose_cov, pose_cls = _T["geometry_msgs/msg/PoseWithCovariance"], _T["geometry_msgs/msg/Pose"]
    point, quat = _T["geometry_msgs/msg/Point"], _T["geometry_msgs/msg/Quaternion"]
    array_header = header(stamp_ns, frame_id)
    detections = []
    for box in boxes:
        x0, y0, x1, y1 = box.as_xyxy()
        cid = int(box.class_id)
        name = class_names[cid] if 0 <= cid < len(class_names) else str(cid)
        hypothesis = _T["vision_msgs/msg/ObjectHypothesis"](class_id=name, score=1.0)
        # The hypothesis pose is unused for image boxes: identity, zero covariance.
        pose = pose_cov(
            pose=pose_cls(position=point(x=0.0, y=0.0, z=0.0), orientation=quat(x=0.0, y=0.0, z=0.0, w=1.0)),
            covariance=np.zeros(36, dtype=np.float64),
        )
        bbox = _T["vision_msgs/msg/BoundingBox2D"](
            center=_T["vision_msgs/msg/Pose2D"](
                position=_T["vision_msgs/msg/Point2D"](x=(x0 + x1) / 2.0, y=(y0 + y1) / 2.0), theta=0.0
            ),
            size_x=float(x1 - x0),
            size_y=float(y1 - y0),
        )
        detections.append(
            _T["vision_msgs/msg/Detection2D"](
                header=array_header,
                results=[_T["vision_msgs/msg/ObjectHypothesisWithPose"](hypothesis=hypothesis, pose=pose)],
                bbox=bbox,
                id="",
            )
        )
    return _T[DETECTIONS_TYPE](header=array_header, detections=detections)


def class_id_of(text: str, class_names: Sequence[str]) -> int | None:
    """A class string -> id: a name of the table (case-insensitive) or a numeric id; None if neither."""
    lowered = [n.lower() for n in class_names]
    key = text.strip().lower()
    if key in lowered:
        return lowered.index(key)
    try:
        return int(key)
    except ValueError:
        return None


def decode_detections(msg: Any, class_names: Sequence[str]) -> DecodedDetections:
    """Boxes of a Detection2DArray: the best-scoring hypothesis of each detection gives its class.

    Rotated boxes (theta != 0) are scored by their axis-aligned extent. A detection without a
    hypothesis, or whose class string matches no name and is not a number, is left out and its
    class string listed in `unknown_classes`.
    """
    out = DecodedDetections(stamp_of(msg))
    for det in msg.detections:
        if not det.results:
            out.unknown_classes.append("")
            continue
        best = max(det.results, key=lambda r: r.hypothesis.score)
        cid = class_id_of(best.hypothesis.class_id, class_names)
        if cid is None:
            out.unknown_classes.append(best.hypothesis.class_id)
            continue
        c = det.bbox.center
        w, h = det.bbox.size_x, det.bbox.size_y
        if c.theta:
            cos, sin = abs(math.cos(c.theta)), abs(math.sin(c.theta))
            w, h = w * cos + h * sin, w * sin + h * cos
        cx, cy = c.position.x, c.position.y
        out.boxes.append(DecodedBox(cid, cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0,
                                    float(best.hypothesis.score)))
    return out


def pair_name_message(name: str) -> Any:
    """A std_msgs/String holding a dataset pair's name (written with the pair's RGB stamp as log time)."""
    return _T[STRING_TYPE](data=name)
