"""fusion.resolution: thermal | rgb | WxH - sizes, detail transfer, class ids, node registration, quality."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from sage_ros.backends.base import BackendOutput, FusionBackend
from sage_ros.image.imaging import ImageInputError
from sage_ros.image.registration import Registration
from sage_ros.image.thermal import NormalizerConfig, ThermalNormalizer
from sage_ros.node.processing import PairProcessor, scale_homography
from sage_ros.pipeline import (
    FusionPipeline,
    Student,
    detail_gain,
    fusion_size,
    parse_resolution,
    resize_area,
    unsharp,
    upsample_with_detail,
)


def test_parse_resolution():
    assert parse_resolution("thermal") == "thermal"
    assert parse_resolution(" RGB ") == "rgb"
    assert parse_resolution("640x360") == (360, 640)
    for bad in ("", "hd", "640x", "640x360x2", "-5x20"):
        with pytest.raises(ValueError, match="thermal, rgb or WIDTHxHEIGHT|too small"):
            parse_resolution(bad)
    with pytest.raises(ValueError, match="too small"):
        parse_resolution("8x8")


def test_fusion_size_follows_the_thermal_pixel_count_in_the_rgb_aspect():
    # 640x512 thermal + 1280x720 RGB: 327,680 px -> 763x429 = 327,327 px, aspect 16:9 kept.
    h, w = fusion_size("thermal", (720, 1280), (512, 640))
    assert (h, w) == (429, 763)
    assert abs(h * w / (512 * 640) - 1) < 0.01 and abs(w / h - 1280 / 720) < 0.01
    assert fusion_size("rgb", (720, 1280), (512, 640)) == (720, 1280)
    assert fusion_size((360, 640), (720, 1280), (512, 640)) == (360, 640)
    assert fusion_size((1080, 1920), (720, 1280), (512, 640)) == (720, 1280)  # capped at the RGB frame
    # A thermal camera with as many pixels as the RGB one (or more) changes nothing.
    assert fusion_size("thermal", (480, 640), (480, 640)) == (480, 640)
    assert fusion_size("thermal", (480, 640), (960, 1280)) == (480, 640)
    assert fusion_size("thermal", (480, 640), None) == (480, 640)


def test_detail_layer_restores_the_visible_image_exactly_when_fused_equals_visible():
    rng = np.random.default_rng(1)
    vis_y = cv2.GaussianBlur(rng.random((96, 128), dtype=np.float32), (0, 0), 1.0)
    small = resize_area(vis_y, (48, 64))
    assert detail_gain(small, small) == pytest.approx(1.0)
    np.testing.assert_allclose(upsample_with_detail(small, vis_y, small), np.clip(vis_y, 0, 1), atol=1e-6)
    # A model that ignores the visible image passes none of its detail: gain 0, plain upsampling.
    flat = np.full_like(small, 0.3)
    assert detail_gain(flat, small) == pytest.approx(0.0, abs=1e-6)
    np.testing.assert_allclose(upsample_with_detail(flat, vis_y, small), 0.3, atol=1e-6)


def _finest_band_energy(image: np.ndarray) -> float:
    return float(np.mean((image - cv2.GaussianBlur(image, (0, 0), 1.0)) ** 2))


def test_unsharp_moves_only_the_finest_band():
    rng = np.random.default_rng(4)
    image = cv2.GaussianBlur(rng.random((64, 80), dtype=np.float32), (0, 0), 0.8)
    assert unsharp(image, 0.0) is image
    softer, sharper = unsharp(image, -0.1), unsharp(image, 0.1)
    assert _finest_band_energy(softer) < _finest_band_energy(image) < _finest_band_energy(sharper)
    # The coarse content (and a flat image) are left as they are.
    coarse = cv2.GaussianBlur(image, (0, 0), 4.0)
    np.testing.assert_allclose(cv2.GaussianBlur(softer, (0, 0), 4.0), coarse, atol=2e-3)
    np.testing.assert_allclose(unsharp(np.full((20, 20), 0.4, np.float32), -0.1), 0.4, atol=1e-6)


def test_a_students_small_unsharp_applies_below_the_rgb_size_only():
    ir, vis = _pair(120, 160, seed=5)
    ir_cam = resize_area(ir, (60, 80))
    plain, soft = Student(_Recorder()), Student(_Recorder(), small_unsharp=-0.1)
    low_plain = FusionPipeline(plain, "thermal").fuse(ir_cam, vis).fused_y
    low_soft = FusionPipeline(soft, "thermal").fuse(ir_cam, vis).fused_y
    assert _finest_band_energy(low_soft) < _finest_band_energy(low_plain)
    # The pure functions in this order: the detail gain measured on the network's own output, then the
    # softening, then the upsampler.
    from sage_ros.image.imaging import infrared_to_grey, visible_to_ycrcb

    y = visible_to_ycrcb(vis).y
    y_small = resize_area(y, (60, 80))
    small = np.clip((y_small + infrared_to_grey(ir_cam)) / 2, 0, 1)
    want = upsample_with_detail(unsharp(small, -0.1), y, y_small, detail_gain(small, y_small))
    np.testing.assert_allclose(low_soft, want, atol=1e-6)
    # At the RGB size (the released pipeline, bit for bit) nothing changes.
    np.testing.assert_array_equal(FusionPipeline(soft, "rgb").fuse(ir, vis).fused_rgb,
                                  FusionPipeline(plain, "rgb").fuse(ir, vis).fused_rgb)


class _Recorder(FusionBackend):
    """A real (tiny) backend: fused = mean of the inputs; records input sizes."""

    name = "recorder"

    def __init__(self) -> None:
        self.sizes: list[tuple[int, int]] = []

    def _infer(self, vis_y: np.ndarray, ir: np.ndarray) -> BackendOutput:
        self.sizes.append(vis_y.shape[-2:])
        return BackendOutput(((vis_y + ir) / 2)[0, 0])


class _HotSegmenter:
    """A segmentation stage: class 1 where IR > 0.5, at the fused Y's size (the stage's contract); records the
    sizes of the planes it is given."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[int, int], tuple[int, int]]] = []

    def __call__(self, fused_y: np.ndarray, ir: np.ndarray) -> np.ndarray:
        self.calls.append((fused_y.shape, ir.shape))
        h, w = fused_y.shape
        return (cv2.resize(ir, (w, h), interpolation=cv2.INTER_LINEAR) > 0.5).astype(np.uint8)


def _pair(h: int, w: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    vis = (rng.random((h, w, 3)) * 255).astype(np.uint8)
    ir = np.zeros((h, w), np.uint8)
    ir[h // 4: h // 2, w // 4: w // 2] = 255
    return ir, vis


def test_pipeline_fuses_at_the_thermal_size_and_returns_rgb_size_outputs():
    backend = _Recorder()
    ir, vis = _pair(120, 160)
    ir_cam = resize_area(ir, (60, 80))  # a thermal camera with 4x fewer pixels
    segmenter = _HotSegmenter()
    result = FusionPipeline(backend, "thermal", segmenter=segmenter).fuse(ir_cam, vis)
    assert backend.sizes[-1] == (60, 80) and result.fusion_hw == (60, 80)
    assert result.fused_rgb.shape == (120, 160, 3) and result.fused_y.shape == (120, 160)
    # The segmentation stage runs on the final fused Y (RGB size) and the IR as it was fused (no RGB-size copy).
    assert segmenter.calls == [((120, 160), (60, 80))]
    assert result.class_ids.shape == (120, 160) and set(np.unique(result.class_ids)) == {0, 1}
    assert result.class_ids[40, 50] == 1 and result.class_ids[100, 140] == 0
    # Without a segmentation stage there are no class ids.
    assert FusionPipeline(backend, "thermal").fuse(ir_cam, vis).class_ids is None
    # IR given at the RGB size is shrunk to the fusion size; a fixed WxH is honoured.
    FusionPipeline(backend, "thermal").fuse(ir, vis, thermal_hw=(60, 80))
    assert backend.sizes[-1] == (60, 80)
    FusionPipeline(backend, "100x75").fuse(ir, vis)
    assert backend.sizes[-1] == (75, 100)
    with pytest.raises(ImageInputError, match="neither the visible size"):
        FusionPipeline(backend, "thermal").fuse(np.zeros((50, 50), np.uint8), vis, thermal_hw=(60, 80))


def test_same_size_pairs_are_fused_exactly_as_before():
    backend = _Recorder()
    ir, vis = _pair(64, 80, seed=3)
    a = FusionPipeline(backend, "thermal").fuse(ir, vis)
    b = FusionPipeline(backend, "rgb").fuse(ir, vis)
    np.testing.assert_array_equal(a.fused_rgb, b.fused_rgb)
    assert a.fusion_hw == b.fusion_hw == (64, 80)


def _msg(image: np.ndarray, encoding: str) -> SimpleNamespace:
    h, w = image.shape[:2]
    data = np.ascontiguousarray(image).tobytes()
    return SimpleNamespace(encoding=encoding, height=h, width=w, step=len(data) // h, is_bigendian=0, data=data)


def test_node_registration_goes_straight_to_the_fusion_grid():
    """A homography warp onto the scaled grid equals warping to the RGB grid and shrinking (up to blur)."""
    rng = np.random.default_rng(2)
    thermal = cv2.GaussianBlur((rng.random((64, 80)) * 60000).astype(np.float32), (0, 0), 3).astype(np.uint16)
    h = np.array([[2.0, 0.1, 5.0], [0.05, 2.0, 3.0], [0.0, 0.0, 1.0]])
    full = cv2.warpPerspective(thermal.astype(np.float32), h, (160, 120))
    scaled = cv2.warpPerspective(thermal.astype(np.float32), scale_homography(h, (120, 160), (60, 80)), (80, 60))
    shrunk = cv2.resize(full, (80, 60), interpolation=cv2.INTER_AREA)
    inner = (slice(8, -8), slice(8, -8))  # away from the field-of-view border
    assert np.abs(scaled[inner] - shrunk[inner]).mean() < 0.01 * thermal.max()

    backend = _Recorder()
    vis = (rng.random((120, 160, 3)) * 255).astype(np.uint8)
    pipeline = FusionPipeline(backend, "thermal", segmenter=_HotSegmenter())
    processor = PairProcessor(pipeline, ThermalNormalizer(NormalizerConfig(ema_alpha=1.0)), Registration(h))
    out = processor.process(_msg(thermal, "mono16"), _msg(vis, "bgr8"))
    assert backend.sizes[-1] == (62, 83)  # 64x80 = 5120 thermal px -> 83x62 = 5146 px in the 4:3 RGB aspect
    assert out.fused_rgb.shape == (120, 160, 3) and out.class_ids.shape == (120, 160)


def test_quality_against_full_resolution_on_a_sample_pair(official_dir: Path, tmp_path: Path):
    """Real student on a real pair, thermal camera simulated at 640x480 for a 1024x768 RGB frame."""
    from sage_ros.backends import BackendConfig, create_backend
    from sage_ros.model.model_files import export_checkpoint

    model = export_checkpoint(official_dir / "checkpoints.pt", tmp_path / "student.onnx")
    backend = create_backend(BackendConfig(name="onnxruntime", onnx_path=model, threads=2))
    ir = cv2.imread(str(official_dir / "Ir/00003.png"), cv2.IMREAD_GRAYSCALE)
    vis = cv2.imread(str(official_dir / "Vis/00003.png"))
    ir_cam = resize_area(ir, (480, 640)).astype(np.float32) / 255
    ir_reg = cv2.resize(ir_cam, (1024, 768), interpolation=cv2.INTER_LINEAR)
    full = FusionPipeline(backend, "rgb").fuse(ir_reg, vis)
    low = FusionPipeline(backend, "thermal").fuse(ir_cam, vis)
    assert low.fusion_hw == (480, 640)
    mse = np.mean((full.fused_rgb.astype(np.float64) - low.fused_rgb) ** 2)
    psnr = 10 * np.log10(255**2 / mse)
    assert psnr >= 35.0, f"final image {psnr:.2f} dB against full-resolution fusion (measured ~41 dB)"


def test_fuse_folder_takes_a_lower_resolution_thermal_folder(tmp_path: Path):
    """`sage-ros fuse --resolution thermal` with IR images at the thermal camera's own (same-aspect) size."""
    from sage_ros.cli._folder_fusion import fuse_folder

    (tmp_path / "ir").mkdir()
    (tmp_path / "vis").mkdir()
    ir, vis = _pair(120, 160, seed=4)
    cv2.imwrite(str(tmp_path / "ir" / "a.png"), resize_area(ir, (60, 80)))
    cv2.imwrite(str(tmp_path / "vis" / "a.png"), vis)
    backend = _Recorder()
    report = fuse_folder(FusionPipeline(backend, "thermal"), tmp_path / "ir", tmp_path / "vis", tmp_path / "out")
    assert report.fused == ["a"] and backend.sizes == [(60, 80)]
    assert cv2.imread(str(tmp_path / "out" / "a.png")).shape == (120, 160, 3)
    # rgb resolution cannot use an unregistered smaller IR image: reported, not raised.
    report = fuse_folder(FusionPipeline(backend, "rgb"), tmp_path / "ir", tmp_path / "vis", tmp_path / "out2")
    assert "differ in size" in report.failed["a"]


# Edges of the image math that hand mutation of pipeline/fusion.py showed no test held (2026-12-08).


def test_the_smallest_fusion_side_is_accepted_and_one_less_is_not():
    assert parse_resolution("16x16") == (16, 16)
    for bad in ("15x100", "100x15"):
        with pytest.raises(ValueError, match="too small"):
            parse_resolution(bad)


def test_a_thermal_camera_with_a_few_more_pixels_than_the_rgb_one_changes_nothing():
    # 1.1x the RGB pixel count: never fused above the RGB size.
    assert fusion_size("thermal", (480, 640), (528, 640)) == (480, 640)


def test_resize_area_averages_pixels():
    checker = (np.indices((9, 9)).sum(axis=0) % 2).astype(np.float32)  # alternating 0 / 1
    # A third per side: each output pixel is the mean of its 3x3 block (sampling would give 0 or 1).
    blocks = checker.reshape(3, 3, 3, 3).mean(axis=(1, 3))
    np.testing.assert_allclose(resize_area(checker, (3, 3)), blocks, atol=1e-6)


def test_the_finest_band_is_the_image_minus_a_one_pixel_gaussian():
    from sage_ros.pipeline.fusion import finest_band

    impulse = np.zeros((21, 21), np.float32)
    impulse[10, 10] = 1.0
    g = np.exp(-0.5 * np.arange(-4, 5) ** 2)
    centre = (g[4] / g.sum()) ** 2  # the 2-D Gaussian's centre weight at sigma 1 px
    assert finest_band(impulse)[10, 10] == pytest.approx(1.0 - centre, abs=2e-3)


def test_detail_gain_on_a_flat_visible_image_is_one_and_is_clamped_at_one_and_a_half():
    rng = np.random.default_rng(6)
    y = cv2.GaussianBlur(rng.random((48, 64), dtype=np.float32), (0, 0), 0.7)
    assert detail_gain(y, np.full_like(y, 0.5)) == 1.0
    base = cv2.GaussianBlur(y, (0, 0), 3.0)  # the same coarse content, a scaled finest band
    assert detail_gain(base + 1.3 * (y - base), y) == pytest.approx(1.3, abs=0.05)
    assert detail_gain(base + 3.0 * (y - base), y) == 1.5


def test_the_detail_layer_never_leaves_zero_to_one():
    vis_y = np.zeros((32, 32), np.float32)
    vis_y[::2] = 1.0  # detail the small image cannot hold
    small = resize_area(vis_y, (16, 16))
    out = upsample_with_detail(np.full_like(small, 0.9), vis_y, small, gain=1.0)
    assert out.max() == 1.0 and out.min() >= 0.0


def test_ir_at_the_rgb_size_is_fused_as_the_same_ir_shrunk_by_pixel_averaging():
    ir, vis = _pair(120, 160, seed=7)
    ir[::2, ::2] = 40  # fine structure that averaging and sampling treat differently
    ir_unit = ir.astype(np.float32) / 255.0  # normalised thermal, as the node gives it
    a = FusionPipeline(_Recorder(), "thermal").fuse(ir_unit, vis, thermal_hw=(60, 80))
    b = FusionPipeline(_Recorder(), "thermal").fuse(resize_area(ir_unit, (60, 80)), vis)
    np.testing.assert_array_equal(a.fused_rgb, b.fused_rgb)


class _Overshoot(FusionBackend):
    """A backend whose output leaves [0, 1] (as a Tanh-free or int8 graph can)."""

    name = "overshoot"

    def _infer(self, vis_y: np.ndarray, ir: np.ndarray) -> BackendOutput:
        return BackendOutput(vis_y[0, 0] * 3.0 - 1.0)


def test_a_students_output_is_clipped_to_zero_to_one_before_anything_uses_it():
    ir, vis = _pair(64, 80, seed=8)
    result = FusionPipeline(_Overshoot(), "rgb").fuse(ir, vis)
    assert result.fused_y.min() >= 0.0 and result.fused_y.max() <= 1.0


class _Closing(_Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.closed = False
        self.name = "closing"

    def close(self) -> None:
        self.closed = True


def test_the_reduced_student_is_described_once_started_and_closed_with_the_pipeline():
    main, reduced = _Closing(), _Closing()
    pipeline = FusionPipeline(main, "thermal", reduced=Student(reduced, label="scale-adapted student"))
    ir, vis = _pair(120, 160)
    pipeline.fuse(resize_area(ir, (60, 80)), vis)
    assert "scale-adapted student" in pipeline.description
    pipeline.close()
    assert reduced.closed and main.closed
