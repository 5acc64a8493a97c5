"""sensor_msgs/Image <-> numpy without cv_bridge (pure numpy + OpenCV, no ROS import).

`decode_image` works from the plain message fields, so it serves rclpy messages, `rosbags` messages
and hand-built ones alike (`decode_msg(msg)` reads the fields of any of them). It honours `step`
(padded rows) and `is_bigendian`, and every malformed message raises an `ImageInputError` subclass
whose message says what is wrong, so a node can log it, count it by cause and keep running.

Decoded arrays keep the native sample type: mono8 -> HxW uint8, mono16/16UC1 -> HxW uint16,
32FC1 -> HxW float32, rgb8/bgr8 -> HxWx3 uint8, rgba8/bgra8 -> HxWx4 uint8, yuv422 variants ->
HxWx2 uint8 (the packed pairs; `to_bgr8` converts them). Channel order is the encoding's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from sage_ros.image.imaging import ImageInputError

__all__ = [
    "ImageFields",
    "ImageInputError",
    "InvalidPixelsError",
    "MalformedImageError",
    "UnsupportedEncodingError",
    "check_fields",
    "check_message",
    "THERMAL_ENCODINGS",
    "VISIBLE_ENCODINGS",
    "decode_image",
    "decode_msg",
    "encode_image",
    "fill_msg",
    "to_bgr8",
]


class UnsupportedEncodingError(ImageInputError):
    """The encoding string is not one this package decodes (or not valid for this input).

    `detail` is the offending encoding (repr, shortened): logs name each distinct one once.
    """

    def __init__(self, message: str, encoding: Any = None) -> None:
        super().__init__(message)
        self.detail = _short_repr(encoding) if encoding is not None else ""


class MalformedImageError(ImageInputError):
    """Fields that contradict each other: truncated data, step too small, zero size, odd width...

    `detail` names the kind of contradiction with the encoding (e.g. `bgr8 truncated`), a small
    closed set per encoding, so a log can name each distinct problem once without flooding.
    """

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail


class InvalidPixelsError(ImageInputError):
    """The data decodes but holds values the pipeline cannot use (NaN/inf temperatures)."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail


def _short_repr(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class _Layout:
    dtype: str  # numpy dtype of one sample, without byte order
    channels: int


# Canonical names follow sensor_msgs/image_encodings.hpp; the yuv422 family is packed 2 bytes/pixel.
_LAYOUTS: dict[str, _Layout] = {
    "mono8": _Layout("u1", 1),
    "8UC1": _Layout("u1", 1),
    "mono16": _Layout("u2", 1),
    "16UC1": _Layout("u2", 1),
    "32FC1": _Layout("f4", 1),
    "rgb8": _Layout("u1", 3),
    "bgr8": _Layout("u1", 3),
    "rgba8": _Layout("u1", 4),
    "bgra8": _Layout("u1", 4),
    "yuv422": _Layout("u1", 2),  # ROS `yuv422` is UYVY byte order
    "uyvy": _Layout("u1", 2),
    "yuv422_yuy2": _Layout("u1", 2),  # YUYV byte order
    "yuyv": _Layout("u1", 2),
}
_YUV_CODES = {
    "yuv422": cv2.COLOR_YUV2BGR_UYVY,
    "uyvy": cv2.COLOR_YUV2BGR_UYVY,
    "yuv422_yuy2": cv2.COLOR_YUV2BGR_YUYV,
    "yuyv": cv2.COLOR_YUV2BGR_YUYV,
}
THERMAL_ENCODINGS = ("mono8", "8UC1", "mono16", "16UC1", "32FC1")
VISIBLE_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "8UC1", "yuv422", "uyvy", "yuv422_yuy2", "yuyv")


def _layout(encoding: str) -> _Layout:
    layout = _LAYOUTS.get(encoding) if isinstance(encoding, str) else None
    if layout is None:
        raise UnsupportedEncodingError(
            f"unsupported image encoding {_short_repr(encoding, 80)}; supported: {', '.join(_LAYOUTS)}", encoding
        )
    return layout


def _as_bytes_array(data: Any) -> np.ndarray:
    """Message data (bytes, bytearray, memoryview, array.array('B'), uint8 ndarray) -> flat uint8 view."""
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except TypeError:
        # e.g. a list of ints from a hand-built message
        return np.asarray(data, dtype=np.uint8).reshape(-1)


def check_message(msg: Any, accepted: tuple[str, ...], role: str) -> int:
    """The node's arrival check of one image message for `role` (thermal/rgb); returns the row bytes.

    The encoding must be one `accepted` for this input and the fields consistent (`check_fields`).
    Raises UnsupportedEncodingError / MalformedImageError with the cause in `detail`.
    """
    encoding = msg.encoding
    if encoding not in accepted:
        raise UnsupportedEncodingError(
            f"encoding {_short_repr(encoding, 80)} is not supported for {role}; use one of {', '.join(accepted)}",
            encoding,
        )
    return check_fields(encoding, msg.height, msg.width, msg.step, len(msg.data))


def check_fields(encoding: str, height: int, width: int, step: int, data_len: int) -> int:
    """Validate the fields of an image message without decoding it; returns the bytes of one row.

    Cheap (no copy): the node runs it in the subscription callback so bad messages never reach the
    synchroniser. Raises UnsupportedEncodingError or MalformedImageError.
    """
    layout = _layout(encoding)
    height, width, step = int(height), int(width), int(step)
    if height <= 0 or width <= 0:
        raise MalformedImageError(f"{encoding} image has an empty size {width}x{height}", f"{encoding} empty size")
    row_bytes = width * layout.channels * np.dtype(layout.dtype).itemsize
    if step < row_bytes:
        raise MalformedImageError(
            f"{encoding} {width}x{height}: step {step} is smaller than one row ({row_bytes} bytes)",
            f"{encoding} step too small",
        )
    if encoding in _YUV_CODES and width % 2:
        raise MalformedImageError(f"{encoding} needs an even width (pixel pairs), got {width}", f"{encoding} odd width")
    needed = step * (height - 1) + row_bytes
    if data_len < needed:
        raise MalformedImageError(
            f"{encoding} {width}x{height} step {step}: data holds {data_len} bytes, needs at least "
            f"{needed} (truncated message?)",
            f"{encoding} truncated",
        )
    return row_bytes


def decode_image(
    encoding: str,
    height: int,
    width: int,
    step: int,
    is_bigendian: bool | int,
    data: Any,
    allow_nan: bool = False,
) -> np.ndarray:
    """Decode one image from its sensor_msgs/Image fields into a fresh (writeable) numpy array.

    The last row may omit its padding (some drivers send step*(height-1) + width*bpp bytes).
    32FC1 with NaN/inf raises `InvalidPixelsError` unless `allow_nan`.
    """
    layout = _layout(encoding)
    height, width, step = int(height), int(width), int(step)
    buf = _as_bytes_array(data)
    row_bytes = check_fields(encoding, height, width, step, buf.size)
    sample = np.dtype(layout.dtype)
    if buf.size >= step * height:
        rows = buf[: step * height].reshape(height, step)[:, :row_bytes]
    else:
        # Last row without padding: strided view over exactly the bytes that exist.
        rows = np.lib.stride_tricks.as_strided(buf, shape=(height, row_bytes), strides=(step, 1))
    order = ">" if is_bigendian else "<"
    typed = np.ascontiguousarray(rows).view(sample.newbyteorder(order) if sample.itemsize > 1 else sample)
    # One copy into native byte order; also detaches the result from the message buffer.
    out = typed.astype(sample.newbyteorder("="), copy=True)
    out = out.reshape(height, width, layout.channels) if layout.channels > 1 else out.reshape(height, width)
    if encoding == "32FC1" and not allow_nan:
        bad = ~np.isfinite(out)
        if bad.any():
            raise InvalidPixelsError(
                f"32FC1 image has {int(bad.sum())} NaN/inf pixels of {out.size}: the camera reports "
                "invalid temperatures; fix the driver or mask them before fusion",
                "32FC1 NaN/inf",
            )
    return out


def decode_msg(msg: Any, allow_nan: bool = False) -> np.ndarray:
    """`decode_image` on any object with sensor_msgs/Image fields (rclpy, rosbags, SimpleNamespace)."""
    return decode_image(
        msg.encoding, msg.height, msg.width, msg.step, msg.is_bigendian, msg.data, allow_nan=allow_nan
    )


def to_bgr8(image: np.ndarray, encoding: str) -> np.ndarray:
    """A decoded visible image -> HxWx3 uint8 BGR (OpenCV order), what the fusion pipeline takes."""
    if encoding not in VISIBLE_ENCODINGS:
        raise UnsupportedEncodingError(
            f"{encoding!r} is not a visible-camera encoding; supported: {', '.join(VISIBLE_ENCODINGS)}", encoding
        )
    if encoding == "bgr8":
        return image
    if encoding == "rgb8":
        return cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    if encoding == "rgba8":
        return cv2.cvtColor(image, cv2.COLOR_RGBA2BGR)
    if encoding == "bgra8":
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if encoding in ("mono8", "8UC1"):
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    return cv2.cvtColor(np.ascontiguousarray(image), _YUV_CODES[encoding])


@dataclass(frozen=True)
class ImageFields:
    """The data-carrying fields of a sensor_msgs/Image (header excluded)."""

    encoding: str
    height: int
    width: int
    step: int
    is_bigendian: bool
    data: bytes


def encode_image(
    image: np.ndarray, encoding: str, is_bigendian: bool = False, row_padding: int = 0
) -> ImageFields:
    """The inverse of `decode_image`: array in the encoding's own layout -> message fields.

    `row_padding` extra zero bytes per row exercise `step` handling in tests and tools.
    For the yuv422 family pass the packed HxWx2 array (tests make one with `harness.bgr8_to_yuv422`).
    """
    layout = _layout(encoding)
    arr = np.asarray(image)
    expected_ndim = 2 if layout.channels == 1 else 3
    if arr.ndim != expected_ndim or (layout.channels > 1 and arr.shape[2] != layout.channels):
        raise MalformedImageError(
            f"{encoding} needs an array of {layout.channels} channel(s), got shape {arr.shape}"
        )
    sample = np.dtype(layout.dtype).newbyteorder(">" if is_bigendian else "<")
    height, width = arr.shape[:2]
    typed = np.ascontiguousarray(arr.astype(sample, copy=False)).reshape(height, -1).view(np.uint8)
    if row_padding:
        typed = np.concatenate([typed, np.zeros((height, row_padding), np.uint8)], axis=1)
    return ImageFields(encoding, height, width, typed.shape[1], bool(is_bigendian), typed.tobytes())


def fill_msg(msg: Any, fields: ImageFields) -> Any:
    """Copy `fields` into a message object (rclpy or rosbags Image) and return it."""
    msg.encoding = fields.encoding
    msg.height = fields.height
    msg.width = fields.width
    msg.step = fields.step
    msg.is_bigendian = int(fields.is_bigendian) if isinstance(msg.is_bigendian, int) else fields.is_bigendian
    if isinstance(getattr(msg, "data", None), np.ndarray):
        msg.data = np.frombuffer(fields.data, dtype=np.uint8).copy()  # rosbags wants a uint8 array
    else:
        msg.data = fields.data  # rclpy converts bytes to its array.array
    return msg
