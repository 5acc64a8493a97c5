"""`sage_fusion`: a managed (lifecycle) ROS 2 node fusing synchronised thermal + RGB frames with SAGE.

configure: read and check parameters, load the model (fails, node keeps running, when it is missing)
activate:  subscriptions, publishers, synchroniser, inference worker thread
deactivate / cleanup / shutdown: the reverse, every thread joined

Data path: subscription callbacks validate the message fields cheaply and feed the synchroniser; the
sync callback only puts the pair into a one-slot mailbox; a worker thread takes the newest pair,
decodes, normalises, registers, fuses and publishes with the RGB header. The executor never waits
for inference. Run: `fusion_node`, `python -m sage_ros.node.fusion_node` or `ros2 run sage_ros fusion_node`.
"""

from __future__ import annotations

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
    QoSProfile,
    ReliabilityPolicy,
)
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CameraInfo, Image

from sage_ros.backends import BackendError, create_backend
from sage_ros.classes import load_class_table
from sage_ros.encodings import (
    THERMAL_ENCODINGS,
    VISIBLE_ENCODINGS,
    UnsupportedEncodingError,
    check_fields,
    decode_msg,
)
from sage_ros.imaging import ImageInputError
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
from sage_ros.pipeline import FusionPipeline
from sage_ros.registration import Registration
from sage_ros.sync import ApproximateTimeSync, seconds_to_ns
from sage_ros.thermal import ThermalNormalizer

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


def stamp_to_ns(stamp: Any) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def qos_profile(reliability: str, depth: int) -> QoSProfile:
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=int(depth),
        reliability=ReliabilityPolicy.BEST_EFFORT if reliability == "best_effort" else ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.VOLATILE,
    )


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


class _Throttle:
    """Log a recurring problem once, then at most every `period` s per key, with the repeat count."""

    def __init__(self, period: float = _LOG_EVERY_S) -> None:
        self.period = period
        self._last: dict[str, float] = {}
        self._repeats: dict[str, int] = {}
        self._lock = threading.Lock()

    def __call__(self, key: str, now: float) -> int | None:
        """None: stay quiet; else the number of repeats suppressed since the last line."""
        with self._lock:
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
        self._warned_empty_frame = False
        self._active = False

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

    def _problem(self, key: str, text: str, error: bool = False) -> None:
        repeats = self._throttle(key, time.monotonic())
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
            backend = create_backend(settings.backend)
        except (BackendError, RuntimeError, OSError) as exc:
            log.error(f"configure failed: could not start backend {settings['backend']!r}: {exc}")
            return TransitionCallbackReturn.FAILURE
        self.settings, self.backend = settings, backend
        use_bridge = settings["use_cv_bridge"] and cv_bridge_available()
        self.processor = PairProcessor(
            FusionPipeline(backend),
            ThermalNormalizer(settings.thermal),
            Registration(settings["registration.homography"], settings["registration.aspect_tolerance"]),
            decoder=cv_bridge_decoder() if use_bridge else decode_msg,
        )
        self.class_table = load_class_table(settings.model_path) if backend.has_segmentation else None
        self.stats = NodeStats(settings["diagnostics.latency_window"], settings["diagnostics.stale_timeout"])
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diag_timer = self.create_timer(settings["diagnostics.period"], self._publish_diagnostics)
        seg = f"yes ({len(self.class_table.names)} classes)" if self.class_table else "no"
        decoder = "cv_bridge" if use_bridge else "sage_ros.encodings (cv_bridge " + (
            "disabled)" if cv_bridge_available() else "not installed)")
        log.info(
            f"configured: backend {backend.description}, model {settings.model_path}, segmentation {seg}, "
            f"decoding with {decoder}"
        )
        return TransitionCallbackReturn.SUCCESS

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
            which = "sage_ros.sync.ApproximateTimeSync" + (
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
        for index, name in enumerate(INPUTS):
            sub = self.create_subscription(
                Image, TOPICS[name], lambda msg, i=index: self._on_image(i, msg),
                qos_profile(s["qos.reliability"], s["qos.depth"]), qos_overriding_options=overrides,
                event_callbacks=self._event_callbacks(name),
            )
            self._subs.append(sub)
        self._subs.append(self.create_subscription(
            CameraInfo, TOPICS["rgb_info"], self._on_info, qos_profile(s["qos.reliability"], s["qos.depth"]),
            qos_overriding_options=overrides,
        ))
        for sub in self._subs:
            best_effort = sub.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT
            note = (
                " (sensor-data profile, REP-2003: matches RELIABLE and BEST_EFFORT publishers)" if best_effort
                else " (a BEST_EFFORT publisher will deliver nothing to it)"
            )
            log.info(f"subscribed {sub.topic_name} with QoS {describe_qos(sub.qos_profile)}{note}")
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
        for sub in self._subs:
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
        self.backend = self.processor = self.class_table = None

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
    def _on_image(self, index: int, msg: Image) -> None:
        name = INPUTS[index]
        self.stats.input_received(name, time.monotonic())
        try:
            if msg.encoding not in _ACCEPTED[name]:
                raise UnsupportedEncodingError(
                    f"encoding {msg.encoding!r} is not supported for {name}; use one of "
                    f"{', '.join(_ACCEPTED[name])}"
                )
            check_fields(msg.encoding, msg.height, msg.width, msg.step, len(msg.data))
        except ImageInputError as exc:
            cause = classify_error(exc)
            self.stats.drop(f"{name}_{cause}", error=f"{name}: {exc}")
            self._problem(f"{name}_{cause}", f"dropped a {name} image on {TOPICS[name]}: {exc}")
            return
        try:
            self._sync.add(index, stamp_to_ns(msg.header.stamp), (msg, time.monotonic()))
        except Exception as exc:  # noqa: BLE001 - an exception here would stop the executor: count it
            self.stats.drop(f"{name}_sync_error", error=str(exc))
            self._problem(f"{name}_sync_error", f"could not queue a {name} image for pairing: {exc!r}", error=True)

    def _event_callbacks(self, name: str) -> SubscriptionEventCallbacks:
        """Make the two silent failures of DDS visible: frames lost in transport, mismatched QoS."""

        def lost(info: Any) -> None:
            # Samples the middleware dropped before we saw them (e.g. history overwritten while busy).
            self.stats.drop(f"dds_lost_{name}", int(info.total_count_change))

        def incompatible(info: Any) -> None:
            self.stats.drop(f"qos_incompatible_{name}", int(info.total_count_change))
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
        while not self._stop.is_set():
            pair = self._slot.take(timeout=0.5)
            if pair is None:
                continue
            try:
                self._process(pair)
            except Exception as exc:  # noqa: BLE001 - the worker must survive anything
                self.stats.drop("failed_other", error=str(exc))
                self._problem("failed_other", f"unexpected error while fusing a pair: {exc!r}", error=True)

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
        try:
            out = self.processor.process(thermal, rgb)
        except ImageInputError as exc:
            cause = classify_error(exc)
            self.stats.drop(f"failed_{cause}", error=str(exc))
            self._problem(f"failed_{cause}", f"could not fuse the pair stamped {stamp_ns * 1e-9:.3f}: {exc}")
            return
        except Exception as exc:  # noqa: BLE001 - backend runtimes raise their own types
            self.stats.model_failed(time.monotonic(), str(exc))
            self._problem("failed_model", f"model failed on a {rgb.width}x{rgb.height} pair: {exc}", error=True)
            return
        header = rgb.header
        if s["frame_id"]:
            header.frame_id = s["frame_id"]
        elif not header.frame_id and not self._warned_empty_frame:
            self._warned_empty_frame = True
            self.get_logger().warning(
                "the RGB images have an empty frame_id: set the frame_id parameter so rviz and tf can place them"
            )
        pubs = self._pubs
        if "fused" not in pubs:
            return  # deactivated meanwhile
        pubs["fused"].publish(image_msg(header, out.fused_rgb, "rgb8"))
        published = ["fused"]
        # Extra outputs cost conversion (and the overlay a blend): only when someone listens.
        info = self._camera_info
        if info is not None and pubs["fused_info"].get_subscription_count() > 0:
            info.header = header
            pubs["fused_info"].publish(info)
            published.append("fused_info")
        if out.class_ids is not None and "mask" in pubs:
            if pubs["mask"].get_subscription_count() > 0:
                pubs["mask"].publish(image_msg(header, out.class_ids, "mono8"))
                published.append("mask")
            if pubs["overlay"].get_subscription_count() > 0:
                blended = make_overlay(out.fused_rgb, out.class_ids, self.class_table, s["overlay.alpha"])
                pubs["overlay"].publish(image_msg(header, blended, "rgb8"))
                published.append("overlay")
        self.stats.published(published)
        now = time.monotonic()
        latency_ms = (self.get_clock().now().nanoseconds - stamp_ns) * 1e-6
        self.stats.output_published(now, latency_ms, (now - received) * 1000.0, out.inference_ms)

    # --- diagnostics ---------------------------------------------------------------------------
    def _mirror_sync_stats(self) -> None:
        st = self._sync.stats
        for i, name in enumerate(INPUTS):
            self.stats.set_drop_total(f"sync_unpaired_{name}", st.evicted[i] + st.flushed[i] + st.rejected[i])
            self.stats.set_drop_total(f"sync_duplicate_{name}", st.duplicate[i])
        self.stats.set_drop_total("superseded", self._slot.superseded)

    def _publish_diagnostics(self) -> None:
        now = time.monotonic()
        if self._sync is not None:
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
        if self._sync is not None:
            # Waiting for a partner right now (not drops yet: they count once pushed out).
            for name, count in zip(INPUTS, self._sync.pending(), strict=True):
                values[f"sync_pending_{name}"] = str(count)
        values["state"] = "active" if self._active else "inactive"
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        array.status = [status]
        if self._diag_pub is not None:
            self._diag_pub.publish(array)


def main(args: list[str] | None = None) -> int:
    rclpy.init(args=args)
    node = FusionNode()
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        if node.get_parameter("autostart").value:
            if node.trigger_configure() == TransitionCallbackReturn.SUCCESS:
                node.trigger_activate()
            else:
                node.get_logger().warning(
                    "autostart: configure failed; the node stays up unconfigured: fix the cause, then "
                    "configure it again through its lifecycle services"
                )
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node._cleanup()
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
