"""Folder comparison (peers' saved outputs) and report helpers, without a model."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest

from sage_ros.evaluation.report import latency_summary, markdown_table

_spec = importlib.util.spec_from_file_location(
    "compare_methods", Path(__file__).resolve().parents[1] / "benchmarks" / "compare_methods.py")
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)
compare, main = _module.compare, _module.main


@pytest.fixture()
def folders(tmp_path):
    rng = np.random.default_rng(5)
    for d in ("ir", "vi", "copy_of_visible", "other"):
        (tmp_path / d).mkdir()
    for name in ("p1", "p2", "p3"):
        base = cv2.GaussianBlur(rng.uniform(0, 255, (48, 64)), (0, 0), 2)
        ir = np.clip(base * 2 - 120, 0, 255).astype(np.uint8)
        vis = cv2.GaussianBlur(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), (5, 5), 0)
        cv2.imwrite(str(tmp_path / "ir" / f"{name}.png"), ir)
        cv2.imwrite(str(tmp_path / "vi" / f"{name}.png"), vis)
        cv2.imwrite(str(tmp_path / "copy_of_visible" / f"{name}.png"), vis)
        if name != "p3":  # a method that covers only two of the pairs
            cv2.imwrite(str(tmp_path / "other" / f"{name}.png"), np.dstack([ir] * 3))
    return tmp_path


def test_a_saved_copy_of_the_visible_image_scores_like_the_visible_baseline(folders):
    used, means = compare(folders / "ir", folders / "vi", {"copy": folders / "copy_of_visible"})
    assert used == ["p1", "p2", "p3"]
    assert set(means) == {"copy", "average", "max", "visible"}
    assert means["copy"] == pytest.approx(means["visible"], rel=1e-12)
    assert means["average"]["Qabf"] != pytest.approx(means["visible"]["Qabf"])


def test_only_pairs_every_method_covers_are_used(folders, tmp_path, capsys):
    methods = {"copy": folders / "copy_of_visible", "ir_only": folders / "other"}
    used, means = compare(folders / "ir", folders / "vi", methods)
    assert used == ["p1", "p2"]
    # A "fusion" that returns the infrared image: SSIM(A, F) = 1, so the two-source sum exceeds 1.
    assert means["ir_only"]["SSIM"] > 1.0
    out = tmp_path / "table.md"
    args = ["--ir", str(folders / "ir"), "--vis", str(folders / "vi"), "--out", str(out)]
    assert main([*args, "--method", f"ir_only={folders / 'other'}"]) == 0
    assert "2 pairs: p1, p2" in capsys.readouterr().out
    expected = compare(folders / "ir", folders / "vi", {"ir_only": folders / "other"})[1]
    assert out.read_text() == markdown_table(expected)
    assert out.with_suffix(".json").is_file()


def test_latency_summary_percentiles():
    summary = latency_summary([float(v) for v in range(1, 101)])
    assert summary["mean"] == pytest.approx(50.5)
    assert summary["p50"] == pytest.approx(50.5) and summary["p99"] == pytest.approx(99.01)
    assert summary["max"] == 100.0
    assert latency_summary([]) is None
