"""YOLO box parsing on synthetic boxes whose answer is known."""

from __future__ import annotations

import pytest

from sage_ros.evaluation.boxes import MSRS_YOLO_TO_ID, Box, BoxFileError, parse_yolo, pixel_box, read_yolo


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
    # A sixth column (a detector's confidence, a polygon): not a human box file; refused, not half-read.
    with pytest.raises(BoxFileError, match="expected 'class cx cy w h'"):
        parse_yolo("0 0.5 0.5 0.1 0.1 0.87\n", 10, 10)


def test_pixel_box_rounds_outward_and_clips_to_the_image():
    # A human box is drawn around the object: partial pixels at either edge belong to it.
    assert pixel_box(2, 10.6, 4.4, 20.2, 30.7, 100, 50) == Box(2, 10, 4, 21, 31)
    assert pixel_box(2, -3.0, 40.0, 8.0, 61.0, 100, 50) == Box(2, 0, 40, 8, 50)
    assert pixel_box(2, 0.15 * 100, 0.0, 0.3 * 100, 10.0, 100, 50) == Box(2, 15, 0, 30, 10)  # float noise


def test_read_yolo_missing_file_means_no_boxes(tmp_path):
    assert read_yolo(tmp_path / "none.txt", 10, 10) == []
    (tmp_path / "a.txt").write_text("1 0.5 0.5 0.5 0.5\n")
    assert read_yolo(tmp_path / "a.txt", 10, 10) == [Box(3, 2, 2, 8, 8)]
