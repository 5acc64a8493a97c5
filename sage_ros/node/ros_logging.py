"""The package's Python log records (backends, pipeline, segmentation) into the node's ROS log.

The students and the segmentation graphs start lazily in the worker, with the first pair, and say then what
they chose and why (`precision auto -> bf16 on openvino: ...`, `student started: ...`). Those lines go through
Python's `logging`, which a ROS process does not configure: without this they were lost, and a robot's log
never said which precision ran.
"""

from __future__ import annotations

import logging
from typing import Any

PACKAGE_LOGGER = "sage_ros"


class RosLogHandler(logging.Handler):
    """Forwards records to an rclpy logger at the matching severity."""

    def __init__(self, ros_logger: Any, level: int = logging.INFO) -> None:
        super().__init__(level)
        self._ros = ros_logger

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            # One call site per severity: rclpy refuses one call site logging at two severities.
            if record.levelno >= logging.ERROR:
                self._ros.error(text)
            elif record.levelno >= logging.WARNING:
                self._ros.warning(text)
            else:
                self._ros.info(text)
        except Exception:  # noqa: BLE001 - a log line must never take the worker down
            self.handleError(record)


def forward_package_logs(ros_logger: Any) -> RosLogHandler:
    """Attach a handler for `sage_ros.*` records at INFO and above; detach it with `stop_forwarding`."""
    handler = RosLogHandler(ros_logger)
    package = logging.getLogger(PACKAGE_LOGGER)
    if package.level == logging.NOTSET or package.level > logging.INFO:
        package.setLevel(logging.INFO)
    package.addHandler(handler)
    return handler


def stop_forwarding(handler: RosLogHandler | None) -> None:
    if handler is not None:
        logging.getLogger(PACKAGE_LOGGER).removeHandler(handler)
