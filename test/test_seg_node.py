"""The fusion node with the released student and the shipped segmentation network: the published mask is the
pipeline's, pixel for pixel.

Runs the node in a child process on this module's own ROS domain over Fast DDS (nothing mocked) and
feeds it a real MSRS pair crop; the mask must equal `build_pipeline`'s class ids for the same settings
(the node builds its pipeline with the same function), and carry the RGB frame's stamp and frame_id.
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy not installed (pip install -e '.[ros]')")

from harness import NodeProcess, Probe, pick_domain_id  # noqa: E402

from sage_ros.model.classes import overlay  # noqa: E402
from sage_ros.pipeline import PipelineSettings, build_pipeline  # noqa: E402

PAIR = "00828N"  # an eval night pair with people, bikes and cars
DOMAIN = pick_domain_id(7)  # this module's own ROS domain (pid-derived, probed)


def _stamp(msg) -> int:
    return int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)


def test_node_publishes_the_pipelines_mask_with_the_rgb_header(tmp_path: Path, checkpoint_path: Path,
                                                                msrs_dir: Path):
    ir = np.ascontiguousarray(cv2.imread(str(msrs_dir / "ir" / f"{PAIR}.png"), cv2.IMREAD_GRAYSCALE)[200:440, 160:480])
    vis = np.ascontiguousarray(cv2.imread(str(msrs_dir / "vi" / f"{PAIR}.png"), cv2.IMREAD_COLOR)[200:440, 160:480])
    settings = PipelineSettings(model="sage", weights=checkpoint_path, backend="onnxruntime", threads=1)
    pipeline = build_pipeline(settings)
    try:
        expected = pipeline.fuse(ir, vis)
        table = pipeline.segmenter.class_table
    finally:
        pipeline.close()
    assert expected.class_ids is not None and len(np.unique(expected.class_ids)) >= 2

    params = {
        "model.variant": "sage", "weights_path": str(checkpoint_path), "backend": "onnxruntime", "threads": 1,
        "qos.reliability": "reliable", "sync.slop": 0.02, "overlay.alpha": 0.4,
    }
    topics = ("fused/image_raw", "segmentation/mask", "segmentation/overlay")
    with NodeProcess(params, DOMAIN, tmp_path / "node.log") as proc, Probe(DOMAIN, output_topics=topics) as probe:
        assert probe.wait_for_node(60.0), proc.log_text()
        stamps = []
        for _ in range(3):  # a first pair can be lost while discovery settles: resend
            stamps.append(time.time_ns())
            probe.publish_array("thermal/image_raw", ir, "mono8", stamps[-1], "thermal")
            probe.publish_array("rgb/image_raw", vis, "bgr8", stamps[-1], "rgb_optical")
            if probe.wait_until(lambda: all(probe.messages(t) for t in topics), 20.0):
                break
        assert all(probe.messages(t) for t in topics), proc.log_text()
        (_, fused), (_, mask), (_, over) = (probe.messages(t)[0] for t in topics)
    assert _stamp(mask) == _stamp(fused) == _stamp(over) and _stamp(mask) in stamps
    assert mask.header.frame_id == fused.header.frame_id == "rgb_optical"
    assert mask.encoding == "mono8" and (mask.height, mask.width) == ir.shape
    ids = np.frombuffer(bytes(mask.data), np.uint8).reshape(mask.height, mask.step)[:, : mask.width]
    assert np.array_equal(ids, expected.class_ids)
    fused_rgb = np.frombuffer(bytes(fused.data), np.uint8).reshape(fused.height, fused.step)
    fused_rgb = fused_rgb[:, : 3 * fused.width].reshape(fused.height, fused.width, 3)
    assert np.array_equal(fused_rgb, expected.fused_rgb)
    blended = np.frombuffer(bytes(over.data), np.uint8).reshape(over.height, over.step)
    blended = blended[:, : 3 * over.width].reshape(over.height, over.width, 3)
    assert np.array_equal(blended, overlay(fused_rgb, ids, table, 0.4))


def test_mask_schedule_masks_by_stamp_at_most_at_the_rate():
    from sage_ros.node.outputs import MaskSchedule

    every = MaskSchedule(0.0)
    assert all(every.due(t) for t in (0, 1, 2))  # 0 Hz: a mask for every pair
    schedule = MaskSchedule(2.0)  # 500 ms apart, 450 ms with the jitter allowance
    masked = []
    for k in range(12):  # a 10 Hz camera, 1 ms of jitter on every other frame
        stamp = k * 100_000_000 - (1_000_000 if k % 2 else 0)
        if schedule.due(stamp):
            schedule.masked(stamp)
            masked.append(k)
    assert masked == [0, 5, 10]
    assert schedule.due(0)  # a stamp before the last masked one (a looped bag): starts over
    with pytest.raises(ValueError, match="mask rate"):
        MaskSchedule(float("nan"))


def test_node_masks_at_most_at_max_rate_and_fuses_every_pair(tmp_path: Path, checkpoint_path: Path,
                                                             official_dir: Path):
    """segmentation.max_rate 2 Hz, pairs 100 ms apart in sensor time: every pair is fused, every fifth masked
    (chosen by the RGB stamps, whatever the wall-clock pace). A released sample pair: it runs wherever the
    released files can be fetched, with or without the MSRS data."""
    crop = (slice(300, 540), slice(200, 520))
    ir = np.ascontiguousarray(cv2.imread(str(official_dir / "Ir" / "00000.png"), cv2.IMREAD_GRAYSCALE)[crop])
    vis = np.ascontiguousarray(cv2.imread(str(official_dir / "Vis" / "00000.png"), cv2.IMREAD_COLOR)[crop])
    params = {
        "model.variant": "fast", "backend": "onnxruntime", "threads": 1, "qos.reliability": "reliable",
        "sync.slop": 0.02, "segmentation.max_rate": 2.0, "segmentation.detector": False,
    }
    topics = ("fused/image_raw", "segmentation/mask")
    with NodeProcess(params, DOMAIN, tmp_path / "node.log") as proc, Probe(DOMAIN, output_topics=topics) as probe:
        assert probe.wait_for_node(60.0), proc.log_text()
        start = time.time_ns()
        for k in range(3):  # warm-up pairs 10 s before the paced ones: discovery may lose a first pair
            probe.publish_array("thermal/image_raw", ir, "mono8", start + k, "thermal")
            probe.publish_array("rgb/image_raw", vis, "bgr8", start + k, "rgb_optical")
            if probe.wait_until(lambda: probe.messages(topics[0]) and probe.messages(topics[1]), 20.0):
                break
        assert probe.messages(topics[1]), proc.log_text()
        paced = [start + 10_000_000_000 + k * 100_000_000 for k in range(11)]
        for stamp in paced:  # each pair once the previous one's fused image is back: none superseded
            count = len(probe.messages(topics[0]))
            probe.publish_array("thermal/image_raw", ir, "mono8", stamp, "thermal")
            probe.publish_array("rgb/image_raw", vis, "bgr8", stamp, "rgb_optical")
            assert probe.wait_until(lambda c=count: len(probe.messages(topics[0])) > c, 20.0), proc.log_text()
        time.sleep(2.0)  # the last mask follows its fused image
        fused = {_stamp(m) for _, m in probe.messages(topics[0])}
        masks = {_stamp(m) for _, m in probe.messages(topics[1])}
    assert set(paced) <= fused
    assert sorted(masks & set(paced)) == [paced[0], paced[5], paced[10]], proc.log_text()
