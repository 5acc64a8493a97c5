"""Segmentation classes and colours: read from the metadata file next to a model.

The metadata sidecar `<model>.json` (written by export) may hold
`"classes": [{"id": 0, "name": "unlabelled", "color": [0, 0, 0]}, ...]`. Without it the MSRS
convention applies. Pure numpy: used by the node, bag evaluation and training alike.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

# MSRS pixel-label convention (class ids 0..8) with the palette its authors use.
MSRS_CLASSES: list[tuple[str, tuple[int, int, int]]] = [
    ("unlabelled", (0, 0, 0)),
    ("car", (64, 0, 128)),
    ("person", (64, 64, 0)),
    ("bike", (0, 128, 192)),
    ("curve", (0, 0, 192)),
    ("car_stop", (128, 128, 0)),
    ("guardrail", (64, 64, 128)),
    ("color_cone", (192, 128, 128)),
    ("bump", (192, 64, 0)),
]

# FMB's 15 classes (id 0 is unlabelled/background).
FMB_CLASSES: list[tuple[str, tuple[int, int, int]]] = [
    ("unlabelled", (0, 0, 0)),
    ("road", (179, 228, 228)),
    ("sidewalk", (181, 57, 133)),
    ("building", (67, 162, 177)),
    ("traffic_light", (200, 178, 50)),
    ("traffic_sign", (132, 45, 199)),
    ("vegetation", (66, 172, 84)),
    ("sky", (179, 73, 79)),
    ("person", (76, 99, 166)),
    ("car", (66, 121, 253)),
    ("truck", (137, 165, 91)),
    ("bus", (155, 97, 152)),
    ("motorcycle", (105, 153, 140)),
    ("bicycle", (222, 215, 158)),
    ("pole", (135, 113, 90)),
]

CLASS_SETS = {"msrs": MSRS_CLASSES, "fmb": FMB_CLASSES}


@dataclass(frozen=True)
class ClassTable:
    names: tuple[str, ...]
    palette: np.ndarray  # (N, 3) uint8 RGB, row i is the colour of class id i

    def name(self, class_id: int) -> str:
        return self.names[class_id] if 0 <= class_id < len(self.names) else f"class_{class_id}"

    def to_json(self) -> list[dict]:
        return [
            {"id": i, "name": n, "color": [int(c) for c in self.palette[i]]}
            for i, n in enumerate(self.names)
        ]


def class_table(set_name: str = "msrs") -> ClassTable:
    """A built-in class set by name (`msrs` or `fmb`)."""
    try:
        entries = CLASS_SETS[set_name.lower()]
    except KeyError as exc:
        raise ValueError(f"unknown class set {set_name!r}; known: {sorted(CLASS_SETS)}") from exc
    return ClassTable(tuple(n for n, _ in entries), np.array([c for _, c in entries], dtype=np.uint8))


def table_from_json(entries: list[dict]) -> ClassTable:
    """Build a table from metadata entries; ids may be sparse, gaps get a grey colour."""
    if not entries:
        raise ValueError("empty class list")
    size = max(int(e["id"]) for e in entries) + 1
    names = [f"class_{i}" for i in range(size)]
    palette = np.full((size, 3), 128, dtype=np.uint8)
    for e in entries:
        i = int(e["id"])
        names[i] = str(e.get("name", names[i]))
        if "color" in e:
            palette[i] = np.asarray(e["color"], dtype=np.uint8)[:3]
    return ClassTable(tuple(names), palette)


def load_class_table(model_path: str | Path | None) -> ClassTable:
    """Classes of the model at `model_path` (its `.json` sidecar), else the MSRS convention."""
    if model_path is not None:
        sidecar = Path(model_path).with_suffix(".json")
        if sidecar.is_file():
            meta = json.loads(sidecar.read_text())
            if meta.get("classes"):
                return table_from_json(meta["classes"])
    return class_table("msrs")


def colorize(class_ids: np.ndarray, table: ClassTable) -> np.ndarray:
    """HxW class ids -> HxWx3 uint8 RGB; ids beyond the table wrap around its palette."""
    return table.palette[np.asarray(class_ids, dtype=np.intp) % len(table.palette)]


def overlay(
    fused_rgb: np.ndarray, class_ids: np.ndarray, table: ClassTable, alpha: float = 0.5
) -> np.ndarray:
    """Blend the class colours over the fused image; class 0 (background) stays untouched."""
    alpha = float(np.clip(alpha, 0.0, 1.0))
    ids = np.asarray(class_ids)
    source = np.ascontiguousarray(fused_rgb, dtype=np.uint8)
    out = source.copy()
    # Per present class, a 256-level lookup table of the blend (the same float32 formula, so the same
    # bytes as blending every pixel in float), applied with cv2.LUT and copied where that class is:
    # a few ms at 1280x720 where the float maths over the whole frame took 35-100 ms on the node's path.
    levels = np.arange(256, dtype=np.float32)[:, None]
    counts = np.bincount(ids.ravel(), minlength=1) if ids.size else np.zeros(1, np.intp)
    for cls in np.flatnonzero(counts[1:]) + 1:
        colour = colorize(np.asarray(cls), table).astype(np.float32)[None, :]
        lut = np.clip((1.0 - alpha) * levels + alpha * colour + 0.5, 0, 255).astype(np.uint8)
        cv2.copyTo(cv2.LUT(source, lut.reshape(256, 1, 3)), (ids == cls).view(np.uint8), out)
    return out
