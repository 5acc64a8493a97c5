"""Repeated SIGINT/SIGTERM (Ctrl-C to a launch process group, a supervisor's escalation) at any point of
the node's shutdown: it exits 0 without a traceback. Real node process, real DDS, released weights."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="the node needs rclpy (pip install -e '.[ros]')")

from harness import NodeProcess, Probe, exported_student, pick_domain_id  # noqa: E402

MS = 1_000_000


@pytest.fixture(scope="module")
def model(checkpoint_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return exported_student(checkpoint_path, tmp_path_factory.getbasetemp() / "sage_models")


# (signals, seconds between them): the second lands in spin, in the lifecycle cleanup, in
# executor.shutdown or destroy_node depending on the gap; all must end the same way.
CASES = [
    ((signal.SIGINT, signal.SIGINT), 0.0),
    ((signal.SIGINT, signal.SIGINT), 0.02),
    ((signal.SIGINT, signal.SIGINT, signal.SIGINT), 0.005),
    ((signal.SIGTERM, signal.SIGTERM), 0.01),
    ((signal.SIGINT, signal.SIGTERM), 0.05),
]


@pytest.mark.parametrize("signals, gap", CASES, ids=lambda v: "-".join(s.name for s in v) if isinstance(v, tuple)
                         else f"{v * 1000:g}ms")
def test_repeated_signals_shut_down_cleanly(model: Path, tmp_path: Path, signals, gap: float) -> None:
    params = {"model_path": str(model), "backend": "onnxruntime", "threads": 1, "qos.reliability": "reliable",
              "diagnostics.period": 0.2}
    domain = pick_domain_id(61 + CASES.index((signals, gap)))
    proc = NodeProcess(params, domain, tmp_path / "node.log").start()
    try:
        with Probe(domain) as probe:
            assert probe.wait_for_node(60.0), proc.log_text()
            rng = np.random.default_rng(0)
            # Frames in flight while the signals arrive.
            for k in range(3):
                probe.publish_array("thermal/image_raw", rng.integers(0, 255, (48, 64), np.uint8), "mono8",
                                    (k + 1) * 100 * MS)
                probe.publish_array("rgb/image_raw", rng.integers(0, 255, (48, 64, 3), np.uint8), "rgb8",
                                    (k + 1) * 100 * MS)
        for sig in signals:
            proc.proc.send_signal(sig)
            if gap:
                time.sleep(gap)
        code = proc.proc.wait(timeout=30)
    finally:
        proc.stop(timeout=5)
    log = proc.log_text()
    assert code == 0, f"exit code {code}\n{log[-3000:]}"
    assert "Traceback" not in log, log[-3000:]


def _wait_until_loaded(pid: int, library: str, timeout: float = 60.0) -> bool:
    """Wait until the process has mapped `library` (a point of its start-up, not a time)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if library in Path(f"/proc/{pid}/maps").read_text():
                return True
        except OSError:
            return False
        time.sleep(0.002)
    return False


# Points of the start-up, in order: numpy's C core (the first heavy import, after the executable's
# entry point started recording signals), rclpy's extension (mid-imports), the onnx package's extension
# (configure checks the model file; the runtime itself starts with the first pair).
STARTUP_POINTS = ["_multiarray_umath", "_rclpy_pybind11", "onnx_cpp2py_export"]


@pytest.mark.parametrize("point", STARTUP_POINTS)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_signal_while_starting_ends_cleanly(model: Path, tmp_path: Path, point: str, sig) -> None:
    """A stop requested while the executable is still importing or configuring (Ctrl-C right after
    `ros2 launch`): exit 0, no traceback. (Before the interpreter has run any of our code, e.g.
    during Python's own `site` import, no Python program can handle a signal.)"""
    params = {"model_path": str(model), "backend": "onnxruntime", "threads": 1}
    proc = NodeProcess(params, pick_domain_id(71), tmp_path / "node.log").start()
    try:
        assert _wait_until_loaded(proc.proc.pid, point), proc.log_text()
        proc.proc.send_signal(sig)
        code = proc.proc.wait(timeout=60)
    finally:
        proc.stop(timeout=5)
    log = proc.log_text()
    assert code == 0, f"exit code {code}\n{log[-3000:]}"
    assert "Traceback" not in log, log[-3000:]
