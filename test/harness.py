"""Helpers of the tests and benchmarks: the DDS harness (the live demo's `NodeProcess` and `Probe` from
sage_ros/cli/_live_demo.py, plus what only tests use: a params file, the node's log, camera info, service
calls, waiting for a diagnostics status), a test model export and compressed bag images."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from sage_ros.cli import _live_demo
from sage_ros.cli._live_demo import LOCAL_DDS_ENV, domain_in_use, local_dds_env, pick_domain_id
from sage_ros.image.encodings import _YUV_CODES, MalformedImageError, UnsupportedEncodingError

__all__ = ["LOCAL_DDS_ENV", "NodeProcess", "Probe", "compressed_image_message", "domain_in_use", "exported_student",
           "local_dds_env", "pick_domain_id", "restrict_dds_to_host"]


def restrict_dds_to_host(domain_id: int | None = None) -> None:
    """Host-only discovery (and `domain_id`) for this process; call before rclpy.init (the rmw reads it then)."""
    os.environ.update(local_dds_env(domain_id, base={}))


def _param_arg(value: Any) -> Any:
    """A ROS parameter value as `-p name:=VALUE` spells it: booleans and lists too."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(repr(float(v)) for v in value) + "]"
    return value


class NodeProcess(_live_demo.NodeProcess):
    """The live demo's node process, with boolean and list parameters and optionally a params file
    (the -p overrides after it win)."""

    def __init__(self, params: dict[str, Any], *args: Any, params_file: Path | None = None, **kwargs: Any) -> None:
        super().__init__({k: _param_arg(v) for k, v in params.items()}, *args, **kwargs)
        self.params_file = params_file

    def command(self) -> list[str]:
        cmd = super().command()
        if self.params_file is not None:
            cmd[4:4] = ["--params-file", str(self.params_file)]  # right after --ros-args
        return cmd

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_for_log(self, text: str, timeout: float, after: int = 0) -> bool:
        """Whether `text` appears in the log (from character `after` on) within `timeout` s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log_text()[after:]:
                return True
            if not self.alive():
                return text in self.log_text()[after:]
            time.sleep(0.05)
        return False


class Probe(_live_demo.Probe):
    def publish_info(self, width: int, height: int, stamp_ns: int, frame_id: str = "") -> None:
        msg = self._types()["CameraInfo"]()
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(int(stamp_ns), 1_000_000_000)
        msg.header.frame_id = frame_id
        msg.width, msg.height = width, height
        msg.k = [float(width), 0.0, width / 2.0, 0.0, float(width), height / 2.0, 0.0, 0.0, 1.0]
        self.pubs["rgb/camera_info"].publish(msg)

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

    def wait_for_status(self, predicate: Callable[[dict[str, str]], bool], timeout: float) -> dict[str, str] | None:
        ok = self.wait_until(lambda: (s := self.latest_status()) is not None and predicate(s), timeout)
        return self.latest_status() if ok else None


def exported_student(checkpoint: Path, out_dir: Path) -> Path:
    """Export the released student once into out_dir, as `sage-ros export` writes it (reuses an earlier export).

    The sidecar records the checkpoint's sha256, which is how the node recognises the released student
    (and runs the scale-adapted one below the RGB size).
    """
    out = Path(out_dir) / "sage_student.onnx"
    if out.is_file() and out.with_suffix(".json").is_file():
        return out
    from sage_ros.model.model_files import export_checkpoint

    return export_checkpoint(Path(checkpoint), out)


def compressed_image_message(image: np.ndarray, fmt: str, stamp_ns: int, frame_id: str) -> Any:
    """A rosbags sensor_msgs/CompressedImage, as image_transport's compressed plugin records it:
    `fmt` is 'png' or 'jpeg', pixels in OpenCV's channel order."""
    import cv2

    from sage_ros.bags.messages import COMPRESSED_TYPE, TYPESTORE, header

    ok, encoded = cv2.imencode(f".{fmt}", image)
    assert ok, f"OpenCV could not encode a {image.shape} {image.dtype} image as {fmt}"
    return TYPESTORE.types[COMPRESSED_TYPE](header=header(stamp_ns, frame_id), format=fmt,
                                            data=encoded.reshape(-1).astype(np.uint8))


def bgr8_to_yuv422(bgr: np.ndarray, encoding: str = "yuv422") -> np.ndarray:
    """BGR -> packed HxWx2 UYVY (`yuv422`, `uyvy`) or YUYV (`yuv422_yuy2`, `yuyv`), for the encoding tests."""
    if encoding not in _YUV_CODES:
        raise UnsupportedEncodingError(f"{encoding!r} is not a yuv422 encoding")
    if bgr.shape[1] % 2:
        raise MalformedImageError("yuv422 needs an even width")
    # Video-range BT.601, the inverse of what OpenCV (and cameras) use for 4:2:2 decoding.
    b, g, r = (bgr[..., i].astype(np.float32) for i in range(3))
    y = 16.0 + 0.257 * r + 0.504 * g + 0.098 * b
    u_full = 128.0 - 0.148 * r - 0.291 * g + 0.439 * b
    v_full = 128.0 + 0.439 * r - 0.368 * g - 0.071 * b
    # 4:2:2 shares U and V between horizontal pixel pairs: average each pair.
    u = (u_full[:, 0::2] + u_full[:, 1::2]) / 2.0
    v = (v_full[:, 0::2] + v_full[:, 1::2]) / 2.0
    h, w = y.shape
    packed = np.empty((h, w, 2), np.float32)
    packed[..., 0 if encoding in ("yuv422_yuy2", "yuyv") else 1] = y
    chroma = packed[..., 1 if encoding in ("yuv422_yuy2", "yuyv") else 0]
    chroma[:, 0::2] = u
    chroma[:, 1::2] = v
    return np.clip(np.rint(packed), 0, 255).astype(np.uint8)
