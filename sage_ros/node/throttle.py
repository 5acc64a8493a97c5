"""Rate-limited problem logging for the node: a bad camera can send the same fault 30 times a second."""

from __future__ import annotations

import threading

LOG_EVERY_S = 5.0  # the same problem is logged at most this often (with a count of repeats)
MAX_DISTINCT_PROBLEMS = 256  # distinct (cause, detail) pairs named on first sight; then per cause only


class Throttle:
    """Log a recurring problem once, then at most every `period` s per key, with the repeat count.

    A new `detail` (e.g. the offending encoding string) of a key is logged on first sight even inside
    the period, so every distinct problem is named once; at most `max_distinct` details are
    remembered (hostile input cannot grow memory or flood the log), later ones share the key's throttle.
    """

    def __init__(self, period: float = LOG_EVERY_S, max_distinct: int = MAX_DISTINCT_PROBLEMS) -> None:
        self.period = period
        self.max_distinct = max_distinct
        self._last: dict[str, float] = {}
        self._repeats: dict[str, int] = {}
        self._seen: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._seen)

    def __call__(self, key: str, now: float, detail: str = "") -> int | None:
        """None: stay quiet; else the number of repeats suppressed since the last line."""
        with self._lock:
            if detail and (key, detail) not in self._seen and len(self._seen) < self.max_distinct:
                self._seen.add((key, detail))
                self._last[key] = now
                return self._repeats.pop(key, 0)
            last = self._last.get(key)
            if last is not None and now - last < self.period:
                self._repeats[key] = self._repeats.get(key, 0) + 1
                return None
            self._last[key] = now
            return self._repeats.pop(key, 0)
