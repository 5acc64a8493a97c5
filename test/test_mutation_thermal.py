"""ThermalNormalizer behaviour that mutation testing found unchecked (docs/mutation.md), and the
float32 overflow at the ends of the 32FC1 range (it warned and relied on inf being clipped)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from sage_ros.image.imaging import ImageInputError
from sage_ros.image.thermal import NormalizerConfig, ThermalNormalizer

F32_MAX = float(np.finfo(np.float32).max)


def test_extreme_32fc1_values_normalise_without_any_floating_point_warning() -> None:
    # Before the fix `frame - lo` overflowed float32 here ("RuntimeWarning: overflow encountered in
    # subtract") and the in-window pixels came out of a subnormal float32 scale.
    frame = np.array([[F32_MAX, -F32_MAX], [0.0, 24.5]], np.float32)
    norm = ThermalNormalizer()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any RuntimeWarning fails the test
        out = norm.normalize(frame)
        again = norm.normalize(frame)  # the smoothed window of a second frame takes the same path
    # Percentiles 1 and 99 of four samples (numpy's linear interpolation): lo = -F32_MAX * 0.97 + 0 * 0.03
    # = -0.97 F32_MAX and hi = 24.5 + 0.97 (F32_MAX - 24.5), so 0 and 24.5 sit in the middle of the window.
    assert norm.bounds[0] == pytest.approx(-0.97 * F32_MAX, rel=1e-6)
    for result in (out, again):
        assert result.dtype == np.float32
        assert result[0, 0] == 1.0 and result[0, 1] == 0.0
        np.testing.assert_allclose(result[1], [0.5, 0.5], atol=1e-6)


def test_float64_frames_beyond_the_float32_range_saturate_without_warning() -> None:
    frame = np.array([[1e300, 0.0, 5.0, 10.0]], np.float64)
    norm = ThermalNormalizer(NormalizerConfig(mode="fixed", fixed_min=0.0, fixed_max=10.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = norm.normalize(frame)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[1.0, 0.0, 0.5, 1.0]])


def test_mono8_output_is_float32_on_the_0_1_scale() -> None:
    out = ThermalNormalizer().normalize(np.array([[0, 51, 255]], np.uint8))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.0, 0.2, 1.0]], atol=1e-7)


def test_bad_frames_name_their_shape_and_a_single_pixel_is_fine() -> None:
    norm = ThermalNormalizer()
    with pytest.raises(ImageInputError, match=r"got shape \(4, 4, 3\)"):
        norm.normalize(np.zeros((4, 4, 3), np.uint16))
    with pytest.raises(ImageInputError, match=r"got shape \(0, 5\)"):
        norm.normalize(np.zeros((0, 5), np.uint16))
    with pytest.raises(ImageInputError, match="got shape None"):
        norm.normalize([[1, 2]])  # not an array at all
    with pytest.raises(ImageInputError, match=r"^thermal frame: contains NaN or inf values$"):
        norm.normalize(np.array([[1.0, np.inf]], np.float32))
    assert ThermalNormalizer().normalize(np.array([[1000]], np.uint16)).shape == (1, 1)


@pytest.mark.parametrize(
    "cfg,match",
    [
        (NormalizerConfig(mode="agc"), r"mode 'agc' unknown; choose one of \('percentile', 'fixed'\)"),
        (NormalizerConfig(low_percentile=5, high_percentile=5), r"0 <= low < high <= 100, got 5 and 5"),
        (NormalizerConfig(low_percentile=-1), "0 <= low < high <= 100"),
        (NormalizerConfig(high_percentile=100.5), "0 <= low < high <= 100"),
        (NormalizerConfig(ema_alpha=1.5), r"ema_alpha must be in \(0, 1\], got 1.5"),
        (NormalizerConfig(mode="fixed", fixed_min=3, fixed_max=2), r"needs max > min, got \[3, 2\]"),
        (NormalizerConfig(min_span=0.0), "min_span must be > 0, got 0.0"),
        (NormalizerConfig(sample_stride=0), "sample_stride must be >= 1, got 0"),
    ],
)
def test_invalid_settings_are_refused_with_the_rule_and_value(cfg: NormalizerConfig, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ThermalNormalizer(cfg)


def test_the_ends_of_the_valid_ranges_are_accepted() -> None:
    for cfg in (
        NormalizerConfig(low_percentile=0.0, high_percentile=100.0),
        NormalizerConfig(ema_alpha=1.0),
        NormalizerConfig(sample_stride=1),
        NormalizerConfig(min_span=1e-6),
    ):
        ThermalNormalizer(cfg)


def test_bounds_follow_an_exponential_moving_average_by_hand() -> None:
    # Percentiles 0 and 100 are the frame's min and max; alpha 0.25 moves a quarter of the way.
    norm = ThermalNormalizer(NormalizerConfig(low_percentile=0.0, high_percentile=100.0, ema_alpha=0.25))
    norm.normalize(np.array([[10, 20]], np.uint16))
    assert norm.bounds == (10.0, 20.0)
    out = norm.normalize(np.array([[30, 60]], np.uint16))
    assert norm.bounds == pytest.approx((0.75 * 10 + 0.25 * 30, 0.75 * 20 + 0.25 * 60))  # (15, 30)
    np.testing.assert_allclose(out, [[1.0, 1.0]])
    np.testing.assert_allclose(norm.normalize(np.array([[15, 60]], np.uint16)), [[0.0, 1.0]], atol=1e-6)


def test_large_frames_are_subsampled_and_small_ones_are_not() -> None:
    # A single hot pixel off the stride-4 grid: seen only when every pixel is used.
    cfg = NormalizerConfig(low_percentile=0.0, high_percentile=100.0, ema_alpha=1.0, sample_stride=4)
    big = np.zeros((32, 40), np.uint16)  # 32 = 8 strides in each direction: subsampled
    big[1, 1] = 100
    norm = ThermalNormalizer(cfg)
    norm.normalize(big)
    assert norm.bounds == (0.0, 0.0)
    small = np.zeros((31, 40), np.uint16)  # under 8 strides: every pixel counts
    small[1, 1] = 100
    norm = ThermalNormalizer(cfg)
    norm.normalize(small)
    assert norm.bounds == (0.0, 100.0)


def test_a_window_narrower_than_min_span_is_widened_around_its_centre() -> None:
    # Fixed window [1000, 1002] (span 2) with min_span 4 becomes [999, 1003].
    cfg = NormalizerConfig(mode="fixed", fixed_min=1000.0, fixed_max=1002.0, min_span=4.0)
    out = ThermalNormalizer(cfg).normalize(np.array([[999, 1000, 1001, 1002, 1003]], np.uint16))
    np.testing.assert_allclose(out, [[0.0, 0.25, 0.5, 0.75, 1.0]], atol=1e-6)
