"""YOLO box parsing on synthetic boxes whose answer is known."""

from __future__ import annotations

import pytest

from sage_ros.evaluation.boxes import MSRS_YOLO_TO_ID, Box, BoxFileError, parse_yolo, read_yolo


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
