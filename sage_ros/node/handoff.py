"""A one-slot mailbox between the sync callback and the inference worker: only the newest pair waits.

The sync callback must stay cheap (message_filters runs it under its lock), so it only `put`s; the
worker `take`s. A pair replaced before the worker took it is counted as superseded: when inference is
slower than the cameras, the node fuses the freshest pair instead of building a backlog.

A taken item stays in flight until the worker calls `done()`: `take` counts it under the same lock that
removes it from the slot, so `in_flight()` never misses a pair between the hand-off and its fate.
"""

from __future__ import annotations

import threading
from typing import Any


class NewestSlot:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: Any = None
        self._has_item = False
        self._closed = False
        self._taken = 0  # taken, not yet done
        self.superseded = 0  # items replaced before anyone took them
        self.put_count = 0

    def put(self, item: Any) -> bool:
        """Store `item`; returns True when it replaced an untaken one (counted as superseded)."""
        with self._cond:
            replaced = self._has_item
            if replaced:
                self.superseded += 1
            self._item, self._has_item = item, True
            self.put_count += 1
            self._cond.notify()
            return replaced

    def take(self, timeout: float | None = None) -> Any | None:
        """Wait up to `timeout` s for an item; None on timeout or after `close()`. An item returned is in
        flight until `done()`."""
        with self._cond:
            if not self._has_item and not self._closed:
                self._cond.wait(timeout)
            if not self._has_item or self._closed:
                return None
            item, self._item, self._has_item = self._item, None, False
            self._taken += 1
            return item

    def done(self) -> None:
        """The worker has finished with an item it took (its fate is counted)."""
        with self._cond:
            self._taken = max(0, self._taken - 1)

    def pending(self) -> int:
        """1 while an item waits for the worker, else 0."""
        with self._cond:
            return int(self._has_item)

    def in_flight(self) -> int:
        """Items neither finished nor dropped: the waiting one and those taken but not `done()`."""
        with self._cond:
            return int(self._has_item) + self._taken

    def clear(self) -> int:
        """Drop the waiting item, if any; returns 1 if one was dropped."""
        with self._cond:
            dropped = int(self._has_item)
            self._item, self._has_item = None, False
            return dropped

    def close(self) -> None:
        """Wake the worker and make every later `take` return None."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def reopen(self) -> None:
        with self._cond:
            self._closed = False
            # Taken items stay counted: a worker that outlived its deactivation may still hold one.
            self._item, self._has_item = None, False
