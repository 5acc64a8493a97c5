"""Thermal frames (mono8, mono16 counts, 32FC1 degrees C) -> float32 grey in [0, 1] for the network.

A fixed 255/65535 scale (what cv_bridge does) turns 14-bit counts almost black, and per-frame
min/max makes the image flicker whenever a hot object enters. `ThermalNormalizer` offers:

- `percentile` (default): robust bounds (e.g. 1st and 99th percentile) measured on each frame and
  smoothed over frames with an exponential moving average, so brightness follows the scene slowly;
- `fixed`: a constant window in the input's units (raw counts, or degrees C for 32FC1).

mono8 input is passed through (/255): the camera's own AGC already did this job.
Pure numpy, stateful, not thread-safe: use one instance per thermal stream from one thread.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sage_ros.image.imaging import ImageInputError

__all__ = ["NormalizerConfig", "ThermalNormalizer", "MODES"]

MODES = ("percentile", "fixed")


@dataclass
class NormalizerConfig:
    mode: str = "percentile"
    low_percentile: float = 1.0
    high_percentile: float = 99.0
    # Weight of the newest frame's bounds in the moving average: 1.0 = no smoothing (per frame),
    # 0.1 = bounds settle over roughly 10-20 frames.
    ema_alpha: float = 0.1
    fixed_min: float = 0.0  # window for `fixed`, in counts (mono16) or degrees C (32FC1)
    fixed_max: float = 16383.0  # 14-bit full scale by default
    # Smallest span the window may have (input units), so a uniform scene does not amplify noise.
    min_span: float = 1.0
    # Bounds are estimated on every `sample_stride`-th pixel in each direction (speed; percentiles
    # of a 640x512 frame barely change when subsampled by 4).
    sample_stride: int = 4

    def validate(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"thermal normalisation mode {self.mode!r} unknown; choose one of {MODES}")
        if not 0.0 <= self.low_percentile < self.high_percentile <= 100.0:
            raise ValueError(
                f"thermal percentiles must satisfy 0 <= low < high <= 100, got "
                f"{self.low_percentile} and {self.high_percentile}"
            )
        if not 0.0 < self.ema_alpha <= 1.0:
            raise ValueError(f"thermal ema_alpha must be in (0, 1], got {self.ema_alpha}")
        if self.mode == "fixed" and not self.fixed_max > self.fixed_min:
            raise ValueError(f"thermal fixed window needs max > min, got [{self.fixed_min}, {self.fixed_max}]")
        if self.min_span <= 0.0:
            raise ValueError(f"thermal min_span must be > 0, got {self.min_span}")
        if self.sample_stride < 1:
            raise ValueError(f"thermal sample_stride must be >= 1, got {self.sample_stride}")


class ThermalNormalizer:
    """Stateful mapper from raw thermal frames to [0, 1]; `reset()` forgets the smoothed bounds."""

    def __init__(self, config: NormalizerConfig | None = None) -> None:
        self.config = config or NormalizerConfig()
        self.config.validate()
        self._bounds: tuple[float, float] | None = None
        self._kind: np.dtype | None = None

    def reset(self) -> None:
        self._bounds = None
        self._kind = None

    @property
    def bounds(self) -> tuple[float, float] | None:
        """The (low, high) window applied to the last frame, in input units; None before the first."""
        return self._bounds

    def _frame_bounds(self, frame: np.ndarray) -> tuple[float, float]:
        cfg = self.config
        s = cfg.sample_stride
        sample = frame[::s, ::s] if min(frame.shape) >= 8 * s else frame
        lo, hi = np.percentile(sample, (cfg.low_percentile, cfg.high_percentile))
        return float(lo), float(hi)

    def _window(self, frame: np.ndarray) -> tuple[float, float]:
        cfg = self.config
        if cfg.mode == "fixed":
            return cfg.fixed_min, cfg.fixed_max
        lo, hi = self._frame_bounds(frame)
        if self._bounds is not None:
            a = cfg.ema_alpha
            lo = (1.0 - a) * self._bounds[0] + a * lo
            hi = (1.0 - a) * self._bounds[1] + a * hi
        return lo, hi

    def normalize(self, frame: np.ndarray) -> np.ndarray:
        """HxW uint8 / uint16 / float frame -> HxW float32 in [0, 1]."""
        if not isinstance(frame, np.ndarray) or frame.ndim != 2 or frame.size == 0:
            shape = getattr(frame, "shape", None)
            raise ImageInputError(f"thermal frame: expected a non-empty HxW array, got shape {shape}")
        if frame.dtype == np.uint8:
            return frame.astype(np.float32) * np.float32(1.0 / 255.0)
        if frame.dtype not in (np.uint16, np.float32, np.float64):
            raise ImageInputError(f"thermal frame: unsupported sample type {frame.dtype}")
        if frame.dtype.kind == "f" and not np.isfinite(frame).all():
            raise ImageInputError("thermal frame: contains NaN or inf values")
        if self._kind is not None and frame.dtype != self._kind:
            # Counts and degrees are not comparable: a stream that changes encoding starts over.
            self.reset()
        self._kind = frame.dtype
        lo, hi = self._window(frame)
        self._bounds = (lo, hi)
        span = hi - lo
        if span < self.config.min_span:
            mid = 0.5 * (lo + hi)
            lo, span = mid - 0.5 * self.config.min_span, self.config.min_span
        try:
            # float32 arithmetic (fast, and what every ordinary frame gets). A float frame whose values
            # reach the ends of float32 (32FC1 can hold +-3.4e38) makes `frame - lo` overflow; numpy
            # would warn and yield +-inf. Raise instead and redo that rare frame in float64 below.
            with np.errstate(over="raise"):
                out = (frame.astype(np.float32) - np.float32(lo)) * np.float32(1.0 / span)
        except FloatingPointError:
            # Same saturated result (an overflowing pixel lies far outside the window: 0 or 1), and
            # finite in-window values even when the window itself is wider than float32's range.
            # Clipped before the cast down: a float64 value past float32's range cannot be cast.
            out = np.clip((frame.astype(np.float64) - lo) * (1.0 / span), 0.0, 1.0).astype(np.float32)
        np.clip(out, 0.0, 1.0, out=out)
        return out
