"""Fuse folders of registered IR/visible pairs: pairing by file name, robust to bad files."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from sage_ros.image.imaging import ImageInputError
from sage_ros.model.classes import ClassTable, overlay
from sage_ros.model.classes import class_table as default_class_table
from sage_ros.pairing.datasets import images_by_stem
from sage_ros.pipeline import FusionPipeline, FusionResult

log = logging.getLogger(__name__)

@dataclass
class FolderReport:
    fused: list[str] = field(default_factory=list)
    only_ir: list[str] = field(default_factory=list)
    only_vis: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # name -> reason
    inference_ms: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Every pair fused (files without a partner are reported, not failures)."""
        return not self.failed


def pair_folders(ir_dir: Path, vis_dir: Path) -> tuple[list[tuple[str, Path, Path]], list[str], list[str]]:
    """Match files by name (stem); returns (pairs, names only in IR, names only in visible)."""
    for label, folder in (("IR", ir_dir), ("visible", vis_dir)):
        if Path(folder).is_file():
            raise FileNotFoundError(f"{label} path {folder} is a file: give the folder that holds the {label} images")
        if not Path(folder).is_dir():
            raise FileNotFoundError(f"{label} folder {folder} does not exist")
    ir_files = images_by_stem(Path(ir_dir))
    vis_files = images_by_stem(Path(vis_dir))
    names = sorted(set(ir_files) & set(vis_files))
    pairs = [(n, ir_files[n], vis_files[n]) for n in names]
    return pairs, sorted(set(ir_files) - set(vis_files)), sorted(set(vis_files) - set(ir_files))


def read_image(path: Path) -> np.ndarray:
    """Read an 8-bit image as OpenCV does (BGR or grey); a clear error when it cannot be decoded."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ImageInputError(f"{path}: not a readable image (missing, truncated or not an image)")
    if image.dtype != np.uint8:
        if image.dtype == np.uint16:
            raise ImageInputError(
                f"{path}: 16-bit image; folder fusion expects 8-bit (the node handles raw mono16)"
            )
        raise ImageInputError(f"{path}: unsupported pixel type {image.dtype}")
    return image


def write_rgb(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1])):
        raise OSError(f"could not write {path}")


def fuse_pairs(
    pipeline: FusionPipeline, pairs: list[tuple[str, Path, Path]], classes: bool = False
) -> Iterator[tuple[str, FusionResult | None, str | None]]:
    """Yield (name, result, error) for each pair (with class ids when `classes`); errors are reported,
    never raised."""
    for name, ir_path, vis_path in pairs:
        try:
            ir = read_image(ir_path)
            vis = read_image(vis_path)
            yield name, pipeline.fuse(ir, vis, classes=classes), None
        except ImageInputError as exc:
            yield name, None, str(exc)


def write_mask(path: Path, class_ids: np.ndarray) -> None:
    """An 8-bit single-channel PNG of class ids (MSRS ids: 0 background, 1 car, 2 person, 3 bike)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), np.ascontiguousarray(class_ids, dtype=np.uint8)):
        raise OSError(f"could not write {path}")


def fuse_folder(
    pipeline: FusionPipeline,
    ir_dir: Path,
    vis_dir: Path,
    out_dir: Path,
    on_pair: Callable[[str], None] | None = None,
    masks_dir: Path | None = None,
    overlays_dir: Path | None = None,
    class_table: ClassTable | None = None,
    only: set[str] | None = None,
) -> FolderReport:
    """Fuse every same-named pair and write `out_dir/<IR file name>`; returns what happened.

    With `masks_dir` / `overlays_dir` (a model with a segmentation output), also the class-id mask as
    an 8-bit PNG and the class colours blended over the fused image, both named like the fused image.
    A pair whose result has no class ids is reported as failed for those outputs. `only`: fuse just the
    pairs with these names (e.g. one split of a dataset); the others are neither fused nor reported.
    """
    pairs, only_ir, only_vis = pair_folders(ir_dir, vis_dir)
    if only is not None:
        pairs = [p for p in pairs if p[0] in only]
        only_ir, only_vis = [n for n in only_ir if n in only], [n for n in only_vis if n in only]
    table = class_table or default_class_table("msrs")
    report = FolderReport(only_ir=only_ir, only_vis=only_vis)
    out_dir = Path(out_dir)
    names = {n: ir_path.name for n, ir_path, _ in pairs}
    wanted = masks_dir is not None or overlays_dir is not None
    for name, result, error in fuse_pairs(pipeline, pairs, classes=wanted):
        if error is not None:
            report.failed[name] = error
            log.warning("skipped %s: %s", name, error)
        else:
            # Same file name out as in; PNG keeps the exact pixels whatever the input format was.
            out_name = names[name] if names[name].lower().endswith(".png") else f"{name}.png"
            write_rgb(out_dir / out_name, result.fused_rgb)
            if wanted:
                if result.class_ids is None:
                    report.failed[name] = "segmentation is off: no mask written"
                else:
                    if masks_dir is not None:
                        write_mask(Path(masks_dir) / out_name, result.class_ids)
                    if overlays_dir is not None:
                        write_rgb(Path(overlays_dir) / out_name, overlay(result.fused_rgb, result.class_ids, table))
            report.fused.append(name)
            report.inference_ms[name] = result.inference_ms
        if on_pair is not None:
            on_pair(name)
    return report


def side_by_side(
    ir: np.ndarray, vis_bgr: np.ndarray, fused_rgb: np.ndarray, height: int = 240, extra_rgb: np.ndarray | None = None
) -> np.ndarray:
    """One BGR row IR | visible | fused [| extra, e.g. the class overlay], each scaled to `height`."""
    def fit(img: np.ndarray) -> np.ndarray:
        if img.ndim == 2:
            img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        scale = height / img.shape[0]
        return cv2.resize(img, (round(img.shape[1] * scale), height), interpolation=cv2.INTER_AREA)

    tiles = [fit(ir), fit(vis_bgr), fit(np.ascontiguousarray(fused_rgb[..., ::-1]))]
    if extra_rgb is not None:
        tiles.append(fit(np.ascontiguousarray(extra_rgb[..., ::-1])))
    return np.hstack(tiles)
