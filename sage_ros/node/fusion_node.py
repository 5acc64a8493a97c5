"""`sage_fusion`: a managed (lifecycle) ROS 2 node fusing synchronised thermal + RGB frames with SAGE.

configure: read and check parameters, load the model (fails, node keeps running, when it is missing)
activate:  subscriptions, publishers, synchroniser, inference worker thread
deactivate / cleanup / shutdown: the reverse, every thread joined

Data path: subscription callbacks validate the message fields cheaply and feed the synchroniser; the
sync callback only puts the pair into a one-slot mailbox; a worker thread takes the newest pair,
decodes, normalises, registers, fuses and publishes with the RGB header. The executor never waits
for inference. Every received message ends in exactly one counted fate (docs/node.md, Accounting);
input QoS follows the publishers by default (`qos.reliability: auto`, re-checked every second).
Run: `fusion_node`, `python -m sage_ros.node.run` or `ros2 run sage_ros fusion_node` (sage_ros/node/run.py).

Its parts: `inputs` (subscriptions, auto QoS, DDS loss), `synchroniser` (pairing), `handoff` (newest-pair
mailbox), `worker` (inference thread), `outputs` (publishers, Image messages, which pairs get a mask), `qos`,
`throttle`, `stats`.
"""

from __future__ import annotations

import time
from typing import Any

import rclpy
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.lifecycle import Node as LifecycleNode
from rclpy.lifecycle import State, TransitionCallbackReturn
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, Image

from sage_ros.backends import BackendError
from sage_ros.image.encodings import (
    THERMAL_ENCODINGS,
    VISIBLE_ENCODINGS,
    check_message,
)
from sage_ros.image.imaging import ImageInputError
from sage_ros.image.registration import Registration
from sage_ros.image.thermal import ThermalNormalizer
from sage_ros.node.diagnostics import DiagnosticsPublisher
from sage_ros.node.handoff import NewestSlot
from sage_ros.node.inputs import InputSubscriptions
from sage_ros.node.outputs import MaskSchedule, OutputPublishers, image_msg
from sage_ros.node.processing import (
    PairProcessor,
    classify_error,
)
from sage_ros.node.ros_logging import RosLogHandler, forward_package_logs, stop_forwarding
from sage_ros.node.settings import DOUBLE_ARRAY, PARAMS, NodeSettings
from sage_ros.node.stats import ERROR, INPUTS, OK, WARN, Health, NodeStats
from sage_ros.node.synchroniser import Synchroniser
from sage_ros.node.throttle import LOG_EVERY_S, Throttle
from sage_ros.node.topics import NODE_NAME
from sage_ros.node.worker import InferenceWorker, after_all_exit
from sage_ros.pipeline import FusionPipeline, PipelineError, build_pipeline

_ACCEPTED = {"thermal": THERMAL_ENCODINGS, "rgb": VISIBLE_ENCODINGS}


def stamp_to_ns(stamp: Any) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


class FusionNode(LifecycleNode):
    # Bound on deactivate's wait for the worker (a pair in the model of a slow device). Past it the worker
    # finishes that pair unpublished, and the model is closed only once it is out (InferenceWorker.after_exit).
    WORKER_STOP_TIMEOUT_S = 30.0

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        # What starts lazily in the worker (students, precision choices, TensorRT engine builds) logs through
        # Python logging: into this node's log.
        self._log_handler: RosLogHandler | None = forward_package_logs(self.get_logger())
        for spec in PARAMS:
            descriptor = ParameterDescriptor(description=spec.description)
            if spec.default == DOUBLE_ARRAY:
                self.declare_parameter(spec.name, Parameter.Type.DOUBLE_ARRAY, descriptor)
            else:
                # Let `-p sync.slop:=1` (an int) set a double parameter instead of failing.
                descriptor.dynamic_typing = isinstance(spec.default, float)
                self.declare_parameter(spec.name, spec.default, descriptor)
        self.settings: NodeSettings | None = None
        self.pipeline: FusionPipeline | None = None
        self.processor: PairProcessor | None = None
        self.class_table = None
        self.stats = NodeStats()
        self._throttle = Throttle()
        self._slot = NewestSlot()  # lives as long as the node: its counts are lifetime totals
        self._sync = Synchroniser()
        self._inputs: InputSubscriptions | None = None  # this activation's (kept closed while inactive)
        self._outputs: OutputPublishers | None = None  # this activation's
        self._mask_schedule: MaskSchedule | None = None  # this activation's
        self._camera_info: CameraInfo | None = None
        self._worker: InferenceWorker | None = None
        self._lingering: list[InferenceWorker] = []  # stopped at deactivate but still inside the model
        self._diagnostics: DiagnosticsPublisher | None = None
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

    def _problem(self, key: str, text: str, error: bool = False, detail: str = "") -> None:
        repeats = self._throttle(key, time.monotonic(), detail)
        if repeats is None:
            return
        if repeats:
            text += f" ({repeats} more like this in the last {LOG_EVERY_S:.0f} s)"
        # Two call sites on purpose: rclpy refuses one call site logging at two severities.
        if error:
            self.get_logger().error(text)
        else:
            self.get_logger().warning(text)

    # --- lifecycle -----------------------------------------------------------------------------
    def destroy_node(self) -> None:
        stop_forwarding(self._log_handler)
        self._log_handler = None
        super().destroy_node()

    def on_configure(self, state: State) -> TransitionCallbackReturn:
        log = self.get_logger()
        try:
            settings = NodeSettings(self._param_values())
            # Students and the segmentation session start on first use, in the worker thread (at inference
            # priority, so the runtimes' thread pools are too); the model files are checked here.
            pipeline = build_pipeline(settings.pipeline)
        except ValueError as exc:
            log.error(f"configure failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        except (PipelineError, BackendError, OSError) as exc:
            log.error(f"configure failed: could not start backend {settings['backend']!r}: {exc}")
            return TransitionCallbackReturn.FAILURE
        self.settings, self.pipeline = settings, pipeline
        self.processor = PairProcessor(
            pipeline,
            ThermalNormalizer(settings.thermal),
            Registration(settings["registration.homography"], settings["registration.aspect_tolerance"]),
        )
        self.class_table = pipeline.segmenter.class_table if pipeline.segmenter is not None else None
        # Never a new NodeStats: totals stay monotonic over cleanup/configure (see docs/node.md).
        self.stats.configure(settings["diagnostics.latency_window"], settings["diagnostics.stale_timeout"])
        self._diagnostics = DiagnosticsPublisher(self, settings["diagnostics.period"], self._diagnostic_status)
        log.info(f"configured: backend {settings['backend']}; {'; '.join(pipeline.notes)}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        s = self.settings
        self.get_logger().info(self._sync.start(s, self._on_pair))
        self._slot.reopen()
        self._camera_info = None
        self._inputs = InputSubscriptions(self, s, self._on_image, self._on_info, self.stats, self._problem)
        self._inputs.open()
        names = ["fused", "fused_info"] + (["mask", "overlay"] if self.class_table is not None else [])
        self._outputs = OutputPublishers(self, names, s["output_qos.reliability"], s["output_qos.depth"])
        self._mask_schedule = MaskSchedule(float(s["segmentation.max_rate"]))
        self.stats.activated(time.monotonic())
        # A worker of an earlier activation may still be inside the model: this one starts once it is out.
        self._lingering = [w for w in self._lingering if w.thread.is_alive()]
        self._worker = InferenceWorker(self._slot, self._process, self._worker_error, after=self._lingering).start()
        self._active = True
        return TransitionCallbackReturn.SUCCESS

    def _deactivate(self) -> None:
        if not self._active:
            return
        self._active = False
        self._inputs.close()
        self._slot.close()
        if self._worker is not None:
            if not self._worker.stop(self.WORKER_STOP_TIMEOUT_S):
                self.get_logger().error(
                    f"inference worker did not stop within {self.WORKER_STOP_TIMEOUT_S:.0f} s: its pair will not be "
                    "published, and the model is closed once it returns"
                )
                self._lingering.append(self._worker)
            self._worker = None
        self.stats.drop("superseded_at_deactivate", self._slot.clear())
        self._sync.retire()
        self._mirror_sync_stats()
        self._outputs.close()  # a worker still running publishes nothing through them
        self._outputs = None

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self._deactivate()
        self.get_logger().info("deactivated")
        return TransitionCallbackReturn.SUCCESS

    def _cleanup(self) -> None:
        self._deactivate()
        if self._diagnostics is not None:
            self._diagnostics.close()
            self._diagnostics = None
        models = [self.pipeline] if self.pipeline is not None else []
        self.pipeline = self.processor = self.class_table = None
        # Never under a running worker: one still inside the model closes it as its last act.
        lingering, self._lingering = self._lingering, []
        after_all_exit(lingering, lambda: self._close_models(models))

    def _close_models(self, models: list[Any]) -> None:
        for model in models:
            try:
                model.close()
            except Exception as exc:  # noqa: BLE001 - may run in a worker thread: say it, close the others
                self.get_logger().error(f"closing the model failed: {exc!r}")

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
        self._inputs.note_sequence(name, info)
        topic = self._inputs.topic(name)
        try:
            check_message(msg, _ACCEPTED[name], name)
        except ImageInputError as exc:
            cause = classify_error(exc)
            self.stats.drop(f"{name}_{cause}", error=f"{name}: {exc}")
            self._problem(f"{name}_{cause}", f"dropped a {name} image on {topic}: {exc}",
                          detail=getattr(exc, "detail", ""))
            return
        stamp_ns = stamp_to_ns(msg.header.stamp)
        offset_ns = self._sync.offset_ns(index)
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

    def _on_info(self, msg: CameraInfo) -> None:
        self._camera_info = msg

    def _on_pair(self, pair: tuple) -> None:
        # Runs inside the synchroniser (under message_filters' lock on that path): hand off only.
        self.stats.pair_formed(time.monotonic())
        self._slot.put(pair)

    # --- worker thread -----------------------------------------------------------------------
    def _worker_error(self, exc: Exception) -> None:
        self.stats.drop("failed_other", error=str(exc))
        self._problem("failed_other", f"unexpected error while fusing a pair: {exc!r}", error=True,
                      detail=type(exc).__name__)

    def _process(self, pair: tuple) -> None:
        (thermal, _), (rgb, received) = pair
        s = self.settings
        outputs = self._outputs  # this activation's publishers: closed at deactivate (then nothing is published)
        stamp_ns = stamp_to_ns(rgb.header.stamp)
        max_age = float(s["max_pair_age"])
        if max_age > 0:
            age = (self.get_clock().now().nanoseconds - stamp_ns) * 1e-9
            if age > max_age:
                self.stats.drop("stale")
                self._problem("stale", f"dropped a pair {age:.2f} s old (max_pair_age {max_age} s)")
                return
        try:
            # Class ids wait until the fused image is out, and run only while a mask or overlay subscriber exists.
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
        if outputs is None or not outputs.publish("fused", image_msg(header, out.fused_rgb, "rgb8")):
            self.stats.drop("superseded_at_deactivate")  # deactivated meanwhile: still counted
            return
        published = ["fused"]
        # Latency is the fused image's: masks and overlays follow it.
        fused_at = time.monotonic()
        latency_ms = (self.get_clock().now().nanoseconds - stamp_ns) * 1e-6
        # Extra outputs cost conversion (and the overlay a blend): only when someone listens.
        info = self._camera_info
        if info is not None and outputs.listened("fused_info"):
            info.header = header
            if outputs.publish("fused_info", info):
                published.append("fused_info")
        schedule = self._mask_schedule
        if schedule is not None and schedule.due(stamp_ns):
            classes = outputs.publish_classes(
                header, out, self.class_table, s["overlay.alpha"],
                # Not a dropped pair (its fused image is published): logged, and the mask/overlay skipped.
                lambda exc: self._problem("failed_segmentation", f"segmentation failed on a {rgb.width}x"
                                          f"{rgb.height} pair: {exc}", detail=type(exc).__name__),
            )
            if classes:
                schedule.masked(stamp_ns)
            published += classes
        self.stats.published(published)
        self.stats.output_published(fused_at, latency_ms, (fused_at - received) * 1000.0, out.inference_ms)

    # --- diagnostics ---------------------------------------------------------------------------
    def _mirror_sync_stats(self) -> None:
        for key, value in self._sync.totals().items():
            self.stats.set_drop_total(key, value)
        # The mailbox lives as long as the node: its count is a lifetime total already.
        self.stats.set_drop_total("superseded", self._slot.superseded)

    def _diagnostic_status(self, now: float) -> tuple[Health, str, dict[str, str]]:
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
        hardware_id = self.pipeline.description if self.pipeline is not None else "none"
        values = self.stats.values(now)
        values["backend"] = hardware_id
        values["sync"] = self._sync.name
        for name, count in zip(INPUTS, self._sync.pending(), strict=True):
            values[f"sync_pending_{name}"] = str(count)
        # A pair in the mailbox or taken by a worker: neither fused nor dropped yet.
        values["in_flight"] = str(self._slot.in_flight())
        for key, depth in self.stats.queue_depths().items():
            values[f"queue_{key}"] = str(depth)
        values["queue_log_problems"] = str(len(self._throttle))
        values.update(self._inputs.diagnostic_values() if self._inputs else {"queue_tracked_publishers": "0"})
        values["state"] = "active" if self._active else "inactive"
        return health, hardware_id, values

