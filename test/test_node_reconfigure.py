"""Parameters changed between cleanup and configure take effect at the next activation (config/sage_fusion.yaml
says they do), the node in its own process driven over real DDS.

rclpy declares a read-only `qos_overrides.<topic>.<entity>.<policy>` parameter for every policy a
publisher or subscription lets be overridden, with the profile's value at the FIRST creation, and reuses
it at every later creation: QoS settings changed before a later configure were silently pinned.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy not installed (pip install -e '.[ros]')")

from harness import NodeProcess, Probe, exported_student, pick_domain_id  # noqa: E402
from test_node_dds import _good_pair, _params, _stamp, lifecycle  # noqa: E402


@pytest.fixture(scope="module")
def onnx_model(checkpoint_path, tmp_path_factory):
    return exported_student(checkpoint_path, tmp_path_factory.getbasetemp() / "sage_models")


def set_parameters(probe: Probe, proc: NodeProcess, values: dict[str, Any]) -> None:
    from rcl_interfaces.msg import Parameter
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter as RclpyParameter

    client = probe.node.create_client(SetParameters, "/sage_fusion/set_parameters")
    try:
        assert client.wait_for_service(timeout_sec=30.0), proc.log_text()
        request = SetParameters.Request(parameters=[
            Parameter(name=k, value=RclpyParameter(k, value=v).get_parameter_value()) for k, v in values.items()
        ])
        future = client.call_async(request)
        assert probe.wait_until(future.done, 30.0), "set_parameters timed out"
        results = future.result().results
        assert all(r.successful for r in results), [r.reason for r in results]
    finally:
        probe.node.destroy_client(client)


def _node_reliability(probe: Probe, topic: str, kind: str) -> set[str]:
    infos = (probe.node.get_publishers_info_by_topic if kind == "publisher"
             else probe.node.get_subscriptions_info_by_topic)(topic)
    return {i.qos_profile.reliability.name for i in infos if i.node_name == "sage_fusion"}


def test_qos_parameters_changed_before_configure_apply_at_the_next_activation(onnx_model, tmp_path):
    domain = pick_domain_id(44)
    params = _params(onnx_model, **{"qos.reliability": "reliable", "qos.depth": 5,
                                    "output_qos.reliability": "reliable", "output_qos.depth": 5})
    # The user's own override for one policy of one output: it still wins after the reconfigure.
    params["qos_overrides./fused/camera_info.publisher.depth"] = 3
    proc = NodeProcess(params, domain, tmp_path / "node.log").start()
    # best_effort outputs: matches the node's writers before (RELIABLE) and after (BEST_EFFORT).
    probe = Probe(domain, output_reliability="best_effort", diagnostics=False)
    try:
        assert probe.wait_for_node(60.0), proc.log_text()[-3000:]
        # The node is discovered by its first publisher; the others (and their log lines) may come a moment
        # later, so each line is waited for, never read from one snapshot.
        for line in ("publishing /fused/image_raw with QoS RELIABLE depth 5",
                     "subscribed /rgb/image_raw with QoS RELIABLE depth 5",
                     "publishing /fused/camera_info with QoS RELIABLE depth 3"):
            assert proc.wait_for_log(line, 30.0), proc.log_text()[-3000:]
        assert lifecycle(probe, proc, "deactivate") and lifecycle(probe, proc, "cleanup"), proc.log_text()
        mark = len(proc.log_text())
        set_parameters(probe, proc, {"qos.reliability": "best_effort", "qos.depth": 9,
                                     "output_qos.reliability": "best_effort", "output_qos.depth": 7})
        assert lifecycle(probe, proc, "configure") and lifecycle(probe, proc, "activate"), proc.log_text()
        assert probe.wait_for_node(60.0), proc.log_text()[-3000:]
        for line in ("publishing /fused/image_raw with QoS BEST_EFFORT depth 7",
                     "subscribed /thermal/image_raw with QoS BEST_EFFORT depth 9",
                     "subscribed /rgb/image_raw with QoS BEST_EFFORT depth 9",
                     "publishing /fused/camera_info with QoS BEST_EFFORT depth 3"):  # the last: the user's depth
            assert proc.wait_for_log(line, 30.0, after=mark), proc.log_text()[mark:]
        # What DDS sees (reliability travels in discovery; depth does not, hence the log above).
        assert probe.wait_until(lambda: _node_reliability(probe, "/fused/image_raw", "publisher")
                                == {"BEST_EFFORT"}, 20.0), _node_reliability(probe, "/fused/image_raw", "publisher")
        assert _node_reliability(probe, "/rgb/image_raw", "subscription") == {"BEST_EFFORT"}
        # And it still fuses.
        stamp = time.time_ns()
        _good_pair(probe, np.random.default_rng(7), stamp)
        assert probe.wait_until(lambda: any(_stamp(m) == stamp for _, m in probe.messages("fused/image_raw")),
                                60.0), proc.log_text()[-3000:]
    finally:
        probe.close()
        proc.stop()
    assert proc.proc.returncode == 0, proc.log_text()[-3000:]
