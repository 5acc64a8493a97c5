"""Every DDS participant the project starts for tests, benchmarks and `demo --live` discovers on this
host only, on a domain derived from the pid (checked on the real child process's environment)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
from harness import LOCAL_DDS_ENV, NodeProcess, local_dds_env, pick_domain_id


def _environ_of(pid: int, marker: bytes) -> dict[str, str]:
    # Until the child has exec'ed, /proc/PID/environ still shows the parent's start-up environment
    # block (os.environ changes made later are not in it), so wait for the new command line first.
    deadline = time.monotonic() + 10.0
    while marker not in Path(f"/proc/{pid}/cmdline").read_bytes():
        assert time.monotonic() < deadline, "the child never exec'ed its command"
        time.sleep(0.01)
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode(errors="replace").split("=", 1) for item in raw if b"=" in item)


def test_helper_sets_host_only_discovery_and_domain() -> None:
    env = local_dds_env(123, base={"ROS_LOCALHOST_ONLY": "0", "ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET"})
    assert env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST" and env["ROS_LOCALHOST_ONLY"] == "1"
    assert env["ROS_DOMAIN_ID"] == "123"
    assert 100 <= pick_domain_id() < 200  # clear of domain 0 and of Fast DDS's port limit (232)


def test_this_test_session_is_host_only() -> None:
    """test/conftest.py applies it to the pytest process, so in-process probes and children inherit it."""
    for key, value in LOCAL_DDS_ENV.items():
        assert os.environ.get(key) == value
    assert 100 <= int(os.environ["ROS_DOMAIN_ID"]) < 200


def test_node_process_child_gets_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Even when the caller's environment says otherwise.
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "SUBNET")
    monkeypatch.setenv("ROS_LOCALHOST_ONLY", "0")

    class Sleeper(NodeProcess):  # the harness's own start(); only the command is a harmless sleep
        def command(self) -> list[str]:
            return [sys.executable, "-c", "import time; time.sleep(30)"]

    proc = Sleeper({}, 157, tmp_path / "log.txt").start()
    try:
        env = _environ_of(proc.proc.pid, b"time.sleep(30)")
    finally:
        proc.stop(timeout=5)
    assert env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST" and env["ROS_LOCALHOST_ONLY"] == "1"
    assert env["ROS_DOMAIN_ID"] == "157"


def test_every_dds_starter_uses_the_helper() -> None:
    """The places that start DDS processes go through harness.NodeProcess/Probe or local_dds_env."""
    repo = Path(__file__).resolve().parents[1]
    for rel in ("sage_ros/cli/_live_demo.py", "benchmarks/node_latency.py", "benchmarks/qos_match.py"):
        text = (repo / rel).read_text()
        assert "NodeProcess" in text or "local_dds_env" in text, rel
        assert "ROS_DOMAIN_ID=" not in text, f"{rel} sets a domain without the helper"


def test_pick_domain_id_skips_a_domain_in_use() -> None:
    """The pid-derived id is probed: a domain another participant on this host uses is skipped."""
    pytest.importorskip("rclpy")
    from harness import Probe, domain_in_use

    first = pick_domain_id(91)
    assert not domain_in_use(first)
    with Probe(first, diagnostics=False):
        assert domain_in_use(first)
        second = pick_domain_id(91)
        assert second != first and 100 <= second < 200
