"""The node's pair synchroniser: a new one per activation, its counters kept for the node's life.

message_filters' ApproximateTimeSynchronizer when installed (and not disabled), else
`sage_ros.pairing.sync.ApproximateTimeSync`; both behind the same `add(index, stamp_ns, msg)`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sage_ros.node.mf_sync import MessageFiltersSync, message_filters_available
from sage_ros.node.stats import INPUTS
from sage_ros.pairing.sync import ApproximateTimeSync, seconds_to_ns


class Synchroniser:
    def __init__(self) -> None:
        self._sync: Any = None
        # Sync counters of synchronisers already retired (one per activation): added to the live one's.
        self._base: dict[str, int] = {}

    def start(self, settings: Any, callback: Callable[[tuple], None]) -> str:
        """A new synchroniser for this activation (thermal index 0, RGB 1); returns the log line saying which."""
        s = settings
        sync_args = dict(
            num_inputs=2, queue_size=int(s["sync.queue_size"]), slop=float(s["sync.slop"]),
            callback=callback, offsets_ns=[seconds_to_ns(s["sync.thermal_offset"]), 0],
        )
        if s["sync.use_message_filters"] and message_filters_available():
            self._sync = MessageFiltersSync(**sync_args)
            which = "message_filters.ApproximateTimeSynchronizer"
        else:
            self._sync = ApproximateTimeSync(**sync_args)
            which = "sage_ros.pairing.sync.ApproximateTimeSync" + (
                "" if s["sync.use_message_filters"] else " (message_filters disabled by parameter)"
            )
        return (f"sync: {which}, slop {s['sync.slop']} s, queue_size {s['sync.queue_size']}, "
                f"thermal offset {s['sync.thermal_offset']} s")

    @property
    def name(self) -> str:
        return type(self._sync).__name__ if self._sync is not None else "none"

    def offset_ns(self, index: int) -> int:
        return self._sync.offsets_ns[index]

    def add(self, index: int, stamp_ns: int, item: Any) -> None:
        self._sync.add(index, stamp_ns, item)

    def pending(self) -> list[int]:
        """Messages per input waiting for a partner right now (not drops yet: they count once pushed out)."""
        return self._sync.pending() if self._sync is not None else [0] * len(INPUTS)

    def totals(self) -> dict[str, int]:
        """Lifetime sync counters: the retired synchronisers' plus the live one's."""
        totals = dict(self._base)
        if self._sync is not None:
            st = self._sync.stats
            for i, name in enumerate(INPUTS):
                for key, value in (
                    (f"sync_unpaired_{name}", st.evicted[i] + st.flushed[i] + st.rejected[i]),
                    (f"sync_duplicate_{name}", st.duplicate[i]),
                ):
                    totals[key] = totals.get(key, 0) + value
        return totals

    def retire(self) -> None:
        """Deactivate: flush the live synchroniser (its queued messages count as unpaired) and keep its
        totals as the base the next one adds to (the counters never go backwards)."""
        if self._sync is None:
            return
        self._sync.flush()
        self._base = self.totals()
        self._sync = None
