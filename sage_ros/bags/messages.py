"""sensor_msgs/Image and CompressedImage messages as `rosbags` objects: build, serialise, decode."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
from rosbags.typesys import Stores, get_typestore

from sage_ros.image.encodings import decode_msg, encode_image, fill_msg
from sage_ros.image.imaging import ImageInputError

#: sensor_msgs/Image and its header are identical from Humble to Kilted; one store serves all.
TYPESTORE = get_typestore(Stores.LATEST)
IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"


def header(stamp_ns: int, frame_id: str) -> Any:
    """A std_msgs/Header stamped `stamp_ns` (ns since the epoch)."""
    sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
    types = TYPESTORE.types
    return types["std_msgs/msg/Header"](stamp=types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec),
                                        frame_id=frame_id)


def stamp_of(msg: Any) -> int:
    """Header stamp of a message in ns since the epoch."""
    return int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)


def image_message(image: np.ndarray, encoding: str, stamp_ns: int, frame_id: str) -> Any:
    """A rosbags sensor_msgs/Image holding `image` (in the encoding's own channel order)."""
    msg = TYPESTORE.types[IMAGE_TYPE](header=header(stamp_ns, frame_id), height=0, width=0, encoding="",
                                      is_bigendian=0, step=0, data=np.zeros(0, np.uint8))
    return fill_msg(msg, encode_image(image, encoding))


def decode_any(msg: Any, msgtype: str) -> tuple[np.ndarray, str]:
    """(pixels, encoding) of an Image or CompressedImage message.

    Compressed images decode with OpenCV (PNG keeps 16 bits); colour comes out in OpenCV's BGR
    order, as image_transport's compressed plugin stores it, so their encoding reads 'bgr8'.
    """
    if msgtype != COMPRESSED_TYPE:
        return decode_msg(msg), msg.encoding
    image = cv2.imdecode(np.frombuffer(bytes(msg.data), np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ImageInputError(f"compressed image (format {msg.format!r}) could not be decoded")
    if image.ndim == 2:
        return image, "mono16" if image.dtype == np.uint16 else "mono8"
    return image, "bgra8" if image.shape[2] == 4 else "bgr8"


def serialize(msg: Any, msgtype: str = IMAGE_TYPE) -> bytes:
    return bytes(TYPESTORE.serialize_cdr(msg, msgtype))


def deserialize(raw: bytes | memoryview, msgtype: str) -> Any:
    return TYPESTORE.deserialize_cdr(raw, msgtype)
