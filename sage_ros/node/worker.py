"""The inference thread of the node, and the thread priority it runs at.

Each activation starts its own `InferenceWorker` (own stop flag). A worker whose join timed out at
deactivate (the model still running) finishes the pair it holds and exits: it never takes another pair,
whichever activation follows, and what must wait until it is out of the model (closing the model) is
handed to it with `after_exit`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

from sage_ros.node.handoff import NewestSlot

# Inference threads run this much nicer than the executor and DDS threads: on a busy CPU the model
# must not starve the middleware, which then drops fragments of large frames (BEST_EFFORT) or stalls.
INFERENCE_NICE = 5
WORKER_NAME = "sage_fusion_worker"


def lower_thread_priority(delta: int = INFERENCE_NICE) -> bool:
    """Make the calling thread `delta` nicer, at most 19 (Linux: nice is per thread; threads it starts inherit it)."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + delta))
        return True
    except (OSError, AttributeError):  # not Linux, or not permitted: run at the normal priority
        return False


class InferenceWorker:
    """Takes pairs from `slot` and runs `process(pair)` on each until stopped; `on_error(exc)` for escapes.

    `after`: workers still inside the model (their stop timed out): this one takes its first pair once they
    have exited, so two threads are never inside one model (not every runtime allows concurrent calls).
    """

    def __init__(self, slot: NewestSlot, process: Callable[[Any], None],
                 on_error: Callable[[Exception], None], after: list[InferenceWorker] | None = None) -> None:
        self._slot = slot
        self._process = process
        self._on_error = on_error
        self._after = list(after or [])
        self._stop = threading.Event()
        self._lock = threading.Lock()  # `_exited` and `_after_exit` change together
        self._exited = False
        self._after_exit: list[Callable[[], None]] = []
        self.thread = threading.Thread(target=self._run, name=WORKER_NAME, daemon=True)

    def start(self) -> InferenceWorker:
        self.thread.start()
        return self

    def stop(self, timeout: float) -> bool:
        """Ask the worker to stop (it takes no further pair) and wait up to `timeout` s; True once it has exited."""
        self._stop.set()
        self.thread.join(timeout)
        return not self.thread.is_alive()

    def after_exit(self, action: Callable[[], None]) -> None:
        """Run `action` once this worker is out of `process`: now if it has exited, else as its thread's last act.

        Atomic with the thread's exit: an action is never dropped, never run twice, never run while the
        worker can still be inside `process`. `action` must not raise.
        """
        with self._lock:
            if not self._exited:
                self._after_exit.append(action)
                return
        action()

    def _run(self) -> None:
        lower_thread_priority()  # the model yields the CPU to the executor and DDS threads
        try:
            for earlier in self._after:
                earlier.thread.join()  # meanwhile only the newest pair waits in the slot
            self._after.clear()
            while not self._stop.is_set():
                pair = self._slot.take(timeout=0.5)
                if pair is None:
                    continue
                try:
                    self._process(pair)
                except Exception as exc:  # noqa: BLE001 - the worker must survive anything
                    self._on_error(exc)
                finally:
                    self._slot.done()  # the pair's fate is counted: no longer in flight
        finally:
            with self._lock:
                self._exited = True
                actions, self._after_exit = self._after_exit, []
            for action in actions:
                action()


def after_all_exit(workers: list[InferenceWorker], action: Callable[[], None]) -> None:
    """Run `action` once every one of `workers` has exited: now when there is none, else in the last one's thread."""
    if not workers:
        action()
        return
    lock = threading.Lock()
    left = [len(workers)]

    def one_exited() -> None:
        with lock:
            left[0] -= 1
            last = left[0] == 0
        if last:
            action()

    for worker in workers:
        worker.after_exit(one_exited)
