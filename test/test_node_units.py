"""The node's ROS-free parts: settings and YAML, registration, hand-off, diagnostics counters, pair
processing with the real released model."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import yaml

from sage_ros.image.encodings import InvalidPixelsError, encode_image
from sage_ros.image.registration import Registration, RegistrationError, parse_homography
from sage_ros.image.thermal import NormalizerConfig, ThermalNormalizer
from sage_ros.node.handoff import NewestSlot
from sage_ros.node.mf_sync import message_filters_available
from sage_ros.node.processing import (
    CAUSE_ENCODING,
    CAUSE_INVALID_PIXELS,
    CAUSE_MALFORMED,
    CAUSE_SIZE_MISMATCH,
    PairProcessor,
    classify_error,
)
from sage_ros.node.settings import DOUBLE_ARRAY, PARAMS, NodeSettings
from sage_ros.node.stats import ERROR, OK, WARN, NodeStats, RateMeter

REPO = Path(__file__).resolve().parents[1]


def defaults(**over):
    values = {p.name: ([] if p.default == DOUBLE_ARRAY else p.default) for p in PARAMS}
    values.update(over)
    return values


# --- settings ----------------------------------------------------------------------------------
def test_default_settings_are_valid_and_describe_the_pipeline(tmp_path):
    p = NodeSettings(defaults(model_path=str(tmp_path / "m.onnx"), threads=2)).pipeline
    assert (p.model, p.backend, p.threads) == (str(tmp_path / "m.onnx"), "auto", 2)
    assert (p.resolution, p.scale_adapted) == ("thermal", True)
    assert (p.min_confidence, p.min_object_confidence) == (0.6, 0.8)
    tuned = NodeSettings(defaults(**{"segmentation.min_object_confidence": 0.0})).pipeline
    assert tuned.min_object_confidence == 0.0  # 0: every region kept whole
    assert p.detector and not NodeSettings(defaults(**{"segmentation.detector": False})).pipeline.detector
    assert p.detector_min_score == 0.45
    assert NodeSettings(defaults(**{"segmentation.detector_min_score": 0.3})).pipeline.detector_min_score == 0.3
    d = NodeSettings(defaults()).pipeline
    assert (d.model, d.threads) == ("auto", 0)  # no model_path: model.variant; 0: the runtime decides


@pytest.mark.parametrize(
    "name,value",
    [
        ("backend", "cuda"),
        ("qos.reliability", "fast"),
        ("sync.slop", 0.0),
        ("sync.queue_size", 0),
        ("thermal.mode", "agc"),
        ("overlay.alpha", 1.5),
        ("registration.homography", [1.0, 2.0]),
        ("max_pair_age", -1.0),
        ("segmentation.min_confidence", 1.0),
        ("segmentation.min_object_confidence", -0.1),
        ("segmentation.min_object_confidence", 1.0),
        ("segmentation.detector_min_score", 0.0),
        ("segmentation.detector_min_score", 1.0),
        ("segmentation.max_rate", -1.0),
        ("segmentation.max_rate", float("nan")),
    ],
)
def test_bad_parameter_values_name_the_parameter(name, value):
    # Where the message names the whole parameter, the test asks for the whole name.
    match = name.replace(".", r"\.") if name.startswith("segmentation.") else name.split(".")[0]
    with pytest.raises(ValueError, match=match):
        NodeSettings(defaults(**{name: value}))


def _flatten(tree, prefix=""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def test_yaml_lists_every_parameter_with_its_default():
    text = (REPO / "config" / "sage_fusion.yaml").read_text()
    tree = yaml.safe_load(text)
    params = dict(_flatten(tree["/**"]["ros__parameters"]))
    for spec in PARAMS:
        if spec.default == DOUBLE_ARRAY:
            assert spec.name.split(".")[-1] + ":" in text, f"{spec.name} not documented in the YAML"
            continue
        assert spec.name in params, f"{spec.name} missing from config/sage_fusion.yaml"
        assert params[spec.name] == spec.default, spec.name
    assert set(params) <= {p.name for p in PARAMS}, "the YAML has parameters the node does not declare"


# --- registration ------------------------------------------------------------------------------
def test_resize_when_aspect_matches_and_clear_error_when_not():
    reg = Registration()
    ir = np.random.default_rng(0).random((128, 160), dtype=np.float32)
    assert reg.to_rgb_grid(ir, (256, 320)).shape == (256, 320)
    assert reg.to_rgb_grid(ir, (128, 160)) is ir
    with pytest.raises(RegistrationError, match="aspect ratio and no homography"):
        reg.to_rgb_grid(ir, (720, 1280))


def test_homography_warps_thermal_into_the_rgb_frame():
    # Thermal 640x512 seen in a 1280x720 RGB frame: scale 1.25 and shift (80, 40).
    h = [1.25, 0.0, 80.0, 0.0, 1.25, 40.0, 0.0, 0.0, 1.0]
    ir = np.zeros((512, 640), np.float32)
    ir[100:110, 200:210] = 1.0  # a hot square at thermal (200..209, 100..109)
    out = Registration(h).to_rgb_grid(ir, (720, 1280))
    assert out.shape == (720, 1280)
    ys, xs = np.nonzero(out > 0.5)
    assert abs(xs.mean() - (204.5 * 1.25 + 80)) < 1.5 and abs(ys.mean() - (104.5 * 1.25 + 40)) < 1.5
    assert out[0, 0] == 0.0  # outside the thermal field of view


def test_parse_homography_checks():
    assert parse_homography([]) is None and parse_homography(None) is None
    np.testing.assert_allclose(parse_homography(np.eye(3) * 2.0), np.eye(3))
    for bad in ([0.0] * 9, [1.0] * 8, [np.nan] + [0.0] * 8):
        with pytest.raises(ValueError):
            parse_homography(bad)


# --- hand-off and counters -----------------------------------------------------------------------
def test_newest_slot_keeps_only_the_newest_and_counts_the_rest():
    slot = NewestSlot()
    for k in range(5):
        slot.put(k)
    assert slot.take(0.01) == 4 and slot.superseded == 4
    assert slot.take(0.01) is None
    got = []
    t = threading.Thread(target=lambda: got.append(slot.take(5.0)))
    t.start()
    slot.put("late")
    t.join(5)
    assert got == ["late"]
    slot.put("x")
    slot.close()
    assert slot.take(5.0) is None  # closed: the worker stops even with an item waiting


def test_rate_meter_and_health_verdicts():
    meter = RateMeter(window_s=5.0)
    for k in range(11):
        meter.tick(100.0 + k * 0.1)
    assert meter.rate(101.0) == pytest.approx(10.0, rel=0.01)
    assert meter.rate(120.0) == 0.0
    stats = NodeStats(stale_timeout=2.0)
    assert stats.health(0.0).level == OK  # not active yet
    stats.activated(10.0)
    stats.input_received("thermal", 10.5)
    stats.input_received("rgb", 10.5)
    assert stats.health(11.0).level == OK
    stats.input_received("rgb", 12.9)
    h = stats.health(13.0)
    assert h.level == WARN and "thermal silent for 2.5 s" in h.message and "rgb" not in h.message
    stats.model_failed(13.1, "CUDA out of memory")
    assert stats.health(13.2).level == ERROR and "CUDA out of memory" in stats.health(13.2).message
    stats.input_received("thermal", 13.2)
    stats.output_published(13.5, latency_ms=40.0, processing_ms=30.0, inference_ms=20.0)
    assert stats.health(13.6).level == OK  # recovered: a later output clears the error
    values = stats.values(13.6)
    assert values["drop_failed_model"] == "1" and values["latency_p50_ms"] == "40.0"


def test_error_causes():
    from sage_ros.image.encodings import decode_image

    for fields, cause in (
        (("bayer_rggb8", 2, 2, 2, 0, bytes(4)), CAUSE_ENCODING),
        (("mono8", 2, 2, 2, 0, bytes(3)), CAUSE_MALFORMED),
        (("32FC1", 1, 1, 4, 0, np.array([np.nan], np.float32).tobytes()), CAUSE_INVALID_PIXELS),
    ):
        with pytest.raises(Exception) as info:
            decode_image(*fields)
        assert classify_error(info.value) == cause
    assert classify_error(RegistrationError("x")) == CAUSE_SIZE_MISMATCH


@pytest.mark.skipif(not message_filters_available(), reason="message_filters not installed (not on PyPI)")
def test_message_filters_adapter_pairs_like_ours():
    from sage_ros.node.mf_sync import MessageFiltersSync
    from sage_ros.pairing.sync import ApproximateTimeSync

    ms = 1_000_000
    got_mf, got_ours = [], []
    mf = MessageFiltersSync(queue_size=4, slop=0.02, callback=got_mf.append, offsets_ns=[-30 * ms, 0])
    ours = ApproximateTimeSync(queue_size=4, slop=0.02, callback=got_ours.append, offsets_ns=[-30 * ms, 0])
    rng = np.random.default_rng(1)
    for k in range(30):
        for index in rng.permutation(2):
            stamp = 10**9 + k * 70 * ms + (30 * ms if index == 0 else 0) + int(rng.integers(-12, 12)) * ms
            mf.add(int(index), stamp, (index, k))
            ours.add(int(index), stamp, (index, k))
    assert got_mf == got_ours and len(got_ours) > 20
    assert mf.stats.pairs == ours.stats.pairs


# --- pair processing with the real model ---------------------------------------------------------
@pytest.fixture(scope="module")
def processor(checkpoint_path: Path, tmp_path_factory):
    from harness import exported_student

    from sage_ros.backends import BackendConfig, create_backend
    from sage_ros.pipeline import FusionPipeline

    onnx = exported_student(checkpoint_path, tmp_path_factory.getbasetemp() / "sage_models")
    backend = create_backend(BackendConfig(name="onnxruntime", onnx_path=onnx, threads=1))
    yield PairProcessor(FusionPipeline(backend), ThermalNormalizer(NormalizerConfig(ema_alpha=1.0)))
    backend.close()


def _msg(array, encoding, **kw):
    return SimpleNamespace(**encode_image(array, encoding, **kw).__dict__)


def test_processor_matches_the_pipeline_on_a_real_pair(processor, official_dir: Path):
    ir_path = official_dir / "Ir" / "00000.png"
    vis_path = official_dir / "Vis" / "00000.png"
    ir8 = cv2.resize(cv2.imread(str(ir_path), cv2.IMREAD_GRAYSCALE), (160, 120), interpolation=cv2.INTER_AREA)
    vis = cv2.resize(cv2.imread(str(vis_path), cv2.IMREAD_COLOR), (160, 120), interpolation=cv2.INTER_AREA)
    # mono8 thermal + rgb8 visible: identical to fusing the files directly.
    out = processor.process(_msg(ir8, "mono8"), _msg(vis[..., ::-1], "rgb8", row_padding=4))
    direct = processor.pipeline.fuse(ir8, vis)
    np.testing.assert_array_equal(out.fused_rgb, direct.fused_rgb)
    # mono16 big-endian counts at half the resolution: normalised, resized, fused at the RGB size.
    counts = (cv2.resize(ir8, (80, 60), interpolation=cv2.INTER_AREA).astype(np.uint16) * 40 + 3000)
    out16 = processor.process(_msg(counts, "mono16", is_bigendian=True), _msg(vis, "bgr8"))
    assert out16.fused_rgb.shape == (120, 160, 3)
    lo, hi = out16.thermal_bounds
    assert 3000 <= lo < hi <= 3000 + 255 * 40
    # The fused result follows the thermal content: closer to the mono8 result than to a flat IR.
    flat = processor.process(_msg(np.full((60, 80), 3000, np.uint16), "mono16"), _msg(vis, "bgr8"))
    d_real = np.abs(out16.fused_rgb.astype(int) - out.fused_rgb).mean()
    d_flat = np.abs(flat.fused_rgb.astype(int) - out.fused_rgb).mean()
    assert d_real < d_flat


def test_processor_rejects_bad_pairs_with_causes(processor):
    vis = np.zeros((64, 80, 3), np.uint8)
    nan = np.full((32, 40), 25.0, np.float32)
    nan[3, 3] = np.nan
    with pytest.raises(InvalidPixelsError):
        processor.process(_msg(nan, "32FC1"), _msg(vis, "bgr8"))
    with pytest.raises(RegistrationError):
        processor.process(_msg(np.zeros((40, 40), np.uint16), "mono16"), _msg(vis, "bgr8"))
    with pytest.raises(Exception) as info:
        processor.process(_msg(vis, "bgr8"), _msg(vis, "bgr8"))
    assert classify_error(info.value) == CAUSE_ENCODING


def test_docs_name_every_parameter():
    text = (REPO / "docs" / "node.md").read_text()
    missing = [p.name for p in PARAMS if f"`{p.name}`" not in text]
    assert not missing, f"docs/node.md does not mention {missing}"


