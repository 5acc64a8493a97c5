"""Bring an image's grey levels into the range a network was trained on, and leave them alone inside it.

Another camera renders the same scene with another gain, level and tone curve: MSRS's infrared has its median
near 19/255, the six upstream sample pairs' near 82/255. A network trained on one camera reads the other's warm,
wet road as its cars (docs/segmentation.md, "Other cameras"). The training frames give, for each quantile level
of a frame's grey levels (its 1st, 5th, ..., 99th percentile), the range that level took over the training
frames (`tone_bounds`). At run time each quantile of a frame is clamped into that range and the frame is remapped
by the monotone piecewise-linear curve through (its quantile, the clamped one) (`into_tone_range`): a frame whose
every quantile lies in range is returned unchanged, one outside is moved only as far as the range's edge.
Pure numpy; the quantiles come from a 1024-bin histogram, so they cost the same at every frame size.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

LEVELS = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 95.0, 98.0, 99.0, 99.5)
_BINS = 1024
_LUT = 65536


@dataclass(frozen=True)
class ToneRange:
    """Per quantile level (percent), the lowest and highest value that quantile may take, in [0, 1]."""

    levels: tuple[float, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]

    def __post_init__(self) -> None:
        n = len(self.levels)
        if n < 2 or len(self.low) != n or len(self.high) != n:
            raise ValueError(f"tone range: {n} levels need as many low and high values "
                             f"({len(self.low)}, {len(self.high)} given)")
        if any(b <= a for a, b in zip(self.levels, self.levels[1:], strict=False)):
            raise ValueError("tone range: levels must increase")
        values = np.array([self.low, self.high], np.float64)
        if not np.all(np.isfinite(values)) or values.min() < 0.0 or values.max() > 1.0:
            raise ValueError("tone range: low and high must be finite values in [0, 1]")
        if np.any(np.diff(values, axis=1) < 0) or np.any(values[0] > values[1]):
            raise ValueError("tone range: low and high must not decrease with the level, and low <= high")

    def to_json(self) -> dict:
        return {"levels": list(self.levels), "low": [round(v, 6) for v in self.low],
                "high": [round(v, 6) for v in self.high]}

    @classmethod
    def from_json(cls, data: dict) -> ToneRange:
        try:
            return cls(tuple(map(float, data["levels"])), tuple(map(float, data["low"])),
                       tuple(map(float, data["high"])))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"tone range: needs 'levels', 'low' and 'high' lists ({exc})") from exc


def quantiles(plane: np.ndarray, levels: Sequence[float] = LEVELS) -> np.ndarray:
    """The plane's grey levels (float in [0, 1]) at these percentiles, from a 1024-bin histogram."""
    flat = np.asarray(plane, np.float32).ravel()
    bins = np.clip((flat * _BINS).astype(np.int32), 0, _BINS - 1)
    cdf = np.cumsum(np.bincount(bins, minlength=_BINS)) / float(max(flat.size, 1))
    index = np.searchsorted(cdf, np.asarray(levels, np.float64) / 100.0, side="left")
    return (np.minimum(index, _BINS - 1) + 0.5) / _BINS


def tone_bounds(planes: Iterable[np.ndarray], lower: float = 10.0, upper: float = 90.0,
                levels: Sequence[float] = LEVELS) -> ToneRange:
    """The range of each quantile level over training frames: its `lower`-th to `upper`-th percentile across
    the frames (a few odd frames do not widen it), made non-decreasing in the level."""
    table = np.array([quantiles(p, levels) for p in planes])
    if len(table) == 0:
        raise ValueError("tone range: no frames")
    low = np.maximum.accumulate(np.percentile(table, lower, axis=0))
    high = np.maximum.accumulate(np.percentile(table, upper, axis=0))
    return ToneRange(tuple(map(float, levels)), tuple(map(float, low)), tuple(map(float, np.maximum(low, high))))


def into_tone_range(plane: np.ndarray, tone: ToneRange) -> np.ndarray:
    """The plane (float32 in [0, 1]) remapped so that its quantiles lie within `tone`; itself when they do."""
    plane = np.asarray(plane, np.float32)
    q = quantiles(plane, tone.levels)
    target = np.clip(q, tone.low, tone.high)
    # Monotone curve through (0, 0), each (quantile, clamped quantile), (1, 1); tied quantiles keep the first
    # (a mass of pixels at one grey level cannot be split by a pixel-wise curve).
    xp, first = np.unique(np.concatenate([[0.0], q, [1.0]]), return_index=True)
    fp = np.maximum.accumulate(np.concatenate([[0.0], target, [1.0]])[first])
    # A curve within two histogram bins (half an 8-bit grey level) of the identity counts as inside: a remapped
    # frame, whose quantiles land up to ~1.6 bins from their targets after the table and the histogram, is then
    # left as it is (judged on the curve, not on every level: a tied level no curve can move is not "outside").
    if np.abs(fp - xp).max() <= 2.0 / _BINS:
        return plane
    # Through a 65536-entry table (a quarter of np.interp's time per frame; at most ~0.1 grey level apart).
    table = np.interp(np.linspace(0.0, 1.0, _LUT), xp, fp).astype(np.float32)
    index = np.clip(plane, 0.0, 1.0) * np.float32(_LUT - 1) + np.float32(0.5)
    return table[index.astype(np.uint16)]
