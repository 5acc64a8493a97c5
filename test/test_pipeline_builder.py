"""build_pipeline (sage_ros/pipeline/builder.py): which students a pipeline holds and starts, where its class
ids come from, and the model files it refuses at build time. Real released weights (the `checkpoint_path`
fixture; the models cache is filled by `ensure_onnx` / `ensure_seg_graph`), real MSRS pairs where the masks
matter, synthetic pairs where only sizes and starts do."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

from sage_ros.backends import BackendConfig, create_backend
from sage_ros.backends.base import FusionBackend
from sage_ros.evaluation.components import components_to_detections, f1_scores, read_yolo
from sage_ros.pipeline import PipelineError, PipelineSettings, build_pipeline
from sage_ros.pipeline.builder import reduced_student


class _Recorder:
    """A `create` for build_pipeline that starts real backends and remembers the configs it started."""

    def __init__(self) -> None:
        self.started: list[BackendConfig] = []

    def __call__(self, config: BackendConfig) -> FusionBackend:
        self.started.append(config)
        return create_backend(config)


def _settings(checkpoint: Path, **changes) -> PipelineSettings:
    """onnxruntime on one thread; `weights` (the released checkpoint) only for the released student."""
    values = {"model": "sage", "backend": "onnxruntime", "threads": 1} | changes
    if values["model"] == "sage":
        values.setdefault("weights", checkpoint)
    return PipelineSettings(**values)


def _pair(h: int = 96, w: int = 128, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A smooth synthetic pair: IR (uint8 HxW) with a warm block, visible BGR."""
    rng = np.random.default_rng(seed)
    vis = cv2.GaussianBlur((rng.random((h, w, 3)) * 255).astype(np.uint8), (0, 0), 2)
    ir = cv2.GaussianBlur((rng.random((h, w)) * 120).astype(np.uint8), (0, 0), 2)
    ir[h // 3: h // 2, w // 3: w // 2] = 230
    return ir, vis


def _shrink(ir: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    return cv2.resize(ir, (hw[1], hw[0]), interpolation=cv2.INTER_AREA)


# ---------------------------------------------------------------- which students start


def test_equal_size_pairs_start_only_the_main_student(checkpoint_path: Path):
    create = _Recorder()
    pipeline = build_pipeline(_settings(checkpoint_path, segmentation=False), create)
    try:
        assert pipeline.reduced is not None  # the scale-adapted student is there for smaller thermal frames...
        assert not pipeline.student.started and not pipeline.reduced.started and create.started == []
        assert "not started yet" in pipeline.description
        ir, vis = _pair()
        result = pipeline.fuse(ir, vis)  # resolution thermal, but both images the same size: the RGB size
        assert result.fusion_hw == (96, 128)
        assert pipeline.student.started and not pipeline.reduced.started  # ...but is never loaded for these
        assert [c.onnx_path.name for c in create.started] == ["sage_student.onnx"]
    finally:
        pipeline.close()


def test_a_smaller_thermal_image_starts_only_the_reduced_student(checkpoint_path: Path):
    create = _Recorder()
    pipeline = build_pipeline(_settings(checkpoint_path, segmentation=False), create)
    try:
        ir, vis = _pair()
        result = pipeline.fuse(_shrink(ir, (48, 64)), vis)
        assert result.fusion_hw == (48, 64) and result.fused_rgb.shape == (96, 128, 3)
        assert pipeline.reduced.started and not pipeline.student.started
        assert [c.onnx_path.name for c in create.started] == ["sage_student_scale_fusion.onnx"]
    finally:
        pipeline.close()


@pytest.mark.parametrize("changes, why", [({"model": "fast"}, "not the released one"),
                                          ({"scale_adapted": False}, "off")])
def test_other_students_and_the_switch_get_no_reduced_student(checkpoint_path: Path, changes: dict, why: str):
    create = _Recorder()
    pipeline = build_pipeline(_settings(checkpoint_path, segmentation=False, **changes), create)
    try:
        assert pipeline.reduced is None
        assert any("scale-adapted" in note and why in note for note in pipeline.notes), pipeline.notes
        ir, vis = _pair()
        pipeline.fuse(_shrink(ir, (48, 64)), vis)  # below the RGB size: the main student itself
        assert pipeline.student.started and len(create.started) == 1
    finally:
        pipeline.close()


def test_an_explicit_engine_gets_no_scale_adapted_student(checkpoint_path: Path, tmp_path: Path):
    """An explicit TensorRT engine runs at every fusion size. Students are lazy, so no GPU is needed to see it."""
    from sage_ros.model.model_files import ensure_onnx

    released = ensure_onnx(None, checkpoint_path)
    settings = _settings(checkpoint_path, backend="tensorrt")

    def never(config: BackendConfig) -> FusionBackend:
        raise AssertionError(f"a backend was started: {config}")

    engine = BackendConfig(name="tensorrt", onnx_path=released, engine_path=tmp_path / "student.engine")
    student, why = reduced_student(settings, engine, never)
    assert student is None and "engine_path" in why
    # The same released model without an explicit engine does get one (on a CPU backend, here).
    student, why = reduced_student(_settings(checkpoint_path), BackendConfig(name="onnxruntime", onnx_path=released),
                                   never)
    assert student is not None and not student.started and "scale-adapted" in why


# ---------------------------------------------------------------- where class ids come from


def test_segmentation_off_gives_no_segmenter_and_no_class_ids(checkpoint_path: Path):
    pipeline = build_pipeline(_settings(checkpoint_path, segmentation=False))
    try:
        assert pipeline.segmenter is None
        ir, vis = _pair()
        result = pipeline.fuse(ir, vis)
        assert result.class_ids is None and result.segment_later is None
        assert result.fused_rgb.shape == (96, 128, 3)
    finally:
        pipeline.close()


def test_deferred_class_ids_are_the_same_as_immediate_ones(checkpoint_path: Path, msrs_dir: Path):
    ir = cv2.imread(str(msrs_dir / "ir" / "00828N.png"), cv2.IMREAD_GRAYSCALE)
    vis = cv2.imread(str(msrs_dir / "vi" / "00828N.png"), cv2.IMREAD_COLOR)
    pipeline = build_pipeline(_settings(checkpoint_path))
    try:
        lazy = pipeline.fuse(_shrink(ir, (288, 384)), vis, classes=False)
        assert lazy.class_ids is None and lazy.segment_later is not None
        assert pipeline.segmenter.runtime.endswith("(not started)")  # nothing segmented until asked
        now = pipeline.fuse(_shrink(ir, (288, 384)), vis)
        assert np.array_equal(lazy.fused_rgb, now.fused_rgb)
        later = lazy.segment_later()
        assert later.shape == (480, 640) and np.array_equal(later, now.class_ids)
        assert len(np.unique(later)) >= 2
    finally:
        pipeline.close()


@pytest.mark.parametrize("model", ["sage", "fast"])
def test_every_student_gets_its_masks_from_the_segmenter_on_the_registered_pair(checkpoint_path: Path,
                                                                               msrs_dir: Path, model: str):
    """Thermal at 384x288 for a 640x480 RGB frame: whatever student fused, the class ids are the segmentation
    stage's on the visible Y and the IR as it was fused, never on that student's output."""
    from sage_ros.image.imaging import infrared_to_grey, visible_to_ycrcb
    from sage_ros.model.model_files import ensure_onnx, ensure_seg_graph

    ir = _shrink(cv2.imread(str(msrs_dir / "ir" / "00828N.png"), cv2.IMREAD_GRAYSCALE), (288, 384))
    vis = cv2.imread(str(msrs_dir / "vi" / "00828N.png"), cv2.IMREAD_COLOR)
    pipeline = build_pipeline(_settings(checkpoint_path, model=model))
    try:
        # One network, fed by the released student, for every student.
        assert pipeline.segmenter.path == ensure_seg_graph() and pipeline.segmenter.student == ensure_onnx()
        result = pipeline.fuse(ir, vis)
        assert result.fusion_hw == (288, 384) and result.class_ids.shape == (480, 640)
        expected = pipeline.segmenter(visible_to_ycrcb(vis).y, infrared_to_grey(ir))
        assert np.array_equal(result.class_ids, expected)
        assert len(np.unique(result.class_ids)) >= 2
    finally:
        pipeline.close()


# ---------------------------------------------------------------- files refused at build


def _graph_with_outputs(path: Path, output: str) -> Path:
    import onnx
    from onnx import TensorProto, helper

    dims = [1, 1, "height", "width"]
    graph = helper.make_graph(
        [helper.make_node("Add", ["vis_y", "ir"], [output])], "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, dims) for n in ("vis_y", "ir")],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, dims)],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_bad_model_files_fail_at_build_with_what_to_do(checkpoint_path: Path, tmp_path: Path):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x01not a model")
    create = _Recorder()
    with pytest.raises(PipelineError, match="not a readable ONNX model"):
        build_pipeline(_settings(checkpoint_path, model=str(corrupt)), create)
    with pytest.raises(PipelineError, match=r"outputs \['out'\].*gives fused_y"):
        build_pipeline(_settings(checkpoint_path, model=str(_graph_with_outputs(tmp_path / "g.onnx", "out"))), create)
    with pytest.raises(PipelineError, match="does not exist"):
        build_pipeline(_settings(checkpoint_path, model=str(tmp_path / "missing.onnx")), create)
    with pytest.raises(PipelineError, match="min_confidence"):
        build_pipeline(_settings(checkpoint_path, min_confidence=1.0), create)
    assert create.started == []  # refused before anything ran
    # A fusion graph of the right interface builds (the file is checked, not started).
    good = build_pipeline(_settings(checkpoint_path, model=str(_graph_with_outputs(tmp_path / "f.onnx", "fused_y"))))
    assert good.reduced is None and not good.student.started
    good.close()


# ---------------------------------------------------------------- MSRS masks for other students


def _eval_pairs(msrs: Path) -> list[str]:
    with (msrs / "splits.csv").open(newline="") as handle:
        return [r["name"] for r in csv.DictReader(handle) if r["split"] == "eval"]


def test_msrs_masks_of_other_students_are_the_default_paths(checkpoint_path: Path, msrs_dir: Path):
    """MSRS eval pairs with the thermal image shrunk to 384x288: the fast student and the released student
    without scale adaptation (both fusing at 384x288) get exactly the masks of the default path at the RGB size
    (the IR registered onto the RGB grid by the same bilinear resize the stage applies), because the stage
    makes its own fused input. And those masks find the labelled objects."""
    names = _eval_pairs(msrs_dir)
    assert len(names) >= 4, names
    pipelines = {
        "default": build_pipeline(_settings(checkpoint_path, resolution="rgb")),
        "fast": build_pipeline(_settings(checkpoint_path, model="fast")),
        "released": build_pipeline(_settings(checkpoint_path, scale_adapted=False)),
    }
    masks: dict[str, list[np.ndarray]] = {k: [] for k in pipelines}
    boxes = []
    try:
        for name in names:
            ir = cv2.imread(str(msrs_dir / "ir" / f"{name}.png"), cv2.IMREAD_GRAYSCALE)
            vis = cv2.imread(str(msrs_dir / "vi" / f"{name}.png"), cv2.IMREAD_COLOR)
            ir_cam = cv2.resize(ir, (384, 288), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
            ir_reg = cv2.resize(ir_cam, (640, 480), interpolation=cv2.INTER_LINEAR)  # registered to the RGB grid
            masks["default"].append(pipelines["default"].fuse(ir_reg, vis).class_ids)
            for key in ("fast", "released"):
                result = pipelines[key].fuse(ir_cam, vis, thermal_hw=(288, 384))
                assert result.fusion_hw == (288, 384)
                masks[key].append(result.class_ids)
            boxes.append(read_yolo(msrs_dir / "boxes" / "fusion" / f"{name}.txt", 640, 480))
    finally:
        for pipeline in pipelines.values():
            pipeline.close()
    assert pipelines["fast"].reduced is None and pipelines["released"].reduced is None
    # The default path's masks find the labelled objects (else agreeing with it would mean nothing). A floor, not
    # a score: 0.28 on these few pairs with today's tone range (the whole eval split at this thermal size: 0.53,
    # docs/segmentation.md); all-background or random masks score 0.
    scores = f1_scores([components_to_detections(m, None, (1, 2, 3)) for m in masks["default"]], boxes)
    assert scores.mean_f1 > 0.2, scores.to_json()
    for key in ("fast", "released"):
        for name, mask, reference in zip(names, masks[key], masks["default"], strict=True):
            assert np.array_equal(mask, reference), (key, name, float(np.mean(mask != reference)))


def test_without_the_released_student_the_fast_one_fuses_and_masks_say_what_is_missing(monkeypatch, tmp_path):
    """The fast student ships in the package: fusing needs no download. The masks need the released student
    (it makes the network's input): without it segmentation is off and the note says how to get it."""
    monkeypatch.setenv("SAGE_ROS_HOME", str(tmp_path / "empty_home"))
    pipeline = build_pipeline(PipelineSettings(model="fast", backend="onnxruntime", threads=1))
    try:
        assert pipeline.segmenter is None and "weights fetch" in pipeline.notes[-1]
        result = pipeline.fuse(np.full((48, 64), 120, np.uint8), np.full((48, 64, 3), 90, np.uint8))
        assert result.fused_rgb.shape == (48, 64, 3) and result.class_ids is None
    finally:
        pipeline.close()


def test_the_object_detector_joins_the_masks_unless_turned_off_or_not_fetched(checkpoint_path: Path,
                                                                              detector_graph: Path, monkeypatch,
                                                                              tmp_path: Path):
    pipeline = build_pipeline(_settings(checkpoint_path))
    try:
        assert pipeline.segmenter.detector is not None and pipeline.segmenter.detector.path == detector_graph
        assert any(n.startswith("object detector: nanodet_coco.onnx") for n in pipeline.notes), pipeline.notes
    finally:
        pipeline.close()
    pipeline = build_pipeline(_settings(checkpoint_path, detector_min_score=0.3))
    try:
        assert pipeline.segmenter.detector.min_score == 0.3
        assert any(n.startswith("object detector:") and "min score 0.3" in n for n in pipeline.notes), pipeline.notes
    finally:
        pipeline.close()
    pipeline = build_pipeline(_settings(checkpoint_path, detector=False))
    try:
        assert pipeline.segmenter.detector is None and "object detector: off" in pipeline.notes
    finally:
        pipeline.close()
    # Files not fetched: masks from the network alone, and the note says how to get the detector.
    monkeypatch.setattr("sage_ros.model.detector_files.detector_dir", lambda: tmp_path / "no_detector")
    pipeline = build_pipeline(_settings(checkpoint_path))
    try:
        assert pipeline.segmenter is not None and pipeline.segmenter.detector is None
        assert any("object detector: not fetched" in n and "weights fetch" in n for n in pipeline.notes)
    finally:
        pipeline.close()
