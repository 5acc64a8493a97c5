"""ThermalNormalizer: robust bounds, temporal smoothing (no flicker), fixed windows, reset."""

from __future__ import annotations

import numpy as np
import pytest

from sage_ros.image.imaging import ImageInputError
from sage_ros.image.thermal import NormalizerConfig, ThermalNormalizer

RNG = np.random.default_rng(5)


def scene(base=3000.0, spread=1500.0, shape=(128, 160)):
    """A 14-bit-like scene: a gradient plus noise, values well inside 0..16383."""
    ramp = np.linspace(0.0, 1.0, shape[1])[None, :] * np.ones(shape)
    return np.clip(base + spread * ramp + RNG.normal(0, 20, shape), 0, 16383).astype(np.uint16)


def test_mono16_fills_the_range_unlike_a_fixed_65535_scale():
    frame = scene()
    out = ThermalNormalizer(NormalizerConfig(ema_alpha=1.0)).normalize(frame)
    assert out.dtype == np.float32 and out.shape == frame.shape
    assert out.min() == 0.0 and out.max() == 1.0
    assert 0.35 < out.mean() < 0.65
    assert (frame / 65535.0).max() < 0.08  # what cv_bridge's fixed scale would have shown


def test_outliers_do_not_set_the_window():
    frame = scene()
    frame[:2, :2] = 16383  # a few hot pixels (sun glint, dead pixels)
    norm = ThermalNormalizer(NormalizerConfig(ema_alpha=1.0, sample_stride=1))
    norm.normalize(frame)
    lo, hi = norm.bounds
    assert hi < 5000 and lo > 2900


def test_ema_smooths_a_sudden_hot_object():
    cfg = NormalizerConfig(ema_alpha=0.1)
    norm = ThermalNormalizer(cfg)
    base = scene()
    for _ in range(5):
        norm.normalize(base)
    steady = norm.bounds
    hot = base.copy()
    hot[:, 80:] = 9000  # half the frame becomes hot: per-frame 99th percentile jumps to ~9000
    first = norm.normalize(hot)
    lo, hi = norm.bounds
    # Upper bound moves only a tenth of the way on the first hot frame.
    assert hi == pytest.approx(0.9 * steady[1] + 0.1 * 9000, rel=0.01)
    assert np.abs(first[:, :80] - norm.normalize(base)[:, :80]).mean() < 0.1
    for _ in range(60):
        norm.normalize(hot)
    assert norm.bounds[1] == pytest.approx(9000, rel=0.01)


def test_per_frame_mode_would_flicker_and_smoothing_does_not():
    frames = [scene(base=3000 + (200 if k % 2 else 0)) for k in range(20)]
    means = {}
    for alpha in (1.0, 0.1):
        norm = ThermalNormalizer(NormalizerConfig(ema_alpha=alpha))
        outs = [norm.normalize(f) for f in frames]
        means[alpha] = np.std([o.mean() for o in outs[10:]])
    # With per-frame bounds the scene offset is normalised away (no visible change at all);
    # smoothing keeps the 200-count brightness change visible but steady.
    assert means[1.0] < 0.01
    assert means[0.1] > 0.02


def test_fixed_window_in_degrees_c():
    temps = np.array([[-10.0, 0.0, 20.0, 40.0, 50.0]], np.float32)
    norm = ThermalNormalizer(NormalizerConfig(mode="fixed", fixed_min=0.0, fixed_max=40.0))
    np.testing.assert_allclose(norm.normalize(temps), [[0.0, 0.0, 0.5, 1.0, 1.0]])
    assert norm.bounds == (0.0, 40.0)


def test_mono8_passes_through_and_uniform_frames_do_not_explode():
    grey = np.arange(256, dtype=np.uint8).reshape(16, 16)
    np.testing.assert_allclose(ThermalNormalizer().normalize(grey), grey / 255.0, atol=1e-7)
    flat = np.full((32, 32), 1000, np.uint16)
    out = ThermalNormalizer().normalize(flat)
    assert np.isfinite(out).all() and np.allclose(out, 0.5)


def test_reset_and_encoding_change_forget_the_bounds():
    norm = ThermalNormalizer(NormalizerConfig(ema_alpha=0.1))
    norm.normalize(scene(base=1000))
    norm.reset()
    assert norm.bounds is None
    norm.normalize(scene(base=8000))
    assert norm.bounds[0] > 7000
    # Switching from counts to degrees starts over instead of mixing units.
    norm.normalize(np.linspace(10, 30, 64 * 64, dtype=np.float32).reshape(64, 64))
    assert norm.bounds[1] < 31


def test_bad_inputs_and_parameters():
    norm = ThermalNormalizer()
    bad = np.ones((8, 8), np.float32)
    bad[1, 1] = np.nan
    with pytest.raises(ImageInputError, match="NaN"):
        norm.normalize(bad)
    with pytest.raises(ImageInputError, match="HxW"):
        norm.normalize(np.zeros((4, 4, 3), np.uint16))
    with pytest.raises(ImageInputError, match="int32"):
        norm.normalize(np.zeros((4, 4), np.int32))
    for cfg in (
        NormalizerConfig(mode="agc"),
        NormalizerConfig(low_percentile=99, high_percentile=1),
        NormalizerConfig(ema_alpha=0.0),
        NormalizerConfig(mode="fixed", fixed_min=5, fixed_max=5),
    ):
        with pytest.raises(ValueError):
            ThermalNormalizer(cfg)
