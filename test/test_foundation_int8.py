"""The CPU int8 route: QDQ model calibrated on the sample pairs, checked on held-out MSRS pairs."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

from sage_ros.backends import BackendConfig, create_backend
from sage_ros.image.imaging import infrared_to_grey, unit_to_uint8, visible_to_ycrcb
from sage_ros.tensorrt.onnx_checks import onnx_has_qdq

pytest.importorskip("onnxruntime.quantization")


def test_int8_model_stays_close_to_fp32_on_held_out_pairs(student_onnx: Path, official_dir: Path, msrs_dir: Path):
    from sage_ros.model.model_files import ensure_int8

    int8 = ensure_int8(student_onnx, official_dir)
    fp32_backend = create_backend(BackendConfig(name="onnxruntime", onnx_path=student_onnx))
    int8_backend = create_backend(BackendConfig(name="onnxruntime", onnx_path=int8))
    # The graph that runs is quantised (Q/DQ nodes), its source is not: not only a file name that says int8.
    assert onnx_has_qdq(int8) and not onnx_has_qdq(student_onnx)
    with (msrs_dir / "splits.csv").open(newline="") as handle:
        night = [r["name"] for r in csv.DictReader(handle) if r["light"] == "night"][:2]
    assert len(night) == 2
    for name in night:  # night scenes: the hard case for activation ranges
        vis = cv2.imread(str(msrs_dir / "vi" / f"{name}.png"))[::2, ::2]
        ir = cv2.imread(str(msrs_dir / "ir" / f"{name}.png"))[::2, ::2]
        y, g = visible_to_ycrcb(vis).y, infrared_to_grey(ir)
        a = unit_to_uint8(fp32_backend.infer(y, g).fused_y).astype(float)
        b = unit_to_uint8(int8_backend.infer(y, g).fused_y).astype(float)
        psnr = 10 * np.log10(255**2 / np.mean((a - b) ** 2))
        # Measured 39-42 dB across pairs and runtimes: 8-bit activations cost about 1 grey level.
        assert psnr >= 38.0, f"{name}: int8 PSNR {psnr:.1f} dB against fp32"


def test_int8_copy_of_a_shipped_model_goes_to_the_cache(tmp_path, monkeypatch):
    """`--precision int8 --model fast` must not write into the installed package."""
    from sage_ros.model.model_files import int8_path
    from sage_ros.model.model_variants import fast_onnx

    monkeypatch.setenv("SAGE_ROS_HOME", str(tmp_path / "home"))
    from sage_ros.paths import models_dir

    assert int8_path(fast_onnx()) == models_dir() / "fast_student_int8.onnx"
    assert str(models_dir()).startswith(str(tmp_path))
    assert int8_path(tmp_path / "mine.onnx") == tmp_path / "mine_int8.onnx"  # a user's model: beside it
