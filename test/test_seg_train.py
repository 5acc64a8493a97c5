"""Training the head: real shared MSRS pairs (fused by the frozen student) and synthetic pixel labels."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402

from sage_ros.model.seg_head import SegHead  # noqa: E402
from sage_ros.training.segmentation.boxes import IGNORE  # noqa: E402
from sage_ros.training.segmentation.data import load_msrs_boxes  # noqa: E402
from sage_ros.training.segmentation.train import (  # noqa: E402
    HeadTrainConfig,
    calibrate_background,
    class_weights,
    make_batch,
    predict,
    train_head,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CHECKPOINT = SHARED / "sage_official" / "checkpoints.pt"
MSRS = SHARED / "datasets" / "msrs"
NAMES = ["00004N", "00016N", "00091D"]  # train pairs, night and day


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    if not CHECKPOINT.is_file() or not (MSRS / "splits.csv").is_file():
        pytest.skip(f"shared data absent ({CHECKPOINT} or {MSRS}): cannot train on real pairs")
    cache = tmp_path_factory.mktemp("fused_cache")
    loaded = load_msrs_boxes(MSRS, "train", CHECKPOINT, "infrared", "thermal", cache, NAMES, threads=2)
    if len(loaded) < len(NAMES):
        pytest.skip(f"fewer than 3 of {NAMES} found in the train split of {MSRS}")
    return loaded


def test_samples_hold_three_inputs_a_mask_and_boxes(samples):
    s = samples[0]
    assert set(s.inputs) == {"fused", "visible", "infrared"}
    for image in s.inputs.values():
        assert image.shape == (480, 640) and image.dtype == np.float32
        assert 0.0 <= image.min() and image.max() <= 1.0
    assert s.light in ("day", "night")
    assert set(np.unique(s.mask)) <= {0, 1, 2, 3, IGNORE} and (s.mask == 2).any()
    assert set(s.boxes) == {"infrared", "visible", "fusion"}
    assert not np.array_equal(s.inputs["fused"], s.inputs["visible"])


def test_fused_outputs_are_cached(samples, tmp_path):
    again = load_msrs_boxes(MSRS, "train", CHECKPOINT, names=NAMES[:1], cache_root=tmp_path, threads=2)
    assert np.array_equal(again[0].inputs["fused"], samples[0].inputs["fused"])
    cached = list(tmp_path.rglob("*.npz"))
    assert [p.stem for p in cached] == NAMES[:1]


def test_batches_are_crops_with_objects(samples):
    config = HeadTrainConfig(batch=4, crop_hw=(96, 128), object_crop_prob=1.0)
    images, targets = make_batch(samples, config, np.random.default_rng(0))
    assert images.shape == (4, 1, 96, 128) and targets.shape == (4, 96, 128)
    labelled = (targets > 0) & (targets != IGNORE)
    assert all(labelled[i].any() for i in range(4))
    weights = class_weights(samples, 4)
    assert weights[0] == 1.0 and (weights[1:] > 1.0).all()


def test_a_short_training_run_lowers_the_loss(samples):
    config = HeadTrainConfig(steps=40, batch=4, crop_hw=(96, 128), lr=5e-3, threads=2, log_every=0)
    # One fixed batch, scored before and after: per-step training losses are too noisy to compare.
    images, targets = make_batch(samples, HeadTrainConfig(batch=8, crop_hw=(96, 128), seed=7),
                                 np.random.default_rng(7))
    weights = torch.from_numpy(class_weights(samples, 4))
    torch.manual_seed(config.seed)
    head = SegHead().eval()

    def fixed_loss() -> float:
        # Batch statistics (train-mode BN) on a copy: after 40 steps the running averages still
        # carry their initial values, so eval mode would measure them rather than the learning.
        probe = copy.deepcopy(head).train()
        with torch.no_grad():
            return float(F.cross_entropy(probe(images), targets, weight=weights, ignore_index=IGNORE))

    before = fixed_loss()
    head, losses = train_head(samples, config, head=head)
    after = fixed_loss()
    assert len(losses) == 40 and all(np.isfinite(losses))
    assert after < 0.9 * before, f"fixed-batch loss {before:.3f} -> {after:.3f}"
    ids, probs = predict(head, samples[0].inputs["fused"][:120, :160])
    assert ids.shape == (120, 160) and probs.shape == (4, 120, 160)
    assert np.allclose(probs.sum(0), 1.0, atol=1e-5)


def test_cli_trains_from_pixel_labels_in_the_msrs_layout(tmp_path):
    if not CHECKPOINT.is_file():
        pytest.skip(f"student checkpoint absent ({CHECKPOINT})")
    from sage_ros.cli import main

    rng = np.random.default_rng(1)
    root = tmp_path / "msrs_full" / "train"
    for folder in ("ir", "vi", "Segmentation_labels"):
        (root / folder).mkdir(parents=True)
    for i in range(3):
        label = np.zeros((64, 96), np.uint8)
        label[10:30, 20 + 10 * i: 40 + 10 * i] = 2  # a warm "person"
        label[40:60, 50:90] = 1  # a "car"
        label[0:4, 0:4] = 7  # a colour cone, beyond a 4-class head -> ignored if asked for 4
        ir = (40 + 150 * (label > 0) + rng.integers(0, 20, label.shape)).astype(np.uint8)
        vis = np.dstack([ir // 2, ir // 3, ir // 2]).astype(np.uint8)
        cv2.imwrite(str(root / "ir" / f"p{i}.png"), ir)
        cv2.imwrite(str(root / "vi" / f"p{i}.png"), vis)
        cv2.imwrite(str(root / "Segmentation_labels" / f"p{i}.png"), label)
    out = tmp_path / "net.npz"
    code = main([
        "seg", "train", "--labels", "msrs", str(tmp_path / "msrs_full"), "--checkpoint", str(CHECKPOINT),
        "--cache-dir", str(tmp_path / "cache"), "--steps", "3", "--batch", "2", "--widths", "8", "8", "8", "8",
        "--classes", "msrs", "--out", str(out),
    ])
    assert code == 0
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["num_classes"] == 9 and meta["classes"][7]["name"] == "color_cone"
    assert meta["input_kinds"] == ["fused", "infrared"] and meta["targets"].startswith("pixel labels")
    from sage_ros.model.seg_net import load_net

    assert load_net(out).num_classes == 9 and out.with_suffix(".onnx").is_file()


def test_cli_reports_a_missing_checkpoint(tmp_path, caplog):
    from sage_ros.cli import main

    code = main(["seg", "train", "--checkpoint", str(tmp_path / "none.pt"), "--out", str(tmp_path / "h.npz")])
    assert code == 1 and "not found" in caplog.text


def test_box_pseudo_masks_score_perfect_ap_against_their_own_separate_boxes():
    from sage_ros.training.segmentation.boxes import Box, pseudo_mask
    from sage_ros.training.segmentation.data import SegSample
    from sage_ros.training.segmentation.experiment import score_pseudo_masks

    boxes = [Box(1, 5, 5, 40, 30), Box(2, 50, 10, 60, 40), Box(3, 70, 20, 90, 35)]
    mask = pseudo_mask(boxes, (48, 96), mode="box")
    image = np.zeros((48, 96), np.float32)
    sample = SegSample("x", "day", {"fused": image}, mask, {"fusion": boxes, "infrared": boxes[:1]})
    scores = score_pseudo_masks([sample], ("fusion", "infrared"))["all"]
    assert scores["fusion"].mean_ap50 == 1.0
    assert scores["infrared"].ap50[1] == 1.0 and np.isnan(scores["infrared"].ap50[2])


def test_background_calibration_picks_a_bias_from_the_grid_and_applies_it(samples):
    torch.manual_seed(0)
    head = SegHead().eval()
    before = float(head.classifier.bias[0].detach())
    small = [
        type(s)(s.name, s.light, {"fused": s.inputs["fused"][:240, :320]}, s.mask[:240, :320], {})
        for s in samples
    ]
    result = calibrate_background(head, small, "fused", None, grid=(0.0, 1.0, 2.0))
    assert result["background_bias"] in (0.0, 1.0, 2.0)
    assert set(result["calibration_scores"]) == {"0.0", "1.0", "2.0"}
    assert float(head.classifier.bias[0].detach()) == pytest.approx(before + result["background_bias"])
