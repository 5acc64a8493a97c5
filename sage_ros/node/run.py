"""Entry point of the `fusion_node` executable: run the node until SIGINT/SIGTERM, and shut down cleanly.

Shutdown signals are handled from the first instant. Importing the node pulls in rclpy, numpy, OpenCV
and the inference runtime (seconds on a Jetson). A Ctrl-C or SIGTERM landing in those imports used to
end in a KeyboardInterrupt traceback (exit -2) or death by signal (-15); here the signals are recorded
before the imports, and a stop requested while starting ends the process cleanly (exit 0) without
starting the node. Run: `fusion_node`, `python -m sage_ros.node.run` or `ros2 run sage_ros fusion_node`.
"""

from __future__ import annotations

import signal
import sys
from typing import Any


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


def _shutdown(node: Any, executor: Any) -> None:
    """Every step runs (each bounded), whatever the one before raised or whichever signal arrives."""
    import rclpy

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


def _run(args: list[str] | None, received: list[int]) -> int:
    """Start the node (autostart: configure + activate) and spin until a signal or rclpy shutdown."""
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.lifecycle import TransitionCallbackReturn

    from sage_ros.node.dds_profile import apply_profile
    from sage_ros.node.fusion_node import FusionNode

    # Again after the heavy imports, into the same list: whatever they did to the handlers, ours are in place.
    _record_shutdown_signals(received)
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


def main(args: list[str] | None = None) -> int:
    received = _record_shutdown_signals()
    # The heavy imports (rclpy, numpy, OpenCV, the inference runtime), with the signals already recorded.
    import sage_ros.node.fusion_node  # noqa: F401

    if received:
        return 0  # asked to stop while starting: nothing was started
    return _run(args, received)


if __name__ == "__main__":
    raise SystemExit(main())
