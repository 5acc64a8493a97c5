"""The node's /diagnostics publisher: one `<node>: fusion` status every `diagnostics.period` s, from configure
to cleanup. What goes into it is the node's (`collect`); this only makes and sends the message."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from sage_ros.node.stats import Health

# now (monotonic s) -> (health, hardware id, key/values)
Collect = Callable[[float], tuple[Health, str, dict[str, str]]]


class DiagnosticsPublisher:
    def __init__(self, node: Any, period: float, collect: Collect) -> None:
        self._node = node
        self._collect = collect
        self._pub = node.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._timer = node.create_timer(period, self.publish)

    def publish(self) -> None:
        health, hardware_id, values = self._collect(time.monotonic())
        status = DiagnosticStatus(
            level=bytes([health.level]), name=f"{self._node.get_name()}: fusion", message=health.message,
            hardware_id=hardware_id, values=[KeyValue(key=k, value=v) for k, v in values.items()],
        )
        array = DiagnosticArray(status=[status])
        array.header.stamp = self._node.get_clock().now().to_msg()
        self._pub.publish(array)

    def close(self) -> None:
        self._node.destroy_timer(self._timer)
        self._node.destroy_publisher(self._pub)
