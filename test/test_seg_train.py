"""Segmentation-network training data and `sage-ros train seg`: real MSRS pairs (the fetched subset, fused by
the released student, both from the conftest fixtures) and synthetic pixel labels."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sage_ros.training.segmentation.data import LOW_HW, load_split  # noqa: E402


@pytest.fixture(scope="module")
def names(msrs_dir: Path) -> list[str]:
    """Up to three train pairs of the fetched subset, night first, with a day pair among them (from splits.csv)."""
    with (msrs_dir / "splits.csv").open(newline="") as handle:
        train = [r for r in csv.DictReader(handle) if r["split"] == "train"]
    night = [r["name"] for r in train if r["light"] == "night"]
    day = [r["name"] for r in train if r["light"] == "day"]
    assert night and day, f"{msrs_dir / 'splits.csv'} lists no night or no day train pair"
    return night[:2] + day[:1]


@pytest.fixture(scope="module")
def split(tmp_path_factory, msrs_dir: Path, checkpoint_path: Path, names: list[str]):
    cache = tmp_path_factory.mktemp("fused_cache")
    loaded = load_split(msrs_dir, "train", checkpoint_path, "infrared", cache, threads=2, names=names)
    # Every pair picked has infrared boxes in the pinned subset: none may be dropped.
    assert sorted(f.name for f in loaded.frames) == sorted(names)
    return loaded


def test_frames_hold_three_inputs_at_the_working_size_and_the_boxes(split):
    frame, boxes = split.frames[0], split.boxes[0]
    assert set(frame.inputs) == {"fused", "visible", "infrared"}
    for image in frame.inputs.values():
        assert image.shape == LOW_HW and image.dtype == np.float32
        assert 0.0 <= image.min() and image.max() <= 1.0
    assert frame.light in ("day", "night") and frame.source == "msrs" and frame.label is None
    assert not np.array_equal(frame.inputs["fused"], frame.inputs["visible"])
    # The normalised boxes are the full-resolution (640x480) boxes scored against, same classes.
    assert boxes and len(frame.boxes) == len(boxes)
    np.testing.assert_allclose(frame.boxes[:, 1:] * [640, 480, 640, 480],
                               [[b.x0, b.y0, b.x1, b.y1] for b in boxes], atol=1e-3)
    assert frame.boxes[:, 0].tolist() == [b.class_id for b in boxes]
    assert set(frame.boxes[:, 0].tolist()) <= {1.0, 2.0, 3.0}


def test_fused_outputs_are_cached(split, msrs_dir, checkpoint_path, tmp_path):
    first = split.frames[0].name
    again = load_split(msrs_dir, "train", checkpoint_path, "infrared", tmp_path, threads=2, names=[first])
    assert np.array_equal(again.frames[0].inputs["fused"], split.frames[0].inputs["fused"])
    cached = list(tmp_path.rglob("*.npz"))
    assert [p.stem for p in cached] == [first]


def test_cli_trains_from_pixel_labels_in_the_msrs_layout(tmp_path, checkpoint_path):
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
        "train", "seg", "--labels", "msrs", str(tmp_path / "msrs_full"), "--checkpoint", str(checkpoint_path),
        "--cache-dir", str(tmp_path / "cache"), "--steps", "3", "--batch", "2", "--widths", "8", "8", "8", "8",
        "--classes", "msrs", "--out", str(out),
    ])
    assert code == 0
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["num_classes"] == 9 and meta["classes"][7]["name"] == "color_cone"
    assert meta["input_kinds"] == ["fused", "infrared"] and meta["targets"].startswith("pixel labels")
    from sage_ros.networks.seg_net import load_net

    assert load_net(out).num_classes == 9 and out.with_suffix(".onnx").is_file()


def test_cli_reports_a_missing_checkpoint(tmp_path, caplog):
    from sage_ros.cli import main

    code = main(["train", "seg", "--checkpoint", str(tmp_path / "none.pt"), "--out", str(tmp_path / "h.npz")])
    assert code == 1 and "not found" in caplog.text


def test_the_input_tone_range_comes_from_the_train_split(msrs_dir):
    """`train seg` stores the tone range of its train split's pairs (visible Y and IR) in the network's sidecar:
    every level's range holds the median train frame's quantile of that level."""
    import csv

    from sage_ros.image.tone_range import ToneRange, quantiles
    from sage_ros.training.datasets import read_pair, records_for
    from sage_ros.training.segmentation.data import input_tone

    with (msrs_dir / "splits.csv").open(newline="") as handle:
        n_train = sum(row["split"] == "train" for row in csv.DictReader(handle))
    tone = input_tone(msrs_dir)
    assert f"{n_train} pairs" in tone["from"]
    ir = ToneRange.from_json(tone["ir"])
    table = np.array([quantiles(read_pair(r)["ir_u8"] / 255.0, ir.levels) for r in records_for("msrs", msrs_dir)])
    median = np.median(table, axis=0)
    assert np.all(np.array(ir.low) <= median + 1e-6) and np.all(median <= np.array(ir.high) + 1e-6)
    assert ToneRange.from_json(tone["vis_y"]).high[-1] > ToneRange.from_json(tone["vis_y"]).low[0]
