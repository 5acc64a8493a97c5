"""A 60-second soak of the real node (benchmarks/soak.py, shortened): no internal queue grows without bound.

30 Hz of 640x512 mono16 + 1280x720 bgr8 from a RELIABLE camera into the node with default settings.
Every few seconds the node's own queue depths (diagnostics) and its threads and file descriptors
(/proc) are sampled. Each queue must stay within its configured bound the whole time, and threads and
descriptors must not creep after warm-up. RSS is reported, not asserted: a minute is too short to
tell growth from warm-up on a shared machine (the 10-minute benchmark measures it).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

pytest.importorskip("rclpy", reason="rclpy not installed (pip install -e '.[ros]')")

REPO = Path(__file__).resolve().parents[1]
SECONDS = float(os.environ.get("SAGE_SOAK_SECONDS", "60"))


def _soak_module():
    spec = importlib.util.spec_from_file_location("soak", REPO / "benchmarks" / "soak.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_one_minute_soak_keeps_every_queue_bounded(checkpoint_path: Path, tmp_path_factory):
    from harness import exported_student

    soak = _soak_module()
    model = exported_student(checkpoint_path, tmp_path_factory.getbasetemp() / "sage_models")
    queue_size, window = 10, 200
    result = soak.run_soak(SECONDS, rate=30.0, sample_s=3.0, threads=1, workdir=tmp_path_factory.mktemp("soak"),
                           model=model, params={"sync.queue_size": queue_size, "diagnostics.latency_window": window})
    samples = result["samples"]
    summary = soak.summarise(result, warmup_s=SECONDS / 3)
    print(soak.table(result))
    print(summary)
    assert len(samples) >= 5, samples
    assert result["exit_code"] == 0, result["log"]
    with_status = [s for s in samples if "in_flight" in s]
    assert len(with_status) >= 3, samples
    bounds = {
        "sync_pending_thermal": queue_size, "sync_pending_rgb": queue_size,
        "in_flight": 2,  # the one-slot mailbox + the pair in the worker
        # Rate meters keep 5 s of events: at most 5 s x the 30 Hz camera (+ slack for bunching).
        "queue_rate_samples": 5 * 30 * 2,
        "queue_latency_samples": window,
        "queue_drop_keys": 40,  # a closed set of causes
        "queue_log_problems": 256,
        "queue_tracked_publishers": 2 * 64,
    }
    for key, bound in bounds.items():
        worst = max(s.get(key, 0) for s in with_status)
        assert worst <= bound, (key, worst, bound)
    after = [s for s in samples if s["t"] >= SECONDS / 3]
    assert max(s["threads"] for s in after) == min(s["threads"] for s in after), [s["threads"] for s in samples]
    assert max(s["fds"] for s in after) - min(s["fds"] for s in after) <= 2, [s["fds"] for s in samples]
    # It fused throughout, and every received message is accounted for at the end.
    final = result["final"]
    assert int(final["outputs"]) >= 3, final
    assert int(final["thermal_received"]) > 0 and int(final["pairs"]) > 0
