"""Boxes in bags (vision_msgs/Detection2DArray) and eval-bag's masks-vs-boxes scoring and contact sheet.

The end-to-end tests run the shipped pipeline (released student, then the shipped segmentation network on the
fused image) on the real MSRS pairs of the `msrs_dir` fixture (fetched, sha256-checked, with their human boxes).
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from sage_ros.bags.dataset_bag import RGB_TOPIC, MakeBagOptions, write_dataset_bag
from sage_ros.bags.detections import (
    BOXES_TOPIC,
    DETECTIONS_TYPE,
    PAIR_NAME_TOPIC,
    decode_detections,
    detections_message,
)
from sage_ros.bags.messages import deserialize, image_message, stamp_of
from sage_ros.bags.reader import open_bag
from sage_ros.bags.writer import BagWriter
from sage_ros.cli import main as cli_main
from sage_ros.evaluation.components import (
    MSRS_YOLO_TO_ID,
    Box,
    components_to_detections,
    f1_scores,
    parse_yolo,
)
from sage_ros.evaluation.runner import EvalOptions, EvalResult, _read_boxes
from sage_ros.model.classes import class_table
from sage_ros.pairing.datasets import discover

NAMES = class_table("msrs").names  # unlabelled, car, person, bike, ...
T0 = 1_700_000_000 * 10**9


def _synthetic_dataset(root: Path, count: int = 3, size: tuple[int, int] = (40, 30)) -> None:
    w, h = size
    (root / "ir").mkdir(parents=True)
    (root / "vi").mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        cv2.imwrite(str(root / "ir" / f"p{i}.png"), rng.integers(0, 255, (h, w), dtype=np.uint8))
        cv2.imwrite(str(root / "vi" / f"p{i}.png"), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))


# ---------------------------------------------------------------- (a) boxes through a real bag on disk


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_boxes_round_trip_through_a_bag(tmp_path, storage):
    root = tmp_path / "data"
    _synthetic_dataset(root)
    texts = {
        "p0": "0 0.5 0.5 0.25 0.5\n2 0.15 0.2 0.3 0.4\n1 0.9 0.9 0.2 0.2\n",  # person, car, bicycle
        "p1": "",  # a frame without objects: an empty array
        # p2: no box file at all: no message
    }
    box_dir = tmp_path / "boxes"
    box_dir.mkdir()
    for name, text in texts.items():
        (box_dir / f"{name}.txt").write_text(text)

    def boxes(name, width, height):
        path = box_dir / f"{name}.txt"
        return parse_yolo(path.read_text(), width, height, MSRS_YOLO_TO_ID) if path.is_file() else None

    options = MakeBagOptions(storage=storage, jitter_ms=3.0, pair_name_topic=PAIR_NAME_TOPIC)
    summary = write_dataset_bag(discover(root), tmp_path / "bag", options, boxes=boxes)
    assert summary.frames == 3 and not summary.box_errors
    source = open_bag(tmp_path / "bag")
    assert source.storage == storage
    assert source.topics[BOXES_TOPIC] == DETECTIONS_TYPE
    assert source.counts[BOXES_TOPIC] == 2 and source.counts[PAIR_NAME_TOPIC] == 3
    rgb = {m.log_time_ns: deserialize(m.raw, m.msgtype) for m in source.messages([RGB_TOPIC])}
    rgb_by_stamp = {stamp_of(msg): msg for msg in rgb.values()}
    decoded = []
    for m in source.messages([BOXES_TOPIC]):
        msg = deserialize(m.raw, m.msgtype)
        assert msg.header.frame_id == "rgb_camera" and stamp_of(msg) in rgb_by_stamp and m.log_time_ns == stamp_of(msg)
        decoded.append(decode_detections(msg, NAMES))
    names = [deserialize(m.raw, m.msgtype).data for m in source.messages([PAIR_NAME_TOPIC])]
    name_times = [m.log_time_ns for m in source.messages([PAIR_NAME_TOPIC])]
    source.close()
    assert names == ["p0", "p1", "p2"] and name_times == sorted(rgb_by_stamp)
    assert len(decoded) == 2 and decoded[1].boxes == [] and not decoded[0].unknown_classes
    expected = parse_yolo(texts["p0"], 40, 30, MSRS_YOLO_TO_ID)
    assert [(b.class_id, *b.as_xyxy()) for b in decoded[0].boxes] == [(b.class_id, *b.as_xyxy()) for b in expected]
    assert [b.class_id for b in expected] == [2, 1, 3]  # person, car, bike in MSRS ids


def test_decode_accepts_numeric_ids_and_reports_unknown_classes():
    boxes = [Box(1, 0, 0, 4, 4), Box(7, 1, 1, 3, 3)]
    msg = detections_message(boxes, T0, "cam", ["bg", "car"])  # id 7 has no name: written as "7"
    msg.detections[0].results[0].hypothesis.class_id = "CAR"
    extra = detections_message([Box(2, 0, 0, 2, 2)], T0, "cam", ["bg", "car", "truck"]).detections[0]
    msg.detections.append(extra)
    out = decode_detections(msg, ["bg", "car"])
    assert [b.class_id for b in out.boxes] == [1, 7] and out.unknown_classes == ["truck"]
    assert out.stamp_ns == T0


# ---------------------------------------------------------------- (b) scoring with known answers, model free


def test_scores_of_known_shapes_read_from_a_bag(tmp_path):
    """Mask components vs boxes that went through a bag: every count is known by construction."""
    mask0 = np.zeros((60, 80), np.uint8)
    mask0[10:30, 10:30] = 1  # car, exactly its box: IoU 1
    mask0[40:50, 40:50] = 2  # person, box twice as wide: IoU 0.5 -> a match (threshold is >= 0.5)
    mask0[5:8, 60:63] = 3  # bike, 9 px, no box: a false component
    mask0[55:57, 0:2] = 1  # 4 px: speckle, not a component (min area 6)
    mask1 = np.zeros((60, 80), np.uint8)
    mask1[0:10, 0:10] = 2  # a person where nobody is: false component on an object-free frame
    truth0 = [Box(1, 10, 10, 30, 30), Box(2, 40, 40, 60, 50), Box(2, 0, 40, 5, 45)]  # 2nd person missed
    bag = tmp_path / "bag"
    with BagWriter(bag) as writer:
        for k, truth in enumerate((truth0, [])):
            writer.write(BOXES_TOPIC, T0 + k, detections_message(truth, T0 + k, "cam", NAMES), DETECTIONS_TYPE)
    source = open_bag(bag)
    result = EvalResult(bag, "mcap", False, {}, "", True, EvalOptions())
    boxes = _read_boxes(source, BOXES_TOPIC, result, NAMES)
    source.close()
    assert not result.problem_counts
    dets = [components_to_detections(m, None, (1, 2, 3)) for m in (mask0, mask1)]
    scores = f1_scores(dets, [boxes[T0], boxes[T0 + 1]])
    car, person, bike = (scores.per_class[c] for c in (1, 2, 3))
    assert (car.tp, car.predicted, car.boxes) == (1, 1, 1) and car.f1 == 1.0
    assert (person.tp, person.predicted, person.boxes) == (1, 2, 2) and person.f1 == 0.5
    assert (bike.tp, bike.predicted, bike.boxes) == (0, 1, 0) and bike.f1 == 0.0
    assert scores.mean_f1 == pytest.approx(0.5)
    assert scores.components_per_image == 2.0 and scores.boxes_per_image == 1.5
    assert scores.empty_frames == 1 and scores.false_components_per_empty_frame == 1.0


# ---------------------------------------------------------------- end to end on real MSRS pairs

@pytest.fixture(scope="module")
def msrs_subset(msrs_dir: Path, tmp_path_factory) -> dict:
    """The eval pairs of the fetched MSRS pairs with their fusion boxes (scored), and the pairs that have no box
    file (not scored), in a folder of their own whose splits.csv marks the latter 'extra'."""
    with (msrs_dir / "splits.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    boxes = msrs_dir / "boxes" / "fusion"
    scored = [r["name"] for r in rows if r["split"] == "eval" and (boxes / f"{r['name']}.txt").is_file()]
    unboxed = [r["name"] for r in rows if not (boxes / f"{r['name']}.txt").is_file()]
    assert scored and unboxed, "the fetched pairs include eval pairs with boxes and pairs without a box file"
    root = tmp_path_factory.mktemp("msrs")
    for d in ("ir", "vi", "boxes/fusion"):
        (root / d).mkdir(parents=True)
    lines = ["name,split,light"]
    light = {r["name"]: r["light"] for r in rows}
    for name in (*scored, *unboxed):
        for d in ("ir", "vi"):
            shutil.copy(msrs_dir / d / f"{name}.png", root / d / f"{name}.png")
        if name in scored:
            shutil.copy(boxes / f"{name}.txt", root / "boxes" / "fusion" / f"{name}.txt")
        lines.append(f"{name},{'eval' if name in scored else 'extra'},{light[name]}")
    (root / "splits.csv").write_text("\n".join(lines) + "\n")
    empty = [n for n in scored if not (boxes / f"{n}.txt").read_text().strip()]
    return {"root": root, "scored": scored, "unboxed": unboxed, "empty": empty}


@pytest.fixture(scope="module")
def seg_model(checkpoint_path: Path) -> Path:
    """The released checkpoint: `--model sage` exports it (once, into the models cache); segmentation is the
    shipped network after fusion, in every pipeline."""
    return checkpoint_path


def _backend(checkpoint: Path) -> list[str]:
    return ["--model", "sage", "--weights", str(checkpoint), "--backend", "onnxruntime", "--threads", "1"]


@pytest.fixture(scope="module")
def evaluated(msrs_subset, seg_model, tmp_path_factory):
    work = tmp_path_factory.mktemp("eval_boxes")
    bag = work / "bag"
    root = msrs_subset["root"]
    assert cli_main(["make-bag", str(root), "--out", str(bag), "--boxes", str(root / "boxes" / "fusion"),
                     "--jitter-ms", "3"]) == 0
    assert cli_main(["eval-bag", str(bag), "--out", str(work / "eval"), *_backend(seg_model)]) == 0
    return work


def test_eval_bag_boxes_equal_seg_eval_masks(evaluated, msrs_subset, seg_model):
    masks = evaluated / "masks"
    root, scored, unboxed = msrs_subset["root"], msrs_subset["scored"], msrs_subset["unboxed"]
    assert cli_main(["fuse", "--ir", str(root / "ir"), "--vis", str(root / "vi"),
                     "--out", str(evaluated / "fused"), "--masks", str(masks), *_backend(seg_model)]) == 0
    seg_json = evaluated / "seg.json"
    assert cli_main(["seg", "eval", "--msrs", str(root), "--masks", str(masks), "--split", "eval",
                     "--json", str(seg_json)]) == 0
    (reference,) = json.loads(seg_json.read_text()).values()
    report = json.loads((evaluated / "eval" / "report.json").read_text())
    boxes = report["masks_vs_boxes"]
    assert boxes["pairs_scored"] == len(scored) and boxes["pairs_without_boxes"] == len(unboxed)
    assert set(boxes["scores"]) == set(reference) == {"all", "day", "night"}
    for group, expected in reference.items():
        got = boxes["scores"][group]
        for key in ("images", "mean_f1", "components_per_image", "boxes_per_image", "empty_frames",
                    "false_components_per_empty_frame"):
            want = expected[key]
            assert got[key] == (None if isinstance(want, float) and math.isnan(want) else want), (group, key)
        for cid, counts in expected["classes"].items():
            mine = got["classes"][NAMES[int(cid)]]
            assert (mine["tp"], mine["predicted"], mine["boxes"]) == (counts["tp"], counts["predicted"],
                                                                      counts["boxes"]), (group, cid)
    # The empty box files were scored as object-free frames (the fetched pairs include one).
    assert reference["all"]["empty_frames"] == len(msrs_subset["empty"]) >= 1
    per_pair = {p["name"]: p for p in report["pairs"]}
    assert set(per_pair) == {*scored, *unboxed} and not any("boxes" in per_pair[n] for n in unboxed)
    md = (evaluated / "eval" / "report.md").read_text()
    assert "## Masks vs boxes" in md
    assert f"Pairs scored: {len(scored)}; pairs without a boxes message: {len(unboxed)}" in md
    # The boxes and names are carried into the output bag with the inputs.
    output = open_bag(evaluated / "eval" / "fused_bag")
    assert {BOXES_TOPIC, PAIR_NAME_TOPIC, "/segmentation/mask"} <= set(output.topics)
    output.close()


def test_contact_sheet_has_overlay_column_and_a_row_per_pair(evaluated):
    sheet = cv2.imread(str(evaluated / "eval" / "contact_sheet.png"))
    # The 3 best pairs + the (up to) 3 worst that are not among them; IR | visible | fused | class overlay.
    from sage_ros.evaluation.runner import THUMB_WIDTH

    pairs = len(json.loads((evaluated / "eval" / "report.json").read_text())["pairs"])
    thumb_h = round(480 * THUMB_WIDTH / 640)
    assert sheet.shape == (min(pairs, 2 * 3) * (thumb_h + 2), 4 * THUMB_WIDTH, 3)
    # The overlay column differs from the fused column where the model found objects.
    fused = sheet[:, 2 * THUMB_WIDTH : 3 * THUMB_WIDTH].astype(int)
    overlay = sheet[:, 3 * THUMB_WIDTH :].astype(int)
    assert np.abs(fused - overlay).sum() > 0


def test_bag_without_boxes_topic_says_so_and_exits_0(msrs_subset, seg_model, tmp_path, capsys):
    bag = tmp_path / "bag"
    assert cli_main(["make-bag", str(msrs_subset["root"]), "--split", "eval", "--limit", "1", "--out", str(bag),
                     "--storage", "sqlite3", "--pair-names-topic", ""]) == 0
    source = open_bag(bag)
    assert BOXES_TOPIC not in source.topics and PAIR_NAME_TOPIC not in source.topics
    source.close()
    out = tmp_path / "eval"
    assert cli_main(["eval-bag", str(bag), "--out", str(out), "--no-metrics", *_backend(seg_model)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["masks_vs_boxes"] == {
        "note": f"no boxes topic ({BOXES_TOPIC}) in the bag: masks not scored against boxes"
    }
    assert "no boxes topic" in (out / "report.md").read_text()
    assert "masks vs boxes: no boxes topic" in capsys.readouterr().out
    assert report["pairs"][0].get("name") is None  # no names topic: the stamp stands in on the sheet


def test_unreadable_boxes_message_is_a_counted_problem(tmp_path):
    bag = tmp_path / "bag"
    with BagWriter(bag) as writer:
        writer.write(BOXES_TOPIC, T0, image_message(np.zeros((2, 2), np.uint8), "mono8", T0, "cam"))
    source = open_bag(bag)
    result = EvalResult(bag, "mcap", False, {}, "", True, EvalOptions())
    assert _read_boxes(source, BOXES_TOPIC, result, NAMES) == {}
    source.close()
    assert result.problem_counts["boxes"] == 1
