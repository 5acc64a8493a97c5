"""The colour overlay: every pixel the float blend of the fused image and its class colour, rounded half
up; background untouched. Checked against that formula written out per pixel."""

from __future__ import annotations

import numpy as np
import pytest

from sage_ros.model.classes import class_table, overlay


def _reference(fused_rgb: np.ndarray, ids: np.ndarray, palette: np.ndarray, alpha: float) -> np.ndarray:
    out = fused_rgb.astype(np.float32)
    colours = palette[ids.astype(np.intp) % len(palette)].astype(np.float32)
    blended = np.where((ids != 0)[..., None], (1.0 - alpha) * out + alpha * colours, out)
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("labelled", [0.0, 0.05, 0.5, 1.0])
@pytest.mark.parametrize("alpha", [0.0, 0.4, 0.5, 1.0])
def test_overlay_equals_the_per_pixel_blend(labelled, alpha):
    rng = np.random.default_rng(int(labelled * 100) + int(alpha * 10))
    fused = rng.integers(0, 256, (72, 128, 3), np.uint8)
    ids = np.where(rng.random((72, 128)) < labelled, rng.integers(1, 4, (72, 128)), 0).astype(np.uint8)
    table = class_table("msrs")
    before = fused.copy()
    got = overlay(fused, ids, table, alpha)
    assert got.dtype == np.uint8 and got.shape == fused.shape
    assert np.array_equal(got, _reference(fused, ids, table.palette, alpha))
    assert np.array_equal(got[ids == 0], fused[ids == 0])
    assert np.array_equal(fused, before)  # the input is left as it was


def test_overlay_wraps_ids_beyond_the_palette_and_takes_views():
    rng = np.random.default_rng(7)
    fused = rng.integers(0, 256, (40, 60, 3), np.uint8)
    ids = rng.integers(0, 256, (40, 60)).astype(np.uint8)
    table = class_table("msrs")
    flipped = fused[:, ::-1]  # a non-contiguous view, as a sliced camera frame would be
    assert np.array_equal(overlay(flipped, ids, table, 0.3), _reference(flipped, ids, table.palette, 0.3))
    assert np.array_equal(overlay(fused, ids, table, 2.0), _reference(fused, ids, table.palette, 1.0))
