"""YOLO box parsing and box -> pseudo-mask on synthetic boxes whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from sage_ros.training.segmentation.boxes import (
    IGNORE,
    MSRS_YOLO_TO_ID,
    Box,
    BoxFileError,
    parse_yolo,
    pseudo_mask,
    read_yolo,
)


def test_parse_yolo_pixels_and_class_map():
    # person (YOLO 0) centred at (50, 25) of a 100x50 image, 20 px wide and 10 px high.
    boxes = parse_yolo("0 0.5 0.5 0.2 0.2\n\n2 0.1 0.1 0.1 0.2\n", 100, 50, MSRS_YOLO_TO_ID)
    assert boxes == [Box(2, 40, 20, 60, 30), Box(1, 5, 0, 15, 10)]


def test_parse_yolo_clips_skips_unknown_and_degenerate():
    boxes = parse_yolo("2 0.98 0.5 0.2 0.2\n7 0.5 0.5 0.1 0.1\n0 0.5 0.5 0 0.1\n", 100, 50, MSRS_YOLO_TO_ID)
    assert boxes == [Box(1, 88, 20, 100, 30)]


def test_parse_yolo_bad_line_names_file_and_line():
    with pytest.raises(BoxFileError, match="f.txt:2"):
        parse_yolo("0 0.5 0.5 0.1 0.1\n0 0.5 x 0.1 0.1\n", 10, 10, source="f.txt")
    with pytest.raises(BoxFileError, match="expected"):
        parse_yolo("0 0.5 0.5\n", 10, 10)


def test_read_yolo_missing_file_means_no_boxes(tmp_path):
    assert read_yolo(tmp_path / "none.txt", 10, 10) == []
    (tmp_path / "a.txt").write_text("1 0.5 0.5 0.5 0.5\n")
    assert read_yolo(tmp_path / "a.txt", 10, 10) == [Box(3, 2, 2, 8, 8)]


def test_box_mode_fills_boxes_and_smaller_box_wins():
    car = Box(1, 10, 10, 50, 40)
    person = Box(2, 20, 15, 30, 45)  # overlaps the car, smaller: drawn on top
    mask = pseudo_mask([person, car], (60, 80), mode="box")
    assert mask[12, 12] == 1 and mask[20, 25] == 2 and mask[42, 25] == 2
    assert mask[5, 5] == 0 and mask[42, 45] == 0
    assert (mask == 2).sum() == person.area
    assert (mask == 1).sum() == car.area - 10 * 25  # the person covers 10x25 of the car
    assert not (mask == IGNORE).any()


def test_thermal_mode_keeps_the_warm_region_and_ignores_the_rest_of_the_box():
    ir = np.full((60, 80), 40, np.uint8)
    ir[20:36, 30:38] = 200  # a warm person, 16x8, inside a looser 30x20 box
    box = Box(2, 24, 12, 44, 42)
    mask = pseudo_mask([box], ir.shape, ir, mode="thermal")
    assert (mask == 2).sum() == 16 * 8 and (mask[20:36, 30:38] == 2).all()
    assert (mask == IGNORE).sum() == box.area - 16 * 8
    assert (mask[:12] == 0).all() and (mask[:, :24] == 0).all()


def test_thermal_mode_falls_back_to_the_box_without_contrast_or_with_a_tiny_region():
    flat = np.full((40, 40), 90, np.uint8)
    flat[12, 12] = 95  # a single slightly warmer pixel: no plausible object
    box = Box(1, 5, 5, 25, 25)
    mask = pseudo_mask([box], flat.shape, flat, mode="thermal")
    assert (mask == 1).sum() == box.area and not (mask == IGNORE).any()
    speck = np.full((40, 40), 30, np.uint8)
    speck[10:12, 10:12] = 250  # 4 of 400 px warm: below the minimum fill
    mask = pseudo_mask([box], speck.shape, speck, mode="thermal")
    assert (mask == 1).sum() == box.area


def test_labelled_pixels_never_become_ignore():
    ir = np.full((50, 50), 30, np.uint8)
    ir[10:30, 10:30] = 220  # a warm car filling most of its box
    ir[25:35, 26:30] = 220
    car = Box(1, 8, 8, 32, 32)
    person = Box(2, 24, 22, 34, 38)  # overlaps the car's warm corner; its own cold pixels -> IGNORE
    mask = pseudo_mask([car, person], ir.shape, ir, mode="thermal")
    assert mask[15, 15] == 1
    assert mask[28, 27] == 2
    assert mask[24, 25] in (1, 2)  # a warm pixel both boxes claim is labelled, not IGNORE
    assert mask[36, 25] == IGNORE  # cold pixel of the person box, no other box


def test_thermal_mode_needs_the_infrared_image():
    with pytest.raises(ValueError, match="infrared"):
        pseudo_mask([Box(1, 0, 0, 2, 2)], (4, 4), None, mode="thermal")
    with pytest.raises(ValueError, match="mode"):
        pseudo_mask([], (4, 4), mode="polygon")
