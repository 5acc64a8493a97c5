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
