"""On-disk format of the SAM mask cache: one compressed NPZ per image and modality (never pickle).

The cache is written once by `sage_ros.training.sam.build_mask_cache` (slow, needs SAM) and read by
the dataset loaders at every epoch (fast, numpy only). Layout under the cache root:

    <root>/ir/<name>.npz   <root>/vis/<name>.npz

each holding `masks`: (K, H, W) bool, largest area first, K <= top_k. A missing cache file, or fewer
than K masks, is filled with whole-image masks when loaded (SAGE_SPEC section 3).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np


def mask_path(root: str | Path, modality: str, name: str) -> Path:
    """Where the masks of image `name` (file stem) and `modality` ('ir' or 'vis') live."""
    return Path(root) / modality / f"{name}.npz"


def top_k_by_area(masks: list[np.ndarray] | np.ndarray, top_k: int) -> np.ndarray:
    """Keep the `top_k` largest boolean masks, largest first; stable for equal areas."""
    stack = np.asarray(masks, dtype=bool)
    if stack.size == 0 or stack.ndim != 3:
        return np.zeros((0, *stack.shape[-2:]) if stack.ndim == 3 else (0, 0, 0), dtype=bool)
    areas = stack.reshape(stack.shape[0], -1).sum(axis=1)
    order = np.argsort(-areas, kind="stable")[:top_k]
    return stack[order]


def save_masks(path: str | Path, masks: np.ndarray) -> None:
    """Write (K, H, W) bool masks atomically (a crash never leaves a half-written file to resume on)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 3:
        raise ValueError(f"masks must be (K, H, W), got shape {masks.shape}")
    fd, tmp = tempfile.mkstemp(suffix=".npz", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            # Bit-packing keeps a 4-mask 800x600 entry near 20 kB instead of 2 MB.
            np.savez_compressed(handle, packed=np.packbits(masks, axis=-1), shape=np.array(masks.shape))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_masks(path: str | Path) -> np.ndarray:
    """Read masks written by `save_masks` as (K, H, W) bool."""
    with np.load(Path(path), allow_pickle=False) as data:
        shape = tuple(int(v) for v in data["shape"])
        packed = data["packed"]
    return np.unpackbits(packed, axis=-1, count=shape[-1]).astype(bool).reshape(shape)


def fill_masks(masks: np.ndarray | None, top_k: int, hw: tuple[int, int]) -> np.ndarray:
    """Exactly `top_k` masks of size `hw`: the given ones first, then whole-image masks."""
    out = np.ones((top_k, *hw), dtype=bool)
    if masks is not None and len(masks):
        if tuple(masks.shape[-2:]) != tuple(hw):
            raise ValueError(f"cached masks are {masks.shape[-2:]} but the image is {hw}: stale cache?")
        n = min(top_k, len(masks))
        out[:n] = masks[:n]
    return out


def load_pair_masks(root: str | Path | None, name: str, top_k: int, hw: tuple[int, int],
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(ir_masks, vis_masks) of one pair, each exactly `top_k`: the first min(n_ir, n_vis, top_k) cached masks
    of each, as upstream's cache keeps (so slot k holds a SAM mask in both modalities or in neither), then
    whole-image masks. No cache (root None) or no file: all whole-image."""
    paths = [None if root is None else mask_path(root, m, name) for m in ("ir", "vis")]
    ir, vis = (load_masks(p) if p is not None and p.is_file() else np.zeros((0, *hw), bool) for p in paths)
    n = min(len(ir), len(vis), top_k)
    return fill_masks(ir[:n], top_k, hw), fill_masks(vis[:n], top_k, hw)
