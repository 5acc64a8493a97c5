"""Drive the fusion node from outside over real DDS: used by the live demo, the tests and the benchmark.

`NodeProcess` runs `python -m sage_ros.node.run` (what the `fusion_node` executable runs) in a child
process on its own ROS domain;
`Probe` is an rclpy node in the calling process (its own Context) that publishes thermal/RGB frames
and records everything the fusion node publishes, with receive times. Nothing here is mocked: the
two processes talk through Fast DDS exactly as a robot's camera drivers and consumers would.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from sage_ros.image.encodings import ImageFields, encode_image

TOPIC_TYPES = {
    "thermal/image_raw": "Image",
    "rgb/image_raw": "Image",
    "rgb/camera_info": "CameraInfo",
    "fused/image_raw": "Image",
    "fused/camera_info": "CameraInfo",
    "segmentation/mask": "Image",
    "segmentation/overlay": "Image",
}
OUTPUT_TOPICS = ("fused/image_raw", "fused/camera_info", "segmentation/mask", "segmentation/overlay")


# DDS traffic of tests, benchmarks and demos must never leave this host: ROS_AUTOMATIC_DISCOVERY_RANGE
# (Iron and later) and ROS_LOCALHOST_ONLY (Humble and older; newer distributions ignore it when the
# range is set) both say so.
LOCAL_DDS_ENV = {"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "ROS_LOCALHOST_ONLY": "1"}


def domain_in_use(domain: int, participants: int = 8) -> bool:
    """Whether a DDS participant on this host already uses `domain`.

    Probed the way the RTPS standard port mapping allows: participant i of domain d binds the
    metatraffic unicast port 7410 + 250 d + 2 i (Fast DDS and Cyclone both follow it), and a port a
    participant holds cannot be bound again.
    """
    base = 7400 + 250 * domain + 10
    for i in range(participants):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            try:
                sock.bind(("", base + 2 * i))
            except OSError:
                return True
    return False


def pick_domain_id(salt: int = 0) -> int:
    """A ROS domain id for a test, benchmark or demo: derived from the pid (and `salt`), then probed,
    moving on to the next id while another participant on this host already uses it. Ids 100-199
    stay clear of the default domain 0 and of the port mapping's limit (232)."""
    start = (os.getpid() + salt) % 100
    for k in range(100):
        domain = 100 + (start + k) % 100
        if not domain_in_use(domain):
            return domain
    return 100 + start


def local_dds_env(domain_id: int | None = None, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a child process that talks DDS: host-only discovery and (if given) its domain.

    Every process the harness, the tests, the benchmarks and `demo --live` start gets its environment
    from here, so a second run on the same LAN and domain never sees these images.
    """
    env = dict(os.environ if base is None else base)
    env.update(LOCAL_DDS_ENV)
    if domain_id is not None:
        env["ROS_DOMAIN_ID"] = str(domain_id)
    return env


def restrict_dds_to_host(domain_id: int | None = None) -> None:
    """The same for this process; call before rclpy.init (the rmw reads these at init)."""
    os.environ.update(local_dds_env(domain_id, base={}))


def _param_arg(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(repr(float(v)) for v in value) + "]"
    return str(value)


class NodeProcess:
    """The fusion node in a child process; stdout+stderr go to `log_path`."""

    def __init__(
        self,
        params: dict[str, Any],
        domain_id: int,
        log_path: Path,
        remaps: dict[str, str] | None = None,
        namespace: str | None = None,
        params_file: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.params = params
        self.params_file = params_file
        self.env = dict(env or {})  # extra environment for the child (e.g. ONEDNN_MAX_CPU_ISA)
        self.domain_id = domain_id
        self.log_path = Path(log_path)
        self.remaps = remaps or {}
        self.namespace = namespace
        self.proc: subprocess.Popen | None = None
        self._log_file = None

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "sage_ros.node.run", "--ros-args"]  # the executable's entry point
        if self.params_file is not None:
            cmd += ["--params-file", str(self.params_file)]  # the -p overrides after it win
        for name, value in self.params.items():
            cmd += ["-p", f"{name}:={_param_arg(value)}"]
        for src, dst in self.remaps.items():
            cmd += ["-r", f"{src}:={dst}"]
        if self.namespace:
            cmd += ["-r", f"__ns:={self.namespace}"]
        return cmd

    def start(self) -> NodeProcess:
        env = local_dds_env(self.domain_id)
        env.update(self.env)
        env.update(LOCAL_DDS_ENV)  # extra variables never widen discovery
        env["PYTHONUNBUFFERED"] = "1"
        env.setdefault("RCUTILS_LOGGING_BUFFERED_STREAM", "0")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            self.command(), env=env, stdout=self._log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_for_log(self, text: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log_text():
                return True
            if not self.alive():
                return text in self.log_text()
            time.sleep(0.05)
        return False

    def stop(self, timeout: float = 10.0, sig: int = signal.SIGINT) -> int | None:
        """SIGINT (or `sig`: a clean lifecycle shutdown), then SIGKILL if it does not exit in time."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return self.proc.returncode

    def __enter__(self) -> NodeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Probe:
    """Publishes inputs to and records outputs of a fusion node (in its own rclpy Context)."""

    def __init__(
        self,
        domain_id: int,
        input_reliability: str = "reliable",
        output_topics: Iterable[str] = ("fused/image_raw",),
        namespace: str = "",
        diagnostics: bool = True,
        output_reliability: str = "reliable",
    ) -> None:
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        from sage_ros.node.qos import qos_profile

        self._rclpy = rclpy
        restrict_dds_to_host()  # the probe's own participant discovers on this host only
        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node("sage_probe", context=self.context, namespace=namespace or None)
        self._lock = threading.Lock()
        self.received: dict[str, list[tuple[int, Any]]] = {}
        self.diagnostics: list[tuple[int, Any]] = []
        types = self._types()
        in_qos = qos_profile(input_reliability, 10)
        self.pubs = {
            t: self.node.create_publisher(types[TOPIC_TYPES[t]], t, in_qos)
            for t in ("thermal/image_raw", "rgb/image_raw", "rgb/camera_info")
        }
        self.subs = []
        # best_effort: a sensor-data subscriber (image viewers often are one); the node's RELIABLE
        # writers then send it best-effort, without repairs.
        out_qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.BEST_EFFORT
                             if output_reliability == "best_effort" else ReliabilityPolicy.RELIABLE)
        for topic in output_topics:
            self.received[topic] = []
            self.subs.append(
                self.node.create_subscription(
                    types[TOPIC_TYPES[topic]], topic, lambda m, t=topic: self._record(t, m), out_qos
                )
            )
        if diagnostics:
            self.subs.append(
                self.node.create_subscription(types["DiagnosticArray"], "/diagnostics", self._on_diag, 10)
            )
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._spin = threading.Thread(target=self._spin_loop, daemon=True)
        self._running = True
        self._spin.start()

    @staticmethod
    def _types() -> dict[str, Any]:
        from diagnostic_msgs.msg import DiagnosticArray
        from sensor_msgs.msg import CameraInfo, Image

        return {"Image": Image, "CameraInfo": CameraInfo, "DiagnosticArray": DiagnosticArray}

    def _spin_loop(self) -> None:
        while self._running and self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # noqa: BLE001 - shutting down
                if not self._running:
                    return
                raise

    def _record(self, topic: str, msg: Any) -> None:
        with self._lock:
            self.received[topic].append((time.time_ns(), msg))

    def _on_diag(self, msg: Any) -> None:
        with self._lock:
            self.diagnostics.append((time.time_ns(), msg))

    # --- publishing ----------------------------------------------------------------------------
    def wait_for_node(self, timeout: float = 20.0) -> bool:
        """True once the fusion node subscribes to both image topics and publishes `fused/image_raw`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready = all(self.pubs[t].get_subscription_count() > 0 for t in ("thermal/image_raw", "rgb/image_raw"))
            outputs_ready = all(s.get_publisher_count() > 0 for s in self.subs[: len(self.received)])
            if ready and outputs_ready:
                return True
            time.sleep(0.05)
        return False

    def publish(self, topic: str, fields: ImageFields, stamp_ns: int, frame_id: str = "") -> None:
        from sage_ros.image.encodings import fill_msg

        msg = self._types()["Image"]()
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(int(stamp_ns), 1_000_000_000)
        msg.header.frame_id = frame_id
        self.pubs[topic].publish(fill_msg(msg, fields))

    def publish_array(self, topic: str, array: np.ndarray, encoding: str, stamp_ns: int, frame_id: str = "") -> None:
        self.publish(topic, encode_image(array, encoding), stamp_ns, frame_id)

    def publish_info(self, width: int, height: int, stamp_ns: int, frame_id: str = "") -> None:
        msg = self._types()["CameraInfo"]()
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(int(stamp_ns), 1_000_000_000)
        msg.header.frame_id = frame_id
        msg.width, msg.height = width, height
        msg.k = [float(width), 0.0, width / 2.0, 0.0, float(width), height / 2.0, 0.0, 0.0, 1.0]
        self.pubs["rgb/camera_info"].publish(msg)

    # --- reading -------------------------------------------------------------------------------
    def messages(self, topic: str) -> list[tuple[int, Any]]:
        with self._lock:
            return list(self.received.get(topic, []))

    def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.02)
        return predicate()

    def call_idempotent(self, client: Any, request: Any, timeout: float, resend_after: float = 5.0) -> Any:
        """The response to a request that is safe to repeat (GetState, GetParameters), or None on timeout.

        Why resend: `wait_for_service` returns once the server's request reader is matched, but the
        server's response writer may not have matched this client's reader yet; DDS then drops the
        response and the future never completes (seen on a loaded 2-core CI machine). A repeated
        read-only request costs nothing and gets answered once discovery has settled.
        """
        deadline = time.monotonic() + timeout
        future = client.call_async(request)
        while True:
            wait = min(resend_after, deadline - time.monotonic())
            if self.wait_until(future.done, max(wait, 0.0)):
                return future.result()
            if time.monotonic() >= deadline:
                return None
            client.remove_pending_request(future)
            future = client.call_async(request)

    def latest_status(self, name_part: str = "sage_fusion") -> dict[str, str] | None:
        """Key/values (plus `_level`, `_message`) of the newest diagnostics status naming `name_part`."""
        with self._lock:
            diags = list(self.diagnostics)
        for _, array in reversed(diags):
            for status in array.status:
                if name_part in status.name:
                    level = status.level[0] if isinstance(status.level, (bytes, bytearray)) else int(status.level)
                    values = {kv.key: kv.value for kv in status.values}
                    values["_level"] = str(level)
                    values["_message"] = status.message
                    return values
        return None

    def wait_for_status(self, predicate: Callable[[dict[str, str]], bool], timeout: float) -> dict[str, str] | None:
        ok = self.wait_until(lambda: (s := self.latest_status()) is not None and predicate(s), timeout)
        return self.latest_status() if ok else None

    def close(self) -> None:
        self._running = False
        self._spin.join(timeout=5)
        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        self._rclpy.try_shutdown(context=self.context)

    def __enter__(self) -> Probe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def exported_student(checkpoint: Path, out_dir: Path) -> Path:
    """Export the released student once into out_dir, as `sage-ros export` writes it (reuses an earlier export).

    For tests, demos and benchmarks. The sidecar records the checkpoint's sha256, which is how the node
    recognises the released student (and runs the scale-adapted one below the RGB size).
    """
    out = Path(out_dir) / "sage_student.onnx"
    if out.is_file() and out.with_suffix(".json").is_file():
        return out
    from sage_ros.model.model_files import export_checkpoint

    return export_checkpoint(Path(checkpoint), out)
