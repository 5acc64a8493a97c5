"""Regression tests for issue 13: the teacher's loss arithmetic, the frozen task segmenter, the
mask-cache guard, and the learning-rate schedule across a resume that extends `--steps`.

Real pairs (three SAGE sample pairs, centre-cropped small), a tiny random SAM for L_cs, CPU, one thread.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from sage_ros.training import losses
from sage_ros.training.config import config_from_dict
from sage_ros.training.sam import save_tiny_sam
from sage_ros.training.segmenter import ProjectSegmenter
from sage_ros.training.trainer import Trainer, TrainingError

CROP = (64, 96)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, official_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("train_fixes")
    for sub in ("Ir", "Vis", "Label"):
        (root / "pairs" / sub).mkdir(parents=True)
    for i in range(3):
        ir = cv2.imread(str(official_dir / "Ir" / f"{i:05d}.png"), cv2.IMREAD_GRAYSCALE)
        vis = cv2.imread(str(official_dir / "Vis" / f"{i:05d}.png"), cv2.IMREAD_COLOR)
        top, left = (ir.shape[0] - CROP[0]) // 2, (ir.shape[1] - CROP[1]) // 2
        ir, vis = ir[top : top + CROP[0], left : left + CROP[1]], vis[top : top + CROP[0], left : left + CROP[1]]
        cv2.imwrite(str(root / "pairs" / "Ir" / f"{i:05d}.png"), ir)
        cv2.imwrite(str(root / "pairs" / "Vis" / f"{i:05d}.png"), vis)
        # Integer ids from the real IR image: hot pixels are class 2 ('person' in MSRS).
        cv2.imwrite(str(root / "pairs" / "Label" / f"{i:05d}.png"), np.where(ir > np.percentile(ir, 75), 2, 0))
    save_tiny_sam(root / "tiny_sam.pt", img_size=64)
    return root


def _config(root: Path, out: str, steps: int, **sections: dict) -> dict:
    cfg = {
        "data": {"layout": "sage", "root": str(root / "pairs"), "crop": [32, 48], "workers": 0, "labels": False},
        "sam": {"checkpoint": str(root / "tiny_sam.pt")},
        "train": {
            "max_steps": steps,
            "batch_size": 2,
            "device": "cpu",
            "threads": 1,
            "log_every": 100,
            "checkpoint_every": 0,
            "seed": 3,
        },
        "output": {"dir": str(root / out), "classes": "msrs", "export": False},
    }
    for section, values in sections.items():
        cfg.setdefault(section, {}).update(values)
    return cfg


def _first_batch(trainer: Trainer) -> dict:
    return next(iter(trainer._batches(0, 0)))


# ---------------------------------------------------------------------------------- bug 1: L_fea
def test_teacher_loss_equals_the_hand_sum_with_l_fea_counted_once(workspace: Path) -> None:
    """Teacher = MSE(T,y) + MSE(T,ir) + 2 G(T;y,ir) + 0.1 [3 L_MSE + 3 L_grad + L_cs/3000](T, S)
    + 0.01 L_fea(T, S) (upstream train.py: the feedback term holds no L_fea; its only weight is 0.01)."""
    trainer = Trainer(config_from_dict(_config(workspace, "run_sum", steps=2)))
    batch = _first_batch(trainer)
    y, ir, vis_m, ir_m = batch["y"], batch["ir"], batch["vis_masks"], batch["ir_masks"]
    trainer.teacher.train()
    trainer.student.train()
    with torch.no_grad():
        fused_t, taps_t = trainer.teacher(y, ir, vis_m, ir_m)
        fused_s, taps_s = trainer.student(y, ir)
        task = (
            torch.nn.functional.mse_loss(fused_t, y)
            + torch.nn.functional.mse_loss(fused_t, ir)
            + 2.0 * losses.gradient_term(fused_t, y, ir)
        )
        l_cs = losses.contrastive_semantic_loss(trainer.phi, fused_t, fused_s, y, ir, vis_m, ir_m)
        feedback = (
            3.0 * losses.intensity_loss(fused_t, fused_s, y, ir)
            + 3.0 * losses.gradient_loss(fused_t, fused_s, y, ir)
            + l_cs / 3000.0
        )
        l_fea = losses.feature_loss(taps_t, taps_s)
        expected = task + 0.1 * feedback + 0.01 * l_fea
    assert l_fea.item() > 1.0  # random networks: a double count would be visible (0.03 x > 0.03)
    trainer.step = 1  # odd batch: the teacher's turn under alternation (upstream: odd = teacher)
    metrics = trainer.train_step(batch)
    assert metrics is not None
    assert metrics["teacher_loss"] == pytest.approx(expected.item(), rel=1e-5, abs=1e-7)


# -------------------------------------------------------------------- the task segmenter
def test_project_segmenter_is_frozen_maps_labels_by_name_and_trains_the_teacher(workspace: Path) -> None:
    cfg = _config(workspace, "run_seg_project", steps=2, data={"labels": True}, segmenter={"factory": "project"})
    trainer = Trainer(config_from_dict(cfg))
    seg = trainer.segmenter
    assert seg is not None and isinstance(seg, ProjectSegmenter)
    assert not any(p.requires_grad for p in seg.parameters()) and not seg.training
    # MSRS ids: car 1, person 2, bike 3 keep their ids; curve..bump (4-8) are background (0) to a
    # network that knows only car/person/bike.
    names = list(seg.class_names)
    assert trainer.label_table[2].item() == names.index("person")
    assert trainer.label_table[5].item() == 0 and trainer.label_table[255].item() == 255
    result = trainer.fit(export=False)
    teacher_rows = [r for r in result.history if "teacher_loss" in r]
    assert teacher_rows and all(np.isfinite(r["t_seg"]) and r["t_seg"] > 0 for r in teacher_rows)
    # The frozen segmenter passes gradients to the teacher through its input.
    batch = _first_batch(trainer)
    fused, _ = trainer.teacher(batch["y"], batch["ir"], batch["vis_masks"], batch["ir_masks"])
    logits = trainer._segment(fused, batch["crcb"], batch["y"], batch["ir"])
    logits.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainer.teacher.parameters())
    assert all(p.grad is None for p in seg.parameters())


def test_missing_mask_cache_without_sam_is_refused(workspace: Path, tmp_path: Path) -> None:
    cfg = _config(workspace, "run_masks", steps=1, data={"mask_cache": str(tmp_path / "no_masks")})
    cfg["sam"]["checkpoint"] = None
    with pytest.raises(TrainingError, match="train student masks"):
        Trainer(config_from_dict(cfg))


def test_missing_mask_cache_is_built_automatically_with_a_sam_checkpoint(workspace: Path, tmp_path: Path) -> None:
    cache = tmp_path / "masks"
    cfg = _config(
        workspace,
        "run_masks_auto",
        steps=1,
        data={"mask_cache": str(cache)},
        # The tiny SAM's masks are random; a coarse point grid keeps this fast on a CPU.
        sam={"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "crop_n_layers": 0},
    )
    Trainer(config_from_dict(cfg))
    assert sorted(p.name for p in (cache / "ir").iterdir()) == ["00000.npz", "00001.npz", "00002.npz"]
    assert len(list((cache / "vis").iterdir())) == 3


# ------------------------------------------------------------------- bug 3: LR across a resume
def _lrs(history: list[dict]) -> dict[int, tuple[float, float]]:
    return {row["step"]: (row["lr_teacher"], row["lr_student"]) for row in history}


def test_resume_with_more_steps_continues_the_schedule_of_an_uninterrupted_run(workspace: Path) -> None:
    full = Trainer(config_from_dict(_config(workspace, "run_full", steps=8))).fit(export=False)
    short = Trainer(config_from_dict(_config(workspace, "run_ext", steps=4))).fit(export=False)
    assert short.steps == 4
    extended = Trainer(config_from_dict(_config(workspace, "run_ext", steps=8))).fit(resume="auto", export=False)
    assert extended.steps == 8 and len(extended.history) == 4
    want, got = _lrs(full.history), _lrs(extended.history)
    for step in range(5, 9):
        assert got[step] == pytest.approx(want[step], rel=1e-6), step
    # The schedule ends where the uninterrupted run ends (min_lr), never climbing back up.
    assert got[8] == pytest.approx((1e-5, 1e-5), rel=1e-6)
    lr_student = [got[s][1] for s in range(5, 9)]
    assert all(b <= a for a, b in zip(lr_student, lr_student[1:], strict=False))
    assert math.isclose(max(lr_student), want[5][1], rel_tol=1e-6)


def test_cosine_schedule_matches_torch_on_one_leg_and_stays_flat_past_the_horizon() -> None:
    from sage_ros.training.trainer import cosine_lr

    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 10, eta_min=1e-5)
    for step in range(1, 11):
        opt.step()
        sched.step()
        assert cosine_lr(step, 10, 2e-3, 1e-5) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-9)
    # torch's chained form swings back up past T_max (what a resume with more steps hit); ours does not.
    assert [cosine_lr(s, 10, 2e-3, 1e-5) for s in (10, 15, 20)] == [pytest.approx(1e-5)] * 3


def test_paired_mask_counts_and_removed_options(tmp_path: Path) -> None:
    from sage_ros.training.config import ConfigError
    from sage_ros.training.mask_cache import load_pair_masks, mask_path, save_masks
    from sage_ros.training.teacher import SageTeacher

    hw = (6, 8)
    three = np.zeros((3, *hw), dtype=bool)
    for k in range(3):
        three[k, k, :] = True
    save_masks(mask_path(tmp_path, "ir", "a"), three)
    save_masks(mask_path(tmp_path, "vis", "a"), three[:1])
    ir, vis = load_pair_masks(tmp_path, "a", 4, hw)
    # Upstream keeps min(n_ir, n_vis) masks of each: slot 0 is a SAM mask in both, the rest whole-image.
    assert ir[0].sum() == 8 and vis[0].sum() == 8 and ir[1:].all() and vis[1:].all()

    assert isinstance(SageTeacher().head[-1], torch.nn.LeakyReLU)  # upstream's output activation
    # The options kept only to reproduce runs from before issue 13 are gone: naming one is an error.
    for section, key in (("train", "update"), ("teacher", "output"), ("loss", "cs_form"), ("sam", "variant"),
                         ("data", "paired_masks"), ("output", "tensorboard")):
        with pytest.raises(ConfigError, match="unknown keys"):
            config_from_dict({section: {key: "x"}})


@pytest.mark.parametrize(
    ("variant", "embed", "depth", "global_blocks"),
    [("vit_b", 768, 12, (2, 5, 8, 11)), ("vit_l", 1024, 24, (5, 11, 17, 23)), ("vit_h", 1280, 32, (7, 15, 23, 31))],
)
def test_sam_size_is_read_off_the_checkpoint_shapes(
    variant: str, embed: int, depth: int, global_blocks: tuple[int, ...]
) -> None:
    """The official key layout with the official shapes (meta tensors: no memory) names its variant."""
    from sage_ros.training import sam

    meta = {"device": "meta"}
    state = {
        "image_encoder.patch_embed.proj.weight": torch.empty(embed, 3, 16, 16, **meta),
        "image_encoder.pos_embed": torch.empty(1, 64, 64, embed, **meta),
        "image_encoder.blocks.0.mlp.lin1.weight": torch.empty(4 * embed, embed, **meta),
        "image_encoder.neck.0.weight": torch.empty(256, embed, 1, 1, **meta),
        "prompt_encoder.no_mask_embed.weight": torch.empty(1, 256, **meta),
    }
    for i in range(depth):
        size = 2 * 64 - 1 if i in global_blocks else 2 * 14 - 1
        state[f"image_encoder.blocks.{i}.attn.rel_pos_h"] = torch.empty(size, 64, **meta)
    cfg = sam.encoder_config(sam.encoder_state(state))
    assert cfg.variant == variant and cfg.global_attn_indexes == global_blocks
    assert (cfg.img_size, cfg.patch_size, cfg.window_size, cfg.num_heads) == (1024, 16, 14, embed // 64)


def test_project_segmenter_reads_a_seg_net_file_with_infrared_input(tmp_path: Path) -> None:
    """The SegNet format (fused Y + infrared inputs) loads through segmenter.weights, frozen, with
    gradients reaching its fused input (a freshly saved network stands in for the shipped one)."""
    from sage_ros.model.classes import class_table
    from sage_ros.networks import seg_net
    from sage_ros.training.segmenter import build_segmenter, label_lookup

    torch.manual_seed(0)
    net = seg_net.SegNet(inputs=("fused", "infrared"), num_classes=4)
    path = seg_net.save_net(net, tmp_path / "seg_net_test.npz", class_table("msrs").to_json())
    seg = build_segmenter("project", 9, path)
    assert seg.inputs == ("fused_y", "ir") and list(seg.class_names) == ["unlabelled", "car", "person", "bike"]
    assert not any(p.requires_grad for p in seg.parameters()) and not seg.training
    fused = torch.rand(2, 1, 64, 96, requires_grad=True)
    logits = seg(fused, torch.rand(2, 1, 64, 96))
    assert logits.shape == (2, 4, 64, 96)
    logits.logsumexp(1).sum().backward()
    assert fused.grad is not None and fused.grad.abs().sum() > 0
    table = label_lookup(class_table("fmb").names, seg.class_names, 255)
    fmb = class_table("fmb").names
    assert table[fmb.index("person")] == 2 and table[fmb.index("bicycle")] == 3 and table[fmb.index("sky")] == 0


def test_mask_cache_path_follows_the_dataset_root() -> None:
    from sage_ros.training.config import ConfigError, load_config

    repo = Path(__file__).resolve().parents[1]
    cfg = load_config(repo / "config" / "train_msrs.yaml", ["data.root=/data/MSRS"])
    assert cfg.data.mask_cache == "/data/MSRS/sam_masks/train"
    with pytest.raises(ConfigError, match="root"):
        config_from_dict({"data": {"mask_cache": "{home}/masks"}})
