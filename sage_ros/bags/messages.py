"""sensor_msgs/Image messages as `rosbags` objects: build, serialise, read stamps."""

from __future__ import annotations

from typing import Any

import numpy as np
from rosbags.typesys import Stores, get_typestore

from sage_ros.encodings import encode_image, fill_msg

#: sensor_msgs/Image and its header are identical from Humble to Kilted; one store serves all.
TYPESTORE = get_typestore(Stores.LATEST)
IMAGE_TYPE = "sensor_msgs/msg/Image"

_Image = TYPESTORE.types[IMAGE_TYPE]
_Header = TYPESTORE.types["std_msgs/msg/Header"]
_Time = TYPESTORE.types["builtin_interfaces/msg/Time"]


def stamp_to_ns(sec: int, nanosec: int) -> int:
    return int(sec) * 1_000_000_000 + int(nanosec)


def stamp_of(msg: Any) -> int:
    """Header stamp of a message in ns since the epoch."""
    return stamp_to_ns(msg.header.stamp.sec, msg.header.stamp.nanosec)


def image_message(image: np.ndarray, encoding: str, stamp_ns: int, frame_id: str) -> Any:
    """A rosbags sensor_msgs/Image holding `image` (in the encoding's own channel order)."""
    sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
    msg = _Image(
        header=_Header(stamp=_Time(sec=sec, nanosec=nanosec), frame_id=frame_id),
        height=0,
        width=0,
        encoding="",
        is_bigendian=0,
        step=0,
        data=np.zeros(0, np.uint8),
    )
    return fill_msg(msg, encode_image(image, encoding))


def serialize(msg: Any, msgtype: str = IMAGE_TYPE) -> bytes:
    return bytes(TYPESTORE.serialize_cdr(msg, msgtype))


def deserialize(raw: bytes | memoryview, msgtype: str) -> Any:
    return TYPESTORE.deserialize_cdr(raw, msgtype)
