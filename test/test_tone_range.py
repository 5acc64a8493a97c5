"""Bringing another camera's grey levels into the training frames' range (sage_ros/image/tone_range.py): pure
functions on synthetic planes with known quantiles."""

from __future__ import annotations

import numpy as np
import pytest

from sage_ros.image.tone_range import LEVELS, ToneRange, into_tone_range, quantiles, tone_bounds

BIN = 1.0 / 1024  # the histogram's resolution


def _ramp(lo: float, hi: float, hw: tuple[int, int] = (120, 160)) -> np.ndarray:
    """A plane whose grey levels are spread evenly over [lo, hi]: its p-th percentile is lo + p % of the span."""
    return np.linspace(lo, hi, hw[0] * hw[1], dtype=np.float32).reshape(hw)


def _range(lo: float, hi: float) -> ToneRange:
    """The range of the ramps from [lo/2, hi/2] to [lo, hi]: each level may lie between those two ramps'."""
    return tone_bounds([_ramp(lo / 2, hi / 2), _ramp(lo, hi)], lower=0.0, upper=100.0)


def test_quantiles_of_a_ramp_are_where_they_should_be():
    q = quantiles(_ramp(0.2, 0.6))
    assert np.allclose(q, 0.2 + 0.4 * np.array(LEVELS) / 100, atol=2 * BIN)


def test_a_frame_inside_the_range_is_returned_unchanged():
    tone = _range(0.1, 0.5)
    frame = _ramp(0.07, 0.37)  # every quantile between the two ramps'
    assert into_tone_range(frame, tone) is frame or np.array_equal(into_tone_range(frame, tone), frame)


def test_a_brighter_camera_is_brought_to_the_range_edge_and_keeps_its_order():
    tone = _range(0.05, 0.4)
    rng = np.random.default_rng(0)
    frame = np.clip(rng.normal(0.6, 0.15, (120, 160)), 0, 1).astype(np.float32)  # far brighter than the range
    out = into_tone_range(frame, tone)
    assert out.dtype == np.float32 and out.shape == frame.shape
    assert 0.0 <= out.min() and out.max() <= 1.0
    # Its quantiles now sit on the range's upper edge (the histogram's bins apart; above the top level the
    # curve climbs steeply to 1, which magnifies a bin there) ...
    target = np.clip(quantiles(frame), tone.low, tone.high)
    assert np.allclose(quantiles(out)[:-1], target[:-1], atol=3 * BIN)
    assert abs(quantiles(out)[-1] - target[-1]) < 0.02
    # ... and the remapping is monotone: a warmer pixel stays at least as warm.
    order = np.argsort(frame.ravel(), kind="stable")
    assert np.all(np.diff(out.ravel()[order]) >= 0)


def test_only_the_levels_outside_are_moved():
    """A frame dark enough at the low levels but too bright at the top is changed only above its in-range part."""
    tone = _range(0.1, 0.4)
    frame = _ramp(0.08, 0.9)
    out = into_tone_range(frame, tone)
    q_in, q_out = quantiles(frame), quantiles(out)
    inside = (q_in >= np.array(tone.low)) & (q_in <= np.array(tone.high))
    assert inside[:3].all() and not inside[-3:].any()
    assert np.allclose(q_out[inside], q_in[inside], atol=2 * BIN)
    assert np.all(q_out[-3:] < q_in[-3:] - 0.2)


def test_a_mass_of_pixels_at_one_level_is_not_remapped_for_ever():
    """3 % of the pixels at 0 (a cold sky): the 0.5-2 % levels tie there, and no pixel-wise curve can put them
    apart. A range that asks for the 1 % level above 0 must not make such a frame count as outside again once
    remapped: the second pass returns it as it is."""
    frame = _ramp(0.05, 0.6)
    frame.ravel()[: frame.size * 3 // 100] = 0.0
    tone = ToneRange(tuple(LEVELS), tuple([0.0] + [0.02] * (len(LEVELS) - 1)),
                     tuple([0.0] + [0.3] * (len(LEVELS) - 1)))
    once = into_tone_range(frame, tone)
    assert not np.array_equal(once, frame)  # the top levels did move into the range
    assert into_tone_range(once, tone) is once


def test_the_bounds_leave_out_odd_frames_and_never_decrease():
    frames = [_ramp(0.1, 0.3) for _ in range(38)] + [_ramp(0.0, 1.0), _ramp(0.5, 0.6)]
    tone = tone_bounds(frames, lower=10.0, upper=90.0)
    assert np.allclose(tone.low, quantiles(frames[0]), atol=BIN) and np.allclose(tone.high, tone.low, atol=BIN)
    wide = tone_bounds(frames, lower=0.0, upper=100.0)
    assert wide.high[-1] > 0.9 and wide.low[0] < 0.01
    assert np.all(np.diff(wide.low) >= 0) and np.all(np.diff(wide.high) >= 0)


def test_json_round_trip_and_bad_ranges_are_refused():
    tone = _range(0.1, 0.5)
    again = ToneRange.from_json(tone.to_json())
    assert np.allclose(again.low, tone.low, atol=1e-6) and again.levels == tone.levels
    with pytest.raises(ValueError, match="levels must increase"):
        ToneRange((50.0, 10.0), (0.1, 0.2), (0.2, 0.3))
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        ToneRange((10.0, 50.0), (0.1, float("nan")), (0.2, 0.3))
    with pytest.raises(ValueError, match="low <= high"):
        ToneRange((10.0, 50.0), (0.3, 0.4), (0.2, 0.5))
    with pytest.raises(ValueError, match="needs 'levels'"):
        ToneRange.from_json({"levels": [1, 2]})
    with pytest.raises(ValueError, match="no frames"):
        tone_bounds([])
