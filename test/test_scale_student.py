"""The scale-adapted student (sage_ros/model/scale_student.py): shipped weights, graph, selection, quality, training."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from sage_ros.backends import BackendConfig, create_backend
from sage_ros.backends.base import BackendOutput, FusionBackend
from sage_ros.image.imaging import visible_to_ycrcb
from sage_ros.model.scale_student import (
    FORMAT,
    ScaleStudentError,
    ensure_scale_onnx,
    is_released_student,
    read_state,
    shipped_weights,
)
from sage_ros.pipeline import FusionPipeline, PipelineSettings, Student, resize_area, upsample_with_detail
from sage_ros.pipeline.builder import reduced_student

REPO = Path(__file__).resolve().parents[1]


def _copy_weights(tmp_path: Path) -> Path:
    dst = tmp_path / "scale_student.npz"
    shutil.copy2(shipped_weights(), dst)
    shutil.copy2(shipped_weights().with_suffix(".json"), dst.with_suffix(".json"))
    return dst


def test_shipped_weights_are_the_released_layout_with_provenance():
    state = read_state(shipped_weights())
    assert state["module1.0.weight"].shape == (32, 2, 3, 3) and state["final_decoder.0.weight"].shape == (1, 32, 3, 3)
    meta = json.loads(shipped_weights().with_suffix(".json").read_text())
    assert meta["format"] == FORMAT and "MSRS train split" in meta["data"] and meta["detail_gain"] == 1.0
    assert meta["recipe"]["steps"] > 0 and meta["teacher_sha256"]
    assert 0.5 < meta["detail_gain_reference"] < 1.2  # measured on the train frames: 0.87


@pytest.mark.parametrize("damage", ["missing", "no_sidecar", "foreign_format", "nan", "truncated", "wrong_keys"])
def test_bad_weight_files_get_clear_errors(tmp_path: Path, damage: str):
    path = _copy_weights(tmp_path)
    expected = {"missing": "do not exist", "no_sidecar": "metadata file", "foreign_format": "expected",
                "nan": "non-finite", "truncated": "could not be read", "wrong_keys": "not a SAGE student"}[damage]
    if damage == "missing":
        path.unlink()
    elif damage == "no_sidecar":
        path.with_suffix(".json").unlink()
    elif damage == "foreign_format":
        path.with_suffix(".json").write_text(json.dumps({"format": "something/else"}))
    elif damage in ("nan", "wrong_keys"):
        with np.load(path) as data:
            arrays = {k: np.array(data[k]) for k in data.files}
        if damage == "nan":
            arrays["module3.3.weight"][0, 0, 0, 0] = np.nan
        else:
            arrays["module9.0.weight"] = arrays.pop("module1.0.weight")
        np.savez(path, **arrays)
    else:
        path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(ScaleStudentError, match=expected):
        read_state(path)


def test_graph_is_built_without_torch_and_matches_the_torch_student(tmp_path: Path):
    """The cached graph (onnx_builder, BatchNorm folded) computes what the npz loaded into torch computes."""
    torch = pytest.importorskip("torch")
    from sage_ros.networks.fast_student import load_fast_student

    onnx_path = ensure_scale_onnx(onnx_path=tmp_path / "scale.onnx")
    meta = json.loads(onnx_path.with_suffix(".json").read_text())
    assert meta["outputs"] == ["fused_y"] and meta["scale_student_sha256"]
    rng = np.random.default_rng(0)
    y, ir = (rng.random((96, 128), dtype=np.float32) for _ in range(2))
    backend = create_backend(BackendConfig(name="onnxruntime", onnx_path=onnx_path, threads=1, precision="fp32"))
    try:
        got = backend.infer(y, ir).fused_y
    finally:
        backend.close()
    model = load_fast_student(shipped_weights())
    with torch.no_grad():
        want = model(torch.from_numpy(y)[None, None], torch.from_numpy(ir)[None, None])[0][0, 0].numpy()
    assert np.abs(got - want).max() < 1e-4
    # Reused while current: the second call does not rebuild.
    stamp = onnx_path.stat().st_mtime_ns
    assert ensure_scale_onnx(onnx_path=onnx_path) == onnx_path and onnx_path.stat().st_mtime_ns == stamp


def _export_with_sidecar(tmp_path: Path, checkpoint_sha: str) -> Path:
    model = tmp_path / "m.onnx"
    model.write_bytes(b"")
    model.with_suffix(".json").write_text(json.dumps({"checkpoint_sha256": checkpoint_sha, "outputs": ["fused_y"]}))
    return model


class _Created(FusionBackend):
    """What a recording `create` hands back: remembers the config it was made from, fuses nothing."""

    def __init__(self, config: BackendConfig) -> None:
        self.config = config

    def _infer(self, vis_y: np.ndarray, ir: np.ndarray) -> BackendOutput:
        raise AssertionError("not for fusing")


def _reduced(config: BackendConfig, **settings) -> tuple[Student | None, str, list[BackendConfig]]:
    """reduced_student for `config`, and the configs of the backends started so far (none until first use)."""
    created: list[BackendConfig] = []

    def create(cfg: BackendConfig) -> FusionBackend:
        created.append(cfg)
        return _Created(cfg)

    student, why = reduced_student(PipelineSettings(**settings), config, create)
    return student, why, created


def test_selection_follows_the_switch_and_the_model_provenance(tmp_path: Path):
    from sage_ros.model.weights import CHECKPOINT as RELEASED

    released = BackendConfig(name="onnxruntime", onnx_path=_export_with_sidecar(tmp_path, RELEASED.sha256),
                             threads=1)
    assert is_released_student(released)
    student, why, created = _reduced(released)
    assert student is not None and "scale-adapted" in why
    assert not student.started and created == []  # built lazily: nothing runs until the first small pair
    assert student.detail_gain == 1.0
    student.backend  # noqa: B018 - first use starts it
    assert len(created) == 1 and created[0].onnx_path.name == "sage_student_scale_fusion.onnx"
    assert replace(created[0], onnx_path=released.onnx_path) == released  # only the model file changes
    for off, note in (({"scale_adapted": False}, "off"), ({"resolution": "rgb"}, "")):
        student, why, _ = _reduced(released, **off)
        assert student is None and note in why
    (tmp_path / "x").mkdir()
    other = BackendConfig(name="onnxruntime", onnx_path=_export_with_sidecar(tmp_path / "x", "0" * 64))
    student, why, _ = _reduced(other)
    assert student is None and "not the released one" in why
    no_sidecar = tmp_path / "bare.onnx"
    no_sidecar.write_bytes(b"")
    assert not is_released_student(BackendConfig(name="onnxruntime", onnx_path=no_sidecar))
    # The int8 sibling of a released export is judged by the fp32 model's sidecar.
    int8 = released.onnx_path.with_name("m_int8.onnx")
    int8.write_bytes(b"")
    assert is_released_student(BackendConfig(name="onnxruntime", onnx_path=int8))


def test_torch_backend_runs_the_npz_in_place_of_the_checkpoint(checkpoint_path: Path):
    """The torch backend's scale-adapted student is the npz (the fast-student layout), not the checkpoint."""
    student, _, created = _reduced(BackendConfig(name="torch", weights_path=checkpoint_path))
    assert student is not None
    student.backend  # noqa: B018 - first use starts it
    assert created[0].weights_path == shipped_weights() and created[0].name == "torch"


def _backend(path: Path):
    return create_backend(BackendConfig(name="onnxruntime", onnx_path=path, threads=2, precision="fp32"))


@pytest.fixture(scope="module")
def backends(checkpoint_path: Path, tmp_path_factory):
    from sage_ros.model.model_files import export_checkpoint

    tmp = tmp_path_factory.mktemp("scale")
    released = _backend(export_checkpoint(checkpoint_path, tmp / "released.onnx"))
    scaled = _backend(ensure_scale_onnx(onnx_path=tmp / "scale.onnx"))
    yield released, scaled
    released.close()
    scaled.close()


def test_pipeline_runs_it_only_below_the_rgb_size(backends):
    released, scaled = backends
    rng = np.random.default_rng(1)
    vis = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    ir = rng.integers(0, 256, (120, 160), dtype=np.uint8)
    plain = FusionPipeline(released, "thermal")
    adapted = FusionPipeline(released, "thermal", reduced=Student(scaled, "scale-adapted", 1.0))
    # Same size: the released student, bit for bit.
    assert np.array_equal(adapted.fuse(ir, vis).fused_rgb, plain.fuse(ir, vis).fused_rgb)
    # Below the RGB size: the adapted student, then the detail layer at its fixed gain.
    ir_small = cv2.resize(ir, (96, 72), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    got = adapted.fuse(ir_small, vis, thermal_hw=(72, 96))
    y = visible_to_ycrcb(vis).y
    y_small = resize_area(y, got.fusion_hw)
    want = upsample_with_detail(np.clip(scaled.infer(y_small, ir_small).fused_y, 0, 1), y, y_small, 1.0)
    assert got.fusion_hw == (72, 96) and np.allclose(got.fused_y, want, atol=1e-6)
    assert not np.allclose(got.fused_y, plain.fuse(ir_small, vis, thermal_hw=(72, 96)).fused_y, atol=1e-3)


def _eval_pairs(msrs: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every eval pair that `msrs`/splits.csv lists, as (ir grey, visible BGR)."""
    with open(msrs / "splits.csv") as handle:
        names = [r["name"] for r in csv.DictReader(handle) if r["split"] == "eval"]
    assert names, f"no eval pair in {msrs / 'splits.csv'}"
    return [(cv2.imread(str(msrs / "ir" / f"{n}.png"), cv2.IMREAD_GRAYSCALE), cv2.imread(str(msrs / "vi" / f"{n}.png")))
            for n in names]


def test_closer_to_full_resolution_fusion_on_eval_pairs(backends, msrs_dir: Path):
    """On MSRS eval pairs (never trained on) with a simulated 384x288 thermal camera, the adapted student's final
    image is nearer full-resolution fusion than the released student's, and its MI is nearer too."""
    from sage_ros.evaluation.metrics import mutual_information
    from sage_ros.image.imaging import unit_to_uint8

    released, scaled = backends
    full = FusionPipeline(released, "rgb")
    plain = FusionPipeline(released, "thermal")
    adapted = FusionPipeline(released, "thermal", reduced=Student(scaled, "scale-adapted", 1.0))
    err = {"plain": [], "adapted": []}
    mi = {"full": [], "plain": [], "adapted": []}
    for ir8, vis in _eval_pairs(msrs_dir):
        ir_cam = cv2.resize(ir8, (384, 288), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
        ir_reg = cv2.resize(ir_cam, (640, 480), interpolation=cv2.INTER_LINEAR)
        ref = full.fuse(ir_reg, vis).fused_y
        ir_u8, vis_u8 = unit_to_uint8(ir_reg), unit_to_uint8(visible_to_ycrcb(vis).y)
        mi["full"].append(mutual_information(ir_u8, vis_u8, unit_to_uint8(ref)))
        for key, pipe in (("plain", plain), ("adapted", adapted)):
            out = pipe.fuse(ir_cam, vis, thermal_hw=(288, 384)).fused_y
            err[key].append(float(np.mean((out - ref) ** 2)))
            mi[key].append(mutual_information(ir_u8, vis_u8, unit_to_uint8(out)))
    assert np.mean(err["adapted"]) < 0.8 * np.mean(err["plain"]), err
    gap = {k: abs(np.mean(mi[k]) - np.mean(mi["full"])) for k in ("plain", "adapted")}
    assert gap["adapted"] < 0.5 * gap["plain"], (gap, mi)


def test_training_round_trip(checkpoint_path: Path, msrs_dir: Path, tmp_path: Path):
    """Two steps on two train frames: weights + sidecar that the runtime reads and builds a graph from."""
    pytest.importorskip("torch")
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "sage_ros", "train", "scale", "--out", str(out), "--teacher", str(checkpoint_path),
         "--data", str(msrs_dir), "--limit", "2", "--steps", "2", "--scales", "1.5,2", "--threads", "1",
         "--ship", str(tmp_path / "ship")],
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    weights = tmp_path / "ship" / "scale_student.npz"
    meta = json.loads(weights.with_suffix(".json").read_text())
    assert meta["train_frames"] == 2 and meta["recipe"]["scales"] == [1.5, 2.0] and meta["recipe"]["steps"] == 2
    assert 0.0 < meta["detail_gain_reference"] < 2.0
    read_state(weights)
    assert ensure_scale_onnx(weights, tmp_path / "g.onnx").is_file()
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert len(rows) == 2 and all(np.isfinite(float(r["loss_grey"])) for r in rows)
    bad = subprocess.run(
        [sys.executable, "-m", "sage_ros", "train", "scale", "--out", str(out), "--teacher", str(checkpoint_path),
         "--data", str(msrs_dir), "--scales", "1.0"], capture_output=True, text=True, timeout=120, env=env,
    )
    assert bad.returncode != 0 and "must be > 1" in bad.stderr


def test_detail_gain_follows_the_frame_against_the_training_reference():
    """Fixed gain 1 scaled by min(1, measured / reference): less fine detail where the model passes less of it
    than on its training frames, never more than it was trained with."""
    from sage_ros.pipeline import detail_gain

    rng = np.random.default_rng(2)
    y_small = cv2.GaussianBlur(rng.random((60, 80), dtype=np.float32), (0, 0), 0.7)
    fused = 0.2 + 0.6 * y_small  # passes 0.6 of the visible's finest band
    measured = detail_gain(fused, y_small)
    assert abs(measured - 0.6) < 0.01
    model = Student(_never, "adapted", detail_gain=1.0, detail_reference=0.8)
    assert abs(model.gain_for(fused, y_small) - measured / 0.8) < 1e-6
    assert Student(_never, "adapted", 1.0, detail_reference=0.5).gain_for(fused, y_small) == 1.0  # capped
    assert Student(_never, "adapted", 1.0).gain_for(fused, y_small) == 1.0  # no reference: fixed
    assert Student(_never, "released").gain_for(fused, y_small) == measured  # no fixed gain: measured per frame
    assert not model.started  # the gain needs no backend


def _never() -> FusionBackend:
    raise AssertionError("the gain must not start the backend")
