"""sensor_msgs/Image decoding without cv_bridge: every encoding, step padding, endianness, bad data."""

from __future__ import annotations

import array
from types import SimpleNamespace

import numpy as np
import pytest
from harness import bgr8_to_yuv422

from sage_ros.image.encodings import (
    ImageInputError,
    InvalidPixelsError,
    MalformedImageError,
    UnsupportedEncodingError,
    decode_image,
    decode_msg,
    encode_image,
    fill_msg,
    to_bgr8,
)

RNG = np.random.default_rng(11)
H, W = 6, 10


def roundtrip(arr, encoding, **kw):
    f = encode_image(arr, encoding, **kw)
    return decode_image(f.encoding, f.height, f.width, f.step, f.is_bigendian, f.data), f


@pytest.mark.parametrize("padding", [0, 3])
@pytest.mark.parametrize(
    "encoding,shape,dtype",
    [
        ("mono8", (H, W), np.uint8),
        ("8UC1", (H, W), np.uint8),
        ("mono16", (H, W), np.uint16),
        ("16UC1", (H, W), np.uint16),
        ("rgb8", (H, W, 3), np.uint8),
        ("bgr8", (H, W, 3), np.uint8),
        ("rgba8", (H, W, 4), np.uint8),
        ("bgra8", (H, W, 4), np.uint8),
        ("yuv422", (H, W, 2), np.uint8),
        ("yuv422_yuy2", (H, W, 2), np.uint8),
    ],
)
def test_roundtrip_with_row_padding(encoding, shape, dtype, padding):
    arr = RNG.integers(0, np.iinfo(dtype).max, shape, dtype=dtype, endpoint=True)
    out, fields = roundtrip(arr, encoding, row_padding=padding)
    assert fields.step == W * arr.itemsize * (shape[2] if len(shape) == 3 else 1) + padding
    assert out.dtype == dtype and out.shape == shape
    np.testing.assert_array_equal(out, arr)
    assert out.flags.writeable


def test_mono16_big_and_little_endian_bytes():
    # 0x1234 = 4660: big-endian puts 0x12 first.
    big = decode_image("mono16", 1, 2, 4, True, bytes([0x12, 0x34, 0x00, 0x01]))
    little = decode_image("mono16", 1, 2, 4, False, bytes([0x34, 0x12, 0x01, 0x00]))
    np.testing.assert_array_equal(big, [[0x1234, 1]])
    np.testing.assert_array_equal(little, [[0x1234, 1]])
    arr = RNG.integers(0, 16384, (H, W), dtype=np.uint16)
    out, f = roundtrip(arr, "mono16", is_bigendian=True, row_padding=2)
    assert f.is_bigendian and f.data[:2] == int(arr[0, 0]).to_bytes(2, "big")
    np.testing.assert_array_equal(out, arr)


def test_32fc1_degrees_and_nan_detection():
    temps = RNG.uniform(-20.0, 60.0, (H, W)).astype(np.float32)
    for big in (False, True):
        out, _ = roundtrip(temps, "32FC1", is_bigendian=big, row_padding=4)
        np.testing.assert_array_equal(out, temps)
    temps[2, 3] = np.nan
    temps[4, 4] = np.inf
    f = encode_image(temps, "32FC1")
    with pytest.raises(InvalidPixelsError, match="2 NaN/inf pixels"):
        decode_image(f.encoding, f.height, f.width, f.step, f.is_bigendian, f.data)
    out = decode_image(f.encoding, f.height, f.width, f.step, f.is_bigendian, f.data, allow_nan=True)
    assert np.isnan(out[2, 3])


def test_last_row_without_padding_is_accepted():
    arr = RNG.integers(0, 255, (3, 4), dtype=np.uint8)
    f = encode_image(arr, "mono8", row_padding=4)
    short = f.data[: f.step * 2 + 4]
    np.testing.assert_array_equal(decode_image("mono8", 3, 4, f.step, False, short), arr)


@pytest.mark.parametrize(
    "fields,match",
    [
        (("mono8", 4, 4, 4, 0, bytes(15)), "truncated"),
        (("rgb8", 2, 2, 6, 0, b""), "truncated"),
        (("mono16", 2, 3, 4, 0, bytes(12)), "step 4 is smaller than one row"),
        (("mono8", 0, 4, 4, 0, b""), "empty size"),
        (("yuv422", 2, 3, 6, 0, bytes(12)), "even width"),
    ],
)
def test_malformed_messages_raise_clear_errors(fields, match):
    with pytest.raises(MalformedImageError, match=match):
        decode_image(*fields)


def test_unsupported_encoding_is_named():
    with pytest.raises(UnsupportedEncodingError, match="'bayer_rggb8'"):
        decode_image("bayer_rggb8", 2, 2, 2, 0, bytes(4))
    with pytest.raises(UnsupportedEncodingError, match="not a visible-camera encoding"):
        to_bgr8(np.zeros((2, 2), np.uint16), "mono16")
    assert issubclass(UnsupportedEncodingError, ImageInputError)


def test_to_bgr8_channel_orders():
    bgr = RNG.integers(0, 255, (H, W, 3), dtype=np.uint8)
    np.testing.assert_array_equal(to_bgr8(bgr[..., ::-1].copy(), "rgb8"), bgr)
    np.testing.assert_array_equal(to_bgr8(bgr, "bgr8"), bgr)
    alpha = np.full((H, W, 1), 7, np.uint8)
    np.testing.assert_array_equal(to_bgr8(np.concatenate([bgr[..., ::-1], alpha], 2), "rgba8"), bgr)
    np.testing.assert_array_equal(to_bgr8(np.concatenate([bgr, alpha], 2), "bgra8"), bgr)
    grey = bgr[..., 0]
    assert (to_bgr8(grey, "mono8") == grey[..., None]).all()


def test_yuv422_is_uyvy_and_yuy2_is_yuyv():
    # Two grey pixels Y0=16 (black in video range) and Y1=235 (white); chroma neutral (128).
    uyvy = bytes([128, 16, 128, 235])
    yuyv = bytes([16, 128, 235, 128])
    for enc, data in (("yuv422", uyvy), ("uyvy", uyvy), ("yuv422_yuy2", yuyv), ("yuyv", yuyv)):
        bgr = to_bgr8(decode_image(enc, 1, 2, 4, 0, data), enc)
        assert bgr[0, 0].max() <= 1 and bgr[0, 1].min() >= 254, enc
    # Reading UYVY bytes as YUYV gives the wrong picture: the two layouts really differ.
    wrong = to_bgr8(decode_image("yuv422_yuy2", 1, 2, 4, 0, uyvy), "yuv422_yuy2")
    assert wrong[0, 1].min() < 200


def test_yuv422_colour_roundtrip_is_close():
    flat = np.zeros((4, 8, 3), np.uint8)
    flat[:] = (30, 120, 200)
    for enc in ("yuv422", "yuv422_yuy2"):
        back = to_bgr8(bgr8_to_yuv422(flat, enc), enc)
        assert np.abs(back.astype(int) - flat).max() <= 2


def test_decode_msg_on_rclpy_rosbags_and_plain_objects():
    arr = RNG.integers(0, 65535, (H, W), dtype=np.uint16)
    f = encode_image(arr, "mono16", is_bigendian=True, row_padding=2)
    plain = SimpleNamespace(**f.__dict__)
    np.testing.assert_array_equal(decode_msg(plain), arr)
    plain.data = array.array("B", f.data)
    np.testing.assert_array_equal(decode_msg(plain), arr)
    try:
        from sensor_msgs.msg import Image
    except ImportError:
        Image = None
    if Image is not None:
        msg = fill_msg(Image(), f)
        np.testing.assert_array_equal(decode_msg(msg), arr)
    try:
        from rosbags.typesys import Stores, get_typestore
    except ImportError:
        get_typestore = None
    if get_typestore is not None:
        types = get_typestore(Stores.ROS2_HUMBLE).types
        Header, Time = types["std_msgs/msg/Header"], types["builtin_interfaces/msg/Time"]
        rb = types["sensor_msgs/msg/Image"](
            Header(Time(0, 0), "x"), 0, 0, "", 0, 0, np.zeros(0, np.uint8)
        )
        fill_msg(rb, f)
        assert isinstance(rb.data, np.ndarray)
        np.testing.assert_array_equal(decode_msg(rb), arr)
    if Image is None and get_typestore is None:
        pytest.skip("neither rclpy sensor_msgs nor rosbags installed: only plain objects tested")


def test_encode_rejects_wrong_shapes():
    with pytest.raises(MalformedImageError):
        encode_image(np.zeros((2, 2, 3), np.uint8), "mono8")
    with pytest.raises(MalformedImageError):
        encode_image(np.zeros((2, 2), np.uint8), "rgb8")
