"""Find registered infrared/visible pairs (and label maps) in the folder layouts datasets ship in.

Layouts recognised (folder names matched case-insensitively):
    SAGE samples  <root>/{Ir, Vis[, Label]}
    MSRS          <root>/{ir, vi[, label | Segmentation_labels]}  (optionally <root>/<split>/...)
    MSRS / FMB    <root>/{Infrared, Visible[, Label]}              (optionally <root>/<split>/...)
    VIFB          <root>/input/{IR, VI}
Pairs are matched by file stem. A `splits.csv` (`name,split,...`) beside the folders selects a split
when no split sub-folder exists (as in ../shared/datasets/msrs). Pure numpy/OpenCV, no ROS.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_IR_NAMES = ("ir", "infrared", "thermal")
_VIS_NAMES = ("vis", "vi", "visible", "rgb")
_LABEL_NAMES = ("label", "labels", "segmentation_labels")


class DatasetError(ValueError):
    """A folder that holds no recognisable pairs, with what was looked for."""


@dataclass(frozen=True)
class Pair:
    name: str
    ir_path: Path
    vis_path: Path
    label_path: Path | None = None


@dataclass(frozen=True)
class FolderDataset:
    root: Path
    ir_dir: Path
    vis_dir: Path
    label_dir: Path | None
    pairs: tuple[Pair, ...]
    only_ir: tuple[str, ...]  # names without a visible partner (reported, not used)
    only_vis: tuple[str, ...]

    @property
    def layout(self) -> str:
        return f"{self.ir_dir.name}/ {self.vis_dir.name}/" + (
            f" {self.label_dir.name}/" if self.label_dir else ""
        )


def find_child_dir(folder: Path, *names: str) -> Path | None:
    """The first sub-folder of `folder` whose name matches one of `names`, ignoring case."""
    if not folder.is_dir():
        return None
    children = {p.name.lower(): p for p in folder.iterdir() if p.is_dir()}
    for name in names:
        if name.lower() in children:
            return children[name.lower()]
    return None


def images_by_stem(folder: Path) -> dict[str, Path]:
    """Image files of `folder` keyed by file stem (the name pairs are matched on)."""
    return {p.stem: p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES}


def _split_names(csv_path: Path, split: str) -> set[str]:
    with csv_path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if rows and not {"name", "split"} <= set(rows[0]):
        raise DatasetError(f"{csv_path}: expected columns 'name' and 'split'")
    return {row["name"] for row in rows if row["split"] == split}


def discover(root: str | Path, split: str | None = None, limit: int | None = None) -> FolderDataset:
    """The pairs of the dataset folder `root` (see the module docstring for the layouts)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist")
    candidates = [root / split] if split and (root / split).is_dir() else []
    candidates += [root, root / "input"]
    base = ir_dir = vis_dir = None
    for cand in candidates:
        if cand.is_dir():
            ir_dir, vis_dir = find_child_dir(cand, *_IR_NAMES), find_child_dir(cand, *_VIS_NAMES)
            if ir_dir and vis_dir:
                base = cand
                break
    if base is None or ir_dir is None or vis_dir is None:
        subdirs = sorted(p.name for p in root.iterdir() if p.is_dir())
        hint = f" (sub-folders: {', '.join(subdirs)}; pass --split if they are splits)" if subdirs else ""
        raise DatasetError(
            f"{root}: no infrared/visible folder pair found; expected Ir/ Vis/, ir/ vi/ or "
            f"Infrared/ Visible/{hint}"
        )
    label_dir = find_child_dir(base, *_LABEL_NAMES)
    irs, viss = images_by_stem(ir_dir), images_by_stem(vis_dir)
    labels = images_by_stem(label_dir) if label_dir else {}
    names = sorted(set(irs) & set(viss))
    if split and base != root / split:
        splits_csv = base / "splits.csv"
        if not splits_csv.is_file():
            raise DatasetError(f"{root}: no sub-folder {split!r} and no splits.csv to select it")
        wanted = _split_names(splits_csv, split)
        names = [n for n in names if n in wanted]
    if limit is not None:
        names = names[: max(0, limit)]
    if not names:
        raise DatasetError(f"{root}: no pairs with matching names in {ir_dir.name}/ and {vis_dir.name}/")
    pairs = tuple(Pair(n, irs[n], viss[n], labels.get(n)) for n in names)
    return FolderDataset(
        root,
        ir_dir,
        vis_dir,
        label_dir if labels else None,
        pairs,
        tuple(sorted(set(irs) - set(viss))),
        tuple(sorted(set(viss) - set(irs))),
    )


def _read(path: Path, flags: int) -> np.ndarray:
    image = cv2.imread(str(path), flags)
    if image is None:
        raise DatasetError(f"{path}: not a readable image (missing, truncated or not an image)")
    return image


def read_infrared(path: str | Path) -> np.ndarray:
    """HxW uint8 or uint16 infrared frame; grey stored as 3 channels (SAGE samples) becomes one."""
    image = _read(Path(path), cv2.IMREAD_UNCHANGED)
    if image.ndim == 3:
        code = cv2.COLOR_BGRA2GRAY if image.shape[2] == 4 else cv2.COLOR_BGR2GRAY
        image = cv2.cvtColor(image, code)
    if image.dtype not in (np.uint8, np.uint16):
        raise DatasetError(f"{path}: infrared images must be 8 or 16 bit, got {image.dtype}")
    return image


def read_visible(path: str | Path) -> np.ndarray:
    """HxWx3 uint8 BGR (OpenCV order)."""
    return _read(Path(path), cv2.IMREAD_COLOR)


def read_label(path: str | Path) -> np.ndarray:
    """HxW uint8 class ids; a 3-channel file is accepted only when its channels are equal."""
    image = _read(Path(path), cv2.IMREAD_UNCHANGED)
    if image.ndim == 3:
        if not (
            np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 0], image[..., 2])
        ):
            raise DatasetError(f"{path}: colour label maps are not supported, expected class ids")
        image = image[..., 0]
    if image.dtype != np.uint8:
        if image.max(initial=0) > 255:
            raise DatasetError(f"{path}: class ids above 255 do not fit mono8")
        image = image.astype(np.uint8)
    return image
