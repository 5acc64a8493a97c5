"""A stamp made negative by sync.thermal_offset: the real message_filters and the built-in
synchroniser agree (rejected, counted, never raised or queued), and the node drops it before either."""

from __future__ import annotations

from pathlib import Path

import pytest

from sage_ros.node.mf_sync import MessageFiltersSync, message_filters_available
from sage_ros.pairing.sync import ApproximateTimeSync

MS = 1_000_000
needs_mf = pytest.mark.skipif(not message_filters_available(),
                              reason="message_filters not installed (make test installs it from ../shared/ros_src)")


@needs_mf
def test_real_message_filters_raises_on_a_negative_stamp() -> None:
    """Why the node must filter: upstream message_filters cannot take a negative header stamp."""
    import message_filters
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header

    class Stamped:
        def __init__(self, ns: int) -> None:
            self.header = Header(stamp=Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000))

    inputs = [message_filters.SimpleFilter(), message_filters.SimpleFilter()]
    sync = message_filters.ApproximateTimeSynchronizer(inputs, 4, 0.02)
    with pytest.raises(Exception):  # noqa: B017 - rclpy's Time refuses negative nanoseconds
        inputs[0].signalMessage(Stamped(10 * MS - 30 * MS))
    del sync


@pytest.mark.parametrize("which", [pytest.param("message_filters", marks=needs_mf), "sage_ros"])
def test_both_synchronisers_reject_a_stamp_the_offset_makes_negative(which: str) -> None:
    got: list[tuple] = []
    cls = MessageFiltersSync if which == "message_filters" else ApproximateTimeSync
    sync = cls(queue_size=4, slop=0.02, callback=got.append, offsets_ns=[-30 * MS, 0])
    sync.add(0, 10 * MS, "thermal early")  # 10 ms - 30 ms < 0: cannot pair
    sync.add(1, 10 * MS, "rgb early")
    sync.add(0, 1000 * MS, "thermal")  # corrected 970 ms
    sync.add(1, 975 * MS, "rgb")
    stats = sync.stats
    assert got == [("thermal", "rgb")]
    assert stats.rejected == [1, 0] and stats.received == [2, 2] and stats.pairs == 1
    assert sync.pending() == [0, 1]  # only the early rgb frame waits; nothing negative was queued
    assert stats.unpaired == 1


@pytest.mark.parametrize("use_mf", [pytest.param(True, marks=needs_mf), False], ids=["message_filters", "builtin"])
def test_node_drops_the_negative_stamp_before_either_path(use_mf: bool, tmp_path: Path, checkpoint_path: Path,
                                                          tmp_path_factory: pytest.TempPathFactory) -> None:
    """Over real DDS: a thermal frame that thermal_offset makes negative is dropped, counted
    (drop_thermal_negative_stamp), logged, and the node keeps pairing the frames after it."""
    pytest.importorskip("rclpy")
    import numpy as np
    from harness import NodeProcess, Probe, exported_student, pick_domain_id

    model = exported_student(checkpoint_path, tmp_path_factory.getbasetemp() / "sage_models")
    params = {"model_path": str(model), "backend": "onnxruntime", "threads": 1, "qos.reliability": "reliable",
              "sync.slop": 0.02, "sync.thermal_offset": -0.5, "sync.use_message_filters": use_mf,
              "diagnostics.period": 0.3}
    domain = pick_domain_id(41 + int(use_mf))
    rng = np.random.default_rng(0)
    thermal = rng.integers(2000, 6000, (48, 64), dtype=np.uint16)
    rgb = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    with NodeProcess(params, domain, tmp_path / "node.log") as proc, Probe(domain) as probe:
        assert probe.wait_for_node(60.0), proc.log_text()
        probe.publish_array("thermal/image_raw", thermal, "mono16", 100 * MS)  # 0.1 s - 0.5 s < 0
        probe.publish_array("rgb/image_raw", rgb, "rgb8", 100 * MS)
        for k in range(1, 4):  # later frames pair normally (thermal stamped 0.5 s late)
            probe.publish_array("thermal/image_raw", thermal, "mono16", (k * 1000 + 500) * MS)
            probe.publish_array("rgb/image_raw", rgb, "rgb8", k * 1000 * MS)
        status = probe.wait_for_status(lambda s: int(s.get("drop_thermal_negative_stamp", "0")) >= 1
                                       and int(s["pairs"]) >= 3, 20.0)
        assert status is not None, "; ".join(f"{k}={v}" for k, v in sorted(probe.latest_status().items()))
        assert int(status.get("drop_thermal_sync_error", "0")) == 0
        assert proc.alive()
    assert "negative stamp" in proc.log_text() and "sync.thermal_offset" in proc.log_text()
