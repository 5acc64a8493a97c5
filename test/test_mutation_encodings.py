"""sensor_msgs/Image codec behaviour that mutation testing found unchecked (docs/mutation.md):
the `detail` each rejection carries (the node logs each distinct one once), exact messages, byte
layouts of encode_image and bgr8_to_yuv422, odd `data` containers, the arrival check."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from harness import bgr8_to_yuv422

from sage_ros.image.encodings import (
    THERMAL_ENCODINGS,
    VISIBLE_ENCODINGS,
    InvalidPixelsError,
    MalformedImageError,
    UnsupportedEncodingError,
    check_fields,
    check_message,
    decode_image,
    decode_msg,
    encode_image,
    fill_msg,
    to_bgr8,
)


# --- the errors' detail --------------------------------------------------------------------------
def test_error_details_default_to_empty_and_keep_what_is_given() -> None:
    assert UnsupportedEncodingError("m").detail == ""
    assert UnsupportedEncodingError("m", "bayer_rggb8").detail == "'bayer_rggb8'"
    assert UnsupportedEncodingError("m", "").detail == "''"  # an empty encoding is still named
    assert MalformedImageError("m").detail == "" and MalformedImageError("m", "x").detail == "x"
    assert InvalidPixelsError("m").detail == "" and InvalidPixelsError("m", "y").detail == "y"


def test_a_long_encoding_is_shortened_to_40_characters_in_the_detail() -> None:
    fits = "e" * 38  # repr adds two quotes: exactly 40 characters, kept whole
    with pytest.raises(UnsupportedEncodingError) as info:
        decode_image(fits, 1, 1, 1, 0, b"\0")
    assert info.value.detail == f"'{fits}'"
    longer = "e" * 39  # 41 characters: cut to 37 + "..."
    with pytest.raises(UnsupportedEncodingError) as info:
        decode_image(longer, 1, 1, 1, 0, b"\0")
    assert info.value.detail == "'" + "e" * 36 + "..."
    assert len(info.value.detail) == 40


def test_the_unsupported_message_names_the_encoding_to_80_characters_and_lists_the_supported() -> None:
    name = "z" * 100
    with pytest.raises(UnsupportedEncodingError) as info:
        decode_image(name, 1, 1, 1, 0, b"\0")
    text = str(info.value)
    assert text.startswith("unsupported image encoding '" + "z" * 76 + "...; supported: ")
    assert text.endswith("supported: mono8, 8UC1, mono16, 16UC1, 32FC1, rgb8, bgr8, rgba8, bgra8, yuv422, uyvy, "
                         "yuv422_yuy2, yuyv")


def test_a_non_string_encoding_is_unsupported_not_a_crash() -> None:
    for bad in (None, 5, b"mono8", ["mono8"]):
        with pytest.raises(UnsupportedEncodingError):
            decode_image(bad, 1, 1, 1, 0, b"\0")


@pytest.mark.parametrize(
    "fields,detail,message",
    [
        (("mono8", 2, 0, 4, 8), "mono8 empty size", "mono8 image has an empty size 0x2"),
        (("mono16", 2, 3, 5, 12), "mono16 step too small", "mono16 3x2: step 5 is smaller than one row (6 bytes)"),
        (("uyvy", 1, 3, 6, 6), "uyvy odd width", "uyvy needs an even width (pixel pairs), got 3"),
        (("rgb8", 2, 2, 6, 11), "rgb8 truncated",
         "rgb8 2x2 step 6: data holds 11 bytes, needs at least 12 (truncated message?)"),
    ],
)
def test_malformed_fields_carry_a_detail_and_an_exact_message(fields: tuple, detail: str, message: str) -> None:
    with pytest.raises(MalformedImageError) as info:
        check_fields(*fields)
    assert info.value.detail == detail
    assert str(info.value) == message


def test_one_pixel_wide_images_are_valid() -> None:
    assert check_fields("mono8", 3, 1, 1, 3) == 1
    np.testing.assert_array_equal(decode_image("mono8", 3, 1, 1, 0, bytes([7, 8, 9])), [[7], [8], [9]])


# --- the node's arrival check --------------------------------------------------------------------
def _msg(encoding: str, height: int, width: int, step: int, data: bytes) -> SimpleNamespace:
    return SimpleNamespace(encoding=encoding, height=height, width=width, step=step, is_bigendian=0, data=data)


def test_check_message_returns_the_row_bytes_of_an_accepted_message() -> None:
    assert check_message(_msg("mono16", 2, 3, 8, bytes(14)), THERMAL_ENCODINGS, "thermal") == 6
    assert check_message(_msg("rgb8", 4, 5, 15, bytes(60)), VISIBLE_ENCODINGS, "rgb") == 15


def test_check_message_refuses_an_encoding_not_accepted_for_the_role() -> None:
    with pytest.raises(UnsupportedEncodingError) as info:
        check_message(_msg("bgr8", 1, 1, 3, bytes(3)), THERMAL_ENCODINGS, "thermal")
    assert info.value.detail == "'bgr8'"
    assert str(info.value) == (
        "encoding 'bgr8' is not supported for thermal; use one of mono8, 8UC1, mono16, 16UC1, 32FC1"
    )


def test_check_message_names_a_long_encoding_to_80_characters() -> None:
    name = "q" * 79  # repr: 81 characters, one too many
    with pytest.raises(UnsupportedEncodingError) as info:
        check_message(_msg(name, 1, 1, 1, b"\0"), THERMAL_ENCODINGS, "thermal")
    assert str(info.value).startswith("encoding '" + "q" * 76 + "... is not supported for thermal;")


def test_check_message_checks_every_field() -> None:
    with pytest.raises(MalformedImageError, match="truncated"):
        check_message(_msg("mono8", 3, 4, 4, bytes(11)), THERMAL_ENCODINGS, "thermal")  # height matters
    with pytest.raises(MalformedImageError, match="step 3 is smaller"):
        check_message(_msg("mono8", 1, 4, 3, bytes(4)), THERMAL_ENCODINGS, "thermal")  # width and step
    with pytest.raises(MalformedImageError, match="empty size"):
        check_message(_msg("mono8", 0, 4, 4, b""), THERMAL_ENCODINGS, "thermal")


# --- decoding ------------------------------------------------------------------------------------
def test_data_as_an_array_or_a_list_is_flattened_and_read_as_bytes() -> None:
    # mono8 2x2 from a longer 2-D uint8 array (trailing bytes ignored), a uint16 array (its bytes),
    # and a plain list of ints, flat or nested.
    expected = [[1, 2], [3, 4]]
    np.testing.assert_array_equal(decode_image("mono8", 2, 2, 2, 0, np.array([[1, 2, 3, 4, 5, 6]], np.uint8)),
                                  expected)
    np.testing.assert_array_equal(decode_image("mono8", 2, 2, 2, 0, np.array([0x0201, 0x0403], "<u2")), expected)
    np.testing.assert_array_equal(decode_image("mono8", 2, 2, 2, 0, [1, 2, 3, 4]), expected)
    np.testing.assert_array_equal(decode_image("mono8", 2, 2, 2, 0, [[1, 2, 3, 4, 5, 6]]), expected)


def test_nan_temperatures_are_refused_with_count_detail_and_advice() -> None:
    temps = np.array([[1.0, np.nan, np.inf]], np.float32)
    f = encode_image(temps, "32FC1")
    msg = SimpleNamespace(**f.__dict__)
    with pytest.raises(InvalidPixelsError) as info:
        decode_msg(msg)  # NaN refused by default
    assert info.value.detail == "32FC1 NaN/inf"
    assert str(info.value) == ("32FC1 image has 2 NaN/inf pixels of 3: the camera reports invalid temperatures; "
                               "fix the driver or mask them before fusion")
    out = decode_msg(msg, allow_nan=True)
    assert out[0, 0] == 1.0 and np.isnan(out[0, 1]) and np.isinf(out[0, 2])


def test_to_bgr8_refusal_names_the_encoding_and_8uc1_is_grey() -> None:
    with pytest.raises(UnsupportedEncodingError) as info:
        to_bgr8(np.zeros((1, 1), np.uint16), "16UC1")
    assert info.value.detail == "'16UC1'"
    assert str(info.value) == ("'16UC1' is not a visible-camera encoding; supported: rgb8, bgr8, rgba8, bgra8, "
                               "mono8, 8UC1, yuv422, uyvy, yuv422_yuy2, yuyv")
    grey = np.array([[0, 128, 255]], np.uint8)
    np.testing.assert_array_equal(to_bgr8(grey, "8UC1"), [[[0, 0, 0], [128, 128, 128], [255, 255, 255]]])


# --- encoding ------------------------------------------------------------------------------------
def test_encode_defaults_are_little_endian_without_padding() -> None:
    f = encode_image(np.array([[0x1234, 0xABCD]], np.uint16), "mono16")
    assert (f.step, f.is_bigendian, f.data) == (4, False, bytes([0x34, 0x12, 0xCD, 0xAB]))
    big = encode_image(np.array([[0x1234]], np.uint16), "16UC1", is_bigendian=True, row_padding=2)
    assert (big.step, big.is_bigendian, big.data) == (4, True, bytes([0x12, 0x34, 0, 0]))


def test_encode_checks_the_channel_count_of_two_channel_encodings() -> None:
    with pytest.raises(MalformedImageError, match=r"^yuv422 needs an array of 2 channel\(s\), got shape \(2, 2, 3\)$"):
        encode_image(np.zeros((2, 2, 3), np.uint8), "yuv422")


def test_fill_msg_keeps_the_type_of_is_bigendian() -> None:
    f = encode_image(np.array([[1]], np.uint16), "mono16", is_bigendian=True)
    as_int = fill_msg(SimpleNamespace(is_bigendian=0, data=b""), f)  # rclpy and rosbags: uint8 field
    assert type(as_int.is_bigendian) is int and as_int.is_bigendian == 1
    as_bool = fill_msg(SimpleNamespace(is_bigendian=True, data=b""), f)  # bool is an int too: 0/1 as well
    assert type(as_bool.is_bigendian) is int and as_bool.is_bigendian == 1
    unset = fill_msg(SimpleNamespace(is_bigendian=None, data=b""), f)  # no int field: the bool as it is
    assert unset.is_bigendian is True
    assert unset.data == b"\x00\x01" and unset.step == 2 and unset.encoding == "mono16"


# --- bgr8 -> yuv422 ------------------------------------------------------------------------------
def test_bgr8_to_yuv422_default_layout_is_uyvy_with_bt601_values() -> None:
    # Pixel pair: pure blue then black (BGR). By hand, BT.601 video range:
    #   Y  = 16 + 0.098 * 255 = 40.99 -> 41 (blue), 16 (black)
    #   U  = mean(128 + 0.439 * 255, 128) = mean(239.945, 128) = 183.97 -> 184
    #   V  = mean(128 - 0.071 * 255, 128) = mean(109.895, 128) = 118.95 -> 119
    pair = np.array([[[255, 0, 0], [0, 0, 0]]], np.uint8)
    uyvy = bgr8_to_yuv422(pair)
    assert uyvy.dtype == np.uint8 and uyvy.shape == (1, 2, 2)
    assert uyvy.reshape(-1).tolist() == [184, 41, 119, 16]
    assert bgr8_to_yuv422(pair, "yuv422").reshape(-1).tolist() == [184, 41, 119, 16]
    assert bgr8_to_yuv422(pair, "uyvy").reshape(-1).tolist() == [184, 41, 119, 16]
    assert bgr8_to_yuv422(pair, "yuyv").reshape(-1).tolist() == [41, 184, 16, 119]
    assert bgr8_to_yuv422(pair, "yuv422_yuy2").reshape(-1).tolist() == [41, 184, 16, 119]


def test_bgr8_to_yuv422_white_and_red() -> None:
    # White: Y = 16 + 0.859 * 255 = 235.045 -> 235, U = V = 128.
    white = np.full((1, 2, 3), 255, np.uint8)
    assert bgr8_to_yuv422(white, "yuyv").reshape(-1).tolist() == [235, 128, 235, 128]
    # Red (R = 255): Y = 16 + 0.257 * 255 = 81.535 -> 82, U = 128 - 0.148 * 255 = 90.26 -> 90,
    # V = 128 + 0.439 * 255 = 239.945 -> 240.
    red = np.zeros((1, 2, 3), np.uint8)
    red[..., 2] = 255
    assert bgr8_to_yuv422(red, "yuyv").reshape(-1).tolist() == [82, 90, 82, 240]


def test_bgr8_to_yuv422_refusals_are_named() -> None:
    with pytest.raises(UnsupportedEncodingError, match=r"^'rgb8' is not a yuv422 encoding$"):
        bgr8_to_yuv422(np.zeros((1, 2, 3), np.uint8), "rgb8")
    with pytest.raises(MalformedImageError, match=r"^yuv422 needs an even width$"):
        bgr8_to_yuv422(np.zeros((1, 3, 3), np.uint8))
