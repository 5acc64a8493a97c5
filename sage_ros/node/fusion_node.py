"""`sage_fusion`: a managed (lifecycle) ROS 2 node fusing synchronised thermal + RGB frames with SAGE.

configure: read and check parameters, load the model (fails, node keeps running, when it is missing)
activate:  subscriptions, publishers, synchroniser, inference worker thread
deactivate / cleanup / shutdown: the reverse, every thread joined

Data path: subscription callbacks validate the message fields cheaply and feed the synchroniser; the
sync callback only puts the pair into a one-slot mailbox; a worker thread takes the newest pair,
decodes, normalises, registers, fuses and publishes with the RGB header. The executor never waits
for inference. Every received message ends in exactly one counted fate (docs/node.md, Accounting);
input QoS follows the publishers by default (`qos.reliability: auto`, re-checked every second).
Run: `fusion_node`, `python -m sage_ros.node.run` or `ros2 run sage_ros fusion_node`.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import Node as LifecycleNode
from rclpy.lifecycle import State, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSPolicyKind,
    QoSProfile,
    ReliabilityPolicy,
)
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CameraInfo, Image

from sage_ros.backends import BackendError, create_backend
from sage_ros.image.encodings import (
    THERMAL_ENCODINGS,
    VISIBLE_ENCODINGS,
    check_message,
    decode_msg,
)
from sage_ros.image.imaging import ImageInputError
from sage_ros.image.registration import Registration
from sage_ros.image.thermal import ThermalNormalizer
from sage_ros.model.classes import load_class_table
from sage_ros.model.refiner import RefinerError, refiner_for_backend
from sage_ros.model.scale_student import ScaleStudentError
from sage_ros.model.seg_stage import SegStageError
from sage_ros.node.dds_profile import apply_profile
from sage_ros.node.handoff import NewestSlot
from sage_ros.node.mf_sync import MessageFiltersSync, message_filters_available
from sage_ros.node.processing import (
    PairProcessor,
    classify_error,
    cv_bridge_available,
    cv_bridge_decoder,
    make_overlay,
)
from sage_ros.node.settings import DOUBLE_ARRAY, PARAMS, NodeSettings
from sage_ros.node.stats import ERROR, INPUTS, OK, WARN, NodeStats
from sage_ros.pairing.sync import ApproximateTimeSync, seconds_to_ns
from sage_ros.pipeline import FusionPipeline, ReducedScaleModel, reduced_scale_model

NODE_NAME = "sage_fusion"
TOPICS = {
    "thermal": "thermal/image_raw",
    "rgb": "rgb/image_raw",
    "rgb_info": "rgb/camera_info",
    "fused": "fused/image_raw",
    "fused_info": "fused/camera_info",
    "mask": "segmentation/mask",
    "overlay": "segmentation/overlay",
}
_ACCEPTED = {"thermal": THERMAL_ENCODINGS, "rgb": VISIBLE_ENCODINGS}
_LOG_EVERY_S = 5.0  # the same problem is logged at most this often (with a count of repeats)
_MAX_DISTINCT_PROBLEMS = 256  # distinct (cause, detail) pairs named on first sight; then per cause only
_QOS_CHECK_S = 1.0  # `qos.reliability: auto` re-reads the publishers of each input this often
_MAX_TRACKED_PUBLISHERS = 64  # per input, for sequence-gap loss estimates (restarted drivers get new ids)
# Inference threads run this much nicer than the executor and DDS threads: on a busy CPU the model
# must not starve the middleware, which then drops fragments of large frames (BEST_EFFORT) or stalls.
INFERENCE_NICE = 5


def stamp_to_ns(stamp: Any) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def qos_profile(reliability: str, depth: int) -> QoSProfile:
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=int(depth),
        reliability=ReliabilityPolicy.BEST_EFFORT if reliability == "best_effort" else ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.VOLATILE,
    )


def match_publishers(reliabilities: list[Any]) -> tuple[str, str]:
    """`qos.reliability: auto`: the subscription reliability for these publishers, and why.

    As `ros2 topic echo` and rosbag2 decide: RELIABLE when every publisher is RELIABLE (no fragment
    of a large frame is lost), else BEST_EFFORT (the only kind a BEST_EFFORT publisher serves). With
    no publisher yet BEST_EFFORT, which matches whatever appears; the periodic check then adapts.
    """
    if not reliabilities:
        return "best_effort", "no publisher yet"
    best = sum(1 for r in reliabilities if r != ReliabilityPolicy.RELIABLE)
    n = len(reliabilities)
    if best == 0:
        return "reliable", f"all {n} publisher(s) RELIABLE"
    return "best_effort", f"{best} of {n} publisher(s) BEST_EFFORT"


def describe_qos(qos: QoSProfile) -> str:
    rel = "BEST_EFFORT" if qos.reliability == ReliabilityPolicy.BEST_EFFORT else "RELIABLE"
    return f"{rel} depth {qos.depth}"


def image_msg(header: Any, array: np.ndarray, encoding: str) -> Image:
    """A sensor_msgs/Image from a C-contiguous uint8 array (rgb8 HxWx3 or mono8 HxW)."""
    array = np.ascontiguousarray(array)
    msg = Image()
    msg.header = header
    msg.height, msg.width = int(array.shape[0]), int(array.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(array.strides[0])
    msg.data = array.tobytes()
    return msg


def lower_thread_priority(delta: int = INFERENCE_NICE) -> bool:
    """Make the calling thread `delta` nicer (Linux: nice is per thread; threads it starts inherit it)."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + delta))
        return True
    except (OSError, AttributeError):  # not Linux, or not permitted: run at the normal priority
        return False


def create_backend_niced(config: Any) -> Any:
    """`create_backend` in a thread at inference priority, so the runtime's thread pool inherits it."""
    result: dict[str, Any] = {}

    def build() -> None:
        lower_thread_priority()
        try:
            result["backend"] = create_backend(config)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
            result["error"] = exc

    thread = threading.Thread(target=build, name="sage_fusion_backend_init", daemon=True)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["backend"]


class _Throttle:
    """Log a recurring problem once, then at most every `period` s per key, with the repeat count.

    A new `detail` (e.g. the offending encoding string) of a key is logged on first sight even inside
    the period, so every distinct problem is named once; at most `max_distinct` details are
    remembered (hostile input cannot grow memory or flood the log), later ones share the key's throttle.
    """

    def __init__(self, period: float = _LOG_EVERY_S, max_distinct: int = _MAX_DISTINCT_PROBLEMS) -> None:
        self.period = period
        self.max_distinct = max_distinct
        self._last: dict[str, float] = {}
        self._repeats: dict[str, int] = {}
        self._seen: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._seen)

    def __call__(self, key: str, now: float, detail: str = "") -> int | None:
        """None: stay quiet; else the number of repeats suppressed since the last line."""
        with self._lock:
            if detail and (key, detail) not in self._seen and len(self._seen) < self.max_distinct:
                self._seen.add((key, detail))
                self._last[key] = now
                return self._repeats.pop(key, 0)
            last = self._last.get(key)
            if last is not None and now - last < self.period:
                self._repeats[key] = self._repeats.get(key, 0) + 1
                return None
            self._last[key] = now
            return self._repeats.pop(key, 0)


class FusionNode(LifecycleNode):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        for spec in PARAMS:
            descriptor = ParameterDescriptor(description=spec.description)
            if spec.default == DOUBLE_ARRAY:
                self.declare_parameter(spec.name, Parameter.Type.DOUBLE_ARRAY, descriptor)
            else:
                # Let `-p sync.slop:=1` (an int) set a double parameter instead of failing.
                descriptor.dynamic_typing = isinstance(spec.default, float)
                self.declare_parameter(spec.name, spec.default, descriptor)
        self.settings: NodeSettings | None = None
        self.backend = None
        self._reduced: ReducedScaleModel | None = None  # the scale-adapted student, below the RGB size
        self.processor: PairProcessor | None = None
        self.class_table = None
        self.stats = NodeStats()
        self._throttle = _Throttle()
        self._slot = NewestSlot()
        self._sync: Any = None
        self._subs: list[Any] = []
        self._pubs: dict[str, Any] = {}
        self._camera_info: CameraInfo | None = None
        self._worker: threading.Thread | None = None
        self._stop = threading.Event()
        self._diag_pub = None
        self._diag_timer = None
        self._qos_timer = None
        self._warned_empty_frame = False
        self._active = False
        self._busy = False  # the worker holds a pair (counted as in flight)
        # Sync counters of synchronisers already retired (one per activation): added to the live one's.
        self._sync_base: dict[str, int] = {}
        self._sub_auto: dict[str, bool] = {}  # input key -> reliability follows the publishers
        self._last_seq: dict[str, dict[bytes, int]] = {}  # input -> publisher gid -> last sequence number

    # --- helpers -------------------------------------------------------------------------------
    def _param_values(self) -> dict[str, Any]:
        values = {}
        for spec in PARAMS:
            try:
                values[spec.name] = self.get_parameter(spec.name).value
            except rclpy.exceptions.ParameterUninitializedException:
                values[spec.name] = []
            if values[spec.name] is None:
                values[spec.name] = []
        return values

    def _problem(self, key: str, text: str, error: bool = False, detail: str = "") -> None:
        repeats = self._throttle(key, time.monotonic(), detail)
        if repeats is None:
            return
        if repeats:
            text += f" ({repeats} more like this in the last {_LOG_EVERY_S:.0f} s)"
        # Two call sites on purpose: rclpy refuses one call site logging at two severities.
        if error:
            self.get_logger().error(text)
        else:
            self.get_logger().warning(text)

    # --- lifecycle -----------------------------------------------------------------------------
    def on_configure(self, state: State) -> TransitionCallbackReturn:
        log = self.get_logger()
        try:
            settings = NodeSettings(self._param_values())
        except ValueError as exc:
            log.error(f"configure failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        missing = settings.model_missing_reason()
        if missing:
            log.error(f"configure failed: {missing}")
            return TransitionCallbackReturn.FAILURE
        try:
            backend = create_backend_niced(settings.backend)
        except (BackendError, RuntimeError, OSError) as exc:
            log.error(f"configure failed: could not start backend {settings['backend']!r}: {exc}")
            return TransitionCallbackReturn.FAILURE
        refiner = None
        if settings["fusion.refine"] and settings.resolution == "rgb":
            log.warning("fusion.refine has no effect with fusion.resolution rgb (the model already runs at the RGB "
                        "size); it refines thermal or WxH fusion")
        elif settings["fusion.refine"]:
            try:
                refiner = refiner_for_backend(backend, threads=int(settings["threads"]))
            except (RefinerError, RuntimeError, OSError) as exc:
                backend.close()
                log.error(f"configure failed: fusion.refine: {exc}")
                return TransitionCallbackReturn.FAILURE
        reduced, reduced_why = None, ""
        if settings.resolution != "rgb":
            reduced, reduced_why = self._reduced_scale_model(settings)
        self.settings, self.backend, self._reduced = settings, backend, reduced
        use_bridge = settings["use_cv_bridge"] and cv_bridge_available()
        self.processor = PairProcessor(
            FusionPipeline(backend, settings.resolution, refiner, reduced),
            ThermalNormalizer(settings.thermal),
            Registration(settings["registration.homography"], settings["registration.aspect_tolerance"]),
            decoder=cv_bridge_decoder() if use_bridge else decode_msg,
        )
        self.class_table = load_class_table(settings.model_path) if backend.has_segmentation else None
        # Never a new NodeStats: totals stay monotonic over cleanup/configure (see docs/node.md).
        self.stats.configure(settings["diagnostics.latency_window"], settings["diagnostics.stale_timeout"])
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diag_timer = self.create_timer(settings["diagnostics.period"], self._publish_diagnostics)
        seg = f"yes ({len(self.class_table.names)} classes)" if self.class_table else "no"
        decoder = "cv_bridge" if use_bridge else "sage_ros.image.encodings (cv_bridge " + (
            "disabled)" if cv_bridge_available() else "not installed)")
        log.info(
            f"configured: backend {backend.description}, model {settings.model_path}, segmentation {seg}, "
            f"decoding with {decoder}, fusion resolution {settings['fusion.resolution']}"
            + (f"; {reduced_why}" if reduced_why else "")
            + (f", refiner {refiner.path.name} on {refiner.runtime}" if refiner else "")
        )
        if backend.precision_note:
            log.info(backend.precision_note)
        return TransitionCallbackReturn.SUCCESS

    def _reduced_scale_model(self, settings: NodeSettings) -> tuple[ReducedScaleModel | None, str]:
        """The scale-adapted student for fusion below the RGB size, and the start-up note that says so.

        Broken or missing shipped files do not stop the node: it warns and keeps the released student.
        """
        try:
            return reduced_scale_model(settings.backend, settings["fusion.scale_adapted"],
                                       threads=int(settings["threads"]), create=create_backend_niced)
        except (ScaleStudentError, SegStageError, BackendError, RuntimeError, OSError, ValueError) as exc:
            self.get_logger().warning(
                f"fusion.scale_adapted: {exc}; the released student fuses below the RGB size (quality: docs/speed.md)"
            )
            return None, "scale-adapted student unavailable (see the warning above)"

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        s = self.settings
        log = self.get_logger()
        offsets = [seconds_to_ns(s["sync.thermal_offset"]), 0]
        sync_args = dict(
            num_inputs=2, queue_size=int(s["sync.queue_size"]), slop=float(s["sync.slop"]),
            callback=self._on_pair, offsets_ns=offsets,
        )
        if s["sync.use_message_filters"] and message_filters_available():
            self._sync = MessageFiltersSync(**sync_args)
            which = "message_filters.ApproximateTimeSynchronizer"
        else:
            self._sync = ApproximateTimeSync(**sync_args)
            which = "sage_ros.pairing.sync.ApproximateTimeSync" + (
                "" if s["sync.use_message_filters"] else " (message_filters disabled by parameter)"
            )
        log.info(
            f"sync: {which}, slop {s['sync.slop']} s, queue_size {s['sync.queue_size']}, "
            f"thermal offset {s['sync.thermal_offset']} s"
        )
        self._slot.reopen()
        self._stop.clear()
        self._camera_info = None
        # Every entity gets its own profile: `qos_overrides.<topic>...` parameters (in a params file)
        # may change it, and the log then reports what was really used.
        overrides = QoSOverridingOptions.with_default_policies()
        self._subs = [None, None, None]  # thermal, rgb, rgb_info (fixed slots: auto QoS replaces them)
        for slot, key in enumerate((*INPUTS, "rgb_info")):
            self._subscribe(slot, key, initial=True)
        if any(self._sub_auto.values()):
            self._qos_timer = self.create_timer(_QOS_CHECK_S, self._check_publisher_qos)
        names = ["fused", "fused_info"] + (["mask", "overlay"] if self.class_table is not None else [])
        for name in names:
            msg_type = CameraInfo if name == "fused_info" else Image
            self._pubs[name] = self.create_publisher(
                msg_type, TOPICS[name], qos_profile(s["output_qos.reliability"], s["output_qos.depth"]),
                qos_overriding_options=overrides,
            )
            log.info(f"publishing {self._pubs[name].topic_name} with QoS {describe_qos(self._pubs[name].qos_profile)}")
        self.stats.activated(time.monotonic())
        self._worker = threading.Thread(target=self._work, name="sage_fusion_worker", daemon=True)
        self._worker.start()
        self._active = True
        return TransitionCallbackReturn.SUCCESS

    def _deactivate(self) -> None:
        if not self._active:
            return
        self._active = False
        if self._qos_timer is not None:
            self.destroy_timer(self._qos_timer)
            self._qos_timer = None
        for sub in self._subs:
            if sub is not None:
                self.destroy_subscription(sub)
        self._subs.clear()
        self._stop.set()
        self._slot.close()
        if self._worker is not None:
            self._worker.join(timeout=30.0)
            if self._worker.is_alive():
                self.get_logger().error("inference worker did not stop within 30 s")
            self._worker = None
        self.stats.drop("superseded_at_deactivate", self._slot.clear())
        if self._sync is not None:
            self._sync.flush()
            self._mirror_sync_stats()
            # Retire this synchroniser: its totals become the base the next one adds to (the
            # counters never go backwards when activate makes a new one).
            self._sync_base = self._sync_totals()
            self._sync = None
        for pub in self._pubs.values():
            self.destroy_publisher(pub)
        self._pubs.clear()

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self._deactivate()
        self.get_logger().info("deactivated")
        return TransitionCallbackReturn.SUCCESS

    def _cleanup(self) -> None:
        self._deactivate()
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = None
        if self._diag_pub is not None:
            self.destroy_publisher(self._diag_pub)
            self._diag_pub = None
        if self.backend is not None:
            self.backend.close()
        if self._reduced is not None:
            self._reduced.close()
        self.backend = self.processor = self.class_table = self._reduced = None

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self._cleanup()
        self.get_logger().info("cleaned up (model unloaded)")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        self._cleanup()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: State) -> TransitionCallbackReturn:
        self.get_logger().error(f"error during a transition from {state.label}: cleaning up")
        self._cleanup()
        return TransitionCallbackReturn.SUCCESS

    # --- executor-thread callbacks (keep cheap) --------------------------------------------------
    def _on_image(self, index: int, msg: Image, info: Any = None) -> None:
        # Every message counted as received ends in exactly one fate (docs/node.md, Accounting).
        name = INPUTS[index]
        self.stats.input_received(name, time.monotonic())
        self._note_sequence(name, info)
        topic = self._subs[index].topic_name if self._subs and self._subs[index] is not None else TOPICS[name]
        try:
            check_message(msg, _ACCEPTED[name], name)
        except ImageInputError as exc:
            cause = classify_error(exc)
            self.stats.drop(f"{name}_{cause}", error=f"{name}: {exc}")
            self._problem(f"{name}_{cause}", f"dropped a {name} image on {topic}: {exc}",
                          detail=getattr(exc, "detail", ""))
            return
        stamp_ns = stamp_to_ns(msg.header.stamp)
        offset_ns = self._sync.offsets_ns[index]
        if stamp_ns < 0 or stamp_ns + offset_ns < 0:
            # Pairing works on stamps: a negative one (a driver with an unset or wrapped clock) cannot pair.
            # Also one that sync.thermal_offset makes negative: message_filters would raise on it and
            # the built-in synchroniser would queue it, so both paths drop it here, counted and logged.
            self.stats.drop(f"{name}_negative_stamp", error=f"{name}: negative stamp")
            self._problem(
                f"{name}_negative_stamp",
                f"dropped a {name} image on {topic} with a negative stamp (sec {msg.header.stamp.sec}, nanosec "
                f"{msg.header.stamp.nanosec}, offset {offset_ns * 1e-9:+.3f} s): check the driver's clock"
                + (" and sync.thermal_offset" if offset_ns else ""),
            )
            return
        try:
            self._sync.add(index, stamp_ns, (msg, time.monotonic()))
        except Exception as exc:  # noqa: BLE001 - an exception here would stop the executor: count it
            self.stats.drop(f"{name}_sync_error", error=str(exc))
            self._problem(f"{name}_sync_error", f"could not queue a {name} image for pairing: {exc!r}", error=True,
                          detail=type(exc).__name__)

    def _note_sequence(self, name: str, info: Any) -> None:
        """Estimate frames lost in DDS from gaps in each publisher's sequence numbers.

        Each DDS writer numbers its samples 1, 2, 3...; a jump from n to n+k means k-1 samples were
        written after one we got and never reached us (lost fragments, history overwritten). Only
        gaps between two received samples count: nothing before the first one, after the last one,
        or while this subscription did not exist (it restarts the estimate).
        """
        if not info:
            return
        seq, gid = info.get("publication_sequence_number"), info.get("publisher_gid")
        if not seq or not gid:
            return
        key = bytes(gid.get("data", b"")) if isinstance(gid, dict) else bytes(gid)
        known = self._last_seq.setdefault(name, {})
        last = known.get(key)
        if last is not None and seq > last + 1:
            self.stats.dds_loss(f"dds_seq_gap_{name}", seq - last - 1)
        if last is None and len(known) >= _MAX_TRACKED_PUBLISHERS:
            known.pop(next(iter(known)))  # the oldest publisher seen (a driver restarted long ago)
        known[key] = seq if last is None else max(last, seq)

    # --- input subscriptions and `qos.reliability: auto` ---------------------------------------
    def _reliability_overridden(self, topic: str) -> bool:
        # A `qos_overrides.<topic>.subscription.reliability` in a params file or on the command line
        # is the user's explicit choice: auto must not fight it. rclpy keeps overrides in this dict.
        overrides = getattr(self, "_parameter_overrides", {}) or {}
        return f"qos_overrides.{topic}.subscription.reliability" in overrides

    def _subscribe(self, slot: int, key: str, initial: bool = False, choice: tuple[str, str] | None = None) -> None:
        """(Re)create the subscription of input `key` (thermal, rgb, rgb_info) in `self._subs[slot]`.

        `choice`: (reliability, reason) decided by the auto check; None = decide here.
        """
        s = self.settings
        topic = self.resolve_topic_name(TOPICS[key])
        wanted, reason = s["qos.reliability"], ""
        auto = wanted == "auto" and not self._reliability_overridden(topic)
        overrides = QoSOverridingOptions.with_default_policies()
        if wanted == "auto":
            if auto:
                wanted, reason = choice or match_publishers(
                    [p.qos_profile.reliability for p in self.get_publishers_info_by_topic(topic)]
                )
                # Without the reliability policy: a declared (read-only) override parameter would pin
                # the first choice when the subscription is made again with another reliability.
                overrides = QoSOverridingOptions([QoSPolicyKind.HISTORY, QoSPolicyKind.DEPTH])
            else:
                wanted = "reliable"  # replaced by the override parameter
        self._sub_auto[key] = auto
        qos = qos_profile(wanted, s["qos.depth"])
        old = self._subs[slot]
        if old is not None:
            self.destroy_subscription(old)
        if key == "rgb_info":
            sub = self.create_subscription(
                CameraInfo, TOPICS[key], self._on_info, qos, qos_overriding_options=overrides
            )
        else:
            index = INPUTS.index(key)
            sub = self.create_subscription(
                Image, TOPICS[key], lambda msg, info, i=index: self._on_image(i, msg, info),
                qos, qos_overriding_options=overrides, event_callbacks=self._event_callbacks(key),
            )
            self._last_seq.pop(key, None)  # a new reader: sequence gaps start over
        self._subs[slot] = sub
        best_effort = sub.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT
        if auto:
            note = f" (qos.reliability auto: {reason})"
        elif s["qos.reliability"] == "auto":
            note = " (qos_overrides parameter)"
        elif best_effort:
            note = " (sensor-data profile, REP-2003: matches RELIABLE and BEST_EFFORT publishers)"
        else:
            note = " (a BEST_EFFORT publisher will deliver nothing to it)"
        if initial:
            self.get_logger().info(f"subscribed {sub.topic_name} with QoS {describe_qos(sub.qos_profile)}{note}")
        else:
            self.get_logger().info(
                f"re-subscribed {sub.topic_name} with QoS {describe_qos(sub.qos_profile)}{note}: the publishers changed"
            )

    def _check_publisher_qos(self) -> None:
        """Timer (executor thread): follow the publishers of every auto input as drivers come and go."""
        if not self._active:
            return
        for slot, key in enumerate((*INPUTS, "rgb_info")):
            sub = self._subs[slot] if slot < len(self._subs) else None
            if sub is None or not self._sub_auto.get(key):
                continue
            try:
                infos = self.get_publishers_info_by_topic(sub.topic_name)
            except Exception as exc:  # noqa: BLE001 - a graph query failing must not stop the executor
                self._problem("qos_graph", f"could not list the publishers of {sub.topic_name}: {exc!r}")
                continue
            wanted, reason = match_publishers([p.qos_profile.reliability for p in infos])
            have = "best_effort" if sub.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT else "reliable"
            if wanted != have:
                self._subscribe(slot, key, choice=(wanted, reason))

    def _event_callbacks(self, name: str) -> SubscriptionEventCallbacks:
        """Make the two silent failures of DDS visible: frames lost in transport, mismatched QoS."""

        def lost(info: Any) -> None:
            # Samples the middleware reports dropped before we saw them (e.g. history overwritten while
            # busy). Not every loss is reported (incomplete fragmented samples often are not): the
            # sequence-gap estimate (`dds_seq_gap_*`) catches those.
            self.stats.dds_loss(f"dds_lost_{name}", int(info.total_count_change))

        def incompatible(info: Any) -> None:
            self.stats.dds_loss(f"qos_incompatible_{name}", int(info.total_count_change))
            self._problem(
                f"qos_{name}",
                f"a publisher on {TOPICS[name]} has QoS incompatible with this subscription (policy id "
                f"{info.last_policy_kind}): it delivers nothing. A RELIABLE subscription gets nothing from "
                "a BEST_EFFORT publisher: set qos.reliability to best_effort",
                error=True,
            )

        return SubscriptionEventCallbacks(message_lost=lost, incompatible_qos=incompatible)

    def _on_info(self, msg: CameraInfo) -> None:
        self._camera_info = msg

    def _on_pair(self, pair: tuple) -> None:
        # Runs inside the synchroniser (under message_filters' lock on that path): hand off only.
        self.stats.pair_formed(time.monotonic())
        self._slot.put(pair)

    # --- worker thread -----------------------------------------------------------------------
    def _work(self) -> None:
        lower_thread_priority()  # the model yields the CPU to the executor and DDS threads
        while not self._stop.is_set():
            pair = self._slot.take(timeout=0.5)
            if pair is None:
                continue
            self._busy = True
            try:
                self._process(pair)
            except Exception as exc:  # noqa: BLE001 - the worker must survive anything
                self.stats.drop("failed_other", error=str(exc))
                self._problem("failed_other", f"unexpected error while fusing a pair: {exc!r}", error=True,
                              detail=type(exc).__name__)
            finally:
                self._busy = False

    def _process(self, pair: tuple) -> None:
        (thermal, _), (rgb, received) = pair
        s = self.settings
        stamp_ns = stamp_to_ns(rgb.header.stamp)
        max_age = float(s["max_pair_age"])
        if max_age > 0:
            age = (self.get_clock().now().nanoseconds - stamp_ns) * 1e-9
            if age > max_age:
                self.stats.drop("stale")
                self._problem("stale", f"dropped a pair {age:.2f} s old (max_pair_age {max_age} s)")
                return
        pubs = self._pubs
        try:
            # Below the RGB size class ids are a segmentation pass at the RGB size: deferred until the fused
            # image is out, and run only while a mask or overlay subscriber exists.
            out = self.processor.process(thermal, rgb, classes=False)
        except ImageInputError as exc:
            cause = classify_error(exc)
            self.stats.drop(f"failed_{cause}", error=str(exc))
            self._problem(f"failed_{cause}", f"could not fuse the pair stamped {stamp_ns * 1e-9:.3f}: {exc}",
                          detail=getattr(exc, "detail", ""))
            return
        except Exception as exc:  # noqa: BLE001 - backend runtimes raise their own types
            self.stats.model_failed(time.monotonic(), str(exc))
            self._problem("failed_model", f"model failed on a {rgb.width}x{rgb.height} pair: {exc}", error=True,
                          detail=type(exc).__name__)
            return
        header = rgb.header
        if s["frame_id"]:
            header.frame_id = s["frame_id"]
        elif not header.frame_id and not self._warned_empty_frame:
            self._warned_empty_frame = True
            self.get_logger().warning(
                "the RGB images have an empty frame_id: set the frame_id parameter so rviz and tf can place them"
            )
        if "fused" not in pubs:
            self.stats.drop("superseded_at_deactivate")  # deactivated meanwhile: still counted
            return
        pubs["fused"].publish(image_msg(header, out.fused_rgb, "rgb8"))
        published = ["fused"]
        # Latency is the fused image's: masks and overlays follow it (a segmentation pass below the RGB size).
        fused_at = time.monotonic()
        latency_ms = (self.get_clock().now().nanoseconds - stamp_ns) * 1e-6
        # Extra outputs cost conversion (and the overlay a blend): only when someone listens.
        info = self._camera_info
        if info is not None and pubs["fused_info"].get_subscription_count() > 0:
            info.header = header
            pubs["fused_info"].publish(info)
            published.append("fused_info")
        class_ids = out.class_ids
        wants_classes = "mask" in pubs and any(pubs[k].get_subscription_count() > 0 for k in ("mask", "overlay"))
        if class_ids is None and out.segment_later is not None and wants_classes:
            try:
                class_ids = out.segment_later()
            except Exception as exc:  # noqa: BLE001 - runtimes raise their own types; the fused image is out
                # Not a dropped pair (its fused image is published): logged, and the mask/overlay skipped.
                self._problem("failed_segmentation", f"segmentation failed on a {rgb.width}x{rgb.height} pair: "
                              f"{exc}", detail=type(exc).__name__)
        if class_ids is not None and "mask" in pubs:
            if pubs["mask"].get_subscription_count() > 0:
                pubs["mask"].publish(image_msg(header, class_ids, "mono8"))
                published.append("mask")
            if pubs["overlay"].get_subscription_count() > 0:
                blended = make_overlay(out.fused_rgb, class_ids, self.class_table, s["overlay.alpha"])
                pubs["overlay"].publish(image_msg(header, blended, "rgb8"))
                published.append("overlay")
        self.stats.published(published)
        self.stats.output_published(fused_at, latency_ms, (fused_at - received) * 1000.0, out.inference_ms)

    # --- diagnostics ---------------------------------------------------------------------------
    def _sync_totals(self) -> dict[str, int]:
        """Lifetime sync counters: the retired synchronisers' plus the live one's."""
        totals = dict(self._sync_base)
        if self._sync is not None:
            st = self._sync.stats
            for i, name in enumerate(INPUTS):
                for key, value in (
                    (f"sync_unpaired_{name}", st.evicted[i] + st.flushed[i] + st.rejected[i]),
                    (f"sync_duplicate_{name}", st.duplicate[i]),
                ):
                    totals[key] = totals.get(key, 0) + value
        return totals

    def _mirror_sync_stats(self) -> None:
        for key, value in self._sync_totals().items():
            self.stats.set_drop_total(key, value)
        # The mailbox lives as long as the node: its count is a lifetime total already.
        self.stats.set_drop_total("superseded", self._slot.superseded)

    def _publish_diagnostics(self) -> None:
        now = time.monotonic()
        self._mirror_sync_stats()
        health = self.stats.health(now)
        if not self._active and health.level != ERROR:
            # Silence is expected while inactive: not a warning.
            health.level, health.message = OK, "configured, inactive"
        if health.level == WARN and self._active:
            self._problem(
                "stale_input",
                f"{health.message}: check the driver, the topic names/remapping and QoS (a RELIABLE "
                "subscriber gets nothing from a BEST_EFFORT publisher)",
            )
        status = DiagnosticStatus()
        status.level = bytes([health.level])
        status.name = f"{self.get_name()}: fusion"
        status.message = health.message
        status.hardware_id = self.backend.description if self.backend is not None else "none"
        values = self.stats.values(now)
        values["backend"] = status.hardware_id
        values["sync"] = type(self._sync).__name__ if self._sync is not None else "none"
        # Waiting for a partner right now (not drops yet: they count once pushed out).
        pending = self._sync.pending() if self._sync is not None else [0] * len(INPUTS)
        for name, count in zip(INPUTS, pending, strict=True):
            values[f"sync_pending_{name}"] = str(count)
        # A pair in the mailbox or in the worker: neither fused nor dropped yet.
        values["in_flight"] = str(self._slot.pending() + int(self._busy))
        for key, depth in self.stats.queue_depths().items():
            values[f"queue_{key}"] = str(depth)
        values["queue_log_problems"] = str(len(self._throttle))
        values["queue_tracked_publishers"] = str(sum(len(v) for v in self._last_seq.values()))
        for slot, key in enumerate((*INPUTS, "rgb_info")):
            sub = self._subs[slot] if slot < len(self._subs) else None
            if sub is not None:
                values[f"qos_{key}"] = describe_qos(sub.qos_profile) + (" (auto)" if self._sub_auto.get(key) else "")
        values["state"] = "active" if self._active else "inactive"
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        array.status = [status]
        if self._diag_pub is not None:
            self._diag_pub.publish(array)


def _record_shutdown_signals(received: list[int] | None = None) -> list[int]:
    """Python-level SIGINT/SIGTERM handlers that only record the signal; installed BEFORE rclpy.init.

    rclpy's own handlers (which wake the executor and shut the context down) chain to the handler
    that was there before them, and put it back at shutdown. Without this, that is Python's
    KeyboardInterrupt for SIGINT and the default action (death by signal) for SIGTERM, so a second
    Ctrl-C or a supervisor's second SIGTERM landing in executor.shutdown or destroy_node killed
    the node with a traceback (exit -2 / -15) instead of letting the shutdown finish.
    """
    received = [] if received is None else received

    def record(signum: int, frame: Any) -> None:
        received.append(signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, record)
    return received


def _shutdown(node: FusionNode | None, executor: SingleThreadedExecutor | None) -> None:
    """Every step runs (each bounded), whatever the one before raised or whichever signal arrives."""
    steps = []
    if node is not None:
        steps.append(("lifecycle cleanup", node._cleanup))
    if executor is not None:
        steps.append(("executor shutdown", lambda: executor.shutdown(timeout_sec=1.0)))
    if node is not None:
        steps.append(("node destruction", node.destroy_node))
    steps.append(("rclpy shutdown", rclpy.try_shutdown))
    for what, step in steps:
        try:
            step()
        except Exception as exc:  # noqa: BLE001 - finish the other steps; say what failed
            print(f"[sage_fusion] {what} failed during shutdown: {exc!r}", file=sys.stderr)


def main(args: list[str] | None = None, received: list[int] | None = None) -> int:
    """Run the node until SIGINT/SIGTERM. `received`: signals already recorded by `sage_ros.node.run`
    (the executable's entry point, which starts recording before this module's imports)."""
    received = _record_shutdown_signals(received)
    dds = apply_profile()  # before rclpy.init: Fast DDS reads its profile once, when the first participant starts
    rclpy.init(args=args)
    node = executor = None
    try:
        node = FusionNode()
        (node.get_logger().warning if dds.problem else node.get_logger().info)(f"Fast DDS profile: {dds.reason}")
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        if node.get_parameter("autostart").value:
            if node.trigger_configure() == TransitionCallbackReturn.SUCCESS:
                node.trigger_activate()
            else:
                node.get_logger().warning(
                    "autostart: configure failed; the node stays up unconfigured: fix the cause, then "
                    "configure it again through its lifecycle services"
                )
        # A signal recorded before rclpy's handlers were installed asked for a stop nobody acted on.
        # Bounded waits instead of spin(): rclpy's handler normally wakes the executor, but once in CI a
        # SIGTERM to an idle unconfigured node left spin() waiting for 60 s; the recorded signal (or the
        # context rclpy shut down) now ends the loop within half a second whatever the wake-up did.
        while not received and rclpy.ok():
            executor.spin_once(timeout_sec=0.5)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        # A signal during start-up shuts the context down under a running rclpy call, which then
        # raises: that is the requested shutdown, not a crash. Without a signal it is a real error.
        if not received:
            raise
    finally:
        _shutdown(node, executor)
        # The process exits next. Interpreter finalisation resets Python-level handlers to SIG_DFL
        # (ignored ones stay ignored), so a late signal would still kill it by signal: ignore them.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
