"""Paired infrared/visible datasets for training: FMB, MSRS and the SAGE sample layout.

Numpy and OpenCV only (no torch), so the segmentation-network training and evaluation scripts can reuse
it; `PairDataset` is a map-style dataset that `torch.utils.data.DataLoader` batches directly.

A sample is a dict of arrays of one size (after the paired crop/flip):
    name     str
    ir       (1, H, W) float32 in [0, 1]   infrared grey
    y        (1, H, W) float32 in [0, 1]   visible luminance (BT.601, as at run time)
    crcb     (2, H, W) float32 in [0, 1]   visible chroma, to turn a fused Y back into colour
    vis_bgr  (H, W, 3) uint8               visible image as OpenCV reads it
    ir_u8    (H, W) uint8                  infrared grey, 8 bit
    label    (H, W) int64                  class ids (only when the dataset has labels; never scaled)
    ir_masks, vis_masks (K, H, W) float32  SAM masks from the cache (only when top_k > 0)

Layouts (`pairing.datasets.discover`, folder names matched case-insensitively):
    FMB   <root>/<split>/{Infrared, Visible, Label}         split: train | test
    MSRS  <root>/<split>/{ir, vi, Segmentation_labels}      split: train | test
          or the evaluation subset <root>/{ir, vi} + splits.csv (name,split,...; no labels)
    SAGE  <root>/{Ir, Vis[, Label]}                          (the released sample pairs)
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from sage_ros.image.imaging import infrared_to_grey, visible_to_ycrcb
from sage_ros.pairing.datasets import DatasetError, Pair, discover
from sage_ros.training.mask_cache import load_pair_masks

#: label value for pixels without a class (padding added by crops larger than the image)
IGNORE_INDEX = 255
LAYOUTS = ("fmb", "msrs", "sage")


#: One registered pair on disk (name = shared file stem); the same record bag tools use.
PairRecord = Pair


def records_for(layout: str, root: str | Path, split: str | None = "train") -> list[PairRecord]:
    """The pairs of a dataset folder, found as everywhere else (`pairing.datasets.discover`: split sub-folder,
    or splits.csv beside ir/ vi/). layout: fmb | msrs | sage (checked; sage has no splits); split `all` or None
    keeps every pair."""
    if layout.lower() not in LAYOUTS:
        raise DatasetError(f"unknown dataset layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    use_split = None if layout.lower() == "sage" or split in (None, "all") else split
    return list(discover(root, use_split).pairs)


def read_pair(record: PairRecord, with_label: bool = False) -> dict[str, np.ndarray]:
    """Load one pair from disk: IR uint8 grey, visible uint8 BGR and optionally integer labels."""
    ir = cv2.imread(str(record.ir_path), cv2.IMREAD_GRAYSCALE)
    vis = cv2.imread(str(record.vis_path), cv2.IMREAD_COLOR)
    if ir is None or vis is None:
        bad = record.ir_path if ir is None else record.vis_path
        raise DatasetError(f"could not read image {bad} (missing or not an image)")
    if ir.shape != vis.shape[:2]:
        raise DatasetError(
            f"pair {record.name}: infrared {ir.shape[::-1]} and visible {vis.shape[1::-1]} differ in size"
        )
    out = {"ir_u8": ir, "vis_bgr": vis}
    if with_label:
        if record.label_path is None:
            raise DatasetError(f"pair {record.name} has no label file")
        label = cv2.imread(str(record.label_path), cv2.IMREAD_UNCHANGED)
        if label is None or label.ndim != 2:
            raise DatasetError(
                f"label {record.label_path} must be a one-channel image of class ids "
                "(a colour-coded label needs converting first)"
            )
        if label.shape != ir.shape:
            raise DatasetError(f"label {record.label_path} is {label.shape}, images are {ir.shape}")
        # Class ids stay integers: upstream's to-tensor step divided them by 255 (SAGE_SPEC section 5).
        out["label"] = label.astype(np.int64)
    return out


def paired_crop_flip(
    arrays: dict[str, np.ndarray],
    crop_hw: tuple[int, int] | None,
    flip: bool,
    rng: np.random.Generator,
    pad_values: dict[str, float] | None = None,
) -> dict[str, np.ndarray]:
    """One random crop and one optional horizontal flip, identical for every array.

    Arrays are indexed (..., H, W) when 3-D channel-first (K, H, W) or (H, W[, C]) otherwise: the
    spatial axes are found per array by `_spatial_axes`. Images smaller than the crop are padded
    (value from `pad_values`, default 0) so a batch always has one size.
    """
    first = next(iter(arrays.values()))
    ay, ax = _spatial_axes(first)
    h, w = first.shape[ay], first.shape[ax]
    out: dict[str, np.ndarray] = {}
    if crop_hw is not None:
        ch, cw = crop_hw
        top = int(rng.integers(0, max(h - ch, 0) + 1))
        left = int(rng.integers(0, max(w - cw, 0) + 1))
    do_flip = flip and bool(rng.random() < 0.5)
    for key, arr in arrays.items():
        ay, ax = _spatial_axes(arr)
        if crop_hw is not None:
            arr = _pad_to(arr, (ch, cw), ay, ax, (pad_values or {}).get(key, 0))
            index = [slice(None)] * arr.ndim
            index[ay], index[ax] = slice(top, top + ch), slice(left, left + cw)
            arr = arr[tuple(index)]
        if do_flip:
            arr = np.flip(arr, axis=ax)
        out[key] = np.ascontiguousarray(arr)
    return out


def _spatial_axes(arr: np.ndarray) -> tuple[int, int]:
    # (K, H, W) stacks (masks) are channel-first; (H, W, 3) images are channel-last.
    return (1, 2) if arr.ndim == 3 and arr.shape[2] not in (1, 3, 4) else (0, 1)


def _pad_to(arr: np.ndarray, hw: tuple[int, int], ay: int, ax: int, value: float) -> np.ndarray:
    need_h, need_w = max(hw[0] - arr.shape[ay], 0), max(hw[1] - arr.shape[ax], 0)
    if not need_h and not need_w:
        return arr
    pad = [(0, 0)] * arr.ndim
    pad[ay], pad[ax] = (0, need_h), (0, need_w)
    return np.pad(arr, pad, constant_values=value)


class PairDataset:
    """Map-style dataset of registered pairs with paired random crops and flips.

    records: from `records_for`. crop_hw: (H, W) random crop, None keeps full frames.
    labels: 'auto' (when every record has one), True (required) or False. mask_root / top_k: the
    SAM mask cache (see mask_cache; as many IR as visible masks per pair, as upstream's), top_k=0 skips
    masks. Randomness derives from (seed, epoch, index) so DataLoader workers and DDP ranks never repeat
    each other's augmentations by accident.
    """

    def __init__(
        self,
        records: list[PairRecord],
        crop_hw: tuple[int, int] | None = None,
        flip: bool = True,
        labels: bool | str = "auto",
        mask_root: str | Path | None = None,
        top_k: int = 0,
        seed: int = 0,
    ) -> None:
        if not records:
            raise DatasetError("empty dataset")
        self.records = list(records)
        self.crop_hw = tuple(crop_hw) if crop_hw is not None else None
        self.flip = flip
        has_all = all(r.label_path is not None for r in self.records)
        if labels == "auto":
            labels = has_all
        elif labels and not has_all:
            missing = [r.name for r in self.records if r.label_path is None]
            raise DatasetError(f"labels required but {len(missing)} pairs have none (e.g. {missing[:3]})")
        self.with_labels = bool(labels)
        self.mask_root = Path(mask_root) if mask_root is not None else None
        self.top_k = int(top_k)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation stream (call before each epoch, as with DistributedSampler)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        record = self.records[index]
        raw = read_pair(record, with_label=self.with_labels)
        hw = raw["ir_u8"].shape
        if self.top_k > 0:
            raw["ir_masks"], raw["vis_masks"] = load_pair_masks(self.mask_root, record.name, self.top_k, hw)
        rng = np.random.default_rng((self.seed, self.epoch, index))
        raw = paired_crop_flip(raw, self.crop_hw, self.flip, rng, pad_values={"label": IGNORE_INDEX})
        vis = visible_to_ycrcb(raw["vis_bgr"])
        sample = {
            "name": record.name,
            "ir": infrared_to_grey(raw["ir_u8"])[None],
            "y": vis.y[None],
            "crcb": np.stack([vis.cr, vis.cb]),
            "vis_bgr": raw["vis_bgr"],
            "ir_u8": raw["ir_u8"],
        }
        if "label" in raw:
            sample["label"] = raw["label"]
        for key in ("ir_masks", "vis_masks"):
            if key in raw:
                sample[key] = raw[key].astype(np.float32)
        return sample


def shared_default(*parts: str) -> str:
    """A path in the shared data folder of a development checkout (../shared beside the repository), or ''."""
    for base in (Path.cwd().parent / "shared", Path(__file__).resolve().parents[3] / "shared"):
        candidate = base.joinpath(*parts)
        if candidate.exists():
            return str(candidate)
    return ""
