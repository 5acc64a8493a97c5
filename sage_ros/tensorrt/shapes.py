"""Optimisation-profile shapes for the dynamic height/width of the student graph."""

from __future__ import annotations

import re
from dataclasses import dataclass

# The student halves the image twice (two 2x2 max-pools), so a side shorter than 4 has no H/4 level.
MIN_SIDE = 4
_HW = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


class ShapeError(ValueError):
    """A shape string or profile that cannot be used."""


def parse_hw(text: str) -> tuple[int, int]:
    """Parse 'HxW' (height first, as in 480x640) into (H, W)."""
    match = _HW.match(str(text))
    if not match:
        raise ShapeError(f"expected a size as HEIGHTxWIDTH such as 480x640, got {text!r}")
    h, w = int(match.group(1)), int(match.group(2))
    if h < MIN_SIDE or w < MIN_SIDE:
        raise ShapeError(f"size {h}x{w} is too small: the student needs at least {MIN_SIDE}x{MIN_SIDE}")
    return h, w


@dataclass(frozen=True)
class ShapeProfile:
    """min <= opt <= max (each (H, W)) for the inputs `vis_y` and `ir`, batch 1, one channel."""

    min: tuple[int, int]
    opt: tuple[int, int]
    max: tuple[int, int]

    def __post_init__(self) -> None:
        for name in ("min", "opt", "max"):
            hw = tuple(int(v) for v in getattr(self, name))
            if len(hw) != 2 or hw[0] < MIN_SIDE or hw[1] < MIN_SIDE:
                raise ShapeError(f"profile {name} {getattr(self, name)} is not a size of at least 4x4")
            object.__setattr__(self, name, hw)
        for axis, label in ((0, "height"), (1, "width")):
            if not self.min[axis] <= self.opt[axis] <= self.max[axis]:
                raise ShapeError(
                    f"profile {label}s must satisfy min <= opt <= max, got "
                    f"{self.min[axis]} / {self.opt[axis]} / {self.max[axis]}"
                )

    @classmethod
    def fixed(cls, hw: tuple[int, int]) -> ShapeProfile:
        """A profile for one camera size: TensorRT tunes for exactly that size."""
        return cls(hw, hw, hw)

    def contains(self, hw: tuple[int, int]) -> bool:
        return all(self.min[i] <= hw[i] <= self.max[i] for i in (0, 1))

    def input_shapes(self) -> dict[str, tuple[tuple[int, ...], ...]]:
        """(min, opt, max) NCHW shapes per input, as `IOptimizationProfile.set_shape` takes them."""
        nchw = tuple((1, 1, h, w) for h, w in (self.min, self.opt, self.max))
        return {"vis_y": nchw, "ir": nchw}

    def to_json(self) -> dict[str, list[int]]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    @classmethod
    def from_json(cls, data: dict) -> ShapeProfile:
        try:
            return cls(tuple(data["min"]), tuple(data["opt"]), tuple(data["max"]))
        except (KeyError, TypeError) as exc:
            raise ShapeError(f"not a shape profile: {data!r}") from exc


# Default for a dynamic engine: anything from a thumbnail up to 1920x1200, tuned for VGA (MSRS, most
# thermal cores). A fixed camera size builds faster and runs a little faster: pass --min/--opt/--max.
DEFAULT_PROFILE = ShapeProfile(min=(64, 64), opt=(480, 640), max=(1200, 1920))


def profile_from_args(min_hw: str | None, opt_hw: str | None, max_hw: str | None) -> ShapeProfile:
    """Build a profile from optional 'HxW' strings.

    None given: DEFAULT_PROFILE. One given: a fixed profile of that size (the usual single-camera robot).
    Two given: the missing one is filled from them (min from the smaller, max from the larger, opt
    from max, since TensorRT tunes kernels for opt and a robot streams at its largest size).
    """
    given = {k: parse_hw(v) for k, v in (("min", min_hw), ("opt", opt_hw), ("max", max_hw)) if v}
    if not given:
        return DEFAULT_PROFILE
    if len(given) == 1:
        return ShapeProfile.fixed(next(iter(given.values())))
    sizes = list(given.values())
    low = (min(s[0] for s in sizes), min(s[1] for s in sizes))
    high = (max(s[0] for s in sizes), max(s[1] for s in sizes))
    return ShapeProfile(given.get("min", low), given.get("opt", given.get("max", high)), given.get("max", high))
