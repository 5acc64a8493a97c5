"""Component-vs-box F1 at IoU 0.5 and the box-target builder, on synthetic masks whose answers are counted
by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sage_ros.evaluation.boxes import Box
from sage_ros.evaluation.components import (
    IGNORE,
    Detection,
    box_iou,
    components_to_detections,
    f1_scores,
    match_components,
)
from sage_ros.training.segmentation.data import build_target


def test_box_iou_known_values():
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert box_iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0


def test_components_become_boxes_with_probability_scores():
    ids = np.zeros((20, 30), np.uint8)
    ids[2:6, 3:8] = 2  # person 4x5
    ids[10:18, 10:25] = 1  # car 8x15
    ids[0, 29] = 1  # a 1-pixel speck, dropped by min_area
    probs = np.zeros((4, 20, 30), np.float32)
    probs[2, 2:6, 3:8] = 0.8
    probs[1, 10:18, 10:25] = 0.6
    dets = components_to_detections(ids, probs, [1, 2, 3], min_area=4)
    assert sorted(dets, key=lambda d: d.class_id) == [
        Detection(1, pytest.approx(0.6), 10, 10, 25, 18),
        Detection(2, pytest.approx(0.8), 3, 2, 8, 6),
    ]
    # Without probabilities the score ranks by size within the class.
    dets = components_to_detections(ids, None, min_area=1)
    scores = {(d.class_id, d.x0): d.score for d in dets}
    assert scores[(1, 10)] == 1.0 and scores[(1, 29)] == pytest.approx(1 / 120)


def _scene() -> tuple[np.ndarray, list[Box]]:
    ids = np.zeros((100, 200), np.uint8)
    ids[10:50, 10:30] = 2  # person exactly on its box
    ids[60:90, 100:150] = 1  # car, slightly smaller than its box (IoU 0.86)
    ids[10:30, 160:170] = 2  # a person split in two components: top half ...
    ids[32:50, 160:170] = 2  # ... and bottom half: neither reaches IoU 0.5 alone? top: 0.5 exactly
    ids[95:99, 0:5] = 3  # a bike where there is none: false component
    boxes = [
        Box(2, 10, 10, 30, 50),
        Box(1, 100, 58, 152, 92),
        Box(2, 160, 10, 170, 50),
        Box(2, 60, 10, 70, 40),  # a person nobody predicted
    ]
    return ids, boxes


def test_components_matched_one_to_one_at_iou_half():
    ids, boxes = _scene()
    dets = components_to_detections(ids, None, (1, 2, 3), min_area=6)
    assert sorted((d.class_id, d.x0, d.y0, d.x1, d.y1) for d in dets) == [
        (1, 100, 60, 150, 90), (2, 10, 10, 30, 50), (2, 160, 10, 170, 30), (2, 160, 32, 170, 50), (3, 0, 95, 5, 99),
    ]
    # Person: the exact one matches; the split person's top half has IoU 200/400 = 0.5 -> matches,
    # the bottom half (180/400) is a false component; the unpredicted person is a miss.
    assert match_components(dets, boxes, 2) == (2, 3, 3)
    assert match_components(dets, boxes, 1) == (1, 1, 1)
    assert match_components(dets, boxes, 3) == (0, 1, 0)


def test_f1_per_class_counts_and_empty_frames():
    ids, boxes = _scene()
    empty = np.zeros((100, 200), np.uint8)
    empty[0:10, 0:10] = 2
    empty[50:60, 50:60] = 1
    dets = [components_to_detections(m, None, (1, 2, 3)) for m in (ids, empty, np.zeros_like(ids))]
    scores = f1_scores(dets, [boxes, [], []])
    person, car, bike = scores.per_class[2], scores.per_class[1], scores.per_class[3]
    assert (person.tp, person.predicted, person.boxes) == (2, 4, 3)
    assert person.precision == pytest.approx(0.5) and person.recall == pytest.approx(2 / 3)
    assert person.f1 == pytest.approx(2 * 2 / 7)
    assert (car.tp, car.predicted, car.boxes) == (1, 2, 1) and car.f1 == pytest.approx(2 / 3)
    assert bike.f1 == 0.0 and math.isnan(bike.recall)
    assert scores.mean_f1 == pytest.approx((4 / 7 + 2 / 3 + 0.0) / 3)
    assert scores.empty_frames == 2
    assert scores.false_components_per_empty_frame == pytest.approx(1.0)  # 2 components over 2 empty frames
    assert scores.components_per_image == pytest.approx(7 / 3)
    assert scores.boxes_per_image == pytest.approx(4 / 3)


def test_diagonal_pixels_are_one_component():
    ids = np.zeros((10, 10), np.uint8)
    for k in range(6):
        ids[2 + k, 2 + k] = 2  # a diagonal line: one 8-connected object, six 4-connected specks
    assert components_to_detections(ids, None, (2,), min_area=6) == [Detection(2, 1.0, 2, 2, 8, 8)]


def test_two_components_on_one_box_count_one_match_and_one_false():
    box = [Box(2, 0, 0, 10, 20)]
    halves = [Detection(2, 1.0, 0, 0, 10, 18), Detection(2, 1.0, 0, 2, 10, 20)]  # IoU 0.9 each with the box
    assert match_components(halves, box, 2) == (1, 2, 1)


def test_a_class_neither_predicted_nor_labelled_is_left_out_of_the_mean():
    scores = f1_scores([[Detection(2, 1.0, 0, 0, 10, 10)]], [[Box(2, 0, 0, 10, 10)]])
    assert math.isnan(scores.per_class[1].f1) and math.isnan(scores.per_class[3].f1)
    assert scores.mean_f1 == 1.0  # person alone: cars and bikes did not occur


def test_boxes_of_unscored_classes_leave_a_frame_empty():
    # A box of a class outside the scored ones (here 4) is not an object the frame is scored on.
    scores = f1_scores([[Detection(1, 1.0, 0, 0, 5, 5)]], [[Box(4, 20, 20, 30, 30)]])
    assert scores.empty_frames == 1 and scores.false_components_per_empty_frame == 1.0
    assert scores.boxes_per_image == 0.0


def test_filled_boxes_score_f1_one():
    boxes = [Box(2, 10, 10, 20, 40), Box(1, 50, 50, 120, 90), Box(3, 150, 20, 190, 60)]
    ids = np.zeros((100, 200), np.uint8)
    for b in boxes:
        ids[b.y0:b.y1, b.x0:b.x1] = b.class_id
    scores = f1_scores([components_to_detections(ids, None)], [boxes])
    assert scores.mean_f1 == 1.0 and math.isnan(scores.false_components_per_empty_frame)


def test_box_target_has_ignore_ring_and_smaller_box_wins():
    boxes = np.array([[1, 0.1, 0.1, 0.9, 0.9], [2, 0.4, 0.4, 0.6, 0.8]], np.float32)  # car, person inside
    target = build_target(boxes, (20, 20), band=0.5)
    assert target[0, 0] == 0 and target[19, 19] == 0  # outside every box: background
    assert target[1, 1] == IGNORE and target[2, 2] == IGNORE  # centres 1.5, 2.5: on the car's edge ring
    assert target[5, 5] == 1  # car core
    assert target[12, 10] == 2  # person core, painted over the car
    assert target[8, 10] == 1  # the person's edge ring over the car's core: a sure label stays
    assert target[17, 10] == IGNORE  # centre 17.5, 0.5 above the car's bottom edge: its ring
    assert not ((target != 0) & (target != 1) & (target != 2) & (target != IGNORE)).any()
    assert build_target(np.zeros((0, 5), np.float32), (4, 4)).max() == 0


def test_separation_lines_split_touching_objects_of_one_class_only():
    # Two cars side by side, the second overlapping the first; a person over the first car.
    boxes = np.array([[1, 0.05, 0.2, 0.55, 0.8], [1, 0.45, 0.3, 0.85, 0.7], [2, 0.1, 0.25, 0.2, 0.75]],
                     np.float32)
    plain = build_target(boxes, (20, 40), band=0.5)
    lines = np.zeros((20, 40), bool)
    split = build_target(boxes, (20, 40), band=0.5, separation=1.0, lines=lines)
    cars = components_to_detections((plain == 1).astype(np.uint8), None, (1,), min_area=1)
    assert len(cars) == 1  # filled boxes: the two cars merge into one component
    cars = components_to_detections((split == 1).astype(np.uint8), None, (1,), min_area=1)
    assert len(cars) == 2  # with the line: one component per car
    # The line is one pixel column just left of the second car (x0 = 18.0 px), on the first car's pixels.
    assert lines[10, 17] and split[10, 17] == 0 and not lines[10, 18] and split[10, 18] == 1
    # No line around the person: it is another class, so it is a separate component anyway.
    assert not lines[:, 3].any() and not lines[:, 8].any()
    assert split[10, 5] == 2 and (split[lines] == 0).all()


def test_gap_lines_keep_facing_objects_of_one_class_apart():
    # Two people side by side 0.5 px apart (at 40x20), a third far away, a car touching the second person,
    # and two people one above the other with a 1 px gap.
    boxes = np.array([[2, 0.10, 0.10, 0.30, 0.90], [2, 0.3125, 0.10, 0.50, 0.90], [2, 0.80, 0.10, 0.90, 0.90],
                      [1, 0.50, 0.30, 0.70, 0.70]], np.float32)
    plain = build_target(boxes, (20, 40), band=0.5)
    lines = np.zeros((20, 40), bool)
    split = build_target(boxes, (20, 40), band=0.5, lines=lines, gap_lines=1.5)
    # Without the line the 0.5 px gap is IGNORE only: nothing tells the network the two people are two.
    assert plain[10, 12] == IGNORE and not (plain[3:17, 12] == 0).any()
    # With it: one background column at the middle of the gap (x = 12.25 px -> pixel 12), over the shared
    # rows, marked for the heavier loss weight.
    assert (split[3:17, 12] == 0).all() and lines[3:17, 12].all()
    # Only there: not towards the far person (gap 12 px > 1.5), not between the person and the car (classes
    # differ), and everything else is as without gap lines.
    assert lines.sum() == lines[:, 12].sum()
    assert np.array_equal(np.where(lines, plain, split), plain)
    stacked = np.array([[2, 0.1, 0.05, 0.3, 0.45], [2, 0.1, 0.50, 0.3, 0.95]], np.float32)
    lines = np.zeros((20, 40), bool)
    split = build_target(stacked, (20, 40), band=0.5, lines=lines, gap_lines=1.5)
    assert lines[9, 5:11].all() and (split[9, 5:11] == 0).all() and lines.sum() == lines[9].sum()
