"""End-to-end latency of the fusion node over real DDS, against model-only time in the same process.

Thermal 640x512 mono16 + RGB 1280x720 bgr8 by default (a Boson-class core next to an HD camera),
registered with a homography (the aspect ratios differ). Steps, all on this machine:

1. the node in a child process: frames published from here with stamp = now, `fused/image_raw`
   received here; end-to-end latency = receive time - input stamp. Paced: the next pair goes out
   once the previous came back, so the numbers are latency, not queueing;
2. baseline, in this process, one run before each node pair (so both see the same machine load):
   the same backend on the same 1280x720 inputs (model only), and the whole per-pair work without
   ROS (decode, normalise, warp, colour, model: `PairProcessor`);
3. free-running at --rate Hz for --seconds: what a slower-than-camera model does (superseded pairs).

Prints p50/p95/max and the node's overhead (end-to-end minus model-only) and ratio.

    python benchmarks/node_latency.py [--frames 10] [--threads 2] [--backend onnxruntime]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sage_ros.backends import BackendConfig, create_backend  # noqa: E402
from sage_ros.encodings import encode_image  # noqa: E402
from sage_ros.node.harness import NodeProcess, Probe, exported_student, pick_domain_id  # noqa: E402
from sage_ros.node.processing import PairProcessor  # noqa: E402
from sage_ros.node.stats import percentiles_ms  # noqa: E402
from sage_ros.pipeline import FusionPipeline  # noqa: E402
from sage_ros.registration import Registration  # noqa: E402
from sage_ros.thermal import ThermalNormalizer  # noqa: E402


def parse_size(text: str) -> tuple[int, int]:
    w, h = text.lower().split("x")
    return int(w), int(h)


def frames(official: Path, thermal_wh: tuple[int, int], rgb_wh: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Real content: sample pair 00000, thermal as 14-bit-like counts, RGB stretched to HD."""
    ir = cv2.imread(str(official / "Ir" / "00000.png"), cv2.IMREAD_GRAYSCALE)
    vis = cv2.imread(str(official / "Vis" / "00000.png"), cv2.IMREAD_COLOR)
    if ir is None or vis is None:
        rng = np.random.default_rng(0)
        ir = rng.integers(0, 255, (768, 1024), dtype=np.uint8)
        vis = rng.integers(0, 255, (768, 1024, 3), dtype=np.uint8)
    counts = cv2.resize(ir, thermal_wh, interpolation=cv2.INTER_AREA).astype(np.uint16) * 48 + 2000
    return counts, cv2.resize(vis, rgb_wh, interpolation=cv2.INTER_AREA)


def centred_homography(thermal_wh: tuple[int, int], rgb_wh: tuple[int, int]) -> list[float]:
    """Thermal scaled to the RGB height and centred: what a side-by-side rig's calibration looks like."""
    s = rgb_wh[1] / thermal_wh[1]
    dx = (rgb_wh[0] - thermal_wh[0] * s) / 2.0
    return [s, 0.0, dx, 0.0, s, 0.0, 0.0, 0.0, 1.0]


def timed(fn, runs: int, warmup: int = 1) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000.0)
    return out


def fmt(name: str, samples: list[float], base: float | None = None) -> str:
    p = percentiles_ms(samples)
    ratio = f"  x{p['p50'] / base:5.2f}" if base else ""
    return f"  {name:<42} p50 {p['p50']:8.1f}  p95 {p['p95']:8.1f}  max {p['max']:8.1f} ms{ratio}"


def step_breakdown(th_msg, rgb_msg, homography: list[float], runs: int = 5) -> dict[str, list[float]]:
    """The node's per-pair work outside the model, step by step (what the overhead is made of)."""
    from std_msgs.msg import Header

    from sage_ros.encodings import decode_msg, to_bgr8
    from sage_ros.imaging import fused_to_rgb8, infrared_to_grey, visible_to_ycrcb
    from sage_ros.node.fusion_node import image_msg

    norm, reg = ThermalNormalizer(), Registration(homography)
    counts = decode_msg(th_msg)
    unit = norm.normalize(counts)
    warped = reg.to_rgb_grid(unit, (rgb_msg.height, rgb_msg.width))
    vis = to_bgr8(decode_msg(rgb_msg), rgb_msg.encoding)
    channels = visible_to_ycrcb(vis)
    rgb = fused_to_rgb8(channels.y, channels)
    return {
        "decode thermal mono16": timed(lambda: decode_msg(th_msg), runs),
        "decode RGB bgr8": timed(lambda: to_bgr8(decode_msg(rgb_msg), rgb_msg.encoding), runs),
        "thermal percentile normalisation": timed(lambda: norm.normalize(counts), runs),
        "homography warp to RGB grid": timed(lambda: reg.to_rgb_grid(unit, warped.shape), runs),
        "visible BGR -> YCrCb": timed(lambda: visible_to_ycrcb(vis), runs),
        "infrared grey check": timed(lambda: infrared_to_grey(warped), runs),
        "fused Y + chroma -> RGB8": timed(lambda: fused_to_rgb8(channels.y, channels), runs),
        "build Image message": timed(lambda: image_msg(Header(), rgb, "rgb8"), runs),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", type=Path, default=REPO.parent / "shared" / "sage_official")
    parser.add_argument("--model", type=Path, default=None, help="ONNX model (default: export the released one)")
    parser.add_argument("--thermal", default="640x512")
    parser.add_argument("--rgb", default="1280x720")
    parser.add_argument("--frames", type=int, default=10, help="paced pairs through the node")
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--qos", default="reliable", choices=["reliable", "best_effort"])
    parser.add_argument("--rate", type=float, default=10.0, help="free-running camera rate (Hz), 0 = skip")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--pair-timeout", type=float, default=60.0, help="s to wait for a paced pair (lost after)")
    args = parser.parse_args()

    thermal_wh, rgb_wh = parse_size(args.thermal), parse_size(args.rgb)
    model = args.model
    if model is None:
        model = exported_student(args.official / "checkpoints.pt", Path(tempfile.gettempdir()) / "sage_bench_models")
    counts, vis = frames(args.official, thermal_wh, rgb_wh)
    homography = centred_homography(thermal_wh, rgb_wh)
    thermal_fields = encode_image(counts, "mono16")
    rgb_fields = encode_image(vis, "bgr8")
    print(f"thermal {args.thermal} mono16, RGB {args.rgb} bgr8, backend {args.backend}, threads {args.threads}, "
          f"QoS {args.qos}")

    # 1. + 2. Baselines in this process, interleaved with the node's pairs: each model-only run happens
    # while the node idles and vice versa, so both see the same machine load (shared CI machines vary).
    backend = create_backend(BackendConfig(name=args.backend, onnx_path=model, threads=args.threads or None))
    h, w = rgb_wh[1], rgb_wh[0]
    y = np.random.default_rng(0).random((h, w), dtype=np.float32)
    processor = PairProcessor(FusionPipeline(backend), ThermalNormalizer(), Registration(homography))
    th_msg, rgb_msg = SimpleNamespace(**thermal_fields.__dict__), SimpleNamespace(**rgb_fields.__dict__)
    timed(lambda: backend.infer(y, y), 0, warmup=1)
    model_ms: list[float] = []
    proc_ms: list[float] = []

    domain = pick_domain_id(57)
    params = {
        "model_path": str(model), "backend": args.backend, "threads": args.threads,
        "qos.reliability": args.qos, "registration.homography": homography, "diagnostics.period": 0.5,
        # Percentiles over the measured pairs only: the warm-up pair drops out of the window.
        "diagnostics.latency_window": max(1, args.frames),
    }
    log = Path(tempfile.gettempdir()) / f"sage_bench_node_{domain}.log"
    e2e, lost = [], 0
    with NodeProcess(params, domain, log), Probe(domain, input_reliability=args.qos) as probe:
        if not probe.wait_for_node(120.0):
            print(f"node did not start, see {log}")
            return 1

        def arrived(stamp: int) -> bool:
            return any(
                m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec == stamp
                for _, m in probe.messages("fused/image_raw")
            )

        for k in range(args.frames + 1):  # the first pair warms the node up and is not counted
            if k:
                model_ms += timed(lambda: backend.infer(y, y), 1, warmup=0)
                proc_ms += timed(lambda: processor.process(th_msg, rgb_msg), 1, warmup=0)
            stamp = time.time_ns()
            probe.publish("thermal/image_raw", thermal_fields, stamp, "thermal")
            probe.publish("rgb/image_raw", rgb_fields, stamp, "rgb")
            if not probe.wait_until(lambda s=stamp: arrived(s), args.pair_timeout):
                lost += 1
                continue
            if k:
                recv = next(t for t, m in probe.messages("fused/image_raw")
                            if m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec == stamp)
                e2e.append((recv - stamp) * 1e-6)
        backend.close()
        model_p50 = statistics.median(model_ms)
        time.sleep(1.0)
        paced = probe.latest_status() or {}
        free = {}
        if args.rate > 0:
            before = len(probe.messages("fused/image_raw"))
            sent, start = 0, time.monotonic()
            while time.monotonic() - start < args.seconds:
                stamp = time.time_ns()
                probe.publish("thermal/image_raw", thermal_fields, stamp, "thermal")
                probe.publish("rgb/image_raw", rgb_fields, stamp, "rgb")
                sent += 1
                time.sleep(max(0.0, start + sent / args.rate - time.monotonic()))
            time.sleep(max(3.0, 2 * model_p50 / 1000.0))
            free = probe.latest_status() or {}
            free["_sent"] = sent
            free["_fused"] = len(probe.messages("fused/image_raw")) - before

    print("\nnode-side steps outside the model, in this process:")
    steps = step_breakdown(th_msg, rgb_msg, homography)
    for name, samples in steps.items():
        print(fmt(name, samples, model_p50))
    print(f"  {'sum of step medians':<42} p50 {sum(statistics.median(v) for v in steps.values()):8.1f} ms")
    print("\nin this process (no ROS), interleaved with the node's pairs:")
    print(fmt("model only (backend.infer, 1280x720)", model_ms, model_p50))
    print(fmt("pair processing (decode+norm+warp+model)", proc_ms, model_p50))
    print(f"\nnode over DDS, paced ({len(e2e)} pairs, {lost} lost):")
    print(fmt("end-to-end (input stamp -> received)", e2e, model_p50))
    for key, label in (("processing", "node: pair taken -> published"), ("inference", "node: backend call")):
        if f"{key}_p50_ms" in paced:
            print(f"  {label:<42} p50 {float(paced[f'{key}_p50_ms']):8.1f}  p95 {float(paced[f'{key}_p95_ms']):8.1f}"
                  f"  max {float(paced[f'{key}_max_ms']):8.1f} ms")
    if e2e:
        e2e_p50 = percentiles_ms(e2e)["p50"]
        node_proc = float(paced.get("processing_p50_ms", "nan"))
        node_inf = float(paced.get("inference_p50_ms", "nan"))
        print(f"\n  node overhead over model-only (p50): {e2e_p50 - model_p50:+.1f} ms, "
              f"ratio {e2e_p50 / model_p50:.3f}")
        print(f"    node-side pre/post-processing + publish (processing - inference): {node_proc - node_inf:+.1f} ms")
        print(f"    DDS transport + decode + sync + hand-off (end-to-end - processing): {e2e_p50 - node_proc:+.1f} ms")
    if free:
        print(f"\nfree-running at {args.rate:g} Hz for {args.seconds:g} s: sent {free['_sent']} pairs, "
              f"fused {free['_fused']}, superseded {free.get('drop_superseded', '?')} (newest-pair hand-off), "
              f"unpaired thermal/rgb {free.get('drop_sync_unpaired_thermal', '?')}/"
              f"{free.get('drop_sync_unpaired_rgb', '?')} (received {free.get('thermal_received', '?')}/"
              f"{free.get('rgb_received', '?')}, lost in DDS {free.get('drop_dds_lost_thermal', '0')}/"
              f"{free.get('drop_dds_lost_rgb', '0')}), latency p50 {free.get('latency_p50_ms', '?')} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
