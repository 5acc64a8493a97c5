"""The node's inference worker, driven in this process: a real FusionNode (real rclpy, real DDS between two
contexts) whose worker is held at chosen points, so the races are reproduced deterministically.

- a pair is counted in flight at every instant between the sync hand-off and its fate (also the instant
  between the worker taking it out of the mailbox and starting on it);
- the model is never closed under a worker still inside `infer` (deactivate's join timed out).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy not installed (pip install -e '.[ros]')")

from harness import Probe, exported_student, pick_domain_id  # noqa: E402
from rclpy.context import Context  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from test_node_dds import RH, RW, TH, TW, _stamp, lifecycle  # noqa: E402

from sage_ros.backends.base import BackendOutput, FusionBackend  # noqa: E402
from sage_ros.node import fusion_node  # noqa: E402
from sage_ros.node.handoff import NewestSlot  # noqa: E402
from sage_ros.pipeline import FusionPipeline  # noqa: E402

WAIT_S = 60.0  # bound on every wait for something that must happen (a loaded 2-core machine)


@contextmanager
def node_in_process(domain: int, params: dict[str, Any]) -> Iterator[fusion_node.FusionNode]:
    """A FusionNode in its own rclpy context on `domain`, spun by a background executor thread."""
    context = Context()
    rclpy.init(context=context, domain_id=domain)
    node = fusion_node.FusionNode(
        context=context, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()]
    )
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    running = threading.Event()
    running.set()

    def spin() -> None:
        while running.is_set() and context.ok():
            executor.spin_once(timeout_sec=0.05)

    spinner = threading.Thread(target=spin, name="test_executor", daemon=True)
    spinner.start()
    try:
        yield node
    finally:
        running.clear()
        spinner.join(timeout=10.0)
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        rclpy.try_shutdown(context=context)


class _NoLog:
    """The node runs in this process: its log goes to this process's output (for `lifecycle`'s messages)."""

    def log_text(self) -> str:
        return "(node in this process: see the captured output)"


def transition(probe: Probe, name: str) -> bool:
    """A lifecycle transition over the node's own service: it runs in the node's executor thread, as in production."""
    return lifecycle(probe, _NoLog(), name)


def _params(model: Path, **over: Any) -> dict[str, Any]:
    params = {"model_path": str(model), "backend": "onnxruntime", "threads": 1, "qos.reliability": "reliable",
              "fusion.resolution": "rgb", "diagnostics.period": 0.1, "thermal.ema_alpha": 1.0}
    params.update(over)
    return params


def _send_pair(probe: Probe, stamp: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    probe.publish_array("thermal/image_raw", rng.integers(2000, 6000, (TH, TW)).astype(np.uint16), "mono16", stamp)
    probe.publish_array("rgb/image_raw", rng.integers(0, 255, (RH, RW, 3), dtype=np.uint8), "bgr8", stamp)


class HoldAfterTake(NewestSlot):
    """The node's mailbox, but `take` holds the worker right after the pair left the slot (when it returns)."""

    def __init__(self) -> None:
        super().__init__()
        self.taken = threading.Event()
        self.taken_ns = 0
        self.go = threading.Event()

    def take(self, timeout: float | None = None) -> Any | None:
        item = super().take(timeout)
        if item is not None and not self.taken.is_set():
            self.taken_ns = time.time_ns()
            self.taken.set()
            self.go.wait(WAIT_S)
        return item


@pytest.fixture(scope="module")
def onnx_model(checkpoint_path: Path, tmp_path_factory):
    return exported_student(checkpoint_path, tmp_path_factory.getbasetemp() / "sage_models")


def test_a_taken_pair_is_in_flight_before_the_worker_starts_on_it(onnx_model):
    """Diagnostics published while the worker holds a pair it has taken but not started count it in flight.

    The worker is stopped exactly between `take` returning and anything after it, so every /diagnostics
    message stamped after that instant must show the pair: pairs 1 = outputs 0 + in_flight 1.
    """
    domain = pick_domain_id(41)
    with node_in_process(domain, _params(onnx_model)) as node, Probe(domain) as probe:
        slot = HoldAfterTake()
        node._slot = slot  # before activate: the worker of this activation uses it
        try:
            assert transition(probe, "configure")
            assert transition(probe, "activate")
            assert probe.wait_for_node(WAIT_S)
            _send_pair(probe, time.time_ns())
            assert slot.taken.wait(WAIT_S), "the worker never took the pair"

            def after_take() -> list[dict[str, str]]:
                out = []
                for _, array in list(probe.diagnostics):
                    stamp = array.header.stamp.sec * 1_000_000_000 + array.header.stamp.nanosec
                    if stamp > slot.taken_ns:
                        out.append({kv.key: kv.value for kv in array.status[0].values})
                return out

            assert probe.wait_until(lambda: len(after_take()) >= 2, WAIT_S), "no diagnostics after the take"
            for values in after_take():
                assert (values["pairs"], values["outputs"], values["in_flight"]) == ("1", "0", "1"), values
        finally:
            slot.go.set()
        assert probe.wait_until(lambda: bool(probe.messages("fused/image_raw")), WAIT_S)
        status = probe.wait_for_status(lambda s: s["outputs"] == "1" and s["in_flight"] == "0", WAIT_S)
        assert status is not None, probe.latest_status()
        assert transition(probe, "deactivate")
        assert transition(probe, "cleanup")


class BlockingBackend(FusionBackend):
    """Our backend interface, with an `infer` that waits until the test releases it; records closing."""

    name = "blocking_test_backend"

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.closed = threading.Event()
        self.inside = 0
        self.most_inside = 0  # the most threads inside `infer` at once
        self.closed_inside_infer = False
        self._lock = threading.Lock()

    def _infer(self, vis_y: np.ndarray, ir: np.ndarray) -> BackendOutput:
        with self._lock:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
        try:
            self.entered.set()
            self.release.wait(3 * WAIT_S)
            return BackendOutput(vis_y[0, 0].copy())
        finally:
            with self._lock:
                self.inside -= 1

    def close(self) -> None:
        with self._lock:
            if self.inside:
                self.closed_inside_infer = True
        self.closed.set()


def _node_around(backend: BlockingBackend, tmp_path, monkeypatch) -> tuple[BlockingBackend, Path]:
    """The node builds its pipeline around the test double (the model file is never read), and its worker join
    times out after 0.5 s, so that it really times out here (the node's own bound is far longer)."""
    monkeypatch.setattr(fusion_node, "build_pipeline", lambda settings: FusionPipeline(backend, settings.resolution))
    monkeypatch.setattr(fusion_node.FusionNode, "WORKER_STOP_TIMEOUT_S", 0.5)
    model = tmp_path / "blocking.onnx"
    model.write_bytes(b"not used: the backend is the test double")
    return backend, model


def test_the_model_is_not_closed_under_a_worker_still_inside_infer(tmp_path, monkeypatch):
    """Deactivate's join times out while `infer` runs: cleanup must leave the model open until it returns."""
    backend, model = _node_around(BlockingBackend(), tmp_path, monkeypatch)
    domain = pick_domain_id(42)
    with node_in_process(domain, _params(model)) as node, Probe(domain) as probe:
        try:
            assert transition(probe, "configure")
            assert transition(probe, "activate")
            assert probe.wait_for_node(WAIT_S)
            _send_pair(probe, time.time_ns())
            assert backend.entered.wait(WAIT_S), "infer was never called"
            assert transition(probe, "deactivate")
            assert transition(probe, "cleanup")
            assert backend.inside == 1  # still blocked: the worker outlived deactivate's join
            assert not backend.closed.is_set(), "the model was closed while the worker was inside infer"
        finally:
            backend.release.set()
        # Once infer returns the worker exits and the model is closed after all (not leaked).
        assert backend.closed.wait(WAIT_S), "the model was never closed"
        assert not backend.closed_inside_infer
        # The late pair was not published (the node is unconfigured) but counted (superseded at deactivate).
        assert not probe.messages("fused/image_raw")
        assert node.stats.values(time.monotonic()).get("drop_superseded_at_deactivate") == "1"
        assert node._slot.in_flight() == 0


def test_a_new_activation_does_not_revive_a_lingering_worker(tmp_path, monkeypatch):
    """Deactivate (join timed out) then activate again: only the new worker takes pairs, and only once the
    old one is out of the model (never two threads in it); the old one publishes nothing and exits."""
    backend, model = _node_around(BlockingBackend(), tmp_path, monkeypatch)
    domain = pick_domain_id(43)
    earlier = set(threading.enumerate())  # workers other tests left behind are not this node's

    def workers() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "sage_fusion_worker" and t not in earlier]

    with node_in_process(domain, _params(model)), Probe(domain) as probe:
        try:
            assert transition(probe, "configure")
            assert transition(probe, "activate")
            assert probe.wait_for_node(WAIT_S)
            first = time.time_ns()
            _send_pair(probe, first)
            assert backend.entered.wait(WAIT_S)
            assert transition(probe, "deactivate")
            assert transition(probe, "activate")
            assert probe.wait_for_node(WAIT_S)
            second = first + 300_000_000
            _send_pair(probe, second, seed=1)  # while the old worker is still inside the model
            assert probe.wait_for_status(lambda s: s["pairs"] == "2", WAIT_S), probe.latest_status()
        finally:
            backend.release.set()
        assert probe.wait_until(lambda: any(_stamp(m) == second for _, m in probe.messages("fused/image_raw")),
                                WAIT_S)
        assert backend.most_inside == 1
        assert probe.wait_until(lambda: len(workers()) == 1, WAIT_S), workers()
        assert not any(_stamp(m) == first for _, m in probe.messages("fused/image_raw"))
        assert transition(probe, "deactivate")
        assert transition(probe, "cleanup")
        assert backend.closed.wait(WAIT_S) and not backend.closed_inside_infer
