"""Detection boxes (YOLO text files) and the pseudo-masks built from them. Numpy and OpenCV only.

Most RGB-thermal datasets label boxes, not pixels. A box says "an object of class c is somewhere in
here"; which pixels belong to it is a guess. The guess used here: people, cars and bikes are warmer
than their surroundings in the infrared, so inside each box the thermal-bright region (Otsu threshold
on the IR crop) is the object; when that region is implausible (tiny, nearly the whole box, or no
contrast) the whole box is used. Pixels inside a box but outside its guessed region are marked
IGNORE so that training neither rewards nor punishes them.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

# Box and YOLO parsing live in the run-time package (make-bag and eval-bag use them without torch);
# re-exported here so that every existing import of these names keeps working.
from sage_ros.evaluation.boxes import (  # noqa: F401 - re-exports
    MSRS_YOLO_TO_ID,
    Box,
    BoxFileError,
    parse_yolo,
    read_yolo,
    yolo_rows,
)
from sage_ros.evaluation.components import IGNORE  # noqa: F401 - re-export

BOX_SOURCES = ("infrared", "visible", "fusion")
PSEUDO_MODES = ("thermal", "box")


def box_dir(msrs_root: str | Path, source: str) -> Path:
    """The folder of one annotation source of the shared MSRS subset (boxes/<source>/NAME.txt)."""
    if source not in BOX_SOURCES:
        raise ValueError(f"box source must be one of {BOX_SOURCES}, not {source!r}")
    return Path(msrs_root) / "boxes" / source


def thermal_region(ir_crop: np.ndarray, min_fill: float, max_fill: float, min_contrast: float) -> np.ndarray:
    """The warm pixels of one box's IR crop (uint8) as a bool mask, or all-True when implausible."""
    if ir_crop.size < 4:
        return np.ones(ir_crop.shape, dtype=bool)
    threshold, _ = cv2.threshold(ir_crop, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    bright = ir_crop > threshold
    fill = float(bright.mean())
    if not (min_fill <= fill <= max_fill):
        return np.ones(ir_crop.shape, dtype=bool)
    contrast = float(ir_crop[bright].mean()) - float(ir_crop[~bright].mean())
    if contrast < min_contrast:
        return np.ones(ir_crop.shape, dtype=bool)
    return bright


def pseudo_mask(
    boxes: list[Box],
    shape: tuple[int, int],
    ir_u8: np.ndarray | None = None,
    mode: str = "thermal",
    min_fill: float = 0.15,
    max_fill: float = 0.9,
    min_contrast: float = 12.0,
) -> np.ndarray:
    """Boxes -> HxW uint8 class ids: 0 background, class ids, IGNORE where a box is unsure.

    mode 'box' fills each box; 'thermal' keeps the warm region inside it (needs `ir_u8`). Larger boxes
    are painted first so that a smaller box (usually the nearer object: a person before a car) wins
    where they overlap; a pixel some box labels is never IGNORE.
    """
    if mode not in PSEUDO_MODES:
        raise ValueError(f"pseudo-mask mode must be one of {PSEUDO_MODES}, not {mode!r}")
    if mode == "thermal" and (ir_u8 is None or ir_u8.shape != tuple(shape)):
        raise ValueError("thermal pseudo-masks need the infrared image (uint8, same size as the mask)")
    mask = np.zeros(shape, dtype=np.uint8)
    labelled = np.zeros(shape, dtype=bool)
    for box in sorted(boxes, key=lambda b: b.area, reverse=True):
        window = (slice(box.y0, box.y1), slice(box.x0, box.x1))
        if mode == "thermal":
            region = thermal_region(ir_u8[window], min_fill, max_fill, min_contrast)
        else:
            region = np.ones((box.y1 - box.y0, box.x1 - box.x0), dtype=bool)
        sub_mask, sub_done = mask[window], labelled[window]
        # Not-warm box pixels become IGNORE unless another box already gave them a class.
        sub_mask[~region & ~sub_done] = IGNORE
        sub_mask[region] = box.class_id
        sub_done |= region
    return mask
