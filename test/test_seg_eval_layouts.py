"""`seg eval` on labelled folders in YOLO, COCO and VOC layouts with a class map: synthetic masks and
boxes whose F1 and spill are known by construction, the same answer from every layout."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from sage_ros.cli import main as cli_main
from sage_ros.evaluation.boxes import (
    Box,
    BoxFileError,
    parse_class_map,
    read_boxes,
    read_coco,
    read_voc,
    read_yolo_folder,
)
from sage_ros.evaluation.components import score_mask_folder, spill_fractions

H, W = 100, 200
CLASS_MAP = ["People=person", "BUS=car", "car=car"]  # the dataset writes "Bus"; matched ignoring case
# Frame a: a person exactly on its box (TP), a person box nobody predicted (miss), a car exactly on its
# "Bus" box (TP), a car component where no box is (false component, 10 x 20 = 200 px outside every car
# box: spill 1 %) and a Lamp box that the map leaves out. Frame b: no box, one 5x5 bike (false component
# on an object-free frame, spill 25 / 20000).
BOXES = {
    "a": [("People", 10, 10, 30, 50), ("People", 60, 10, 70, 40), ("Bus", 100, 60, 150, 90),
          ("Lamp", 180, 0, 190, 30)],
    "b": [],
}


def _masks(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    a = np.zeros((H, W), np.uint8)
    a[10:50, 10:30] = 2
    a[60:90, 100:150] = 1
    a[70:80, 160:180] = 1
    b = np.zeros((H, W), np.uint8)
    b[0:5, 0:5] = 3
    cv2.imwrite(str(folder / "a.png"), a)
    cv2.imwrite(str(folder / "b.png"), b)
    return folder


def _yolo(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    names = ["People", "Bus", "Lamp"]
    (folder / "classes.txt").write_text("\n".join(names) + "\n")  # one name per line, in id order
    for stem, boxes in BOXES.items():
        lines = [f"{names.index(n)} {(x0 + x1) / 2 / W} {(y0 + y1) / 2 / H} {(x1 - x0) / W} {(y1 - y0) / H}"
                 for n, x0, y0, x1, y1 in boxes]
        (folder / f"{stem}.txt").write_text("\n".join(lines))
    return folder


def _coco(path: Path, scale: int = 1) -> Path:
    # `scale`: labels drawn on a copy of the frame `scale` times larger than the masks.
    categories = [{"id": 7, "name": "People"}, {"id": 8, "name": "Bus"}, {"id": 9, "name": "Lamp"}]
    ids = {c["name"]: c["id"] for c in categories}
    images, annotations = [], []
    for image_id, (stem, boxes) in enumerate(BOXES.items(), 1):
        images.append({"id": image_id, "file_name": f"images/{stem}.jpg", "width": W * scale, "height": H * scale})
        annotations += [{"id": len(annotations) + 1, "image_id": image_id, "category_id": ids[n], "iscrowd": 0,
                         "bbox": [x0 * scale, y0 * scale, (x1 - x0) * scale, (y1 - y0) * scale]}
                        for n, x0, y0, x1, y1 in boxes]
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def _voc(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for stem, boxes in BOXES.items():
        # VOC corners are 1-based and inclusive: pixel columns x0..x1-1 are xmin=x0+1, xmax=x1.
        objects = "".join(f"<object><name>{n}</name><difficult>0</difficult><bndbox><xmin>{x0 + 1}</xmin>"
                          f"<ymin>{y0 + 1}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
                          for n, x0, y0, x1, y1 in boxes)
        (folder / f"{stem}.xml").write_text(f"<annotation><filename>{stem}.jpg</filename><size><width>{W}</width>"
                                            f"<height>{H}</height><depth>3</depth></size>{objects}</annotation>")
    return folder


WRITERS = {"yolo": lambda tmp: _yolo(tmp / "labels"), "coco": lambda tmp: _coco(tmp / "instances.json"),
           "voc": lambda tmp: _voc(tmp / "Annotations")}


def _check_known_scores(scores: dict) -> None:
    c = scores["classes"]
    assert (c["2"]["tp"], c["2"]["predicted"], c["2"]["boxes"]) == (1, 1, 2)  # person: TP, and a miss
    assert (c["1"]["tp"], c["1"]["predicted"], c["1"]["boxes"]) == (1, 2, 1)  # car: TP, and a false one
    assert (c["3"]["tp"], c["3"]["predicted"], c["3"]["boxes"]) == (0, 1, 0)  # bike: false, no box
    assert c["2"]["f1"] == pytest.approx(2 / 3) and c["1"]["f1"] == pytest.approx(2 / 3) and c["3"]["f1"] == 0
    assert scores["images"] == 2 and scores["empty_frames"] == 1 and scores["false_components_per_empty_frame"] == 1
    # Spill: mean over the two frames of each class's pixels outside its boxes, as a share of the frame.
    assert c["1"]["spill"] == pytest.approx((200 / (H * W) + 0) / 2)
    assert c["2"]["spill"] == 0
    assert c["3"]["spill"] == pytest.approx((0 + 25 / (H * W)) / 2)
    assert scores["spill"] == pytest.approx((200 + 25) / (H * W) / 2)


@pytest.mark.parametrize("layout", ["yolo", "coco", "voc"])
def test_every_layout_gives_the_known_scores(tmp_path, layout):
    labels = read_boxes(WRITERS[layout](tmp_path))
    assert labels.layout == layout  # told apart by what is there
    result = score_mask_folder(_masks(tmp_path / "masks"), labels, parse_class_map(CLASS_MAP))
    _check_known_scores(result.scores.to_json())
    assert dict(result.unmapped) == {"Lamp": 1}  # left out by the map, counted
    assert result.unlabelled_masks == [] and result.labelled_without_mask == []


@pytest.mark.parametrize("layout", ["yolo", "coco", "voc"])
def test_cli_reports_f1_spill_and_unmapped_classes(tmp_path, layout, capsys):
    out = tmp_path / "scores.json"
    argv = ["seg", "eval", "--masks", str(_masks(tmp_path / "masks")), "--boxes", str(WRITERS[layout](tmp_path)),
            "--layout", layout, "--class-map", *CLASS_MAP, "--name", "synthetic", "--json", str(out)]
    assert cli_main(argv) == 0
    result = json.loads(out.read_text())["synthetic"]
    _check_known_scores(result["all"])
    assert result["dataset"]["unmapped_boxes"] == {"Lamp": 1}
    assert result["dataset"]["class_map"] == {"people": "person", "bus": "car", "car": "car"}
    printed = capsys.readouterr().out
    assert "spill total" in printed and "| synthetic | all (2) | 0.67 | 0.67 | 0.00 |" in printed
    assert "0.56%" in printed  # total spill (200 + 25) / 20000 / 2
    assert "left out by the class map: Lamp 1" in printed


def test_several_datasets_in_one_call_are_reported_separately(tmp_path, capsys):
    masks = _masks(tmp_path / "masks")
    out = tmp_path / "scores.json"
    # The second dataset maps nothing to person: its people are left out, the rest is unchanged.
    argv = ["seg", "eval", "--masks", str(masks), "--boxes", str(_yolo(tmp_path / "yolo")), "--class-map", *CLASS_MAP,
            "--name", "one", "--masks", str(masks), "--boxes", str(_voc(tmp_path / "voc")),
            "--class-map", "bus=car", "--name", "two", "--json", str(out)]
    assert cli_main(argv) == 0
    result = json.loads(out.read_text())
    assert list(result) == ["one", "two"]
    _check_known_scores(result["one"]["all"])
    two = result["two"]["all"]["classes"]
    assert (two["2"]["boxes"], two["2"]["predicted"], two["2"]["spill"]) == (0, 1, pytest.approx(800 / (H * W) / 2))
    assert result["two"]["dataset"]["unmapped_boxes"] == {"Lamp": 1, "People": 2}
    printed = capsys.readouterr().out
    assert "### one:" in printed and "### two:" in printed


def test_dataset_options_need_their_masks_and_boxes(tmp_path):
    with pytest.raises(SystemExit):
        cli_main(["seg", "eval", "--boxes", str(tmp_path)])  # no --masks before it
    with pytest.raises(SystemExit):
        cli_main(["seg", "eval", "--masks", str(tmp_path), "--name", "x", "--name", "y"])
    # A class map for MSRS masks (no --boxes) is refused rather than silently unused.
    assert cli_main(["seg", "eval", "--masks", str(tmp_path), "--class-map", "People=person"]) == 2


def test_coco_boxes_scale_to_the_mask_and_crowds_are_left_out(tmp_path):
    path = _coco(tmp_path / "big.json", scale=2)  # labels drawn on a 400x200 copy of the frames
    data = json.loads(path.read_text())
    data["annotations"].append({"id": 99, "image_id": 2, "category_id": 7, "iscrowd": 1, "bbox": [0, 0, 50, 50]})
    path.write_text(json.dumps(data))
    labels = read_coco(path)
    assert labels.skipped == {"crowd": 1}
    result = score_mask_folder(_masks(tmp_path / "masks"), labels, parse_class_map(CLASS_MAP))
    _check_known_scores(result.scores.to_json())


def test_masks_without_labels_are_skipped_for_coco_but_empty_for_yolo(tmp_path):
    masks = _masks(tmp_path / "masks")
    cv2.imwrite(str(masks / "c.png"), np.full((H, W), 2, np.uint8))  # a whole-frame person, no labels
    coco = score_mask_folder(masks, read_coco(_coco(tmp_path / "i.json")), parse_class_map(CLASS_MAP))
    assert coco.unlabelled_masks == ["c"] and coco.scores.images == 2
    # YOLO writes no file for a frame without objects: the same mask is an object-free frame there.
    yolo = score_mask_folder(masks, read_yolo_folder(_yolo(tmp_path / "y")), parse_class_map(CLASS_MAP))
    assert yolo.unlabelled_masks == [] and yolo.scores.images == 3 and yolo.scores.empty_frames == 2


def test_yolo_class_names_from_msrs_style_classes_file_or_the_command_line(tmp_path):
    folder = tmp_path / "boxes" / "fusion"
    folder.mkdir(parents=True)
    (tmp_path / "boxes" / "classes.txt").write_text("0 person\n1 bicycle\n2 car\n")  # one folder up, `id name`
    (folder / "f.txt").write_text("1 0.5 0.5 0.1 0.2\n2 0.5 0.5 0.1 0.2\n")
    labels = read_yolo_folder(folder)
    assert [b.name for b in labels.images["f"].boxes] == ["bicycle", "car"]
    boxes, unmapped = labels.pixel_boxes("f", W, H, parse_class_map(None))  # default: names like ours
    assert boxes == [Box(3, 90, 40, 110, 60), Box(1, 90, 40, 110, 60)] and not unmapped
    named = read_yolo_folder(folder, ["a", "b", "c"])
    assert [b.name for b in named.images["f"].boxes] == ["b", "c"]


def test_class_map_errors():
    assert parse_class_map(["Motorcycle=bicycle", "truck=CAR"]) == {"motorcycle": 3, "truck": 1}
    with pytest.raises(ValueError, match="OURS one of"):
        parse_class_map(["People=pedestrian"])
    with pytest.raises(ValueError, match="mapped twice"):
        parse_class_map(["Bus=car", "bus=person"])


def _coco_one(annotation: dict) -> str:
    return json.dumps({"images": [{"id": 1, "file_name": "a.png"}], "categories": [{"id": 1, "name": "People"}],
                       "annotations": [annotation]})


_VOC_BAD_NUMBER = ("<annotation><object><name>People</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>x</xmax>"
                   "<ymax>4</ymax></bndbox></object></annotation>")
MALFORMED = [
    ("yolo", "a.txt", "0 0.5 0.5 0.1 0.1\n0 0.5 x 0.1 0.1\n", r"a\.txt:2: not numbers"),
    ("yolo", "a.txt", "0 0.5 0.5\n", r"a\.txt:1: expected 'class cx cy w h'"),
    ("coco", "i.json", '{"images": [], "categories": []', r"i\.json: not a readable JSON"),
    ("coco", "i.json", _coco_one({"image_id": 1, "category_id": 1}),
     r"annotations\[0\]: needs image_id, category_id and bbox"),
    ("coco", "i.json", _coco_one({"image_id": 2, "category_id": 1, "bbox": [0, 0, 1, 1]}),
     r"image_id 2 is not in 'images'"),
    ("coco", "i.json", _coco_one({"image_id": 1, "category_id": 1, "bbox": [0, 0, 1]}),
     r"bbox must be \[x, y, width, height\]"),
    ("voc", "a.xml", "<annotation><object><name>People</name></object></annotation>",
     r"a\.xml: object 1 \(People\): missing <bndbox>"),
    ("voc", "a.xml", _VOC_BAD_NUMBER, r"a\.xml: object 1 <xmax>: not a number"),
    ("voc", "a.xml", "<annotation><object>", r"a\.xml: not a readable VOC XML"),
]


@pytest.mark.parametrize(("layout", "file_name", "text", "message"), MALFORMED)
def test_malformed_files_give_an_error_naming_file_and_place(tmp_path, layout, file_name, text, message, caplog):
    folder = tmp_path / "labels"
    folder.mkdir()
    (folder / file_name).write_text(text)
    source = folder / "i.json" if layout == "coco" else folder
    with pytest.raises(BoxFileError, match=message):
        read_boxes(source, layout)
    # The CLI says the same and fails instead of scoring what it could read.
    assert cli_main(["seg", "eval", "--masks", str(_masks(tmp_path / "masks")), "--boxes", str(source),
                     "--layout", layout]) == 1
    assert any(r.levelname == "ERROR" and "labels" in r.getMessage() for r in caplog.records)


def test_a_folder_that_is_no_label_set_is_refused(tmp_path):
    with pytest.raises(BoxFileError, match="neither a COCO"):
        read_boxes(tmp_path)
    with pytest.raises(BoxFileError, match="no VOC .xml"):
        read_voc(tmp_path)


def test_spill_fractions_by_construction():
    ids = np.zeros((10, 10), np.uint8)
    ids[0:4, 0:4] = 2  # 16 person pixels, 8 of them inside the 2-row person box
    ids[9, 9] = 1  # one car pixel, inside a car box
    spill = spill_fractions(ids, [Box(2, 0, 0, 4, 2), Box(1, 8, 8, 10, 10), Box(3, 0, 0, 10, 10)])
    assert spill == {1: 0.0, 2: pytest.approx(8 / 100), 3: 0.0}
    assert not math.isnan(sum(spill.values()))
