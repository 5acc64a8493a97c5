"""Approximate-time pairing of N message streams, ROS-free, with every drop counted.

`ApproximateTimeSync` reproduces the behaviour and parameters of the Python
`message_filters.ApproximateTimeSynchronizer` (ROS 2), so the node behaves the same with or without
message_filters, and bag evaluation can run the very same object on recorded messages:

- each input keeps a queue keyed by stamp; a message whose stamp is already queued replaces the
  queued one (message_filters does this silently, we count it as `duplicate`);
- a queue longer than `queue_size` drops its oldest stamp (counted as `evicted`: never paired);
- on each arrival the other queues are searched for messages within `slop` of the new stamp, nearest
  first; the first combination whose spread (max - min stamp) is strictly below `slop` is emitted and
  its messages leave their queues. Older unmatched messages stay queued until evicted, exactly like
  message_filters.

Differences, all additive: the callback runs after the lock is released (a slow callback cannot stall
`add` from other threads), drops are counted by cause, `flush()` counts what is left at the end of a
bag, and a per-input time offset is applied here (see below).

Time offset: the object applies it. Pass raw header stamps to `add`; `offsets_ns[i]` is added to the
stamps of input i before matching (e.g. a thermal driver that stamps 30 ms late gets -30_000_000).
The callback receives the original messages untouched, so outputs keep the drivers' stamps.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ApproximateTimeSync", "SyncStats", "seconds_to_ns"]


def seconds_to_ns(seconds: float) -> int:
    """Seconds (float) -> integer nanoseconds, rounded to the nearest ns."""
    return int(round(seconds * 1e9))


@dataclass
class SyncStats:
    """Counters since construction (or `reset_stats`); per-input lists are indexed like `add`'s index."""

    received: list[int] = field(default_factory=list)
    duplicate: list[int] = field(default_factory=list)  # replaced by a later message with the same stamp
    evicted: list[int] = field(default_factory=list)  # pushed out of a full queue without a partner
    flushed: list[int] = field(default_factory=list)  # still unpaired when `flush()` was called
    rejected: list[int] = field(default_factory=list)  # invalid index or negative stamp
    pairs: int = 0  # combinations emitted to the callback

    @property
    def unpaired(self) -> int:
        """Every message that will never reach the callback, whatever the cause."""
        return sum(self.duplicate) + sum(self.evicted) + sum(self.flushed) + sum(self.rejected)

    def as_dict(self) -> dict[str, Any]:
        return {
            "received": list(self.received),
            "duplicate": list(self.duplicate),
            "evicted": list(self.evicted),
            "flushed": list(self.flushed),
            "rejected": list(self.rejected),
            "pairs": self.pairs,
            "unpaired": self.unpaired,
        }


class ApproximateTimeSync:
    """Greedy approximate-time synchroniser with message_filters' semantics (see module docstring).

    callback(msgs) receives a tuple with one message per input, in input order.
    """

    def __init__(
        self,
        num_inputs: int = 2,
        queue_size: int = 10,
        slop: float = 0.05,
        callback: Callable[[tuple], None] | None = None,
        offsets_ns: Sequence[int] | None = None,
    ) -> None:
        if num_inputs < 2:
            raise ValueError(f"num_inputs must be >= 2, got {num_inputs}")
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        if not slop > 0.0:
            raise ValueError(f"slop must be > 0 seconds, got {slop}")
        self.num_inputs = num_inputs
        self.queue_size = int(queue_size)
        self.slop_ns = seconds_to_ns(slop)
        self._callbacks: list[Callable[[tuple], None]] = [callback] if callback else []
        self._lock = threading.Lock()
        self._queues: list[dict[int, Any]] = [{} for _ in range(num_inputs)]
        self.offsets_ns = [0] * num_inputs
        if offsets_ns is not None:
            self.set_offsets_ns(offsets_ns)
        self._stats = self._empty_stats()

    # --- configuration -------------------------------------------------------------------------
    def register_callback(self, callback: Callable[[tuple], None]) -> None:
        self._callbacks.append(callback)

    def set_offsets_ns(self, offsets_ns: Sequence[int]) -> None:
        """Per-input stamp offsets in ns, added before matching (see module docstring)."""
        if len(offsets_ns) != self.num_inputs:
            raise ValueError(f"expected {self.num_inputs} offsets, got {len(offsets_ns)}")
        with self._lock:
            self.offsets_ns = [int(o) for o in offsets_ns]

    def _empty_stats(self) -> SyncStats:
        n = self.num_inputs
        return SyncStats([0] * n, [0] * n, [0] * n, [0] * n, [0] * n, 0)

    # --- data path -----------------------------------------------------------------------------
    def add(self, index: int, stamp_ns: int, msg: Any) -> None:
        """Offer one message of input `index` with its header stamp (ns since the epoch)."""
        matched = self._add_locked(index, stamp_ns, msg)
        if matched is not None:
            for cb in list(self._callbacks):
                cb(matched)

    def _add_locked(self, index: int, stamp_ns: int, msg: Any) -> tuple | None:
        with self._lock:
            if not 0 <= index < self.num_inputs:
                # Cannot be attributed to an input; count it against none rather than crash.
                raise IndexError(f"input index {index} out of range 0..{self.num_inputs - 1}")
            self._stats.received[index] += 1
            stamp = int(stamp_ns) + self.offsets_ns[index]
            if stamp_ns < 0 or stamp < 0:  # negative before or after the offset: as message_filters can't pair it
                self._stats.rejected[index] += 1
                return None
            queue = self._queues[index]
            if stamp in queue:
                self._stats.duplicate[index] += 1
            queue[stamp] = msg
            while len(queue) > self.queue_size:
                del queue[min(queue)]
                self._stats.evicted[index] += 1
            if stamp not in queue:
                return None  # the new message was itself the oldest of a full queue
            return self._match(index, stamp)

    def _match(self, index: int, stamp: int) -> tuple | None:
        # Candidates per other input: stamps within slop of the new one, nearest first.
        candidates: list[list[int]] = []
        for i, queue in enumerate(self._queues):
            if i == index:
                continue
            near = sorted((s for s in queue if abs(s - stamp) <= self.slop_ns), key=lambda s: abs(s - stamp))
            if not near:
                return None
            candidates.append(near)
        for combo in itertools.product(*candidates):
            stamps = list(combo)
            stamps.insert(index, stamp)
            if max(stamps) - min(stamps) < self.slop_ns:
                msgs = tuple(self._queues[i].pop(s) for i, s in enumerate(stamps))
                self._stats.pairs += 1
                return msgs
        return None

    def flush(self) -> int:
        """Drop everything still queued (end of a bag, deactivation); returns how many were dropped."""
        with self._lock:
            dropped = 0
            for i, queue in enumerate(self._queues):
                self._stats.flushed[i] += len(queue)
                dropped += len(queue)
                queue.clear()
            return dropped

    # --- introspection -------------------------------------------------------------------------
    def pending(self) -> list[int]:
        """How many messages each input has queued right now."""
        with self._lock:
            return [len(q) for q in self._queues]

    @property
    def stats(self) -> SyncStats:
        """A consistent copy of the counters."""
        with self._lock:
            s = self._stats
            return SyncStats(
                list(s.received), list(s.duplicate), list(s.evicted), list(s.flushed), list(s.rejected), s.pairs
            )

    def reset_stats(self) -> None:
        with self._lock:
            self._stats = self._empty_stats()
