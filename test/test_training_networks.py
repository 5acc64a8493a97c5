"""Teacher, SPA and transformer shapes, and the SAM loader / truncated encoder on a tiny random SAM."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sage_ros.networks.student import SageStudent
from sage_ros.training import sam
from sage_ros.training.datasets import PairRecord
from sage_ros.training.mask_cache import load_masks, mask_path
from sage_ros.training.spa import SPABlock
from sage_ros.training.teacher import SageTeacher
from sage_ros.training.transformer import SpatialTransformer


@pytest.fixture(scope="module")
def tiny_sam(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sam.save_tiny_sam(tmp_path_factory.mktemp("sam") / "tiny_sam.pt", img_size=64)


def test_spatial_transformer_starts_as_identity_and_uses_context() -> None:
    torch.manual_seed(0)
    unit = SpatialTransformer(64, context_dim=64)
    x = torch.randn(2, 64, 5, 7)
    torch.testing.assert_close(unit(x), x)
    torch.nn.init.normal_(unit.proj_out.weight, std=0.1)
    a = unit(x, torch.randn(2, 9, 64))
    b = unit(x, torch.randn(2, 9, 64))
    assert not torch.allclose(a, b)


def test_spa_output_shape() -> None:
    block = SPABlock(64)
    x = torch.randn(1, 64, 13, 18)
    out, vis, ir = block(x, x, x)
    assert out.shape == (1, 256, 13, 18) and vis.shape == ir.shape == (1, 64, 13, 18)


def test_teacher_taps_pair_with_student_taps_at_odd_sizes() -> None:
    torch.manual_seed(0)
    teacher, student = SageTeacher(), SageStudent()
    n_params = sum(p.numel() for p in teacher.parameters())
    assert 2.0e6 < n_params < 3.2e6  # "about 2.8 M"
    y, ir = torch.rand(1, 1, 37, 50), torch.rand(1, 1, 37, 50)
    masks = torch.ones(1, 4, 37, 50)
    fused, t_taps = teacher(y, ir, masks, masks)
    _, s_taps = student(y, ir)
    assert fused.shape == (1, 1, 37, 50) and torch.isfinite(fused).all()
    assert [t.shape for t in t_taps] == [s.shape for s in s_taps]


def test_tiny_sam_encoder_loads_every_key(tiny_sam: Path) -> None:
    encoder, cfg = sam.load_image_encoder(tiny_sam)
    assert (cfg.embed_dim, cfg.depth, cfg.patch_size, cfg.img_size) == (32, 3, 8, 64)
    assert cfg.global_attn_indexes == (2,) and cfg.window_size == 4 and cfg.num_heads == 2
    assert cfg.variant.startswith("custom")  # not one of the official sizes, and accepted as it is
    raw = torch.load(tiny_sam, weights_only=True)
    loaded = encoder.state_dict()
    assert len(loaded) == sum(k.startswith("image_encoder.") for k in raw)
    torch.testing.assert_close(
        loaded["blocks.0.attn.qkv.weight"], raw["image_encoder.blocks.0.attn.qkv.weight"]
    )


def test_sam_checkpoint_errors(tiny_sam: Path, tmp_path: Path) -> None:
    with pytest.raises(sam.SamCheckpointError, match="sam_vit_b_01ec64.pth"):
        sam.load_image_encoder(tmp_path / "absent.pth")
    raw = torch.load(tiny_sam, weights_only=True)
    short = {k: v for k, v in raw.items() if k != "image_encoder.blocks.1.norm1.weight"}
    torch.save(short, tmp_path / "short.pt")
    with pytest.raises(sam.SamCheckpointError, match="loaded .* of"):
        sam.load_image_encoder(tmp_path / "short.pt")
    torch.save({"foo.weight": torch.zeros(1)}, tmp_path / "foreign.pt")
    with pytest.raises(sam.SamCheckpointError, match="no SAM image-encoder keys"):
        sam.load_image_encoder(tmp_path / "foreign.pt")
    # A bare encoder state dict (no prefix) is accepted as well.
    bare = {k[len("image_encoder.") :]: v for k, v in raw.items() if k.startswith("image_encoder.")}
    torch.save(bare, tmp_path / "bare.pt")
    assert sam.load_image_encoder(tmp_path / "bare.pt")[1].depth == 3


def test_truncated_encoder_is_frozen_and_passes_gradients(tiny_sam: Path) -> None:
    phi = sam.load_phi(tiny_sam)
    phi.train()
    assert not phi.training and not any(p.requires_grad for p in phi.parameters())
    assert len(phi.blocks) == 2
    x = torch.rand(3, 1, 48, 72, requires_grad=True)
    outs = phi(x)
    assert [tuple(o.shape) for o in outs] == [(3, 32, 6, 9)] * 2
    # InstanceNorm: every channel of every sample has zero mean.
    assert outs[1].mean(dim=(2, 3)).abs().max() < 1e-4
    sum(o.pow(2).sum() for o in outs).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_mask_cache_with_tiny_sam_is_resumable(tiny_sam: Path, tmp_path: Path) -> None:
    import cv2

    rng = np.random.default_rng(0)
    records = []
    for i in range(2):
        ir_path, vis_path = tmp_path / f"ir{i}.png", tmp_path / f"vis{i}.png"
        cv2.imwrite(str(ir_path), rng.integers(0, 256, (40, 56), dtype=np.uint8))
        cv2.imwrite(str(vis_path), rng.integers(0, 256, (40, 56, 3), dtype=np.uint8))
        records.append(PairRecord(f"p{i}", ir_path, vis_path))
    kwargs = {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
    root = tmp_path / "cache"
    report = sam.build_mask_cache(records, tiny_sam, root, top_k=4, generator_kwargs=kwargs, progress=False)
    assert report.written == 4 and report.skipped == 0
    for record in records:
        for modality in ("ir", "vis"):
            masks = load_masks(mask_path(root, modality, record.name))
            assert masks.dtype == bool and masks.shape[1:] == (40, 56) and len(masks) <= 4
            areas = masks.reshape(len(masks), -1).sum(1)
            assert list(areas) == sorted(areas, reverse=True)
    mask_path(root, "vis", "p1").unlink()
    again = sam.build_mask_cache(records, tiny_sam, root, top_k=4, generator_kwargs=kwargs, progress=False)
    assert again.written == 1 and again.skipped == 3
