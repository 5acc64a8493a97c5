"""Injected faults, each against the real node in its own process over real DDS (or the real CLI).

- a camera driver process killed (SIGKILL) and started again, with the other QoS, twice;
- the model file deleted, then corrupted, while the node is active; then cleanup / configure;
- a corrupt engine in the TensorRT cache on a machine without TensorRT: a clear configure error;
- inference raising mid-stream (a fixed-size model fed another size), then good pairs again;
- SIGTERM and SIGINT in every lifecycle state and during configure;
- eval-bag writing onto a full disk, and reading a bag truncated in the middle of a chunk.

Waits are generous and bounded (a loaded 2-core machine); no assertion is about timing.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy not installed (pip install -e '.[ros]')")

from harness import NodeProcess, Probe, exported_student, local_dds_env, pick_domain_id  # noqa: E402
from test_node_dds import (  # noqa: E402
    MS,
    RH,
    RW,
    TH,
    TW,
    _drop,
    _good_pair,
    _params,
    account,
    lifecycle,
    wait_inputs_matched,
)

from sage_ros.node.worker import INFERENCE_NICE  # noqa: E402

DOMAIN = pick_domain_id(20)  # away from test_node_dds' domains in the same run (pid-derived, probed)


@pytest.fixture(scope="module")
def onnx_model(checkpoint_path: Path, tmp_path_factory):
    return exported_student(checkpoint_path, tmp_path_factory.getbasetemp() / "sage_models")


def _fused_after(probe, count: int, timeout: float) -> bool:
    return probe.wait_until(lambda: len(probe.messages("fused/image_raw")) > count, timeout)


# --- a camera driver that crashes and comes back -----------------------------------------------
CAMERA = r"""
import sys, time
import numpy as np
import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from sage_ros.image.encodings import encode_image, fill_msg

reliability, th, tw, rh, rw = sys.argv[1], *map(int, sys.argv[2:6])
rclpy.init()
node = rclpy.create_node("fake_camera")
qos = QoSProfile(depth=5, reliability=getattr(ReliabilityPolicy, reliability.upper()))
pubs = {t: node.create_publisher(Image, t, qos) for t in ("thermal/image_raw", "rgb/image_raw")}
rng = np.random.default_rng(0)
print("camera up", reliability, flush=True)
while True:  # until killed: a driver does not say goodbye when it crashes
    stamp = time.time_ns()
    frames = {"thermal/image_raw": encode_image((rng.random((th, tw)) * 4000 + 2000).astype(np.uint16), "mono16"),
              "rgb/image_raw": encode_image(rng.integers(0, 255, (rh, rw, 3), dtype=np.uint8), "bgr8")}
    for topic, fields in frames.items():
        msg = Image()
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
        msg.header.frame_id = "cam"
        pubs[topic].publish(fill_msg(msg, fields))
    time.sleep(0.5)
"""


def _camera(domain: int, reliability: str, log: Path) -> subprocess.Popen:
    handle = open(log, "w")  # noqa: SIM115 - the process owns it until killed
    return subprocess.Popen([sys.executable, "-c", CAMERA, reliability, str(TH), str(TW), str(RH), str(RW)],
                            env=local_dds_env(domain), stdout=handle, stderr=subprocess.STDOUT,
                            start_new_session=True)


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)


def test_camera_driver_crash_and_comeback_with_other_qos(onnx_model, tmp_path):
    domain = DOMAIN
    params = _params(onnx_model)
    del params["qos.reliability"]  # the default: auto
    cameras = []
    with NodeProcess(params, domain, tmp_path / "node.log") as proc, Probe(domain) as probe:
        try:
            assert probe.wait_for_node(60.0), proc.log_text()
            for k, reliability in enumerate(("reliable", "best_effort", "reliable")):
                if cameras:
                    _kill(cameras[-1])  # the driver crashes: its publishers vanish without a word
                count = len(probe.messages("fused/image_raw"))
                cameras.append(_camera(domain, reliability, tmp_path / f"camera{k}.log"))
                # Whatever the dead driver left in the graph, the new one's frames get fused.
                assert _fused_after(probe, count, 90.0), (reliability, proc.log_text())
            status = probe.latest_status()
            assert status is not None and proc.alive()
            log = proc.log_text()
            # The switch to BEST_EFFORT for the second driver (a RELIABLE subscription gets nothing).
            assert "re-subscribed /thermal/image_raw with QoS BEST_EFFORT" in log, log
            assert "BEST_EFFORT)" in log or "publisher(s) BEST_EFFORT" in log
            # Once the dead BEST_EFFORT driver's lease expires, only the RELIABLE one is left: RELIABLE again.
            back = probe.wait_for_status(lambda s: s.get("qos_thermal", "").startswith("RELIABLE"), 90.0)
            assert back is not None, (probe.latest_status(), proc.log_text())
            count = len(probe.messages("fused/image_raw"))
            assert _fused_after(probe, count, 60.0), proc.log_text()
        finally:
            for cam in cameras:
                _kill(cam)


# --- the model file disappears or rots under a running node -----------------------------------
def test_model_file_deleted_or_corrupted_while_active_then_cleanup_configure(onnx_model, tmp_path):
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    model = tmp_path / "model.onnx"
    shutil.copy(onnx_model, model)
    shutil.copy(onnx_model.with_suffix(".json"), model.with_suffix(".json"))
    domain = DOMAIN + 1
    rng = np.random.default_rng(1)
    with NodeProcess(_params(model), domain, tmp_path / "node.log") as proc, Probe(domain) as probe:
        assert probe.wait_for_node(60.0), proc.log_text()
        stamp = time.time_ns()
        _good_pair(probe, rng, stamp)
        assert _fused_after(probe, 0, 60.0), proc.log_text()
        model.unlink()  # deleted while active: the loaded model keeps working
        stamp += 300 * MS
        _good_pair(probe, rng, stamp)
        assert _fused_after(probe, 1, 60.0), proc.log_text()
        assert lifecycle(probe, proc, "deactivate") and lifecycle(probe, proc, "cleanup")
        assert not lifecycle(probe, proc, "configure")  # fails, says why, the node stays up
        assert proc.wait_for_log(f"model file {model} does not exist", 10.0), proc.log_text()
        assert proc.alive()
        # Corrupted: half the file (an interrupted copy).
        data = Path(onnx_model).read_bytes()
        model.write_bytes(data[: len(data) // 2])
        assert not lifecycle(probe, proc, "configure")
        assert proc.wait_for_log("configure failed: could not start backend", 10.0), proc.log_text()
        # Not an ONNX file at all.
        model.write_bytes(b"this is not a model\n" * 100)
        assert not lifecycle(probe, proc, "configure")
        assert proc.alive() and "Traceback" not in proc.log_text()
        # Repaired: configure and activate work again without a restart, with counters continued.
        shutil.copy(onnx_model, model)
        assert lifecycle(probe, proc, "configure") and lifecycle(probe, proc, "activate"), proc.log_text()
        assert wait_inputs_matched(probe), proc.log_text()
        stamp += 300 * MS
        _good_pair(probe, rng, stamp)
        assert _fused_after(probe, 2, 60.0), proc.log_text()
        status = probe.wait_for_status(lambda s: s["outputs"] == "3", 10.0)
        assert status is not None, probe.latest_status()
        # A parameter pointing somewhere absent is refused at configure the same way.
        value = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=str(tmp_path / "gone.onnx"))
        client = probe.node.create_client(SetParameters, "/sage_fusion/set_parameters")
        assert client.wait_for_service(timeout_sec=20.0)
        future = client.call_async(SetParameters.Request(parameters=[Parameter(name="model_path", value=value)]))
        assert probe.wait_until(future.done, 30.0) and future.result().results[0].successful
        assert lifecycle(probe, proc, "deactivate") and lifecycle(probe, proc, "cleanup")
        assert not lifecycle(probe, proc, "configure")
        assert proc.alive()
    assert proc.proc.returncode == 0, proc.log_text()


# --- a corrupt engine in the TensorRT cache --------------------------------------------------------
def test_corrupt_tensorrt_engine_without_tensorrt_is_a_clear_configure_error(onnx_model, tmp_path):
    import importlib.util

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed: the rebuild path is covered by test_tensorrt_cache.py")
    engines = tmp_path / "engines"
    engines.mkdir()
    corrupt = engines / "sage_student-000000000000-trt10.3.0-sm87-fp16.engine"
    corrupt.write_bytes(os.urandom(4096))  # foreign/corrupt plan
    corrupt.with_suffix(".engine.json").write_text(json.dumps({"format": 1, "engine_size": 1}))
    domain = DOMAIN + 2
    params = _params(onnx_model, backend="tensorrt", engine_dir=str(engines), precision="fp16")
    with NodeProcess(params, domain, tmp_path / "node.log") as proc:
        assert proc.wait_for_log("configure failed", 60.0), proc.log_text()
        log = proc.log_text()
        assert "tensorrt" in log.lower() and "Traceback" not in log
        assert proc.alive()
        with Probe(domain) as probe:
            # Still a working lifecycle node: the user can switch the backend and carry on.
            from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
            from rcl_interfaces.srv import SetParameters

            client = probe.node.create_client(SetParameters, "/sage_fusion/set_parameters")
            assert client.wait_for_service(timeout_sec=20.0)
            value = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value="onnxruntime")
            future = client.call_async(SetParameters.Request(parameters=[Parameter(name="backend", value=value)]))
            assert probe.wait_until(future.done, 30.0) and future.result().results[0].successful
            assert lifecycle(probe, proc, "configure") and lifecycle(probe, proc, "activate"), proc.log_text()
            assert probe.wait_for_node(30.0)
            _good_pair(probe, np.random.default_rng(2), time.time_ns())
            assert _fused_after(probe, 0, 60.0), proc.log_text()
    assert corrupt.read_bytes() and proc.proc.returncode == 0


# --- inference raising in the middle of a stream -------------------------------------------------
def test_inference_raising_mid_stream_is_counted_and_the_stream_recovers(onnx_model, tmp_path):
    onnx = pytest.importorskip("onnx", reason="onnx not installed")
    model = onnx.load(str(onnx_model))
    for graph_input in model.graph.input:  # exported for exactly the RGB size of this test
        dims = graph_input.type.tensor_type.shape.dim
        dims[2].dim_value, dims[3].dim_value = RH, RW
    fixed = tmp_path / "fixed.onnx"
    onnx.save(model, str(fixed))
    domain = DOMAIN + 3
    rng = np.random.default_rng(3)
    params = _params(fixed, **{"fusion.resolution": "rgb"})  # the model sees the RGB frame's size
    with NodeProcess(params, domain, tmp_path / "node.log") as proc, Probe(domain) as probe:
        assert probe.wait_for_node(60.0), proc.log_text()
        stamp = time.time_ns()
        _good_pair(probe, rng, stamp)
        assert _fused_after(probe, 0, 60.0), proc.log_text()
        # The camera switches to another size: same aspect ratio, the model raises on it.
        stamp += 300 * MS
        probe.publish_array("thermal/image_raw", (rng.random((TH // 2, TW // 2)) * 4000).astype(np.uint16),
                            "mono16", stamp, "thermal")
        probe.publish_array("rgb/image_raw", rng.integers(0, 255, (RH // 2, RW // 2, 3), dtype=np.uint8), "bgr8",
                            stamp, "rgb")
        status = probe.wait_for_status(lambda s: s["_level"] == "2", 60.0)
        assert status is not None, (probe.latest_status(), proc.log_text())
        assert _drop(status, "failed_model") == 1 and status["_message"].startswith("model failed:")
        # Back to the model's size: fused again, and the error clears.
        for k in range(2):
            stamp += 300 * MS
            _good_pair(probe, rng, stamp)
            assert _fused_after(probe, 1 + k, 60.0), proc.log_text()
        status = probe.wait_for_status(lambda s: s["_level"] != "2" and s["outputs"] == "3", 20.0)
        assert status is not None, probe.latest_status()
        for name in ("thermal", "rgb"):
            acc = account(status, name)
            assert acc["received"] == acc["fates"] == 4, acc
        assert f"model failed on a {RW // 2}x{RH // 2} pair" in proc.log_text()
        assert proc.alive()
        # Inference runs nicer than the executor and DDS threads (they must not starve on a busy CPU):
        # the node's main thread keeps the nice it inherited from this process, the inference threads are
        # INFERENCE_NICE nicer, capped at 19 (so under `nice -n 19 make test` they cannot be any nicer).
        base = os.getpriority(os.PRIO_PROCESS, 0)
        nices = _thread_nices(proc.proc.pid)
        assert nices[proc.proc.pid] == base, (base, nices)
        assert max(nices.values()) == min(19, base + INFERENCE_NICE), (base, nices)


def _thread_nices(pid: int) -> dict[int, int]:
    """Thread id -> nice value, for every thread of a process (/proc/<pid>/task/<tid>/stat, field 19)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/stat") as f:
            out[int(tid)] = int(f.read().rsplit(")", 1)[1].split()[16])
    return out


# --- signals in every lifecycle state --------------------------------------------------------------
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("state", ["unconfigured", "inactive", "active", "configuring"])
def test_signal_in_every_lifecycle_state_shuts_down_cleanly(onnx_model, checkpoint_path, tmp_path, state, sig,
                                                              monkeypatch):
    monkeypatch.setenv("PYTHONFAULTHANDLER", "1")  # a hung shutdown gets SIGABRT: every thread's stack in the log
    domain = DOMAIN + 4 + (2 * ["unconfigured", "inactive", "active", "configuring"].index(state)
                           + (sig == signal.SIGTERM))
    params = _params(onnx_model, autostart=state == "active")
    if state == "configuring":
        # The torch backend imports torch and loads the checkpoint at configure: seconds, even on a
        # fast machine, so the signal lands while the configure transition runs.
        params.update(backend="torch", weights_path=str(checkpoint_path))
        del params["model_path"]
    proc = NodeProcess(params, domain, tmp_path / "node.log").start()
    probe = Probe(domain)
    try:
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState, GetState

        client = probe.node.create_client(GetState, "/sage_fusion/get_state")
        assert client.wait_for_service(timeout_sec=60.0), proc.log_text()
        if state == "active":
            assert probe.wait_for_node(60.0), proc.log_text()
        elif state == "inactive":
            assert lifecycle(probe, proc, "configure"), proc.log_text()
        elif state == "configuring":
            change = probe.node.create_client(ChangeState, "/sage_fusion/change_state")
            assert change.wait_for_service(timeout_sec=30.0)
            req = ChangeState.Request()
            req.transition.id = Transition.TRANSITION_CONFIGURE
            change.call_async(req)
            time.sleep(1.0)  # the request reached the node; configure takes several seconds
        if state != "configuring":
            response = probe.call_idempotent(client, GetState.Request(), 30.0)
            assert response is not None, f"get_state unanswered for 30 s\n{proc.log_text()}"
            assert response.current_state.label == state
        else:
            client.call_async(GetState.Request())  # a request in flight while the signal lands
    finally:
        probe.close()
        proc.proc.send_signal(sig)
        try:
            proc.proc.wait(timeout=60.0)
        except subprocess.TimeoutExpired:
            proc.proc.send_signal(signal.SIGABRT)  # faulthandler writes where it hangs
            time.sleep(2.0)
        code = proc.stop(timeout=5.0)
    log = proc.log_text()
    assert code == 0, f"exit code {code} after {sig.name} in {state}:\n{log}"
    assert "Traceback" not in log, log
    if state == "configuring":
        # Informational: whether configure had finished when the signal arrived.
        print(f"configure finished before {sig.name}: {'configured:' in log}")
