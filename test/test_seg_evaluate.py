"""AP50 from connected components and mIoU, on synthetic cases with hand-computed answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sage_ros.training.segmentation.boxes import IGNORE, Box
from sage_ros.training.segmentation.evaluate import (
    Detection,
    average_precision,
    box_iou,
    components_to_detections,
    confusion_matrix,
    iou_per_class,
    score_images,
)


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


def test_perfect_detection_gives_ap_one_and_a_miss_halves_recall():
    gts = [[Box(2, 0, 0, 10, 10)], [Box(2, 20, 20, 30, 30)]]
    perfect = [[Detection(2, 0.9, 0, 0, 10, 10)], [Detection(2, 0.8, 21, 21, 30, 30)]]
    assert average_precision(perfect, gts, 2) == (pytest.approx(1.0), 2)
    one_found = [[Detection(2, 0.9, 0, 0, 10, 10)], []]
    assert average_precision(one_found, gts, 2)[0] == pytest.approx(0.5)


def test_ap_with_a_confident_false_positive_and_a_duplicate():
    gts = [[Box(1, 0, 0, 10, 10), Box(1, 50, 50, 60, 60)]]
    dets = [[
        Detection(1, 0.95, 100, 100, 110, 110),  # FP, precision 0 at rank 1
        Detection(1, 0.9, 0, 0, 10, 10),  # TP: recall 0.5 at precision 1/2
        Detection(1, 0.8, 1, 1, 10, 10),  # duplicate of a matched box: FP
        Detection(1, 0.7, 50, 50, 61, 60),  # TP: recall 1.0 at precision 2/4
    ]]
    # Envelope: precision 0.5 over recall (0, 0.5] and 0.5 over (0.5, 1.0] -> AP 0.5.
    assert average_precision(dets, gts, 1)[0] == pytest.approx(0.5)
    # Below IoU 0.5 is a miss: a box shifted by 6 of 10 px overlaps 40/160.
    shifted = [[Detection(1, 0.9, 6, 0, 16, 10)]]
    assert average_precision(shifted, [[Box(1, 0, 0, 10, 10)]], 1)[0] == 0.0


def test_ap_is_nan_without_ground_truth_and_class_must_match():
    gts = [[Box(3, 0, 0, 10, 10)]]
    dets = [[Detection(2, 0.9, 0, 0, 10, 10)]]
    ap, n = average_precision(dets, gts, 2)
    assert math.isnan(ap) and n == 0
    assert average_precision(dets, gts, 3) == (0.0, 1)
    with pytest.raises(ValueError):
        average_precision(dets, [], 2)


def test_confusion_and_miou_skip_ignore():
    target = np.array([[0, 0, 1, 1], [2, 2, IGNORE, IGNORE]], np.uint8)
    pred = np.array([[0, 1, 1, 1], [2, 0, 3, 3]], np.uint8)
    cm = confusion_matrix(pred, target, 4)
    assert cm.sum() == 6 and cm[0, 0] == 1 and cm[0, 1] == 1 and cm[1, 1] == 2 and cm[2, 0] == 1
    iou = iou_per_class(cm)
    assert iou[0] == pytest.approx(1 / 3) and iou[1] == pytest.approx(2 / 3) and iou[2] == pytest.approx(0.5)
    assert math.isnan(iou[3])  # class 3 only predicted on ignored pixels


def test_score_images_means_over_classes_with_boxes():
    ids = np.zeros((20, 20), np.uint8)
    ids[2:8, 2:8] = 1
    dets = [components_to_detections(ids, None, [1, 2, 3])]
    gts = [[Box(1, 2, 2, 8, 8), Box(2, 12, 12, 18, 18)]]
    scores = score_images(dets, gts, [ids], [ids], 4)
    assert scores.ap50[1] == 1.0 and scores.ap50[2] == 0.0 and math.isnan(scores.ap50[3])
    assert scores.mean_ap50 == pytest.approx(0.5)
    assert scores.miou == pytest.approx(1.0) and scores.n_gt == {1: 1, 2: 1, 3: 0}
