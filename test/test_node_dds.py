"""The fusion node in its own process, driven over real DDS (Fast DDS on loopback) from this process.

One node serves the traffic and bad-input tests (module scope, they run in file order); lifecycle
and segmentation tests start their own. Frames are small (160x128 thermal, 320x256 RGB) so the
released model runs quickly on a CPU.
"""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy not installed (pip install -e '.[ros]')")

from harness import NodeProcess, Probe, exported_student, pick_domain_id  # noqa: E402

from sage_ros.image.encodings import ImageFields, encode_image  # noqa: E402

DOMAIN = pick_domain_id(0)  # this module's own ROS domain (pid-derived, probed): no cross-talk with parallel runs
MS = 1_000_000
TH, TW = 128, 160
RH, RW = 256, 320


@pytest.fixture(scope="module")
def onnx_model(checkpoint_path: Path, tmp_path_factory):
    return exported_student(checkpoint_path, tmp_path_factory.getbasetemp() / "sage_models")


def _params(model, **over):
    params = {
        "model_path": str(model),
        "backend": "onnxruntime",
        "threads": 1,
        # Same-host test traffic: RELIABLE so no UDP fragment loss makes a pair disappear.
        "qos.reliability": "reliable",
        "sync.slop": 0.02,
        "diagnostics.period": 0.3,
        "diagnostics.stale_timeout": 1.5,
    }
    params.update(over)
    return params


@pytest.fixture(scope="module")
def running(onnx_model, tmp_path_factory):
    log = tmp_path_factory.mktemp("node") / "node.log"
    proc = NodeProcess(_params(onnx_model), DOMAIN, log).start()
    probe = Probe(DOMAIN, output_topics=("fused/image_raw", "fused/camera_info"))
    try:
        if not probe.wait_for_node(60.0):
            pytest.fail(f"fusion node did not come up:\n{proc.log_text()}")
        yield proc, probe
    finally:
        probe.close()
        proc.stop()


def _thermal(rng):
    base = np.linspace(2000, 6000, TW, dtype=np.float32)[None, :].repeat(TH, 0)
    return (base + rng.normal(0, 30, (TH, TW))).astype(np.uint16)


def _rgb(rng):
    return rng.integers(0, 255, (RH, RW, 3), dtype=np.uint8)


def _stamp(msg) -> int:
    return int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)


def test_jittered_pairs_fused_once_with_rgb_stamp_and_nothing_across_slop(running):
    proc, probe = running
    # The node started with the package's large-frames Fast DDS profile (nothing in the environment chose
    # one), and this probe, on Fast DDS defaults, receives its multi-MB outputs all the same (below).
    assert "Fast DDS profile: package profile" in proc.log_text(), proc.log_text()[-2000:]
    rng = np.random.default_rng(0)
    order = random.Random(0)
    # Stamps in the past (12 x 200 ms): latency = receive - stamp then always exceeds the processing.
    base = time.time_ns() - 3_000_000_000
    true_stamps, lonely_stamps = [], []
    probe.publish_info(RW, RH, base, "rgb_optical")
    time.sleep(0.2)
    for k in range(12):
        rgb_stamp = base + k * 200 * MS
        lonely = k in (3, 7, 10)
        # True pairs: thermal within +-12 ms (slop 20 ms). Lonely: thermal 45 ms late, beyond the slop.
        th_stamp = rgb_stamp + (45 * MS if lonely else order.randint(-12, 12) * MS)
        big = bool(k % 2)  # alternate byte order, as two different drivers would
        sends = [
            ("thermal/image_raw", encode_image(_thermal(rng), "mono16", is_bigendian=big), th_stamp, "thermal"),
            ("rgb/image_raw", encode_image(_rgb(rng), "bgr8", row_padding=8), rgb_stamp, "rgb_optical"),
        ]
        order.shuffle(sends)  # either camera may arrive first
        for topic, fields, stamp, frame in sends:
            probe.publish(topic, fields, stamp, frame)
        (lonely_stamps if lonely else true_stamps).append(rgb_stamp)
        if lonely:
            time.sleep(0.3)
        else:
            # Pace on the output: the node fuses only the newest pair, by design.
            assert probe.wait_until(
                lambda s=rgb_stamp: any(_stamp(m) == s for _, m in probe.messages("fused/image_raw")), 30.0
            ), f"pair {k} never came back\n{proc.log_text()}"
    time.sleep(1.0)  # anything late or duplicated would show up now
    fused = [m for _, m in probe.messages("fused/image_raw")]
    stamps = [_stamp(m) for m in fused]
    assert sorted(stamps) == sorted(true_stamps)  # every true pair exactly once, no lonely one
    assert not set(stamps) & set(lonely_stamps)
    for m in fused:
        assert m.header.frame_id == "rgb_optical"
        assert (m.encoding, m.height, m.width, m.step) == ("rgb8", RH, RW, RW * 3)
    infos = [m for _, m in probe.messages("fused/camera_info")]
    assert infos and {_stamp(m) for m in infos} <= set(true_stamps)
    assert all(m.header.frame_id == "rgb_optical" and m.width == RW for m in infos)
    status = probe.wait_for_status(lambda s: int(s["outputs"]) >= 12 - 3, 5.0)
    assert status is not None and status["_level"] != "2", status  # WARN is fine: inputs went quiet
    assert status["pairs"] == "9" and status["outputs"] == "9"
    assert "onnxruntime" in status["backend"], status["backend"]
    for name in ("thermal", "rgb"):  # the 3 lonely frames of each camera: queued or counted, never fused
        assert int(status[f"sync_pending_{name}"]) + _drop(status, f"sync_unpaired_{name}") == 3, status
    assert float(status["latency_p50_ms"]) > float(status["inference_p50_ms"]) > 0
    assert "with QoS RELIABLE depth 5" in proc.log_text()
    # The student started in the worker with the first pair; its Python log line reached the node's log,
    # with why `precision: auto` chose what it did.
    assert "student started: onnxruntime" in proc.log_text(), proc.log_text()[-2000:]
    assert "precision auto -> fp32 on onnxruntime" in proc.log_text(), proc.log_text()[-2000:]


def _drop(status, key):
    return int(status.get(f"drop_{key}", "0"))


def _good_pair(probe, rng, stamp):
    probe.publish_array("thermal/image_raw", _thermal(rng), "mono16", stamp, "thermal")
    probe.publish_array("rgb/image_raw", _rgb(rng), "bgr8", stamp, "rgb_optical")


def test_bad_inputs_are_logged_counted_and_survived(running):
    proc, probe = running
    rng = np.random.default_rng(1)
    before = len(probe.messages("fused/image_raw"))
    t = time.time_ns()
    # 1. unsupported thermal encoding (rejected on arrival)
    probe.publish_array("thermal/image_raw", _rgb(rng)[:TH, :TW], "bgr8", t, "thermal")
    # 2. truncated RGB data
    f = encode_image(_rgb(rng), "bgr8")
    probe.publish("rgb/image_raw", type(f)(f.encoding, f.height, f.width, f.step, False, f.data[:1000]), t, "x")
    # 3. size mismatch: square thermal, 5:4 RGB, no homography (pairs, then fails in the worker)
    t3 = t + 300 * MS
    probe.publish_array("thermal/image_raw", np.full((128, 128), 3000, np.uint16), "mono16", t3, "thermal")
    probe.publish_array("rgb/image_raw", _rgb(rng), "bgr8", t3, "rgb_optical")
    time.sleep(0.5)
    # 4. NaN in a radiometric 32FC1 frame
    t4 = t + 600 * MS
    temps = np.full((TH, TW), 24.5, np.float32)
    temps[10:12, 20:30] = np.nan
    probe.publish_array("thermal/image_raw", temps, "32FC1", t4, "thermal")
    probe.publish_array("rgb/image_raw", _rgb(rng), "bgr8", t4, "rgb_optical")
    time.sleep(0.5)
    # The node is still alive and fuses the next good pair.
    t5 = t + 900 * MS
    _good_pair(probe, rng, t5)
    assert probe.wait_until(lambda: any(_stamp(m) == t5 for _, m in probe.messages("fused/image_raw")), 30.0)
    assert len(probe.messages("fused/image_raw")) == before + 1
    status = probe.wait_for_status(lambda s: _drop(s, "failed_invalid_pixels") >= 1, 5.0)
    assert status is not None, probe.latest_status()
    assert _drop(status, "thermal_unsupported_encoding") == 1
    assert _drop(status, "rgb_malformed") == 1
    assert _drop(status, "failed_size_mismatch") == 1
    assert _drop(status, "failed_invalid_pixels") == 1
    log = proc.log_text()
    assert "encoding 'bgr8' is not supported for thermal" in log
    assert "truncated message?" in log
    assert "differ in aspect ratio and no homography is set" in log
    assert "NaN/inf pixels" in log
    # 5. a BEST_EFFORT camera driver meets this RELIABLE subscription: nothing flows, said loudly.
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT)
    wrong = probe.node.create_publisher(Image, "thermal/image_raw", qos)
    try:
        assert proc.wait_for_log("QoS incompatible with this subscription", 10.0), proc.log_text()
        status = probe.wait_for_status(lambda s: _drop(s, "qos_incompatible_thermal") >= 1, 5.0)
        assert status is not None, probe.latest_status()
    finally:
        probe.node.destroy_publisher(wrong)
    assert proc.alive()


def test_silent_input_raises_a_warning_and_recovers(running):
    proc, probe = running
    rng = np.random.default_rng(2)
    start = time.monotonic()
    k = 0
    # RGB keeps streaming at 5 Hz, thermal goes silent.
    while time.monotonic() - start < 2.6:
        probe.publish_array("rgb/image_raw", _rgb(rng), "bgr8", time.time_ns(), "rgb_optical")
        k += 1
        time.sleep(0.2)
    status = probe.wait_for_status(lambda s: s["_level"] == "1", 3.0)
    assert status is not None, probe.latest_status()
    assert "thermal silent for" in status["_message"] and "rgb" not in status["_message"]
    assert float(status["rgb_rate_hz"]) > 2.0
    assert "thermal silent for" in proc.log_text()
    # Thermal back: the warning clears.
    stamp = time.time_ns()
    _good_pair(probe, rng, stamp)
    assert probe.wait_for_status(lambda s: s["_level"] == "0", 5.0) is not None
    assert proc.alive()


def test_lifecycle_missing_model_then_configure_activate_deactivate(onnx_model, tmp_path):
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState, GetState
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    repo = Path(__file__).resolve().parents[1]
    domain = DOMAIN + 1
    missing = tmp_path / "no_such_model.onnx"
    params = _params(onnx_model, model_path=str(missing))
    # A per-topic QoS override, as a user would put in a params file.
    params["qos_overrides./rgb/camera_info.subscription.reliability"] = "best_effort"
    # This thermal "driver" stamps 50 ms late; the offset pairs it with the RGB frame anyway.
    params["sync.thermal_offset"] = -0.05
    # Also proves the shipped params file parses (the -p overrides given after it win).
    proc = NodeProcess(params, domain, tmp_path / "node.log", params_file=repo / "config" / "sage_fusion.yaml")
    probe = None
    try:
        proc.start()
        assert proc.wait_for_log("configure failed", 30.0), proc.log_text()
        assert "sage-ros weights fetch" in proc.log_text(), proc.log_text()
        probe = Probe(domain)
        node = probe.node

        def call(srv_type, name, request):
            client = node.create_client(srv_type, name)
            assert client.wait_for_service(timeout_sec=20.0), f"{name} not available\n{proc.log_text()}"
            future = client.call_async(request)
            assert probe.wait_until(future.done, 30.0), f"{name} timed out"
            return future.result()

        get_state = node.create_client(GetState, "/sage_fusion/get_state")
        assert get_state.wait_for_service(timeout_sec=20.0), proc.log_text()
        response = probe.call_idempotent(get_state, GetState.Request(), 30.0)
        assert response is not None and response.current_state.label == "unconfigured", proc.log_text()
        assert proc.alive()
        value = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=str(onnx_model))
        result = call(SetParameters, "/sage_fusion/set_parameters",
                      SetParameters.Request(parameters=[Parameter(name="model_path", value=value)]))
        assert result.results[0].successful
        for transition in (Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_ACTIVATE):
            req = ChangeState.Request()
            req.transition.id = transition
            assert call(ChangeState, "/sage_fusion/change_state", req).success, proc.log_text()
        assert probe.wait_for_node(20.0)
        rng = np.random.default_rng(3)
        stamp = time.time_ns()
        probe.publish_array("thermal/image_raw", _thermal(rng), "mono16", stamp + 50 * MS, "thermal")
        probe.publish_array("rgb/image_raw", _rgb(rng), "bgr8", stamp, "rgb_optical")
        assert probe.wait_until(lambda: len(probe.messages("fused/image_raw")) == 1, 30.0), proc.log_text()
        assert _stamp(probe.messages("fused/image_raw")[0][1]) == stamp  # the RGB stamp, not the thermal one
        req = ChangeState.Request()
        req.transition.id = Transition.TRANSITION_DEACTIVATE
        assert call(ChangeState, "/sage_fusion/change_state", req).success
        assert probe.wait_until(lambda: probe.pubs["rgb/image_raw"].get_subscription_count() == 0, 10.0)
        assert call(GetState, "/sage_fusion/get_state", GetState.Request()).current_state.label == "inactive"
        status = probe.wait_for_status(lambda s: s["state"] == "inactive", 5.0)
        assert status is not None and status["_level"] == "0" and status["_message"] == "configured, inactive"
        log = proc.log_text()
        assert "subscribed /rgb/image_raw with QoS RELIABLE depth 5" in log and "deactivated" in log
        assert "subscribed /rgb/camera_info with QoS BEST_EFFORT depth 5" in log
    finally:
        if probe is not None:
            probe.close()
        assert proc.stop() is not None
    assert proc.proc.returncode == 0, proc.log_text()


@pytest.fixture(scope="module")
def sample_pair(official_dir: Path) -> tuple[ImageFields, ImageFields]:
    """A real scene (released sample pair 00000) at this module's sizes: mono16 thermal counts, bgr8 RGB."""
    import cv2

    ir = cv2.imread(str(official_dir / "Ir" / "00000.png"), cv2.IMREAD_GRAYSCALE)
    vis = cv2.imread(str(official_dir / "Vis" / "00000.png"), cv2.IMREAD_COLOR)
    assert ir is not None and vis is not None, f"sample pair 00000 unreadable under {official_dir}"
    counts = cv2.resize(ir, (TW, TH), interpolation=cv2.INTER_AREA).astype(np.uint16) * 40 + 3000
    rgb = cv2.resize(vis, (RW, RH), interpolation=cv2.INTER_AREA)
    return encode_image(counts, "mono16"), encode_image(rgb, "bgr8")


def _in_process(params: dict, thermal: ImageFields, rgb: ImageFields) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fused RGB, class ids, overlay) the node's own pipeline computes for one pair, configured in THIS process
    from the same parameters: what the node over DDS must have published for it."""
    from rclpy.context import Context
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import Image

    from sage_ros.image.encodings import fill_msg
    from sage_ros.model.classes import overlay
    from sage_ros.node.fusion_node import FusionNode

    context = Context()
    rclpy.init(context=context, domain_id=pick_domain_id(60))
    node = FusionNode(context=context, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        out = node.processor.process(fill_msg(Image(), thermal), fill_msg(Image(), rgb), classes=True)
        assert out.class_ids is not None and node.class_table is not None
        return out.fused_rgb, out.class_ids, overlay(out.fused_rgb, out.class_ids, node.class_table,
                                                     node.settings["overlay.alpha"])
    finally:
        node.trigger_cleanup()
        node.destroy_node()
        rclpy.try_shutdown(context=context)


def _pixels(msg, channels: int) -> np.ndarray:
    assert msg.step == msg.width * channels, (msg.step, msg.width)
    return np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.width, channels).squeeze()


def _assert_same_image(got: np.ndarray, want: np.ndarray, what: str) -> None:
    """Equal within 1 grey level (the same graph on the same runtime; allowed one rounding step)."""
    assert got.shape == want.shape, (what, got.shape, want.shape)
    diff = np.abs(got.astype(np.int16) - want.astype(np.int16))
    assert diff.max() <= 1, f"{what}: {int((diff > 1).sum())} pixels differ by up to {diff.max()}"


def test_segmentation_outputs_with_default_best_effort_qos(onnx_model, sample_pair, tmp_path):
    """The shipped segmentation network runs after fusion for mask and overlay subscribers (default model)."""
    model = onnx_model
    domain = DOMAIN + 2
    # ema_alpha 1: each frame normalised on its own, so a resent pair is fused as the in-process reference is.
    params = _params(model, **{"qos.reliability": "best_effort", "frame_id": "fused_frame",
                               "thermal.ema_alpha": 1.0})
    thermal, rgb = sample_pair
    topics = ("fused/image_raw", "segmentation/mask", "segmentation/overlay")
    with NodeProcess(params, domain, tmp_path / "node.log") as proc, Probe(domain, output_topics=topics) as probe:
        assert probe.wait_for_node(60.0), proc.log_text()
        # Best effort may lose a frame to a fragment drop: resend the pair until one comes back on every topic.
        stamps = []
        for _ in range(5):
            stamps.append(time.time_ns())
            probe.publish("thermal/image_raw", thermal, stamps[-1], "thermal")
            probe.publish("rgb/image_raw", rgb, stamps[-1], "rgb_optical")
            if probe.wait_until(lambda: all(probe.messages(t) for t in topics), 8.0):
                break
        assert all(probe.messages(t) for t in topics), proc.log_text()
        (_, fused), (_, mask), (_, over) = (probe.messages(t)[0] for t in topics)
        assert _stamp(fused) == _stamp(mask) == _stamp(over) and _stamp(fused) in stamps
        assert fused.header.frame_id == mask.header.frame_id == "fused_frame"
        assert mask.encoding == "mono8" and (mask.height, mask.width) == (RH, RW)
        assert over.encoding == "rgb8" and (over.height, over.width) == (RH, RW)
        # The pixels: what the same pipeline computes for this pair in this process, and a real mask (a
        # scene with people and road gives more than one class; an all-zero mask fails here).
        want_fused, want_ids, want_overlay = _in_process(params, thermal, rgb)
        _assert_same_image(_pixels(fused, 3), want_fused, "fused")
        ids = _pixels(mask, 1)
        np.testing.assert_array_equal(ids, want_ids)
        assert len(np.unique(ids)) > 1, np.unique(ids)
        _assert_same_image(_pixels(over, 3), want_overlay, "overlay")
        assert "segmentation: seg_net" in proc.log_text(), proc.log_text()[-2000:]
        # Nobody listens to the overlay any more: it is no longer computed or published.
        probe.node.destroy_subscription(probe.subs[2])
        assert probe.wait_until(lambda: probe.node.count_subscribers("/segmentation/overlay") == 0, 5.0)
        time.sleep(0.5)  # the node's view of the graph catches up
        status = probe.wait_for_status(lambda s: s.get("published_fused") == s.get("outputs"), 5.0)
        overlays, outputs = int(status["published_overlay"]), int(status["outputs"])
        stamp = time.time_ns()
        _good_pair(probe, np.random.default_rng(4), stamp)
        assert probe.wait_until(lambda: any(_stamp(m) == stamp for _, m in probe.messages(topics[1])), 30.0)
        status = probe.wait_for_status(lambda s: int(s["outputs"]) > outputs, 5.0)
        assert status is not None, probe.latest_status()
        assert int(status["published_overlay"]) == overlays
        assert int(status["published_fused"]) == int(status["published_mask"]) == int(status["outputs"]) > overlays
        assert "BEST_EFFORT depth 5 (sensor-data profile" in proc.log_text()


def test_model_failure_is_an_error_in_diagnostics_and_the_node_survives(onnx_model, tmp_path):
    onnx = pytest.importorskip("onnx", reason="onnx not installed")
    # A realistic mistake: a model exported for one fixed size, fed another size at run time.
    model = onnx.load(str(onnx_model))
    for graph_input in model.graph.input:
        dims = graph_input.type.tensor_type.shape.dim
        dims[2].dim_value, dims[3].dim_value = 64, 80
    fixed = tmp_path / "fixed_64x80.onnx"
    onnx.save(model, str(fixed))
    domain = DOMAIN + 3
    with NodeProcess(_params(fixed), domain, tmp_path / "node.log") as proc, Probe(domain) as probe:
        assert probe.wait_for_node(60.0), proc.log_text()
        _good_pair(probe, np.random.default_rng(5), time.time_ns())
        status = probe.wait_for_status(lambda s: s["_level"] == "2", 20.0)
        assert status is not None, (probe.latest_status(), proc.log_text())
        assert status["_message"].startswith("model failed:") and _drop(status, "failed_model") == 1
        assert f"model failed on a {RW}x{RH} pair" in proc.log_text()
        assert proc.alive() and not probe.messages("fused/image_raw")
        # SIGTERM (what launch sends after SIGINT, and systemd first) also shuts down cleanly.
        assert proc.stop(sig=signal.SIGTERM) == 0, proc.log_text()


# --- accounting: every received message ends in exactly one counted fate --------------------------
TRANSITION_GOAL = {"configure": "inactive", "activate": "active", "deactivate": "inactive",
                   "cleanup": "unconfigured", "shutdown": "finalized"}


def lifecycle(probe, proc, transition: str) -> bool:
    """Ask the node for a lifecycle transition (configure, activate, deactivate, cleanup) over its service."""
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState, GetState

    client = probe.node.create_client(ChangeState, "/sage_fusion/change_state")
    state_client = probe.node.create_client(GetState, "/sage_fusion/get_state")
    try:
        assert client.wait_for_service(timeout_sec=30.0), f"change_state not available\n{proc.log_text()}"
        req = ChangeState.Request()
        req.transition.id = getattr(Transition, f"TRANSITION_{transition.upper()}")
        future = client.call_async(req)
        # A transition is not safe to resend, so a lost response (see Probe.call_idempotent) is
        # recognised by asking for the state: the transition happened when the node is in its goal state.
        deadline = time.monotonic() + 120.0
        while not probe.wait_until(future.done, 10.0):
            state = probe.call_idempotent(state_client, GetState.Request(), 10.0)
            if state is not None and state.current_state.label == TRANSITION_GOAL[transition]:
                return True
            assert time.monotonic() < deadline, f"{transition} timed out\n{proc.log_text()}"
        return bool(future.result().success)
    finally:
        probe.node.destroy_client(client)
        probe.node.destroy_client(state_client)


def wait_inputs_matched(probe, reliability: str = "RELIABLE", timeout: float = 30.0) -> bool:
    """True once the node subscribes to both image topics with `reliability` (auto QoS settles)."""
    from rclpy.qos import ReliabilityPolicy

    want = getattr(ReliabilityPolicy, reliability)

    def matched() -> bool:
        for topic in ("/thermal/image_raw", "/rgb/image_raw"):
            subs = [i for i in probe.node.get_subscriptions_info_by_topic(topic) if i.node_name == "sage_fusion"]
            if not subs or any(i.qos_profile.reliability != want for i in subs):
                return False
        return True

    return probe.wait_until(matched, timeout)


PAIR_FATES = ("superseded", "superseded_at_deactivate", "stale")


def account(status: dict[str, str], name: str) -> dict[str, int]:
    """The documented identity (docs/node.md, Accounting) for input `name`, from /diagnostics values only."""
    d = {k[len("drop_"):]: int(v) for k, v in status.items() if k.startswith("drop_")}
    rejected = sum(v for k, v in d.items() if k.startswith(f"{name}_"))
    pair_fates = int(status["outputs"]) + sum(d.get(k, 0) for k in PAIR_FATES) + sum(
        v for k, v in d.items() if k.startswith("failed_")) + int(status["in_flight"])
    fates = (rejected + d.get(f"sync_unpaired_{name}", 0) + d.get(f"sync_duplicate_{name}", 0)
             + int(status[f"sync_pending_{name}"]) + pair_fates)
    return {"received": int(status[f"{name}_received"]), "fates": fates, "pairs": int(status["pairs"]),
            "pair_fates": pair_fates}


def test_every_message_is_accounted_for_across_deactivate_activate_and_cleanup_configure(onnx_model, tmp_path):
    domain = DOMAIN + 4
    rng = np.random.default_rng(6)
    sent = {"thermal": 0, "rgb": 0}
    probe = Probe(domain)  # the cameras are up first; the node's default auto QoS matches them (RELIABLE)
    params = _params(onnx_model, **{"qos.depth": 20})
    del params["qos.reliability"]
    proc = NodeProcess(params, domain, tmp_path / "node.log").start()
    state = {"t": time.time_ns()}

    def stamp(step_ms: int = 200) -> int:
        state["t"] += step_ms * MS
        return state["t"]

    def send(name, array, encoding, st, frame="cam"):
        probe.publish_array(f"{name}/image_raw", array, encoding, st, frame)
        sent[name] += 1

    def send_pair(st, wait=True):
        send("thermal", _thermal(rng), "mono16", st)
        send("rgb", _rgb(rng), "bgr8", st)
        if wait:
            assert probe.wait_until(lambda: any(_stamp(m) == st for _, m in probe.messages("fused/image_raw")),
                                    60.0), proc.log_text()

    def at_rest(expect_outputs_plus_superseded: int) -> dict[str, str]:
        # Every message delivered (nothing lost in DDS: RELIABLE, paced), nothing in flight.
        status = probe.wait_for_status(
            lambda s: int(s["thermal_received"]) == sent["thermal"] and int(s["rgb_received"]) == sent["rgb"]
            and s["in_flight"] == "0"
            and int(s["outputs"]) + int(s.get("drop_superseded", "0")) == expect_outputs_plus_superseded,
            60.0)
        if status is None:
            last = {k: v for k, v in (probe.latest_status() or {}).items() if "_ms" not in k}
            pytest.fail(f"not at rest: sent {sent}, expected outputs+superseded {expect_outputs_plus_superseded}\n"
                        f"{last}\n{proc.log_text()[-4000:]}")
        return status

    def check_identity(status):
        for name in ("thermal", "rgb"):
            acc = account(status, name)
            assert acc["received"] == acc["fates"], (name, acc, status)
            assert acc["pairs"] == acc["pair_fates"], (acc, status)

    try:
        assert probe.wait_for_node(60.0), proc.log_text()
        assert wait_inputs_matched(probe), proc.log_text()
        # --- phase A: first activation ---------------------------------------------------------
        for _ in range(3):
            send_pair(stamp())
        send("thermal", _rgb(rng)[:TH, :TW], "bgr8", stamp())  # unsupported for thermal (x2)
        send("thermal", _rgb(rng)[:TH, :TW], "rgb8", stamp())
        f = encode_image(_rgb(rng), "bgr8")
        probe.publish("rgb/image_raw", type(f)(f.encoding, f.height, f.width, f.step, False, f.data[:999]), stamp(),
                      "cam")
        sent["rgb"] += 1  # truncated
        send("rgb", _rgb(rng), "bgr8", -5 * 1_000_000_000)  # negative stamp
        send("thermal", _thermal(rng), "mono16", stamp() + 100 * MS)  # lonely (x2): no partner within slop
        send("thermal", _thermal(rng), "mono16", stamp() + 100 * MS)
        dup = stamp()
        send("thermal", _thermal(rng), "mono16", dup)  # the same stamp twice: one duplicate
        send("thermal", _thermal(rng), "mono16", dup)
        send("rgb", _rgb(rng), "bgr8", dup)
        assert probe.wait_until(lambda: any(_stamp(m) == dup for _, m in probe.messages("fused/image_raw")), 60.0)
        mismatch = stamp()  # square thermal, 5:4 RGB, no homography: pairs, then fails
        send("thermal", np.full((128, 128), 3000, np.uint16), "mono16", mismatch)
        send("rgb", _rgb(rng), "bgr8", mismatch)
        # Counted as failed before the burst (else a burst pair could supersede it in the mailbox).
        assert probe.wait_for_status(lambda s: _drop(s, "failed_size_mismatch") == 1, 60.0), probe.latest_status()
        for _ in range(4):  # a burst faster than the model: some pairs superseded
            send_pair(stamp(40), wait=False)
            time.sleep(0.05)
        status = at_rest(4 + 4)
        assert _drop(status, "failed_size_mismatch") == 1
        check_identity(status)
        assert lifecycle(probe, proc, "deactivate"), proc.log_text()
        status = probe.wait_for_status(lambda s: s["state"] == "inactive", 20.0)
        assert status is not None and status["sync_pending_thermal"] == "0", status
        check_identity(status)
        unpaired_a = {n: _drop(status, f"sync_unpaired_{n}") + _drop(status, f"sync_duplicate_{n}")
                      for n in ("thermal", "rgb")}
        assert unpaired_a == {"thermal": 3, "rgb": 0}, status  # 2 lonely + 1 duplicate
        # --- phase B: activate again: counters continue ------------------------------------------
        assert lifecycle(probe, proc, "activate"), proc.log_text()
        assert wait_inputs_matched(probe), proc.log_text()
        for _ in range(2):
            send_pair(stamp())
        send("rgb", _rgb(rng), "bgr8", stamp() + 100 * MS)  # lonely RGB
        status = at_rest(8 + 2)
        assert _drop(status, "sync_unpaired_thermal") + _drop(status, "sync_duplicate_thermal") >= 3  # not reset
        check_identity(status)
        assert lifecycle(probe, proc, "deactivate")
        # --- phase C: cleanup + configure + activate: still counting on --------------------------
        assert lifecycle(probe, proc, "cleanup")
        assert lifecycle(probe, proc, "configure"), proc.log_text()
        assert lifecycle(probe, proc, "activate")
        assert wait_inputs_matched(probe), proc.log_text()
        for _ in range(2):
            send_pair(stamp())
        f = encode_image(_thermal(rng), "mono16")
        probe.publish("thermal/image_raw", type(f)(f.encoding, f.height, f.width, 10, False, f.data), stamp(), "cam")
        sent["thermal"] += 1  # step smaller than a row
        status = at_rest(10 + 2)
        assert lifecycle(probe, proc, "deactivate")
        status = probe.wait_for_status(lambda s: s["state"] == "inactive" and s["sync_pending_rgb"] == "0", 20.0)
        assert status is not None, probe.latest_status()
        check_identity(status)
        expected = {
            "thermal_unsupported_encoding": 2, "thermal_malformed": 1, "rgb_malformed": 1, "rgb_negative_stamp": 1,
            "failed_size_mismatch": 1,
        }
        assert {k: _drop(status, k) for k in expected} == expected, status
        for name, unpaired in (("thermal", 3), ("rgb", 1)):
            assert _drop(status, f"sync_unpaired_{name}") + _drop(status, f"sync_duplicate_{name}") == unpaired
        # Pairs: A 3 paced + the duplicate's + the mismatch + 4 burst, B 2, C 2; all but the mismatch
        # fused or superseded.
        assert int(status["pairs"]) == 3 + 1 + 1 + 4 + 2 + 2
        assert int(status["outputs"]) + _drop(status, "superseded") + _drop(status, "superseded_at_deactivate") == 12
        assert int(status["thermal_received"]) == sent["thermal"] and int(status["rgb_received"]) == sent["rgb"]
        log = proc.log_text()
        assert "negative stamp (sec -5" in log
        assert "encoding 'bgr8' is not supported for thermal" in log and "encoding 'rgb8' is not supported" in log
    finally:
        probe.close()
        proc.stop()


def test_auto_qos_choice_and_distinct_problem_logging_units():
    from rclpy.qos import ReliabilityPolicy as R

    from sage_ros.node.qos import match_publishers
    from sage_ros.node.throttle import Throttle

    assert match_publishers([]) == ("best_effort", "no publisher yet")
    assert match_publishers([R.RELIABLE, R.RELIABLE]) == ("reliable", "all 2 publisher(s) RELIABLE")
    assert match_publishers([R.RELIABLE, R.BEST_EFFORT]) == ("best_effort", "1 of 2 publisher(s) BEST_EFFORT")
    throttle = Throttle(period=5.0, max_distinct=3)
    assert throttle("rgb_unsupported_encoding", 0.0, "'bayer_rggb8'") == 0  # first sight: logged
    assert throttle("rgb_unsupported_encoding", 0.1, "'bayer_rggb8'") is None  # same problem: throttled
    assert throttle("rgb_unsupported_encoding", 0.2, "''") == 1  # a new detail is named at once
    assert throttle("rgb_unsupported_encoding", 0.3, "'x'") == 0
    assert throttle("rgb_unsupported_encoding", 0.4, "'y'") is None  # past max_distinct: per-cause throttle
    assert len(throttle) == 3
    assert throttle("rgb_unsupported_encoding", 6.0, "'z'") == 1  # period over: logged with the repeat count


def test_hd_fused_images_reach_a_best_effort_subscriber(onnx_model, tmp_path):
    """1280x720 outputs (2.7 MB) to a BEST_EFFORT subscriber, as image viewers often subscribe.

    With Fast DDS's default 512 KB shared-memory segment the node's writer drops such samples for
    best-effort readers (measured: 9 of 20 arrived); the node's default large-frames profile
    (sage_ros/node/dds_profile.py) delivers them.
    """
    domain = pick_domain_id(5)
    params = _params(onnx_model, **{"registration.homography": [1.40625, 0.0, 190.0, 0.0, 1.40625, 0.0, 0.0, 0.0, 1.0]})
    proc = NodeProcess(params, domain, tmp_path / "node.log").start()
    probe = Probe(domain, output_reliability="best_effort", diagnostics=False)
    rng = np.random.default_rng(3)
    thermal = encode_image(rng.integers(2000, 14000, (512, 640)).astype(np.uint16), "mono16")
    rgb = encode_image(rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8), "bgr8")
    try:
        assert probe.wait_for_node(60.0), proc.log_text()[-2000:]
        assert "Fast DDS profile: package profile" in proc.log_text(), proc.log_text()[-2000:]
        sent, arrived = 10, 0
        for k in range(sent + 1):  # pair 0 warms the node up and is not counted
            stamp = time.time_ns()
            probe.publish("thermal/image_raw", thermal, stamp)
            probe.publish("rgb/image_raw", rgb, stamp)

            def fused(stamp=stamp):
                return [m for _, m in probe.messages("fused/image_raw")
                        if m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec == stamp]

            if probe.wait_until(lambda: bool(fused()), 8.0) and k:
                arrived += 1
                msg = fused()[0]
                assert (msg.width, msg.height, len(msg.data)) == (1280, 720, 1280 * 720 * 3)
        # One best-effort loss is tolerated (a loaded CI host); the default segments lost half.
        assert arrived >= sent - 1, f"{arrived}/{sent} fused frames reached the best-effort subscriber"
    finally:
        probe.close()
        proc.stop()


def _one_pair_through(params: dict, salt: int, tmp_path, log_says: str, pair: tuple[ImageFields, ImageFields],
                      topic: str = "fused/image_raw"):
    """Start a node, check its start-up log says `log_says`, send it `pair` (thermal, RGB); returns (the `topic`
    message for it, the thermal and RGB fields sent)."""
    domain = pick_domain_id(salt)
    proc = NodeProcess(params, domain, tmp_path / "node.log").start()
    topics = tuple(dict.fromkeys(("fused/image_raw", topic)))
    probe = Probe(domain, diagnostics=False, output_topics=topics)
    thermal, rgb = pair
    try:
        assert probe.wait_for_node(60.0), proc.log_text()[-2000:]
        assert log_says in proc.log_text(), proc.log_text()[-2000:]
        stamp = time.time_ns()
        probe.publish("thermal/image_raw", thermal, stamp)
        probe.publish("rgb/image_raw", rgb, stamp)
        assert probe.wait_until(lambda: any(_stamp(m) == stamp for _, m in probe.messages(topic)), 30.0), \
            proc.log_text()[-2000:]
        return next(m for _, m in probe.messages(topic) if _stamp(m) == stamp), thermal, rgb
    finally:
        probe.close()
        proc.stop()


def test_scale_adapted_student_fuses_below_the_rgb_size(onnx_model, sample_pair, tmp_path):
    """With the released student as model and the default `thermal` resolution, the node loads the shipped
    scale-adapted student for the smaller fusion size, says so at start-up, and fuses with it: its output is
    the in-process pipeline's for the pair, and not what the released student gives at that size."""
    params = _params(onnx_model)
    msg, thermal, rgb = _one_pair_through(params, 8, tmp_path, "below the RGB size: the scale-adapted student (",
                                          sample_pair)
    assert (msg.width, msg.height) == (RW, RH)
    got = _pixels(msg, 3)
    want, _, _ = _in_process(params, thermal, rgb)
    _assert_same_image(got, want, "fused")
    released, _, _ = _in_process(_params(onnx_model, **{"fusion.scale_adapted": False}), thermal, rgb)
    assert np.abs(got.astype(np.int16) - released).mean() > 0.5, "the released student's output, not the adapted one's"


def test_scale_adapted_masks_come_at_the_rgb_size(onnx_model, sample_pair, tmp_path):
    """Fusing below the RGB size (scale-adapted student), the node runs the shipped segmentation network on the
    final fused image for a mask subscriber: the mask is the in-process pipeline's for the pair, at the RGB
    frame's size."""
    params = _params(onnx_model)
    mask, thermal, rgb = _one_pair_through(params, 9, tmp_path, "below the RGB size: the scale-adapted student (",
                                           sample_pair, topic="segmentation/mask")
    assert (mask.width, mask.height, mask.encoding) == (RW, RH, "mono8")
    ids = _pixels(mask, 1)
    _, want, _ = _in_process(params, thermal, rgb)
    np.testing.assert_array_equal(ids, want)
    assert len(np.unique(ids)) > 1, np.unique(ids)
