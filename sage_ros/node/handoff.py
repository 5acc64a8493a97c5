"""A one-slot mailbox between the sync callback and the inference worker: only the newest pair waits.

The sync callback must stay cheap (message_filters runs it under its lock), so it only `put`s; the
worker `take`s. A pair replaced before the worker took it is counted as superseded: when inference is
slower than the cameras, the node fuses the freshest pair instead of building a backlog.
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
        """Wait up to `timeout` s for an item; None on timeout or after `close()`."""
        with self._cond:
            if not self._has_item and not self._closed:
                self._cond.wait(timeout)
            if not self._has_item or self._closed:
                return None
            item, self._item, self._has_item = self._item, None, False
            return item

    def pending(self) -> int:
        """1 while an item waits for the worker, else 0."""
        with self._cond:
            return int(self._has_item)

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
            self._item, self._has_item = None, False
