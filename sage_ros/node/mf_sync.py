"""`message_filters.ApproximateTimeSynchronizer` behind the same `add(index, stamp_ns, msg)` interface as
`sage_ros.pairing.sync.ApproximateTimeSync`, so the node's code is identical on both paths.

The node feeds both from its own subscriptions (one QoS setting, one validation step, one set of input
counters). Each message travels wrapped with a header carrying the offset-corrected stamp, so the
drivers' messages are never modified. message_filters does not report drops; they are derived:
unpaired = received - paired - still queued.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Callable, Sequence
from typing import Any

from sage_ros.pairing.sync import SyncStats, seconds_to_ns


def message_filters_available() -> bool:
    try:
        return importlib.util.find_spec("message_filters") is not None
    except (ImportError, ValueError):
        return False


class _Stamped:
    """What message_filters sees: a header (offset applied) and the original message."""

    __slots__ = ("header", "msg")

    def __init__(self, header: Any, msg: Any) -> None:
        self.header = header
        self.msg = msg


class MessageFiltersSync:
    def __init__(
        self,
        num_inputs: int = 2,
        queue_size: int = 10,
        slop: float = 0.05,
        callback: Callable[[tuple], None] | None = None,
        offsets_ns: Sequence[int] | None = None,
    ) -> None:
        import message_filters
        from builtin_interfaces.msg import Time
        from std_msgs.msg import Header

        self._Header, self._Time = Header, Time
        self.num_inputs = num_inputs
        self.queue_size = queue_size
        self.slop_ns = seconds_to_ns(slop)
        self.offsets_ns = list(offsets_ns) if offsets_ns is not None else [0] * num_inputs
        self._callbacks = [callback] if callback else []
        self._lock = threading.Lock()
        self._received = [0] * num_inputs
        self._rejected = [0] * num_inputs
        self._pairs = 0
        self._flushed = [0] * num_inputs
        self._inputs = [message_filters.SimpleFilter() for _ in range(num_inputs)]
        self._sync = message_filters.ApproximateTimeSynchronizer(self._inputs, queue_size, slop)
        self._sync.registerCallback(self._on_match)

    def register_callback(self, callback: Callable[[tuple], None]) -> None:
        self._callbacks.append(callback)

    def _on_match(self, *stamped: _Stamped) -> None:
        # Runs under message_filters' lock: keep it cheap (the node's callback only hands off).
        with self._lock:
            self._pairs += 1
        msgs = tuple(s.msg for s in stamped)
        for cb in list(self._callbacks):
            cb(msgs)

    def add(self, index: int, stamp_ns: int, msg: Any) -> None:
        ns = int(stamp_ns) + self.offsets_ns[index]
        with self._lock:
            self._received[index] += 1
            if stamp_ns < 0 or ns < 0:
                # message_filters raises inside the synchroniser on a negative stamp (rclpy Time refuses
                # it); count it as rejected like sage_ros.pairing.sync.ApproximateTimeSync does.
                self._rejected[index] += 1
                return
        header = self._Header(stamp=self._Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000))
        self._inputs[index].signalMessage(_Stamped(header, msg))

    def pending(self) -> list[int]:
        queues = getattr(self._sync, "queues", None)
        return [len(q) for q in queues] if queues is not None else [0] * self.num_inputs

    def flush(self) -> int:
        queues = getattr(self._sync, "queues", None) or []
        dropped = 0
        lock = getattr(self._sync, "lock", None)
        if lock is not None:
            lock.acquire()
        try:
            for i, q in enumerate(queues):
                self._flushed[i] += len(q)
                dropped += len(q)
                q.clear()
        finally:
            if lock is not None:
                lock.release()
        return dropped

    @property
    def stats(self) -> SyncStats:
        pending = self.pending()
        with self._lock:
            evicted = [
                max(0, r - self._pairs - p - f - j)
                for r, p, f, j in zip(self._received, pending, self._flushed, self._rejected, strict=True)
            ]
            n = self.num_inputs
            # message_filters does not tell duplicates from evictions: all are reported as evicted.
            return SyncStats(list(self._received), [0] * n, evicted, list(self._flushed), list(self._rejected),
                             self._pairs)
