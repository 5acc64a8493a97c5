"""`sage-ros demo --live`: image pairs published as camera topics, fused by the node in another process.

`run_live_demo` starts `sage_fusion` as a child process (`NodeProcess`, what the `fusion_node` executable
runs) on a free ROS domain, publishes each pair (thermal mono8 or mono16, RGB bgr8, same stamp) from a
probe node in this process (`Probe`, its own rclpy Context), records what the node publishes on
`fused/image_raw`, writes it as PNGs and returns statistics. Nothing is mocked: the two processes talk
through DDS as a robot's drivers would, on this host only. The tests and benchmarks extend these
classes (test/harness.py). `_`-prefixed: a helper of cli/demo.py, not a subcommand.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from sage_ros.image.encodings import ImageFields, decode_msg, encode_image, fill_msg
from sage_ros.node.stats import percentiles_ms
from sage_ros.pairing.datasets import read_infrared, read_visible

TOPIC_TYPES = {
    "thermal/image_raw": "Image",
    "rgb/image_raw": "Image",
    "rgb/camera_info": "CameraInfo",
    "fused/image_raw": "Image",
    "fused/camera_info": "CameraInfo",
    "segmentation/mask": "Image",
    "segmentation/overlay": "Image",
}
# DDS traffic of demos, tests and benchmarks must never leave this host: ROS_AUTOMATIC_DISCOVERY_RANGE
# (Iron and later) and ROS_LOCALHOST_ONLY (Humble and older; newer distributions ignore it when the
# range is set) both say so.
LOCAL_DDS_ENV = {"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "ROS_LOCALHOST_ONLY": "1"}


def domain_in_use(domain: int, participants: int = 8) -> bool:
    """Whether a DDS participant on this host already uses `domain`: participant i of domain d binds the
    metatraffic unicast port 7410 + 250 d + 2 i (the RTPS port mapping), which cannot be bound twice."""
    base = 7400 + 250 * domain + 10
    for i in range(participants):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            try:
                sock.bind(("", base + 2 * i))
            except OSError:
                return True
    return False


def pick_domain_id(salt: int = 0) -> int:
    """A ROS domain id derived from the pid (and `salt`), moving on while another participant on this
    host uses it. Ids 100-199 stay clear of the default domain 0 and of the port mapping's limit (232)."""
    start = (os.getpid() + salt) % 100
    for k in range(100):
        domain = 100 + (start + k) % 100
        if not domain_in_use(domain):
            return domain
    return 100 + start


def local_dds_env(domain_id: int | None = None, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a child process that talks DDS: host-only discovery and (if given) its domain."""
    env = dict(os.environ if base is None else base)
    env.update(LOCAL_DDS_ENV)
    if domain_id is not None:
        env["ROS_DOMAIN_ID"] = str(domain_id)
    return env


class NodeProcess:
    """The fusion node in a child process; stdout+stderr go to `log_path`."""

    def __init__(self, params: dict[str, Any], domain_id: int, log_path: Path,
                 env: dict[str, str] | None = None) -> None:
        self.params = params
        self.env = dict(env or {})  # extra environment for the child (e.g. ONEDNN_MAX_CPU_ISA)
        self.domain_id = domain_id
        self.log_path = Path(log_path)
        self.proc: subprocess.Popen | None = None
        self._log_file = None

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "sage_ros.node.run", "--ros-args"]  # the executable's entry point
        for name, value in self.params.items():
            cmd += ["-p", f"{name}:={value}"]  # str, int and float values (test/harness.py adds more)
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
        diagnostics: bool = True,
        output_reliability: str = "reliable",
    ) -> None:
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        from sage_ros.node.qos import qos_profile

        self._rclpy = rclpy
        os.environ.update(LOCAL_DDS_ENV)  # the probe's own participant discovers on this host only
        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node("sage_probe", context=self.context)
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
            self.subs.append(self.node.create_subscription(
                types[TOPIC_TYPES[topic]], topic, lambda m, t=topic: self._record(t, m), out_qos))
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

    def wait_for_node(self, timeout: float = 20.0) -> bool:
        """True once the fusion node subscribes to both image topics and publishes every output topic."""
        def ready() -> bool:
            inputs = all(self.pubs[t].get_subscription_count() > 0 for t in ("thermal/image_raw", "rgb/image_raw"))
            return inputs and all(s.get_publisher_count() > 0 for s in self.subs[: len(self.received)])

        return self.wait_until(ready, timeout)

    def publish(self, topic: str, fields: ImageFields, stamp_ns: int, frame_id: str = "") -> None:
        msg = self._types()["Image"]()
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(int(stamp_ns), 1_000_000_000)
        msg.header.frame_id = frame_id
        self.pubs[topic].publish(fill_msg(msg, fields))

    def publish_array(self, topic: str, array: np.ndarray, encoding: str, stamp_ns: int, frame_id: str = "") -> None:
        self.publish(topic, encode_image(array, encoding), stamp_ns, frame_id)

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


RATE_HZ = 5.0  # at most this many pairs a second
PAIR_TIMEOUT_S = STARTUP_TIMEOUT_S = 60.0


def run_live_demo(
    ir_paths: Sequence[str | Path],
    vis_paths: Sequence[str | Path],
    onnx_path: str | Path,
    out_dir: str | Path,
    backend: str = "auto",
    threads: int = 0,
    domain_id: int | None = None,
    precision: str = "auto",
    resolution: str = "thermal",
) -> dict[str, Any]:
    """Publish the pairs live through the fusion node and save what it publishes.

    The next pair goes out once the previous one came back fused (or timed out), at most at RATE_HZ:
    on a CPU the model is slower than a camera, and the node fuses only the newest pair, so without
    waiting most sample pairs would be superseded by design. Thermal goes out as read: mono8, or
    mono16 from a 16-bit file. Returns pairs_sent, fused_received, latency_ms (stamp -> received, per
    pair), latency p50/max, files written, the node's last diagnostics and its log path.
    """
    if len(ir_paths) != len(vis_paths) or not ir_paths:
        raise ValueError(f"need matching, non-empty path lists, got {len(ir_paths)} and {len(vis_paths)}")
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"model {onnx_path} not found: run `sage-ros weights fetch && sage-ros export`")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pairs = [(Path(i).stem, read_infrared(i), read_visible(v)) for i, v in zip(ir_paths, vis_paths, strict=True)]
    domain = pick_domain_id(31) if domain_id is None else domain_id
    params = {
        "model_path": str(onnx_path),
        "backend": backend,
        "threads": int(threads),
        "precision": precision,
        "fusion.resolution": resolution,
        # Same-host demo: RELIABLE so no frame is lost to UDP fragment drops (see docs/node.md).
        "qos.reliability": "reliable",
        "diagnostics.period": 0.5,
    }
    log_path = out_dir / "node.log"
    stats: dict[str, Any] = {"pairs_sent": 0, "fused_received": 0, "latency_ms": [], "files": []}
    with NodeProcess(params, domain, log_path) as proc, Probe(domain) as probe:
        if not probe.wait_for_node(STARTUP_TIMEOUT_S):
            raise RuntimeError(f"the fusion node did not come up within {STARTUP_TIMEOUT_S} s; see {log_path}")
        by_stamp: dict[int, str] = {}
        for name, thermal, vis in pairs:
            started = time.monotonic()
            stamp = time.time_ns()
            by_stamp[stamp] = name
            # Same stamp on both: a driver pair triggered together (hardware sync).
            thermal_encoding = "mono16" if thermal.dtype == np.uint16 else "mono8"
            probe.publish_array("thermal/image_raw", thermal, thermal_encoding, stamp, "thermal_camera")
            probe.publish_array("rgb/image_raw", vis, "bgr8", stamp, "rgb_camera")
            stats["pairs_sent"] += 1
            probe.wait_until(
                lambda s=stamp: any(_stamp_ns(m) == s for _, m in probe.messages("fused/image_raw")), PAIR_TIMEOUT_S
            )
            time.sleep(max(0.0, 1.0 / RATE_HZ - (time.monotonic() - started)))
        for recv_ns, msg in probe.messages("fused/image_raw"):
            stamp = _stamp_ns(msg)
            name = by_stamp.get(stamp)
            if name is None:
                continue
            path = out_dir / f"{name}.png"
            cv2.imwrite(str(path), cv2.cvtColor(decode_msg(msg), cv2.COLOR_RGB2BGR))
            stats["files"].append(str(path))
            stats["latency_ms"].append((recv_ns - stamp) * 1e-6)
        stats["fused_received"] = len(stats["files"])
        # Diagnostics whose counters include the last pair: a period (0.5 s) or more on a loaded machine,
        # so wait for that status rather than a fixed time (a fixed 0.6 s found none under CI load).
        def counted_all() -> bool:
            status = probe.latest_status()
            return status is not None and status.get("outputs") == str(stats["fused_received"])

        probe.wait_until(counted_all, 10.0)
        stats["diagnostics"] = probe.latest_status()
        stats["node_alive"] = proc.alive()
    lat = percentiles_ms(stats["latency_ms"])
    stats["latency_p50_ms"], stats["latency_max_ms"] = lat["p50"], lat["max"]
    stats["node_log"] = str(log_path)
    return stats


def _stamp_ns(msg: Any) -> int:
    return int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)
