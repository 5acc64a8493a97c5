"""Dataset loaders, paired augmentation and the mask cache format (numpy only, real files)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from sage_ros.model.weights import sample_pairs
from sage_ros.training import mask_cache
from sage_ros.training.datasets import (
    IGNORE_INDEX,
    DatasetError,
    PairDataset,
    paired_crop_flip,
    read_pair,
    records_for,
)


def _write_fmb(root: Path, n: int = 3, hw: tuple[int, int] = (20, 30)) -> None:
    rng = np.random.default_rng(0)
    for sub in ("Infrared", "Visible", "Label"):
        (root / "train" / sub).mkdir(parents=True)
    for i in range(n):
        cv2.imwrite(str(root / "train/Infrared" / f"{i:03d}.png"), rng.integers(0, 256, hw, dtype=np.uint8))
        cv2.imwrite(
            str(root / "train/Visible" / f"{i:03d}.png"), rng.integers(0, 256, (*hw, 3), dtype=np.uint8)
        )
        label = np.zeros(hw, np.uint8)
        label[:, : hw[1] // 2] = 14  # a high FMB class id that a /255 scaling would wipe out
        cv2.imwrite(str(root / "train/Label" / f"{i:03d}.png"), label)


def test_fmb_layout_keeps_integer_labels(tmp_path: Path) -> None:
    _write_fmb(tmp_path)
    records = records_for("fmb", tmp_path, "train")
    assert [r.name for r in records] == ["000", "001", "002"]
    ds = PairDataset(records, crop_hw=(16, 16), flip=False)
    assert ds.with_labels
    sample = ds[0]
    assert sample["label"].dtype == np.int64
    assert set(np.unique(sample["label"])) <= {0, 14}
    assert sample["ir"].shape == (1, 16, 16) and sample["y"].shape == (1, 16, 16)
    assert sample["crcb"].shape == (2, 16, 16) and sample["vis_bgr"].shape == (16, 16, 3)


def test_crop_flip_is_identical_across_arrays() -> None:
    base = np.arange(12 * 10, dtype=np.int64).reshape(12, 10)
    arrays = {"a": base, "b": np.stack([base, base]), "c": np.repeat(base[..., None], 3, axis=2)}
    for seed in range(10):
        out = paired_crop_flip(arrays, (5, 4), True, np.random.default_rng(seed))
        assert out["a"].shape == (5, 4) and out["b"].shape == (2, 5, 4) and out["c"].shape == (5, 4, 3)
        np.testing.assert_array_equal(out["a"], out["b"][1])
        np.testing.assert_array_equal(out["a"], out["c"][..., 2])


def test_crop_larger_than_image_pads_labels_with_ignore() -> None:
    arrays = {"img": np.ones((4, 4), np.uint8), "label": np.zeros((4, 4), np.int64)}
    out = paired_crop_flip(
        arrays, (6, 5), False, np.random.default_rng(0), pad_values={"label": IGNORE_INDEX}
    )
    assert out["img"].shape == (6, 5)
    assert (out["label"][4:] == IGNORE_INDEX).all() and (out["label"][:4, :4] == 0).all()


def test_augmentation_depends_on_epoch_not_on_call_order(tmp_path: Path) -> None:
    _write_fmb(tmp_path, n=1, hw=(40, 50))
    ds = PairDataset(records_for("fmb", tmp_path), crop_hw=(8, 8), seed=3)
    a, b = ds[0]["ir"], ds[0]["ir"]
    np.testing.assert_array_equal(a, b)
    crops = set()
    for epoch in range(6):
        ds.set_epoch(epoch)
        crops.add(ds[0]["ir"].tobytes())
    assert len(crops) > 1


def test_missing_folders_and_labels_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="Infrared"):
        records_for("fmb", tmp_path)
    with pytest.raises(DatasetError, match="unknown dataset layout"):
        records_for("kaist", tmp_path)
    (tmp_path / "Ir").mkdir()
    (tmp_path / "Vis").mkdir()
    with pytest.raises(DatasetError, match="no pairs with matching names"):
        records_for("sage", tmp_path)


def test_mask_cache_roundtrip_topk_and_fill(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    masks = rng.random((6, 7, 13)) < np.linspace(0.1, 0.9, 6)[:, None, None]
    top = mask_cache.top_k_by_area(masks, 4)
    areas = top.reshape(4, -1).sum(1)
    assert list(areas) == sorted(areas, reverse=True)
    path = mask_cache.mask_path(tmp_path, "ir", "x")
    mask_cache.save_masks(path, top)
    np.testing.assert_array_equal(mask_cache.load_masks(path), top)
    mask_cache.save_masks(mask_cache.mask_path(tmp_path, "vis", "x"), top)
    ir, vis = mask_cache.load_pair_masks(tmp_path, "x", 6, (7, 13))
    assert ir.shape == vis.shape == (6, 7, 13) and ir[4:].all()
    np.testing.assert_array_equal(ir[:4], top)
    assert all(m.all() for m in mask_cache.load_pair_masks(tmp_path, "y", 2, (7, 13)))  # not cached: whole image
    with pytest.raises(ValueError, match="stale cache"):
        mask_cache.load_pair_masks(tmp_path, "x", 4, (8, 13))


def test_sage_sample_layout_reads_real_pairs(official_dir: Path) -> None:
    records = records_for("sage", official_dir)
    assert len(records) == len(sample_pairs(official_dir)) and records[0].label_path is None
    raw = read_pair(records[0])
    assert raw["ir_u8"].shape == (768, 1024) and raw["vis_bgr"].shape == (768, 1024, 3)
    ds = PairDataset(records, crop_hw=(64, 96), top_k=4)
    sample = ds[1]
    assert sample["ir_masks"].shape == (4, 64, 96) and sample["ir_masks"].all()
    assert 0.0 <= sample["y"].min() and sample["y"].max() <= 1.0


def test_msrs_subset_split_filter(msrs_dir: Path) -> None:
    import csv

    # Counts come from splits.csv itself (it lists exactly the fetched pairs), never typed numbers.
    with (msrs_dir / "splits.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    count = {s: sum(r["split"] == s for r in rows) for s in ("train", "eval")}
    train = records_for("msrs", msrs_dir, "train")
    evaluation = records_for("msrs", msrs_dir, "eval")
    assert len(train) == count["train"] > 0 and len(evaluation) == count["eval"] > 0
    assert not {r.name for r in train} & {r.name for r in evaluation}
    assert len(records_for("msrs", msrs_dir, "all")) == len(rows)
