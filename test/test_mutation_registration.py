"""Registration behaviour that mutation testing found unchecked (docs/mutation.md): homography
parsing, the relative aspect tolerance, the interpolation used when shrinking or enlarging, messages."""

from __future__ import annotations

import numpy as np
import pytest

from sage_ros.image.registration import Registration, RegistrationError, parse_homography


def test_homography_is_float64_and_scaled_to_h22_one() -> None:
    h = parse_homography([2, 0, 10, 0, 2, 20, 0, 0, 0.5])
    assert h.dtype == np.float64 and h.shape == (3, 3)
    np.testing.assert_array_equal(h, [[4, 0, 20], [0, 4, 40], [0, 0, 1]])
    # Integers with h22 = 0 (a valid projective matrix that cannot be scaled): still float64.
    swap = parse_homography([1, 0, 0, 0, 0, 1, 0, 1, 0])
    assert swap.dtype == np.float64
    np.testing.assert_array_equal(swap, [[1, 0, 0], [0, 0, 1], [0, 1, 0]])
    # A 3x3 array is taken as it is (row-major).
    np.testing.assert_array_equal(parse_homography(np.arange(1.0, 10.0).reshape(3, 3) + np.eye(3)),
                                  (np.arange(1.0, 10.0).reshape(3, 3) + np.eye(3)) / 10.0)


def test_a_small_but_regular_homography_is_accepted() -> None:
    # Thermal twice the RGB resolution: scale 0.5 (determinant 0.25), a perfectly valid calibration.
    h = parse_homography([0.5, 0, 0, 0, 0.5, 0, 0, 0, 1])
    np.testing.assert_array_equal(np.diag(h), [0.5, 0.5, 1.0])


@pytest.mark.parametrize(
    "values,match",
    [
        ([1.0] * 8, r"homography needs 9 numbers \(row-major 3x3\), got 8"),
        ([np.inf] + [0.0] * 8, r"^homography contains NaN or inf$"),
        ([1.0] * 9, r"^homography is singular \(determinant ~0\): check the calibration$"),
    ],
)
def test_bad_homographies_say_what_is_wrong(values: list[float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_homography(values)


def test_aspect_tolerance_is_relative_to_the_rgb_aspect() -> None:
    reg = Registration(aspect_tolerance=0.02)
    reg.check((100, 203), (100, 200))  # aspects 2.03 vs 2.00: 1.5 % off, inside 2 %
    with pytest.raises(RegistrationError, match="aspect ratio and no homography is set"):
        reg.check((100, 205), (100, 200))  # 2.5 % off
    # Zero tolerance is allowed and accepts exactly equal aspects only.
    exact = Registration(aspect_tolerance=0.0)
    exact.check((128, 160), (512, 640))
    with pytest.raises(RegistrationError):
        exact.check((100, 201), (100, 200))
    with pytest.raises(ValueError, match="aspect_tolerance must be >= 0, got -0.1"):
        Registration(aspect_tolerance=-0.1)


def test_the_aspect_error_tells_the_operator_what_to_configure() -> None:
    with pytest.raises(RegistrationError) as info:
        Registration().to_rgb_grid(np.zeros((512, 640), np.float32), (720, 1280))
    text = str(info.value)
    assert "thermal 640x512 (aspect 1.250) and RGB 1280x720 (aspect 1.778)" in text
    assert "set registration.homography (3x3, thermal pixels -> RGB pixels, from calibration)" in text
    assert text.endswith("or crop one camera to match")


def test_a_colour_image_is_refused_with_its_shape() -> None:
    with pytest.raises(RegistrationError, match=r"^thermal image must be HxW, got shape \(2, 2, 3\)$"):
        Registration().to_rgb_grid(np.zeros((2, 2, 3), np.float32), (4, 4))


def test_shrinking_averages_whole_blocks() -> None:
    # 3x smaller: each output pixel is the mean of a 3x3 block (area interpolation), so one hot
    # pixel of 9 in a corner block gives 1 there, where point sampling would have missed it.
    square = np.zeros((6, 6), np.float32)
    square[0, 0] = 9.0
    np.testing.assert_allclose(Registration().to_rgb_grid(square, (2, 2)), [[1.0, 0.0], [0.0, 0.0]], atol=1e-6)
    # A tall frame, narrower than the target is high: it is the height that says "shrinking".
    tall = np.zeros((18, 3), np.float32)
    tall[0, 0] = 9.0
    out = Registration().to_rgb_grid(tall, (6, 1))
    assert out.shape == (6, 1)
    np.testing.assert_allclose(out[:, 0], [1.0, 0, 0, 0, 0, 0], atol=1e-6)


def test_enlarging_interpolates_linearly_between_pixel_centres() -> None:
    # 2x larger, half-pixel centres: output x samples source x' = (x + 0.5) / 2 - 0.5, i.e.
    # -0.25 (edge: 0), 0.25, 0.75, 1.25 (edge: 10) -> 0, 2.5, 7.5, 10.
    thermal = np.array([[0.0, 10.0], [0.0, 10.0]], np.float32)
    out = Registration().to_rgb_grid(thermal, (4, 4))
    np.testing.assert_allclose(out, np.tile([0.0, 2.5, 7.5, 10.0], (4, 1)), atol=1e-5)


def test_homography_warp_is_bilinear_and_outside_is_zero() -> None:
    # Shift by half a pixel to the right: output x samples source x - 0.5, the mean of two pixels.
    thermal = np.array([[0.0, 10.0, 20.0, 30.0]] * 3, np.float32)
    out = Registration([1, 0, 0.5, 0, 1, 0, 0, 0, 1]).to_rgb_grid(thermal, (3, 5))
    np.testing.assert_allclose(out[1, 1:4], [5.0, 15.0, 25.0], atol=1e-4)
    assert out[1, 4] == pytest.approx(15.0, abs=1e-4)  # half inside (30), half the constant 0 border
