"""Human boxes from labelled folders: YOLO, COCO and VOC layouts, and the dataset -> our class map.

Every reader returns the same thing, `LabelledSet`: per image (keyed by the file stem, which is how a
mask folder names its PNGs) the dataset's own class names and box corners, either normalised (YOLO) or
in the pixels of the labelled image (COCO, VOC). `LabelledSet.pixel_boxes` scales them to a mask and maps
the names to our class ids, counting the boxes of classes the map leaves out instead of dropping them
silently. Numpy only: scoring masks must not need torch or the training code.
"""

from __future__ import annotations

import csv
import json
import math
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: YOLO classes of the MSRS detection labels (boxes/classes.txt: 0 person, 1 bicycle, 2 car)
#: mapped to MSRS pixel-label ids (1 car, 2 person, 3 bike).
MSRS_YOLO_TO_ID = {0: 2, 1: 3, 2: 1}
#: Our class ids by name (MSRS pixel-label convention); "bicycle" is accepted for bike because the
#: MSRS and M3FD box files call it that.
CLASS_IDS = {"car": 1, "person": 2, "bike": 3, "bicycle": 3}
#: The map used when none is given: dataset classes already named like ours.
DEFAULT_CLASS_MAP = {"person": "person", "car": "car", "bike": "bike", "bicycle": "bike"}
LAYOUTS = ("yolo", "coco", "voc")
_EPS = 1e-6


@dataclass(frozen=True)
class Box:
    """A labelled box in pixels: class id (already mapped), [x0, x1) x [y0, y1)."""

    class_id: int
    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def area(self) -> int:
        return max(self.x1 - self.x0, 0) * max(self.y1 - self.y0, 0)

    def as_xyxy(self) -> tuple[float, float, float, float]:
        return float(self.x0), float(self.y0), float(self.x1), float(self.y1)


class BoxFileError(ValueError):
    """A box file (YOLO, COCO or VOC) that cannot be read; the message names the file and the place."""


def pixel_box(class_id: int, x0: float, y0: float, x1: float, y1: float, width: int, height: int) -> Box | None:
    """Float corners in pixels -> a whole-pixel Box clipped to the image, or None when nothing is left.

    Rounded outward (a human box is drawn around the object); the epsilon keeps 0.15 * 100 =
    15.000000000000002 at 15.
    """
    ix0 = int(np.clip(np.floor(x0 + _EPS), 0, width))
    ix1 = int(np.clip(np.ceil(x1 - _EPS), 0, width))
    iy0 = int(np.clip(np.floor(y0 + _EPS), 0, height))
    iy1 = int(np.clip(np.ceil(y1 - _EPS), 0, height))
    return Box(class_id, ix0, iy0, ix1, iy1) if ix1 > ix0 and iy1 > iy0 else None


def yolo_rows(text: str, source: str = "<text>") -> list[tuple[int, float, float, float, float]]:
    """The `class cx cy w h` lines of one YOLO file (normalised), blank lines skipped."""
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 5:
            raise BoxFileError(f"{source}:{number}: expected 'class cx cy w h', got {line!r}")
        try:
            yolo_class = int(parts[0])
            cx, cy, bw, bh = (float(p) for p in parts[1:])
        except ValueError as exc:
            raise BoxFileError(f"{source}:{number}: not numbers: {line!r}") from exc
        rows.append((yolo_class, cx, cy, bw, bh))
    return rows


def parse_yolo(
    text: str, width: int, height: int, class_map: dict[int, int] | None = None, source: str = "<text>"
) -> list[Box]:
    """Parse YOLO lines `class cx cy w h` (normalised) into pixel boxes clipped to the image.

    Classes missing from `class_map` are skipped (a dataset may label more than the head predicts).
    """
    boxes: list[Box] = []
    for yolo_class, cx, cy, bw, bh in yolo_rows(text, source):
        class_id = class_map.get(yolo_class) if class_map is not None else yolo_class
        if class_id is None:
            continue
        box = pixel_box(class_id, (cx - bw / 2) * width, (cy - bh / 2) * height, (cx + bw / 2) * width,
                        (cy + bh / 2) * height, width, height)
        if box is not None:
            boxes.append(box)
    return boxes


def box_dir(msrs_root: str | Path, source: str) -> Path:
    """The YOLO folder of one annotation source (fusion, infrared, visible) of the shared MSRS layout."""
    return Path(msrs_root) / "boxes" / source


def msrs_lights(msrs_root: str | Path, split: str | None = None) -> dict[str, str]:
    """name -> 'day' | 'night' | 'unknown' from the shared MSRS splits.csv, for the pairs of `split` (default all)."""
    with (Path(msrs_root) / "splits.csv").open(newline="") as handle:
        return {r["name"]: r.get("light") or "unknown" for r in csv.DictReader(handle) if split in (None, r["split"])}


def read_yolo(
    path: str | Path, width: int, height: int, class_map: dict[int, int] | None = MSRS_YOLO_TO_ID
) -> list[Box]:
    """Boxes of one YOLO file; a missing file means no boxes (images without objects have none)."""
    path = Path(path)
    if not path.is_file():
        return []
    return parse_yolo(path.read_text(), width, height, class_map, source=str(path))


@dataclass(frozen=True)
class NamedBox:
    """A box as the dataset labels it: its own class name and corners (x1, y1 exclusive)."""

    name: str
    x0: float
    y0: float
    x1: float
    y1: float


@dataclass
class ImageBoxes:
    """The boxes of one image. `size` (width, height) is the image the pixel corners refer to; corners
    are normalised to 0..1 when `normalised`, and taken as the mask's own pixels when size is unknown."""

    boxes: list[NamedBox]
    size: tuple[int, int] | None = None
    normalised: bool = False


@dataclass
class LabelledSet:
    """Boxes of a labelled folder, per image stem.

    `missing_means_empty`: an image without an entry has no object (YOLO writes no file for a frame
    without objects); otherwise such an image is unlabelled and must not be scored (COCO, VOC).
    """

    layout: str
    source: Path
    images: dict[str, ImageBoxes]
    missing_means_empty: bool = False
    skipped: Counter = field(default_factory=Counter)  # boxes the reader left out, by reason

    def pixel_boxes(
        self, stem: str, width: int, height: int, class_map: dict[str, int]
    ) -> tuple[list[Box], Counter] | None:
        """Boxes of one image scaled to a width x height mask, with our class ids, and the count of
        boxes per dataset class the map leaves out; None when the image is not labelled."""
        image = self.images.get(stem)
        if image is None:
            return ([], Counter()) if self.missing_means_empty else None
        if image.normalised:
            sx, sy = float(width), float(height)
        elif image.size is not None:
            # Labels drawn on a larger or smaller copy of the frame than the mask.
            sx, sy = width / image.size[0], height / image.size[1]
        else:
            sx = sy = 1.0
        boxes, unmapped = [], Counter()
        for b in image.boxes:
            class_id = class_map.get(b.name.lower())
            if class_id is None:
                unmapped[b.name] += 1
                continue
            box = pixel_box(class_id, b.x0 * sx, b.y0 * sy, b.x1 * sx, b.y1 * sy, width, height)
            if box is not None:
                boxes.append(box)
        return boxes, unmapped


def parse_class_map(pairs: Iterable[str] | None) -> dict[str, int]:
    """`["People=person", "Bus=car", ...]` -> dataset name (lower case) -> our class id.

    Without pairs, the dataset classes already named like ours (person, car, bike or bicycle) are kept.
    """
    items = [p.split("=", 1) if "=" in p else [p, ""] for p in pairs] if pairs else DEFAULT_CLASS_MAP.items()
    mapped: dict[str, int] = {}
    for theirs, ours in items:
        theirs, ours = theirs.strip().lower(), ours.strip().lower()
        if not theirs or ours not in CLASS_IDS:
            raise ValueError(f"class map entry {theirs}={ours}: expected DATASET_CLASS=OURS with OURS one of "
                             f"{sorted(set(CLASS_IDS) - {'bicycle'})}")
        if mapped.get(theirs, CLASS_IDS[ours]) != CLASS_IDS[ours]:
            raise ValueError(f"class map: {theirs!r} is mapped twice, to different classes")
        mapped[theirs] = CLASS_IDS[ours]
    return mapped


def _yolo_class_names(folder: Path) -> dict[int, str]:
    """classes.txt beside the labels (or one folder up, as the MSRS boxes/<source>/ layout keeps it):
    either `id name` lines or one name per line in id order."""
    for path in (folder / "classes.txt", folder.parent / "classes.txt"):
        if not path.is_file():
            continue
        names: dict[int, str] = {}
        lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        for index, line in enumerate(lines):
            head, _, rest = line.partition(" ")
            if head.isdigit() and rest.strip():
                names[int(head)] = rest.strip()
            else:
                names[index] = line
        return names
    return {}


def read_yolo_folder(folder: str | Path, class_names: Sequence[str] | None = None) -> LabelledSet:
    """Every NAME.txt of a YOLO folder (normalised `class cx cy w h`). Class names from `class_names`
    (in id order), else classes.txt; a class id with no name is called by its number ("0")."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BoxFileError(f"{folder}: not a folder of YOLO .txt files")
    names = dict(enumerate(class_names)) if class_names else _yolo_class_names(folder)
    images = {}
    for path in sorted(folder.glob("*.txt")):
        if path.name == "classes.txt":
            continue
        boxes = [NamedBox(names.get(c, str(c)), cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2)
                 for c, cx, cy, bw, bh in yolo_rows(path.read_text(), str(path))]
        images[path.stem] = ImageBoxes(boxes, normalised=True)
    if not images:
        raise BoxFileError(f"{folder}: no YOLO .txt label files")
    return LabelledSet("yolo", folder, images, missing_means_empty=True)


def _number(value: object, where: str) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise BoxFileError(f"{where}: not a number: {value!r}")
    return number


def read_coco(path: str | Path) -> LabelledSet:
    """One COCO instances JSON: `images` (id, file_name, width, height), `annotations` (image_id,
    category_id, bbox [x, y, w, h] in pixels) and `categories` (id, name). Crowd regions (iscrowd 1)
    mark many objects at once, not one: they are left out and counted."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BoxFileError(f"{path}: not a readable JSON file: {exc}") from exc
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "categories")):
        raise BoxFileError(f"{path}: not a COCO instances file (needs 'images' and 'categories' lists)")
    try:
        categories = {c["id"]: str(c["name"]) for c in data["categories"]}
        by_id = {}
        for image in data["images"]:
            size = None
            if image.get("width") and image.get("height"):
                size = (int(image["width"]), int(image["height"]))
            by_id[image["id"]] = (Path(str(image["file_name"])).stem, ImageBoxes([], size))
    except (KeyError, TypeError, ValueError) as exc:
        raise BoxFileError(f"{path}: image or category entry without id/file_name/name: {exc!r}") from exc
    skipped: Counter = Counter()
    for index, ann in enumerate(data.get("annotations") or []):
        where = f"{path}: annotations[{index}]"
        if not isinstance(ann, dict) or "image_id" not in ann or "category_id" not in ann or "bbox" not in ann:
            raise BoxFileError(f"{where}: needs image_id, category_id and bbox")
        if ann["image_id"] not in by_id:
            raise BoxFileError(f"{where}: image_id {ann['image_id']!r} is not in 'images'")
        if ann["category_id"] not in categories:
            raise BoxFileError(f"{where}: category_id {ann['category_id']!r} is not in 'categories'")
        bbox = ann["bbox"]
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise BoxFileError(f"{where}: bbox must be [x, y, width, height], got {bbox!r}")
        if ann.get("iscrowd"):
            skipped["crowd"] += 1
            continue
        x, y, w, h = (_number(v, f"{where}.bbox") for v in bbox)
        by_id[ann["image_id"]][1].boxes.append(NamedBox(categories[ann["category_id"]], x, y, x + w, y + h))
    images = dict(by_id.values())
    if len(images) != len(by_id):
        raise BoxFileError(f"{path}: several images share a file name stem; masks could not tell them apart")
    return LabelledSet("coco", path, images, skipped=skipped)


def _voc_text(element: ET.Element, tag: str, where: str) -> str:
    child = element.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise BoxFileError(f"{where}: missing <{tag}>")
    return child.text.strip()


def read_voc_file(path: str | Path) -> ImageBoxes:
    """One VOC XML: <size><width>/<height>, <object><name>, <bndbox><xmin>..<ymax>.

    VOC corners are 1-based pixel indices with xmax inclusive, so the pixel box is [xmin - 1, xmax).
    """
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise BoxFileError(f"{path}: not a readable VOC XML file: {exc}") from exc
    size = None
    size_el = root.find("size")
    if size_el is not None and size_el.findtext("width") and size_el.findtext("height"):
        w, h = (_number(size_el.findtext(k), f"{path}: <size><{k}>") for k in ("width", "height"))
        size = (int(w), int(h)) if w > 0 and h > 0 else None
    boxes = []
    for index, obj in enumerate(root.iter("object"), 1):
        where = f"{path}: object {index}"
        name = _voc_text(obj, "name", where)
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise BoxFileError(f"{where} ({name}): missing <bndbox>")
        x0, y0, x1, y1 = (_number(_voc_text(bndbox, k, where), f"{where} <{k}>")
                          for k in ("xmin", "ymin", "xmax", "ymax"))
        boxes.append(NamedBox(name, x0 - 1, y0 - 1, x1, y1))
    return ImageBoxes(boxes, size)


def read_voc(folder: str | Path) -> LabelledSet:
    """Every NAME.xml of a VOC annotation folder."""
    folder = Path(folder)
    paths = sorted(folder.glob("*.xml")) if folder.is_dir() else []
    if not paths:
        raise BoxFileError(f"{folder}: no VOC .xml annotation files")
    return LabelledSet("voc", folder, {p.stem: read_voc_file(p) for p in paths})


def detect_layout(path: str | Path) -> str:
    """yolo (a folder of .txt), coco (a .json file) or voc (a folder of .xml)."""
    path = Path(path)
    if path.is_file() and path.suffix.lower() == ".json":
        return "coco"
    if path.is_dir():
        if any(path.glob("*.xml")):
            return "voc"
        if any(p.name != "classes.txt" for p in path.glob("*.txt")):
            return "yolo"
    raise BoxFileError(f"{path}: neither a COCO .json file nor a folder of YOLO .txt or VOC .xml files")


def read_boxes(path: str | Path, layout: str = "auto", class_names: Sequence[str] | None = None) -> LabelledSet:
    """The boxes of a labelled folder or file in any of LAYOUTS ('auto': told by what is there)."""
    layout = detect_layout(path) if layout == "auto" else layout
    if layout == "yolo":
        return read_yolo_folder(path, class_names)
    if class_names:
        raise ValueError("class names are given only for YOLO labels (COCO and VOC name their classes)")
    if layout == "coco":
        return read_coco(path)
    if layout == "voc":
        return read_voc(path)
    raise ValueError(f"box layout must be one of {LAYOUTS} or 'auto', not {layout!r}")
