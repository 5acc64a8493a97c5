"""Entry point of the `fusion_node` executable: shutdown signals are handled from the first instant.

Importing the node pulls in rclpy, numpy, OpenCV and the inference runtime (seconds on a Jetson). A
Ctrl-C or SIGTERM landing in those imports used to end in a KeyboardInterrupt traceback (exit -2) or
death by signal (-15); here the signals are recorded before the imports, and a stop requested while
starting ends the process cleanly (exit 0) without starting the node.
"""

from __future__ import annotations

import signal
from typing import Any


def main(args: list[str] | None = None) -> int:
    received: list[int] = []

    def record(signum: int, frame: Any) -> None:
        received.append(signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, record)
    from sage_ros.node import fusion_node  # the heavy imports

    if received:
        return 0  # asked to stop while starting: nothing was started
    return fusion_node.main(args, received)


if __name__ == "__main__":
    raise SystemExit(main())
