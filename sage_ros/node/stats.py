"""Counters behind the node's /diagnostics: input and output rates, drops by cause, latency percentiles,
and the health verdict (OK / WARN stale input / ERROR model failing). Pure Python, thread-safe.

Times are passed in explicitly (monotonic seconds) so the logic tests without sleeping.

Counters live as long as the node: one `NodeStats` per node, never replaced at configure or activate,
so every total is monotonic and they add up (docs/node.md, "Accounting"). Losses inside DDS (frames
that never reached the node) are kept apart from the fates of received messages (`dds` below).
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from dataclasses import dataclass

import numpy as np

OK, WARN, ERROR = 0, 1, 2  # the byte levels of diagnostic_msgs/DiagnosticStatus

INPUTS = ("thermal", "rgb")


class RateMeter:
    """Events per second over a sliding window."""

    def __init__(self, window_s: float = 5.0) -> None:
        self.window_s = window_s
        self._times: deque[float] = deque()
        self.total = 0
        self.last: float | None = None

    def tick(self, now: float) -> None:
        self._times.append(now)
        self.total += 1
        self.last = now
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self._times and self._times[0] < now - self.window_s:
            self._times.popleft()

    def rate(self, now: float) -> float:
        self._trim(now)
        if len(self._times) < 2:
            return 0.0
        span = self._times[-1] - self._times[0]
        # Count intervals, not events, and include the silence since the last event so the rate
        # falls towards zero when a stream stops.
        return (len(self._times) - 1) / max(span + (now - self._times[-1]), 1e-9)


def percentiles_ms(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {"p50": float("nan"), "p95": float("nan"), "max": float("nan")}
    arr = np.asarray(samples, dtype=np.float64)
    return {"p50": float(np.percentile(arr, 50)), "p95": float(np.percentile(arr, 95)), "max": float(arr.max())}


@dataclass
class Health:
    level: int
    message: str


class NodeStats:
    """Everything /diagnostics reports; written by the executor and worker threads."""

    def __init__(self, latency_window: int = 200, stale_timeout: float = 2.0) -> None:
        self._lock = threading.Lock()
        self.stale_timeout = stale_timeout
        self.inputs = {name: RateMeter() for name in INPUTS}
        self.pairs = RateMeter()
        self.outputs = RateMeter()
        self.drops: Counter[str] = Counter()  # fates of received messages/pairs other than "fused"
        self.dds: Counter[str] = Counter()  # never received: middleware-reported or sequence gaps
        self.latency_ms: deque[float] = deque(maxlen=latency_window)  # RGB stamp -> publish
        self.processing_ms: deque[float] = deque(maxlen=latency_window)  # pair taken -> published
        self.inference_ms: deque[float] = deque(maxlen=latency_window)  # backend call alone
        self.active_since: float | None = None
        self.model_error: str | None = None
        self.model_error_at: float | None = None
        self.last_error: str | None = None
        self.published_by_output: Counter[str] = Counter()

    def configure(self, latency_window: int, stale_timeout: float) -> None:
        """New window sizes at configure; counters and recent samples are kept (monotonic totals)."""
        with self._lock:
            self.stale_timeout = stale_timeout
            for attr in ("latency_ms", "processing_ms", "inference_ms"):
                setattr(self, attr, deque(getattr(self, attr), maxlen=latency_window))

    # --- writers -------------------------------------------------------------------------------
    def activated(self, now: float) -> None:
        with self._lock:
            self.active_since = now
            for meter in self.inputs.values():
                meter.last = None

    def input_received(self, name: str, now: float) -> None:
        with self._lock:
            self.inputs[name].tick(now)

    def pair_formed(self, now: float) -> None:
        with self._lock:
            self.pairs.tick(now)

    def drop(self, cause: str, count: int = 1, error: str | None = None) -> None:
        if count <= 0:
            return
        with self._lock:
            self.drops[cause] += count
            if error:
                self.last_error = error

    def dds_loss(self, key: str, count: int) -> None:
        """Frames that never reached the node (not a fate of a received message)."""
        if count > 0:
            with self._lock:
                self.dds[key] += count

    def set_drop_total(self, cause: str, total: int) -> None:
        """For counters kept elsewhere (the synchroniser): mirror their running total."""
        with self._lock:
            self.drops[cause] = total

    def model_failed(self, now: float, error: str) -> None:
        with self._lock:
            self.drops["failed_model"] += 1
            self.model_error, self.model_error_at = error, now
            self.last_error = error

    def output_published(self, now: float, latency_ms: float, processing_ms: float, inference_ms: float) -> None:
        with self._lock:
            self.outputs.tick(now)
            self.latency_ms.append(latency_ms)
            self.processing_ms.append(processing_ms)
            self.inference_ms.append(inference_ms)

    def published(self, outputs: list[str]) -> None:
        with self._lock:
            self.published_by_output.update(outputs)

    # --- readers -------------------------------------------------------------------------------
    def queue_depths(self) -> dict[str, int]:
        """Sizes of the internal containers (for the soak check: all must stay bounded)."""
        with self._lock:
            return {
                "rate_samples": max(len(m._times) for m in (*self.inputs.values(), self.pairs, self.outputs)),
                "latency_samples": len(self.latency_ms),
                "drop_keys": len(self.drops) + len(self.dds),
            }

    def health(self, now: float) -> Health:
        with self._lock:
            if self.model_error_at is not None and (
                self.outputs.last is None or self.outputs.last < self.model_error_at
            ):
                return Health(ERROR, f"model failed: {self.model_error}")
            if self.active_since is None:
                return Health(OK, "inactive")
            silent = []
            for name, meter in self.inputs.items():
                last = meter.last if meter.last is not None else self.active_since
                if now - last > self.stale_timeout:
                    silent.append(f"{name} silent for {now - last:.1f} s")
            if silent:
                return Health(WARN, "; ".join(silent))
            return Health(OK, "fusing")

    def values(self, now: float) -> dict[str, str]:
        """Key/value pairs for DiagnosticStatus.values (strings, fixed keys first)."""
        with self._lock:
            out = {f"{n}_rate_hz": f"{m.rate(now):.2f}" for n, m in self.inputs.items()}
            out.update({f"{n}_received": str(m.total) for n, m in self.inputs.items()})
            out["pair_rate_hz"] = f"{self.pairs.rate(now):.2f}"
            out["pairs"] = str(self.pairs.total)
            out["output_rate_hz"] = f"{self.outputs.rate(now):.2f}"
            out["outputs"] = str(self.outputs.total)
            for key, series in (
                ("latency", self.latency_ms),
                ("processing", self.processing_ms),
                ("inference", self.inference_ms),
            ):
                for stat, value in percentiles_ms(list(series)).items():
                    out[f"{key}_{stat}_ms"] = f"{value:.1f}"
            for name in sorted(self.published_by_output):
                out[f"published_{name}"] = str(self.published_by_output[name])
            out["drops_total"] = str(sum(self.drops.values()))
            for cause in sorted(self.drops):
                out[f"drop_{cause}"] = str(self.drops[cause])
            for key in sorted(self.dds):
                out[f"drop_{key}"] = str(self.dds[key])
            if self.last_error:
                out["last_error"] = self.last_error
            return out
