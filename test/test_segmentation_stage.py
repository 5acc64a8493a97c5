"""The segmentation stage (sage_ros/pipeline/segmentation.py): the working scale, abstention, and the graphs it
accepts. The shipped network's graph is built from the packaged weights into the models cache
(`ensure_seg_graph`), as `sage-ros weights fetch` builds it; properties that are known by construction are
checked on synthetic probabilities."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from sage_ros.image.imaging import infrared_to_grey, visible_to_ycrcb
from sage_ros.pipeline.segmentation import (
    WORKING_PIXELS,
    SegmentationError,
    Segmenter,
    ids_from_probabilities,
    resize_plane,
    working_size,
)

PAIR = "00828N"  # an MSRS eval night pair with people and cars


@pytest.fixture(scope="module")
def seg_graph() -> Path:
    from sage_ros.model.model_files import ensure_seg_graph

    return ensure_seg_graph()


@pytest.fixture(scope="module")
def student_graph(checkpoint_path: Path) -> Path:
    """The released student's fusion graph, exported from the fetched checkpoint as `sage-ros weights fetch` does."""
    from sage_ros.model.model_files import ensure_onnx

    return ensure_onnx(None, checkpoint_path)


@pytest.fixture(scope="module")
def scene(msrs_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """A 640x360 (16:9) crop of a real pair: (visible Y, IR), float32 in [0, 1]."""
    ir = infrared_to_grey(cv2.imread(str(msrs_dir / "ir" / f"{PAIR}.png"), cv2.IMREAD_GRAYSCALE)[60:420])
    y = visible_to_ycrcb(cv2.imread(str(msrs_dir / "vi" / f"{PAIR}.png"), cv2.IMREAD_COLOR)[60:420]).y
    return y, ir


# ---------------------------------------------------------------- the working scale


@pytest.mark.parametrize("rgb_hw", [(720, 1280), (1080, 1920), (240, 320), (480, 640), (101, 77), (512, 640)])
def test_working_size_keeps_the_aspect_at_about_the_msrs_pixel_count(rgb_hw):
    h, w = working_size(rgb_hw)
    assert h % 4 == 0 and w % 4 == 0
    assert abs(h * w / WORKING_PIXELS - 1) < 0.02, (h, w)
    assert abs((w / h) / (rgb_hw[1] / rgb_hw[0]) - 1) < 0.01, (h, w)
    # A frame already at the working size is not resized again (what makes pre-resizing a no-op).
    assert working_size((h, w)) == (h, w)


def test_working_size_examples():
    assert working_size((720, 1280)) == (416, 740)  # 307,840 px, 16:9 within 0.1 %
    assert working_size((480, 640)) == (480, 640)  # MSRS itself
    assert working_size((240, 320)) == (480, 640)  # a small frame is enlarged to the scale the network knows


def test_resize_plane_averages_pixels_to_shrink_and_interpolates_to_enlarge():
    # Shrinking averages each block (a thin hot object keeps its share of the block instead of vanishing
    # between bilinear taps); enlarging interpolates.
    stripes = np.zeros((8, 8), np.float32)
    stripes[:, ::4] = 1.0  # one hot column in every 4
    np.testing.assert_allclose(resize_plane(stripes, (2, 2)), 0.25, atol=1e-6)
    ramp = np.array([[0.0, 1.0]], np.float32).repeat(2, 0)
    up = resize_plane(ramp, (2, 4))
    assert up.shape == (2, 4) and 0.0 < up[0, 1] < up[0, 2] < 1.0


def test_resizing_inside_equals_running_on_a_pre_resized_input(seg_graph: Path, student_graph: Path, scene):
    """A 1280x720 frame is segmented at the working size: the same class ids as the probabilities of the inputs
    resized there beforehand, brought to 1280x720 with the same threshold; the graph runs at about 640x480."""
    vis, ir = (cv2.resize(p, (1280, 720), interpolation=cv2.INTER_LINEAR) for p in scene)
    segmenter = Segmenter(seg_graph, student_graph, runtime="onnxruntime", threads=1)
    hw = working_size((720, 1280))
    for threshold in (segmenter.min_confidence, 0.0, 0.9):
        segmenter.min_confidence = threshold
        ids = segmenter(vis, ir)
        probs = segmenter.probabilities(resize_plane(vis, hw), resize_plane(ir, hw))
        assert probs.shape == (len(segmenter.class_table.names), hw[0] // 4, hw[1] // 4)
        assert ids.shape == (720, 1280) and ids.dtype == np.uint8
        assert np.array_equal(ids, ids_from_probabilities(probs, (720, 1280), threshold,
                                                          segmenter.min_object_confidence)), threshold
    # The probabilities of the full-size frame are on the same grid: the camera's resolution is not the cost.
    assert segmenter.probabilities(vis, ir).shape == probs.shape
    segmenter.min_confidence = 0.0
    assert len(np.unique(segmenter(vis, ir))) >= 2  # objects found: ids that are all 0 would prove nothing


def test_the_same_scene_at_two_camera_resolutions_gets_the_same_masks(seg_graph: Path, student_graph: Path, scene):
    """640x360 and 1280x720 frames of one scene both run at 740x416: their masks agree (measured: 99.7 % of the
    pixels, 98.9 % of the pixels either calls an object), up to the resampling of the inputs."""
    segmenter = Segmenter(seg_graph, student_graph, runtime="onnxruntime", threads=1)
    small = segmenter(*scene)
    big = segmenter(*(cv2.resize(p, (1280, 720), interpolation=cv2.INTER_LINEAR) for p in scene))
    big = cv2.resize(big, (640, 360), interpolation=cv2.INTER_NEAREST)
    objects = (small > 0) | (big > 0)
    assert objects.any()
    assert np.mean(small == big) > 0.99
    assert np.sum((small == big) & objects) / np.sum(objects) > 0.97


# ---------------------------------------------------------------- abstention, on known probabilities


def _probabilities(*pixels: list[float]) -> np.ndarray:
    """(C, 1, N): pixel i's class probabilities are pixels[i]."""
    return np.asarray(pixels, np.float32).T[:, None, :].copy()


def test_abstention_on_known_probabilities():
    probs = _probabilities(
        [0.1, 0.7, 0.2],  # confident car-ish class 1
        [0.3, 0.35, 0.35],  # a tie between 1 and 2 below 0.5
        [0.2, 0.3, 0.5],  # exactly at the threshold: kept
        [0.6, 0.2, 0.2],  # background wins anyway
        [0.1, 0.41, 0.49],  # class 2, unsure
        [0.0, 0.0, 1.0],  # certain class 2
    )
    at = {thr: ids_from_probabilities(probs, (1, 6), thr)[0].tolist() for thr in (0.0, 0.4, 0.5, 0.99)}
    assert at[0.0] == [1, 1, 2, 0, 2, 2]  # threshold 0 never abstains; the tie keeps the lower id
    assert at[0.4] == [1, 0, 2, 0, 2, 2]  # the tie's 0.35 is below 0.4
    assert at[0.5] == [1, 0, 2, 0, 0, 2]
    assert at[0.99] == [0, 0, 0, 0, 0, 2]


def test_ties_keep_the_lower_id_and_abstention_matches_a_reference():
    rng = np.random.default_rng(3)
    raw = rng.integers(0, 4, (5, 20, 30)).astype(np.float32)  # small integers: many exact ties
    probs = raw / raw.sum(axis=0, keepdims=True).clip(min=1)
    for thr in (0.0, 0.3, 0.6):
        want = np.argmax(probs, axis=0).astype(np.uint8)  # numpy's argmax takes the first (lowest) maximum
        if thr > 0:
            want[probs.max(axis=0) < np.float32(thr)] = 0
        assert np.array_equal(ids_from_probabilities(probs, (20, 30), thr), want), thr
    assert np.any((probs == probs.max(axis=0)).sum(axis=0) > 1)  # ties were really there


def test_probabilities_are_upsampled_bilinearly_before_the_decision():
    """Class 0 on the left cell, class 1 on the right; at 4 pixels wide the middle ones are 0.25 / 0.75 blends."""
    probs = np.array([[[1.0, 0.0]], [[0.0, 1.0]]], np.float32)
    # Pixel centres fall at -0.25, 0.25, 0.75, 1.25 cells: class 1 has 0, 0.25, 0.75, 1 there (edges clamped).
    assert ids_from_probabilities(probs, (1, 4), 0.0)[0].tolist() == [0, 0, 1, 1]
    # 0.75 is below 0.8: the blended pixels abstain, the pure ones keep their class.
    assert ids_from_probabilities(probs, (1, 4), 0.8)[0].tolist() == [0, 0, 0, 1]
    assert ids_from_probabilities(probs, (3, 4), 0.7).tolist() == [[0, 0, 1, 1]] * 3


def test_object_abstention_drops_unsure_regions_and_trims_the_fringe_of_sure_ones():
    """Three class-1 regions on one row: one never above 0.75 (dropped at 0.8), one peaking at 0.95 with a
    fringe at 0.62-0.66 (below 0.7 x 0.95: trimmed) and 0.7 (kept), and a class-2 region peaking at exactly 0.8
    (kept whole). min_object_confidence 0 leaves every region as the pixel threshold made it."""
    row = [(0.0, 0.0),
           (0.72, 0.0), (0.75, 0.0), (0.72, 0.0),  # unsure region
           (0.0, 0.0),
           (0.62, 0.0), (0.70, 0.0), (0.95, 0.0), (0.66, 0.0),  # sure core, fringe
           (0.0, 0.0),
           (0.0, 0.8), (0.0, 0.61),  # class 2: peak exactly 0.8; 0.61 >= 0.7 x 0.8 = 0.56
           (0.0, 0.0)]
    probs = _probabilities(*[[1.0 - a - b, a, b] for a, b in row])
    hw = (1, len(row))
    plain = ids_from_probabilities(probs, hw, 0.6)[0].tolist()
    assert plain == [0, 1, 1, 1, 0, 1, 1, 1, 1, 0, 2, 2, 0]
    assert ids_from_probabilities(probs, hw, 0.6, 0.0)[0].tolist() == plain
    assert ids_from_probabilities(probs, hw, 0.6, 0.8)[0].tolist() == [0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 2, 2, 0]
    # The fringe is measured against each region's own peak, not a global one: at 0.7 the class-1 region
    # peaking at 0.75 is kept, its 0.72 pixels too (0.72 >= 0.7 x 0.75).
    assert ids_from_probabilities(probs, hw, 0.6, 0.7)[0].tolist() == [0, 1, 1, 1, 0, 0, 1, 1, 0, 0, 2, 2, 0]


def test_object_abstention_is_per_connected_region_in_two_dimensions():
    """Two class-1 blobs of one frame, 8-connected each: the unsure one goes, the sure one stays."""
    probs = np.zeros((2, 12, 12), np.float32)
    probs[0] = 1.0
    probs[1, 2:5, 2:5], probs[1, 7:10, 7:10] = 0.7, 0.99
    probs[1, 5, 5] = 0.7  # a diagonal neighbour of (4, 4): part of the unsure blob at 8-connectivity
    probs[0] = 1.0 - probs[1]
    ids = ids_from_probabilities(probs, (12, 12), 0.6, 0.8)
    assert ids[8, 8] == 1 and ids[3, 3] == 0 and ids[5, 5] == 0
    probs[1, 6, 6] = 0.7  # a diagonal chain now links the two: one region peaking at 0.99, its 0.7 pixels
    # stay (0.7 >= 0.7 x 0.99)
    probs[0] = 1.0 - probs[1]
    ids = ids_from_probabilities(probs, (12, 12), 0.6, 0.8)
    assert ids[3, 3] == 1 and ids[5, 5] == 1 and ids[8, 8] == 1


# ---------------------------------------------------------------- graphs it accepts


def _sidecar(graph: Path, **meta) -> Path:
    graph.with_suffix(".json").write_text(json.dumps({"inputs": ["fused_y", "ir"], "outputs": ["probs"]} | meta))
    return graph


def test_graphs_that_are_missing_foreign_or_corrupt_are_refused(tmp_path: Path, seg_graph: Path, student_graph: Path):
    with pytest.raises(SegmentationError, match="does not exist"):
        Segmenter(tmp_path / "none.onnx", student_graph)
    with pytest.raises(SegmentationError, match="student graph .* does not exist"):
        Segmenter(seg_graph, tmp_path / "no_student.onnx")
    no_sidecar = tmp_path / "bare.onnx"
    no_sidecar.write_bytes(seg_graph.read_bytes())
    with pytest.raises(SegmentationError, match="unreadable sidecar"):
        Segmenter(no_sidecar, student_graph)
    # A graph of the earlier kind (class ids out, at the input size): not a probability graph, rebuild it.
    ids_graph = _sidecar(tmp_path / "ids.onnx", outputs=["class_ids"])
    ids_graph.write_bytes(seg_graph.read_bytes())
    with pytest.raises(SegmentationError, match="not a probability graph.*weights fetch"):
        Segmenter(ids_graph, student_graph)
    other_inputs = _sidecar(tmp_path / "rgb.onnx", inputs=["rgb"])
    other_inputs.write_bytes(seg_graph.read_bytes())
    with pytest.raises(SegmentationError, match="not a probability graph"):
        Segmenter(other_inputs, student_graph)
    with pytest.raises(SegmentationError, match="min_confidence"):
        Segmenter(seg_graph, student_graph, min_confidence=1.0)
    # A damaged file with a valid sidecar is refused when the session starts (on first use), by every runtime.
    corrupt = _sidecar(tmp_path / "corrupt.onnx")
    corrupt.write_bytes(b"not a graph at all")
    plane = np.zeros((48, 64), np.float32)
    for runtime in ("onnxruntime", "auto"):
        segmenter = Segmenter(corrupt, student_graph, runtime=runtime)
        with pytest.raises(SegmentationError, match="could not be loaded"):
            segmenter(plane, plane)


def test_the_session_starts_on_first_use_and_the_classes_come_from_the_sidecar(seg_graph: Path, student_graph: Path):
    segmenter = Segmenter(seg_graph, student_graph, runtime="onnxruntime", threads=1)
    assert segmenter.runtime.endswith("(not started)")
    assert segmenter.class_table.names[:4] == ("unlabelled", "car", "person", "bike")
    plane = np.full((60, 80), 0.5, np.float32)
    assert segmenter(plane, plane).shape == (60, 80)
    assert segmenter.runtime.startswith("onnxruntime")


# ---------------------------------------------------------------- another camera's tone


def _without_tone(tmp_path: Path, seg_graph: Path) -> Path:
    meta = json.loads(seg_graph.with_suffix(".json").read_text())
    meta.pop("input_tone")
    plain = tmp_path / "no_tone.onnx"
    plain.write_bytes(seg_graph.read_bytes())
    plain.with_suffix(".json").write_text(json.dumps(meta))
    return plain


def test_another_cameras_inputs_are_brought_into_the_training_tone_range(tmp_path: Path, seg_graph: Path,
                                                                          student_graph: Path, official_dir: Path):
    """The upstream sample pairs (another camera: IR median ~82/255 where MSRS's is ~19) are remapped into the
    shipped network's training range before it runs; the remapping is exactly `into_tone_range` at the working
    size, and a frame already inside the range is segmented as if the range were not there."""
    from sage_ros.image.tone_range import into_tone_range

    shipped = Segmenter(seg_graph, student_graph, runtime="onnxruntime", threads=1)
    plain = Segmenter(_without_tone(tmp_path, seg_graph), student_graph, runtime="onnxruntime", threads=1)
    assert set(shipped.tone) == {"vis_y", "ir"} and plain.tone == {}
    ir = infrared_to_grey(cv2.imread(str(official_dir / "Ir" / "00000.png"), cv2.IMREAD_GRAYSCALE))
    vis = visible_to_ycrcb(cv2.imread(str(official_dir / "Vis" / "00000.png"), cv2.IMREAD_COLOR)).y
    hw = working_size(vis.shape)
    vis_w, ir_w = resize_plane(vis, hw), resize_plane(ir, hw)
    inside = into_tone_range(vis_w, shipped.tone["vis_y"]), into_tone_range(ir_w, shipped.tone["ir"])
    assert np.mean(inside[1]) < 0.6 * np.mean(ir_w)  # the sample camera's IR is far brighter than MSRS's
    probs = shipped.probabilities(vis, ir)
    assert not np.allclose(probs, plain.probabilities(vis, ir), atol=1e-3)
    assert np.allclose(probs, plain.probabilities(*inside), atol=1e-5)
    assert np.array_equal(shipped.probabilities(*inside), plain.probabilities(*inside))


def test_a_bad_tone_range_in_the_sidecar_is_refused(tmp_path: Path, seg_graph: Path, student_graph: Path):
    bad = _sidecar(tmp_path / "bad_tone.onnx", input_tone={"ir": {"levels": [50, 10], "low": [0, 0], "high": [1, 1]}})
    bad.write_bytes(seg_graph.read_bytes())
    with pytest.raises(SegmentationError, match="bad input_tone.*levels must increase"):
        Segmenter(bad, student_graph)
