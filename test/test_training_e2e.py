"""End-to-end training on the CPU: tiny random SAM, three real pairs cropped small, a few bi-level steps,
resume from the checkpoint, export, and fusion through the runtime backends.

Masks come from SAM's automatic mask generator run on the tiny random SAM (no semantics, but the real
cache path); labels are integer ids made from the real IR image (hot pixels = class 2, 'person').
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from sage_ros.backends import BackendConfig, create_backend
from sage_ros.cli import main as cli_main
from sage_ros.model.classes import load_class_table
from sage_ros.pipeline import FusionPipeline
from sage_ros.training.config import ConfigError, config_from_dict, load_config
from sage_ros.training.datasets import records_for
from sage_ros.training.mask_cache import load_masks, mask_path
from sage_ros.training.sam import build_mask_cache, save_tiny_sam
from sage_ros.training.trainer import CSV_NAME, Trainer

CROP = (64, 96)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, official_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("train_e2e")
    pairs = root / "pairs"
    for sub in ("Ir", "Vis", "Label"):
        (pairs / sub).mkdir(parents=True)
    for i in range(3):
        ir = cv2.imread(str(official_dir / "Ir" / f"{i:05d}.png"), cv2.IMREAD_GRAYSCALE)
        vis = cv2.imread(str(official_dir / "Vis" / f"{i:05d}.png"), cv2.IMREAD_COLOR)
        # A central crop keeps native detail (no resampling) at a size a CPU test can afford.
        top, left = (ir.shape[0] - CROP[0]) // 2, (ir.shape[1] - CROP[1]) // 2
        ir = ir[top : top + CROP[0], left : left + CROP[1]]
        vis = vis[top : top + CROP[0], left : left + CROP[1]]
        cv2.imwrite(str(pairs / "Ir" / f"{i:05d}.png"), ir)
        cv2.imwrite(str(pairs / "Vis" / f"{i:05d}.png"), vis)
        label = np.where(ir > np.percentile(ir, 75), 2, 0).astype(np.uint8)
        cv2.imwrite(str(pairs / "Label" / f"{i:05d}.png"), label)
    sam_path = save_tiny_sam(root / "tiny_sam.pt", img_size=64)
    report = build_mask_cache(
        records_for("sage", pairs),
        sam_path,
        root / "masks",
        top_k=4,
        progress=False,
        generator_kwargs={"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0},
    )
    assert report.written == 6
    return root


def _config(root: Path, steps: int) -> dict:
    return {
        "data": {
            "layout": "sage",
            "root": str(root / "pairs"),
            "crop": [32, 48],
            "workers": 0,
            "mask_cache": str(root / "masks"),
            "top_k": 4,
        },
        "sam": {"checkpoint": str(root / "tiny_sam.pt")},
        "train": {
            "max_steps": steps,
            "batch_size": 2,
            "device": "cpu",
            "threads": 1,
            "log_every": 1,
            "checkpoint_every": 1,
            "seed": 1,
        },
        "output": {"dir": str(root / "run"), "classes": "msrs"},
    }


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> int:
    after = module.state_dict()
    return sum(not torch.equal(before[k], after[k]) for k in before if before[k].is_floating_point())


@pytest.fixture(scope="module")
def first_run(workspace: Path):
    # 4 alternating steps: two updates per network (the first teacher update cannot move the
    # transformer blocks: their zero-initialised out-projections pass no gradient back yet).
    trainer = Trainer(config_from_dict(_config(workspace, steps=4)))
    before = (_snapshot(trainer.teacher), _snapshot(trainer.student))
    result = trainer.fit(export=False)
    return trainer, before, result


def test_masks_in_cache_come_from_the_generator(workspace: Path) -> None:
    masks = load_masks(mask_path(workspace / "masks", "vis", "00000"))
    assert masks.shape[1:] == CROP and 1 <= len(masks) <= 4


def test_few_steps_finite_losses_and_both_networks_learn(first_run) -> None:
    trainer, (teacher_before, student_before), result = first_run
    assert result.steps == 4 and len(result.history) == 4
    # Upstream's alternation: the student's turn first (even batch), then the teacher's.
    assert [row["update"] for row in result.history] == ["student", "teacher"] * 2
    student_row, teacher_row = result.history[2:]
    for key in ("student_loss", "s_cs", "s_fea"):
        assert np.isfinite(student_row[key]), (key, student_row)
    for key in ("teacher_loss", "t_seg", "t_feedback", "t_fea"):
        assert np.isfinite(teacher_row[key]), (key, teacher_row)
    assert "teacher_loss" not in student_row and "student_loss" not in teacher_row
    assert student_row["s_cs"] > 0 and teacher_row["t_seg"] > 0  # the SAM and segmentation terms really ran
    assert trainer.segmenter is not None and trainer.phi is not None
    assert _changed(teacher_before, trainer.teacher) > 0.9 * len(
        [v for v in teacher_before.values() if v.is_floating_point()]
    )
    assert _changed(student_before, trainer.student) > 0
    # Frozen parts stay frozen.
    assert not any(p.requires_grad for p in trainer.segmenter.parameters())
    assert not any(p.requires_grad for p in trainer.phi.parameters())


def test_resume_continues_from_the_checkpoint_and_exports(first_run, workspace: Path) -> None:
    trainer, _, result = first_run
    saved = torch.load(result.checkpoint, weights_only=True)
    assert saved["step"] == 4 and saved["config_hash"] == trainer.cfg.hash()
    resumed = Trainer(config_from_dict(_config(workspace, steps=5)))
    resumed.load_checkpoint(result.checkpoint)
    for key, value in trainer.student.state_dict().items():
        torch.testing.assert_close(resumed.student.state_dict()[key], value)
    # Four steps, alternating: two Adam updates each.
    assert resumed.opt_s.state_dict()["state"][0]["step"].item() == 2
    assert resumed.opt_t.state_dict()["state"][0]["step"].item() == 2
    resumed.step = 0  # fit(resume=...) must restore it from the file again
    out = resumed.fit(resume="auto", export=True)
    assert out.steps == 5 and len(out.history) == 1 and out.history[0]["update"] == "student"
    rows = (workspace / "run" / CSV_NAME).read_text().strip().splitlines()
    assert len(rows) == 1 + 5 and rows[-1].startswith("5,")

    # The exported model is what the node loads: ONNX + sidecar, runnable by the runtime backends.
    meta = json.loads(out.onnx.with_suffix(".json").read_text())
    assert meta["training"]["config_hash"] == resumed.cfg.hash() and meta["training"]["steps"] == 5
    assert meta["training"]["segmenter"]["factory"] == "project"
    assert meta["input_normalisation"]["vis_y"] and meta["inputs"] == ["vis_y", "ir"]
    assert load_class_table(out.onnx).names[2] == "person"
    ir = cv2.imread(str(workspace / "pairs" / "Ir" / "00001.png"), cv2.IMREAD_GRAYSCALE)
    vis = cv2.imread(str(workspace / "pairs" / "Vis" / "00001.png"), cv2.IMREAD_COLOR)
    student = resumed.student.eval()
    from sage_ros.image.imaging import infrared_to_grey, visible_to_ycrcb

    with torch.no_grad():
        y = torch.from_numpy(visible_to_ycrcb(vis).y)[None, None]
        expected = student(y, torch.from_numpy(infrared_to_grey(ir))[None, None])[0][0, 0].numpy()
    for name in ("onnxruntime", "openvino"):
        backend = create_backend(BackendConfig(name=name, onnx_path=out.onnx, threads=1))
        try:
            fused = FusionPipeline(backend).fuse(ir, vis)
        finally:
            backend.close()
        assert fused.fused_rgb.shape == (*CROP, 3) and fused.fused_rgb.dtype == np.uint8
        np.testing.assert_allclose(fused.fused_y, np.clip(expected, 0, 1), atol=1e-4, err_msg=name)


def test_cli_errors_are_one_clear_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli_main(
        [
            "train",
            "student",
            "fit",
            "--set",
            f"data.root={tmp_path}",
            "--set",
            "data.layout=fmb",
            "--device",
            "cpu",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert rc == 2 and "no infrared/visible folder pair found" in capsys.readouterr().err
    rc = cli_main(["train", "student", "fit", "--set", "train.learning_rate=1"])
    assert rc == 2 and "unknown keys ['learning_rate']" in capsys.readouterr().err
    rc = cli_main(["train", "student", "masks", "--config", str(tmp_path / "absent.yaml")])
    assert rc == 2 and "does not exist" in capsys.readouterr().err


def test_config_yaml_numbers_and_hash(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  teacher_lr: 5e-4\n  batch_size: 4\noutput:\n  dir: a\n")
    cfg = load_config(path)
    assert cfg.train.teacher_lr == pytest.approx(5e-4) and isinstance(cfg.train.teacher_lr, float)
    other = load_config(path, ["output.dir=b", "train.device=cpu"])
    assert other.hash() == cfg.hash()  # where outputs go does not change the result
    assert load_config(path, ["train.student_lr=1e-3"]).hash() != cfg.hash()
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(path, ["max_steps=3"])
    for shipped in sorted((Path(__file__).resolve().parents[1] / "config").glob("train_*.yaml")):
        load_config(shipped)  # every shipped config parses against the schema


def test_cli_export_of_a_training_checkpoint(first_run, tmp_path: Path) -> None:
    _, _, result = first_run
    out = tmp_path / "cli" / "student.onnx"
    assert cli_main(["train", "student", "export", str(result.checkpoint), "--out", str(out)]) == 0
    meta = json.loads(out.with_suffix(".json").read_text())
    saved = torch.load(result.checkpoint, weights_only=True)  # the latest run's config (resume may follow)
    assert meta["training"]["config_hash"] == saved["config_hash"]
    assert meta["training"]["steps"] == saved["step"]
    assert [c["name"] for c in meta["classes"]][:3] == ["unlabelled", "car", "person"]
    backend = create_backend(BackendConfig(name="onnxruntime", onnx_path=out, threads=1))
    try:
        y = np.random.default_rng(0).random((16, 24), dtype=np.float32)
        fused = backend.infer(y, y).fused_y
    finally:
        backend.close()
    assert fused.shape == (16, 24) and np.isfinite(fused).all()


SMOKE_STEPS = 60


def _smoke_config(root: Path, out: str, steps: int) -> dict:
    cfg = _config(root, steps)
    cfg["output"]["dir"] = str(root / out)
    cfg["output"]["export"] = False
    cfg["train"].update(checkpoint_every=0, log_every=20)
    return cfg


def test_cpu_smoke_run_losses_finite_and_falling_and_resume_bit_exact(workspace: Path) -> None:
    """60 alternating steps on real pairs (tiny SAM, project segmenter): every loss finite, both
    networks' losses lower at the end than at the start. A run stopped half-way and resumed ends
    bit-identical to the uninterrupted one (networks and optimiser states)."""
    full = Trainer(config_from_dict(_smoke_config(workspace, "smoke_full", SMOKE_STEPS)))
    result = full.fit(export=False)
    assert result.steps == SMOKE_STEPS
    for key, update in (("student_loss", "student"), ("teacher_loss", "teacher")):
        values = [row[key] for row in result.history if row["update"] == update]
        assert len(values) == SMOKE_STEPS // 2 and np.isfinite(values).all(), key
        # Falling: the mean of this network's last 10 steps below the mean of its first 10.
        assert np.mean(values[-10:]) < np.mean(values[:10]), (key, values)

    # Bit-exact resume, on a shorter run of the same kind (CPU time): 8 steps vs 4 + resume 4.
    straight = Trainer(config_from_dict(_smoke_config(workspace, "resume_straight", 8)))
    straight.fit(export=False)
    first = Trainer(config_from_dict(_smoke_config(workspace, "resume_split", 8)))
    assert first.fit(export=False, stop_at=4).steps == 4
    second = Trainer(config_from_dict(_smoke_config(workspace, "resume_split", 8)))
    assert second.fit(resume="auto", export=False).steps == 8
    for name in ("student", "teacher"):
        want, got = getattr(straight, name).state_dict(), getattr(second, name).state_dict()
        for key, value in want.items():
            assert torch.equal(got[key], value), (name, key)
    for opt in ("opt_s", "opt_t"):
        want, got = getattr(straight, opt).state_dict(), getattr(second, opt).state_dict()
        for index, state in want["state"].items():
            for key, value in state.items():
                assert torch.equal(got["state"][index][key], value), (opt, index, key)
