"""The node's output publishers of one activation, sensor_msgs/Image building, and which pairs get a mask
(`MaskSchedule`, `segmentation.max_rate`).

A worker that outlived its deactivation (its join timed out while the model ran) may still finish a
pair: the publishers it captured are closed by then, so it publishes nothing (the pair is counted as
superseded at deactivate), even when a new activation has made new publishers meanwhile.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np
from sensor_msgs.msg import CameraInfo, Image

from sage_ros.model.classes import overlay
from sage_ros.node.processing import PairOutput
from sage_ros.node.qos import describe_qos, qos_profile, user_overrides
from sage_ros.node.topics import TOPICS


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


class MaskSchedule:
    """Which pairs get a mask (and overlay) at `segmentation.max_rate`: a mask is due once its RGB stamp is a
    period (less a tenth, for camera jitter) past the last masked pair's; 0 = every pair.

    Sensor time, not wall time: a bag replayed faster than real time gets the same pairs masked. A stamp before
    the last one (a looped bag, a restarted driver) starts over."""

    def __init__(self, max_rate_hz: float) -> None:
        if not 0.0 <= max_rate_hz < float("inf"):
            raise ValueError(f"mask rate {max_rate_hz} Hz must be >= 0 and finite")
        self._min_gap_ns = int(0.9e9 / max_rate_hz) if max_rate_hz > 0 else 0
        self._last_ns: int | None = None

    def due(self, stamp_ns: int) -> bool:
        last = self._last_ns
        return last is None or stamp_ns < last or stamp_ns - last >= self._min_gap_ns

    def masked(self, stamp_ns: int) -> None:
        self._last_ns = stamp_ns


class OutputPublishers:
    """`names` (keys of TOPICS) published with `output_qos.*` (or the user's qos_overrides) until `close()`."""

    def __init__(self, node: Any, names: list[str], reliability: str, depth: int) -> None:
        self._node = node
        self._lock = threading.Lock()  # publish vs close: never publish through a destroyed publisher
        self._closed = False
        self._pubs: dict[str, Any] = {}
        for name in names:
            msg_type = CameraInfo if name == "fused_info" else Image
            topic = node.resolve_topic_name(TOPICS[name])
            # Only the user's own qos_overrides: any other would pin this activation's output_qos.* for good.
            pub = node.create_publisher(msg_type, TOPICS[name], qos_profile(reliability, depth),
                                        qos_overriding_options=user_overrides(node, topic, "publisher"))
            self._pubs[name] = pub
            node.get_logger().info(f"publishing {pub.topic_name} with QoS {describe_qos(pub.qos_profile)}")

    def has(self, name: str) -> bool:
        return name in self._pubs

    def listened(self, name: str) -> bool:
        """Whether `name` is published and someone subscribes to it (extra outputs cost conversion)."""
        pub = self._pubs.get(name)
        return pub is not None and not self._closed and pub.get_subscription_count() > 0

    def publish(self, name: str, msg: Any) -> bool:
        """Publish on `name`; False when this activation's publishers are closed (nothing published)."""
        with self._lock:
            if self._closed or name not in self._pubs:
                return False
            self._pubs[name].publish(msg)
            return True

    def close(self) -> None:
        with self._lock:
            self._closed = True
            pubs, self._pubs = self._pubs, {}
        for pub in pubs.values():
            self._node.destroy_publisher(pub)

    def publish_classes(self, header: Any, out: PairOutput, table: Any, alpha: float,
                        on_error: Callable[[Exception], None]) -> list[str]:
        """Mask and overlay for their subscribers (nobody listening: no segmentation pass, no blend).

        Class ids deferred by the pipeline (below the RGB size) are computed here, after the fused image is
        out; a failure there goes to `on_error` (the fused image is published: not a dropped pair).
        Returns the names published.
        """
        if not (self.listened("mask") or self.listened("overlay")):
            return []
        class_ids = out.class_ids
        if class_ids is None and out.segment_later is not None:
            try:
                class_ids = out.segment_later()
            except Exception as exc:  # noqa: BLE001 - runtimes raise their own types
                on_error(exc)
                return []
        if class_ids is None:
            return []
        published = []
        if self.listened("mask") and self.publish("mask", image_msg(header, class_ids, "mono8")):
            published.append("mask")
        if self.listened("overlay"):
            blended = overlay(out.fused_rgb, class_ids, table, alpha)
            if self.publish("overlay", image_msg(header, blended, "rgb8")):
                published.append("overlay")
        return published
