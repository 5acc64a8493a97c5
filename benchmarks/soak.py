"""Soak: N minutes of 30 Hz thermal 640x512 mono16 + RGB 1280x720 bgr8 into the real fusion node.

A camera in this process publishes pairs at `--rate` Hz (RELIABLE, as most drivers; the node runs
with its default settings, so `qos.reliability: auto` matches it) to the node in a child process over
real DDS. Every `--sample` seconds it records the node process's RSS, threads and open file
descriptors (/proc) and the node's own queue depths and counters (/diagnostics). At the end:
latency percentiles (input stamp -> fused image received here), drops by cause, a table and a PNG.

    python benchmarks/soak.py [--minutes 10] [--rate 30] [--out soak_out/]

RSS growth is measured after a warm-up (`--warmup` s: model arenas, DDS pools, caches fill first).
The machine is shared: the node fuses only what the model sustains (the rest is `superseded`).
The test suite runs a 60-second variant (test/test_node_faults_soak.py) that checks every queue
stays within its bound.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "test"))  # the DDS harness, test/harness.py

from harness import (  # noqa: E402
    NodeProcess,
    Probe,
    exported_student,
    pick_domain_id,
    restrict_dds_to_host,
)

from sage_ros.image.encodings import encode_image  # noqa: E402

OFFICIAL = REPO.parent / "shared" / "sage_official"
THERMAL_WH, RGB_WH = (640, 512), (1280, 720)
# Diagnostics values that are sizes of internal containers (each must stay bounded).
QUEUE_KEYS = ("sync_pending_thermal", "sync_pending_rgb", "in_flight", "queue_rate_samples",
              "queue_latency_samples", "queue_drop_keys", "queue_log_problems", "queue_tracked_publishers")


def proc_sample(pid: int) -> dict[str, float]:
    """RSS (MiB), threads and open fds of a process, from /proc."""
    out: dict[str, float] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                out["rss_mib"] = int(line.split()[1]) / 1024.0
            elif line.startswith("Threads:"):
                out["threads"] = int(line.split()[1])
    out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    return out


def centred_homography(thermal_wh: tuple[int, int], rgb_wh: tuple[int, int]) -> list[float]:
    s = rgb_wh[1] / thermal_wh[1]
    return [s, 0.0, (rgb_wh[0] - thermal_wh[0] * s) / 2.0, 0.0, s, 0.0, 0.0, 0.0, 1.0]


def make_frames(variants: int = 4) -> list[tuple]:
    """A few different pairs (pre-encoded: the camera loop only stamps and publishes)."""
    import cv2

    ir = cv2.imread(str(OFFICIAL / "Ir" / "00000.png"), cv2.IMREAD_GRAYSCALE)
    vis = cv2.imread(str(OFFICIAL / "Vis" / "00000.png"), cv2.IMREAD_COLOR)
    rng = np.random.default_rng(0)
    if ir is None or vis is None:
        ir = rng.integers(0, 255, (768, 1024), dtype=np.uint8)
        vis = rng.integers(0, 255, (768, 1024, 3), dtype=np.uint8)
    counts = cv2.resize(ir, THERMAL_WH, interpolation=cv2.INTER_AREA).astype(np.uint16) * 48 + 2000
    rgb = cv2.resize(vis, RGB_WH, interpolation=cv2.INTER_AREA)
    out = []
    for k in range(variants):
        shift = k * 16  # the scene moves a little: not one frame repeated
        t = np.roll(counts, shift, axis=1) + rng.integers(0, 30, counts.shape).astype(np.uint16)
        out.append((encode_image(t, "mono16"), encode_image(np.roll(rgb, 2 * shift, axis=1), "bgr8")))
    return out


def _stamp(msg) -> int:
    return int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)


def run_soak(seconds: float, rate: float = 30.0, sample_s: float = 5.0, threads: int = 2,
             workdir: Path | None = None, model: Path | None = None, params: dict | None = None,
             progress: bool = False) -> dict:
    """Run the soak; returns samples, latency list, counters and the node log path."""
    workdir = Path(workdir or tempfile.mkdtemp(prefix="soak_"))
    workdir.mkdir(parents=True, exist_ok=True)
    model = model or exported_student(OFFICIAL / "checkpoints.pt", Path(tempfile.gettempdir()) / "sage_models")
    domain = pick_domain_id(57)
    restrict_dds_to_host(domain)
    node_params = {"model_path": str(model), "backend": "onnxruntime", "threads": threads,
                   "registration.homography": centred_homography(THERMAL_WH, RGB_WH), "diagnostics.period": 1.0}
    node_params.update(params or {})
    frames = make_frames()
    probe = Probe(domain, input_reliability="reliable")  # the camera exists before the node
    node = NodeProcess(node_params, domain, workdir / "node.log").start()
    result: dict = {"rate_hz": rate, "seconds": seconds, "samples": [], "sent": 0, "log": str(node.log_path),
                    "params": {k: v for k, v in node_params.items() if k != "registration.homography"}}
    stop = threading.Event()
    latencies: list[float] = []

    def camera() -> None:
        period = 1.0 / rate
        next_t = time.monotonic()
        k = 0
        while not stop.is_set():
            stamp = time.time_ns()
            t_fields, r_fields = frames[k % len(frames)]
            probe.publish("thermal/image_raw", t_fields, stamp, "thermal")
            probe.publish("rgb/image_raw", r_fields, stamp, "rgb")
            result["sent"] += 1
            k += 1
            next_t += period
            delay = next_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                next_t = time.monotonic()  # behind: do not burst to catch up (a camera would not)

    try:
        if not probe.wait_for_node(120.0):
            raise RuntimeError(f"node did not come up:\n{node.log_text()}")
        cam = threading.Thread(target=camera, daemon=True)
        start = time.monotonic()
        cam.start()
        next_sample = start
        while time.monotonic() - start < seconds:
            now = time.monotonic()
            if now >= next_sample:
                if not node.alive():
                    raise RuntimeError(f"node died:\n{node.log_text()[-3000:]}")
                sample = {"t": now - start, "sent": result["sent"], **proc_sample(node.proc.pid)}
                status = probe.latest_status() or {}
                for key in (*QUEUE_KEYS, "thermal_received", "rgb_received", "pairs", "outputs", "drops_total"):
                    if key in status:
                        sample[key] = float(status[key])
                # Keep stamps, not the 2.7 MB images (the probe would hold every one for the whole soak).
                with probe._lock:
                    got, probe.received["fused/image_raw"] = probe.received["fused/image_raw"], []
                latencies.extend((t_ns - _stamp(m)) * 1e-6 for t_ns, m in got)
                sample["received_here"] = len(latencies)
                result["samples"].append(sample)
                if progress:
                    print(json.dumps({k: round(v, 1) for k, v in sample.items()}), flush=True)
                next_sample += sample_s
            time.sleep(0.2)
        stop.set()
        cam.join(timeout=10)
        time.sleep(3.0)  # the last outputs and one more diagnostics message
        status = probe.latest_status() or {}
        result["final"] = status
        latencies.extend((t_ns - _stamp(m)) * 1e-6 for t_ns, m in probe.messages("fused/image_raw"))
        result["latency_ms"] = latencies
        result["elapsed_s"] = time.monotonic() - start
    finally:
        stop.set()
        probe.close()
        result["exit_code"] = node.stop()
    return result


def summarise(result: dict, warmup_s: float) -> dict:
    samples = result["samples"]
    after = [s for s in samples if s["t"] >= warmup_s] or samples
    lat = np.asarray(result.get("latency_ms") or [np.nan])
    final = result.get("final", {})
    summary = {
        "sent_pairs": result["sent"],
        "camera_rate_hz": result["sent"] / max(result.get("elapsed_s", 1.0), 1e-9),
        "received_thermal": final.get("thermal_received"), "received_rgb": final.get("rgb_received"),
        "pairs": final.get("pairs"), "fused": final.get("outputs"),
        "rss_after_warmup_mib": after[0]["rss_mib"], "rss_end_mib": samples[-1]["rss_mib"],
        "rss_max_after_warmup_mib": max(s["rss_mib"] for s in after),
        "rss_growth_pct": 100.0 * (samples[-1]["rss_mib"] - after[0]["rss_mib"]) / after[0]["rss_mib"],
        "threads_min_max": (min(s["threads"] for s in after), max(s["threads"] for s in after)),
        "fds_min_max": (min(s["fds"] for s in after), max(s["fds"] for s in after)),
        "latency_ms": {p: float(np.nanpercentile(lat, p)) for p in (50, 95, 99)} | {"max": float(np.nanmax(lat))},
        "queues_max": {k: max(s.get(k, 0) for s in samples) for k in QUEUE_KEYS},
        "drops": {k[len("drop_"):]: v for k, v in final.items() if k.startswith("drop_")},
        "exit_code": result.get("exit_code"),
    }
    return summary


def table(result: dict, every: int = 1) -> str:
    rows = ["| t (s) | sent | RSS (MiB) | threads | fds | pending th/rgb | in flight | rate samples | fused |",
            "|---|---|---|---|---|---|---|---|---|"]
    for s in result["samples"][::every]:
        rows.append(f"| {s['t']:.0f} | {s['sent']} | {s['rss_mib']:.1f} | {s['threads']:.0f} | {s['fds']:.0f} | "
                    f"{s.get('sync_pending_thermal', 0):.0f}/{s.get('sync_pending_rgb', 0):.0f} | "
                    f"{s.get('in_flight', 0):.0f} | {s.get('queue_rate_samples', 0):.0f} | {s.get('outputs', 0):.0f} |")
    return "\n".join(rows)


def plot(result: dict, path: Path, warmup_s: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = result["samples"]
    t = [x["t"] / 60.0 for x in s]
    fig, axes = plt.subplots(4, 1, figsize=(9, 10), sharex=True)
    axes[0].plot(t, [x["rss_mib"] for x in s])
    axes[0].set_ylabel("RSS (MiB)")
    axes[0].axvline(warmup_s / 60.0, color="grey", ls="--", lw=0.8)
    axes[1].plot(t, [x["threads"] for x in s], label="threads")
    axes[1].plot(t, [x["fds"] for x in s], label="fds")
    axes[1].legend()
    for key in ("sync_pending_thermal", "sync_pending_rgb", "in_flight", "queue_log_problems"):
        axes[2].plot(t, [x.get(key, 0) for x in s], label=key)
    axes[2].set_ylabel("queue depth")
    axes[2].legend(fontsize=7)
    axes[3].plot(t, [x.get("thermal_received", 0) for x in s], label="thermal received")
    axes[3].plot(t, [x.get("pairs", 0) for x in s], label="pairs")
    axes[3].plot(t, [x.get("outputs", 0) for x in s], label="fused")
    axes[3].plot(t, [x["sent"] for x in s], label="sent", ls=":")
    axes[3].set_ylabel("count")
    axes[3].set_xlabel("minutes")
    axes[3].legend(fontsize=7)
    fig.suptitle(f"fusion node soak: {result['rate_hz']:.0f} Hz 640x512 mono16 + 1280x720 bgr8")
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=30.0)
    ap.add_argument("--sample", type=float, default=5.0, help="seconds between samples")
    ap.add_argument("--warmup", type=float, default=60.0, help="seconds before RSS growth is measured")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("soak_out"))
    args = ap.parse_args()
    flags = next((ln.split(":", 1)[1].split() for ln in open("/proc/cpuinfo") if ln.startswith("flags")), [])
    print(f"CPU: {os.cpu_count()} cores, avx2={'avx2' in flags} avx512f={'avx512f' in flags}; load average "
          f"{os.getloadavg()[0]:.1f} at start (shared machine)", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    result = run_soak(args.minutes * 60.0, args.rate, args.sample, args.threads, workdir=args.out, progress=True)
    summary = summarise(result, args.warmup)
    (args.out / "soak.json").write_text(json.dumps({"summary": summary, **result}, indent=1, default=str))
    every = max(1, len(result["samples"]) // 24)
    print(table(result, every))
    print(json.dumps(summary, indent=1, default=str))
    plot(result, args.out / "soak.png", args.warmup)
    print(f"load average {os.getloadavg()[0]:.1f} at end; plot {args.out / 'soak.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
