"""INT8 calibration data from real MSRS / SAGE pairs, and the calibration cache file."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from sage_ros.tensorrt.calibrator import (
    CalibrationError,
    calibration_cache_path,
    find_pairs,
    iter_calibration_batches,
    pick_evenly,
    read_cache,
    write_cache,
)
from sage_ros.tensorrt.engine_cache import EngineSpec
from sage_ros.tensorrt.shapes import DEFAULT_PROFILE


def test_finds_msrs_pairs_by_name(msrs_dir: Path) -> None:
    pairs = find_pairs(msrs_dir)
    with (msrs_dir / "splits.csv").open(newline="") as handle:
        assert len(pairs) == sum(1 for _ in csv.DictReader(handle))
    assert all(ir.parent.name == "ir" and vi.parent.name == "vi" and ir.stem == vi.stem for ir, vi in pairs)


def test_finds_upstream_layout(official_dir: Path) -> None:
    pairs = find_pairs(official_dir)  # Ir/ + Vis/, 1024x768
    assert [p[0].name for p in pairs] == [f"0000{i}.png" for i in range(6)]


def test_batches_are_network_inputs_at_the_calibration_size(msrs_dir: Path) -> None:
    batches = list(iter_calibration_batches(msrs_dir, (120, 160), count=4))
    assert len(batches) == 4
    for batch in batches:
        assert set(batch) == {"vis_y", "ir"}
        for arr in batch.values():
            assert arr.shape == (1, 1, 120, 160) and arr.dtype == np.float32 and arr.flags.c_contiguous
            assert 0.0 <= arr.min() and arr.max() <= 1.0 and arr.std() > 0.01  # real content, not blank
    # day and night scenes both: spread over the sorted list, not the first four
    picked = pick_evenly(find_pairs(msrs_dir), 4)
    assert {p[0].stem[-1] for p in picked} == {"D", "N"}


def test_bad_folders_say_what_is_expected(tmp_path: Path) -> None:
    with pytest.raises(CalibrationError, match="does not exist"):
        find_pairs(tmp_path / "nope")
    (tmp_path / "ir").mkdir()
    (tmp_path / "vi").mkdir()
    (tmp_path / "ir" / "a.png").write_bytes(b"")
    with pytest.raises(CalibrationError, match="ir/\\+vi/"):
        find_pairs(tmp_path)  # no visible partner named a.png


def test_unreadable_pair_is_skipped_not_fatal(tmp_path: Path, msrs_dir: Path) -> None:
    (tmp_path / "ir").mkdir()
    (tmp_path / "vi").mkdir()
    good_ir, good_vi = find_pairs(msrs_dir)[0]
    (tmp_path / "ir" / "a.png").write_bytes(good_ir.read_bytes())
    (tmp_path / "vi" / "a.png").write_bytes(good_vi.read_bytes())
    (tmp_path / "ir" / "b.png").write_bytes(b"not a png")
    (tmp_path / "vi" / "b.png").write_bytes(b"not a png")
    assert len(list(iter_calibration_batches(tmp_path, (60, 80), count=10))) == 1


def test_cache_round_trip_and_naming(tmp_path: Path) -> None:
    spec = EngineSpec("sage_student", tmp_path / "m.onnx", "ab" * 32, "int8", DEFAULT_PROFILE)
    path = calibration_cache_path(tmp_path, spec, (480, 640))
    assert path.name == "sage_student-abababababab-480x640.calib"
    assert read_cache(path) is None and read_cache(None) is None
    write_cache(path, b"TRT-8602-EntropyCalibration2\nvis_y: 3c010a14\n")
    assert read_cache(path).startswith(b"TRT-8602")
    path.write_bytes(b"")
    assert read_cache(path) is None  # an empty cache means calibrate again
