"""Known answers for the pure image math (no model, no ROS)."""

from __future__ import annotations

import numpy as np
import pytest

from sage_ros.image.imaging import (
    ImageInputError,
    check_pair_sizes,
    fused_to_rgb8,
    infrared_to_grey,
    unit_to_uint8,
    visible_to_ycrcb,
    ycrcb_to_rgb,
)


def test_grey_visible_has_neutral_chroma_and_round_trips() -> None:
    rng = np.random.default_rng(0)
    level = rng.integers(0, 256, size=(8, 9), dtype=np.uint8)
    bgr = np.repeat(level[..., None], 3, axis=2)
    vis = visible_to_ycrcb(bgr)
    np.testing.assert_allclose(vis.y, level / 255.0, atol=1e-6)
    np.testing.assert_allclose(vis.cr, 128 / 255.0, atol=1e-6)
    rgb = fused_to_rgb8(vis.y, vis)
    # Neutral chroma is 128/255, a hair above 0.5: at most one grey level of tint.
    assert np.abs(rgb.astype(int) - level[..., None]).max() <= 1


def test_colour_reconstruction_follows_spec_coefficients() -> None:
    bgr = np.array([[[30, 60, 200]]], dtype=np.uint8)  # a reddish pixel
    vis = visible_to_ycrcb(bgr)
    y, cr, cb = float(vis.y[0, 0]), float(vis.cr[0, 0]), float(vis.cb[0, 0])
    expected = [y + 1.403 * (cr - 0.5), y - 0.714 * (cr - 0.5) - 0.344 * (cb - 0.5), y + 1.773 * (cb - 0.5)]
    rgb = fused_to_rgb8(vis.y, vis)[0, 0]
    assert list(rgb) == [int(np.floor(np.clip(v, 0, 1) * 255 + 0.5)) for v in expected]
    # And it is close to the original colour (RGB order out).
    assert np.abs(rgb.astype(int) - np.array([200, 60, 30])).max() <= 3


@pytest.mark.parametrize("hw", [(720, 1280), (481, 643), (3, 2), (1, 1)])
def test_banded_colour_conversion_is_byte_identical_to_the_whole_frame_formula(hw) -> None:
    """fused_to_rgb8 works in cache-sized bands of rows; any band size gives the reference's bytes."""
    rng = np.random.default_rng(hw[0])
    vis = visible_to_ycrcb(rng.integers(0, 256, (*hw, 3), dtype=np.uint8))
    fused = (rng.random(hw, dtype=np.float32) * 1.2 - 0.1).astype(np.float32)  # out of range too
    reference = unit_to_uint8(ycrcb_to_rgb(fused, vis.cr, vis.cb))
    for block in (1, 1000, 1 << 16, 1 << 40):
        assert np.array_equal(fused_to_rgb8(fused, vis, block_pixels=block), reference), block


def test_unit_to_uint8_rounds_half_up_and_clamps() -> None:
    x = np.array([-0.5, 0.0, 0.5 / 255, 1.5 / 255, 1.0, 2.0, 254.6 / 255])
    assert unit_to_uint8(x).tolist() == [0, 0, 1, 2, 255, 255, 255]


def test_infrared_inputs() -> None:
    grey = np.full((4, 5), 51, np.uint8)
    np.testing.assert_allclose(infrared_to_grey(grey), 0.2, atol=1e-7)
    three = np.repeat(grey[..., None], 3, axis=2)
    np.testing.assert_allclose(infrared_to_grey(three), 0.2, atol=1e-7)
    with pytest.raises(ImageInputError, match="NaN"):
        infrared_to_grey(np.array([[0.1, np.nan]], np.float32))
    with pytest.raises(ImageInputError, match="16-bit|uint8 or float"):
        infrared_to_grey(np.zeros((3, 3), np.uint16))
    with pytest.raises(ImageInputError, match="shape"):
        infrared_to_grey(np.zeros((0, 3), np.uint8))


def test_size_mismatch_is_a_clear_error() -> None:
    vis = visible_to_ycrcb(np.zeros((10, 12, 3), np.uint8))
    with pytest.raises(ImageInputError, match="differ in size"):
        check_pair_sizes(np.zeros((10, 13), np.float32), vis)


def test_fast_colour_path_equals_reference_arithmetic() -> None:
    from sage_ros.image.imaging import ycrcb_to_rgb

    rng = np.random.default_rng(3)
    vis = visible_to_ycrcb(rng.integers(0, 256, (37, 53, 3), dtype=np.uint8))
    y = rng.random((37, 53), dtype=np.float32) * 1.4 - 0.2  # out-of-range values exercise the clamp
    np.testing.assert_array_equal(fused_to_rgb8(y, vis), unit_to_uint8(ycrcb_to_rgb(y, vis.cr, vis.cb)))


# Edges that hand mutation of image/imaging.py showed no test held (2026-12-08).


def test_every_visible_layout_gives_the_same_channels_as_bgr() -> None:
    import cv2

    rng = np.random.default_rng(9)
    level = rng.integers(0, 256, size=(6, 7), dtype=np.uint8)
    colour = rng.integers(0, 256, size=(6, 7, 3), dtype=np.uint8)
    for same, bgr in ((level, cv2.cvtColor(level, cv2.COLOR_GRAY2BGR)),
                      (level[..., None], cv2.cvtColor(level, cv2.COLOR_GRAY2BGR)),
                      (cv2.cvtColor(colour, cv2.COLOR_BGR2BGRA), colour)):
        a, b = visible_to_ycrcb(same), visible_to_ycrcb(bgr)
        for name in ("y", "cr", "cb"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def test_colour_infrared_is_read_in_bgr_order_and_float_infrared_is_clamped() -> None:
    import cv2

    pixel = np.array([[[10, 200, 90]]], np.uint8)  # BGR
    assert infrared_to_grey(pixel)[0, 0] == pytest.approx(cv2.cvtColor(pixel, cv2.COLOR_BGR2GRAY)[0, 0] / 255.0)
    np.testing.assert_array_equal(infrared_to_grey(np.array([[-0.2, 0.5, 1.3]], np.float32)), [[0.0, 0.5, 1.0]])


def test_a_fused_image_of_another_size_than_the_visible_one_is_a_clear_error() -> None:
    vis = visible_to_ycrcb(np.zeros((10, 12, 3), np.uint8))
    with pytest.raises(ImageInputError, match="does not match visible"):
        fused_to_rgb8(np.zeros((10, 13), np.float32), vis)
