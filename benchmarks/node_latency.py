"""End-to-end latency of the fusion node over real DDS: yesterday's defaults against today's, in one run.

Thermal 640x512 mono16 + RGB 1280x720 bgr8 by default (a Boson-class core next to an HD camera),
registered with a homography (the aspect ratios differ). Three nodes run side by side, each in its own
process and ROS domain, all with the default model (released student + segmentation) and backend `auto`:

- `old`:   fusion.resolution rgb,     precision fp32  (the defaults before issue 11)
- `new`:   fusion.resolution thermal, precision auto  (today's defaults: bf16 where the CPU has it)
- `res`:   fusion.resolution thermal, precision fp32  (resolution alone, on this CPU's kernels)
- `old-avx2`, `new-avx2`: `old` and `new` with ONEDNN_MAX_CPU_ISA=AVX2 in the node's environment:
  OpenVINO (what `auto` picks on a CPU) then runs the kernels an AVX2-only CPU runs, and `auto` sees an
  AVX2-only CPU (fp32). `new-avx2` is scored against `old-avx2`: the issue's AVX2-only comparison.
  ONNX Runtime ignores the cap (its kernels dispatch on cpuid alone), so these two need OpenVINO.
- `auto`:  `new` with `model.variant: auto` instead of the released student's file: every default (the fast
  student where it passes its quality gate and the CPU has no bf16), scored against `old`.
- `auto-avx2`: `auto` with the AVX2 cap: every default as an AVX2-only CPU gets it, scored against `old-avx2`.

Paced and interleaved: pair k goes to old, then new, then res, each sent once the previous came back,
so every configuration sees the same machine load (this machine is shared) and the numbers are latency,
not queueing. End-to-end latency = receive time here - input stamp. The fused images the nodes publish
for the same input are compared: PSNR of `new` and `res` against `old` (full-resolution fp32 fusion).
Then each node free-runs at --rate Hz for --seconds, one after the other: the rate it sustains.
The probes subscribe to the fused image only, so the nodes compute no class ids below the RGB size (they
segment only while someone listens); --masks subscribes to segmentation/mask too, and asks for class ids
in process.

    python benchmarks/node_latency.py [--frames 10] [--rate 10] [--seconds 6]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "test"))  # the DDS harness, test/harness.py

from harness import NodeProcess, Probe, pick_domain_id  # noqa: E402

from sage_ros.cpu_features import read_cpu_features  # noqa: E402
from sage_ros.image.encodings import encode_image  # noqa: E402
from sage_ros.image.registration import Registration  # noqa: E402
from sage_ros.image.thermal import ThermalNormalizer  # noqa: E402
from sage_ros.node.outputs import MaskSchedule  # noqa: E402
from sage_ros.node.processing import PairProcessor  # noqa: E402
from sage_ros.node.stats import percentiles_ms  # noqa: E402
from sage_ros.pipeline import PipelineSettings, build_pipeline  # noqa: E402

CONFIGS = {
    "old": {"fusion.resolution": "rgb", "precision": "fp32"},
    "new": {"fusion.resolution": "thermal", "precision": "auto"},
    "res": {"fusion.resolution": "thermal", "precision": "fp32"},
    "old-avx2": {"fusion.resolution": "rgb", "precision": "fp32"},
    "new-avx2": {"fusion.resolution": "thermal", "precision": "auto"},
    # Every default, the model included: `model.variant: auto` (the fast student where it passes its gate).
    "auto": {"fusion.resolution": "thermal", "precision": "auto", "model.variant": "auto"},
    "auto-avx2": {"fusion.resolution": "thermal", "precision": "auto", "model.variant": "auto"},
    # Every default, masks at most 3 a second (`segmentation.max_rate`): the fused image for every pair.
    "auto-mask3": {"fusion.resolution": "thermal", "precision": "auto", "model.variant": "auto",
                   "segmentation.max_rate": 3.0},
    "auto-avx2-mask3": {"fusion.resolution": "thermal", "precision": "auto", "model.variant": "auto",
                        "segmentation.max_rate": 3.0},
}
LABELS = {
    "old": "rgb res, fp32 (old defaults)",
    "new": "thermal res, precision auto (new defaults)",
    "res": "thermal res, fp32 (resolution alone)",
    "old-avx2": "old defaults, AVX2 kernels",
    "new-avx2": "new defaults, AVX2 kernels",
    "auto": "new defaults with model auto",
    "auto-avx2": "every default, AVX2 kernels (model auto sees an AVX2-only CPU)",
    "auto-mask3": "every default, masks at most 3 Hz",
    "auto-avx2-mask3": "every default, AVX2 kernels, masks at most 3 Hz",
}
AVX2_CAP = {"ONEDNN_MAX_CPU_ISA": "AVX2"}
ENVS = {"old-avx2": AVX2_CAP, "new-avx2": AVX2_CAP, "auto-avx2": AVX2_CAP, "auto-avx2-mask3": AVX2_CAP}
# The old defaults had Fast DDS's own transport settings; the node now starts with the package's
# large-frames profile (sage_ros/node/dds_profile.py). --old-transport same gives the old nodes the new
# transport too, which isolates resolution and precision.
OLD_TRANSPORT = {"SAGE_ROS_DDS_PROFILE": "fastdds"}
OLD_CONFIGS = ("old", "old-avx2")
# Each configuration's speed-up and PSNR are against the old defaults on the same kernels.
BASELINE = {"old": "old", "new": "old", "res": "old", "old-avx2": "old-avx2", "new-avx2": "old-avx2", "auto": "old",
            "auto-avx2": "old-avx2", "auto-mask3": "old", "auto-avx2-mask3": "old-avx2"}


def parse_size(text: str) -> tuple[int, int]:
    w, h = text.lower().split("x")
    return int(w), int(h)


def frames(official: Path, thermal_wh: tuple[int, int], rgb_wh: tuple[int, int], index: int = 0):
    """Real content: a sample pair, thermal as 14-bit-like counts, RGB cropped to 16:9 and resized to HD."""
    ir = cv2.imread(str(official / "Ir" / f"{index:05d}.png"), cv2.IMREAD_GRAYSCALE)
    vis = cv2.imread(str(official / "Vis" / f"{index:05d}.png"), cv2.IMREAD_COLOR)
    if ir is None or vis is None:
        raise SystemExit(f"sample pair {index} missing under {official}: run `sage-ros weights fetch`")
    counts = cv2.resize(ir, thermal_wh, interpolation=cv2.INTER_AREA).astype(np.uint16) * 48 + 2000
    return counts, cv2.resize(vis, rgb_wh, interpolation=cv2.INTER_AREA)


def centred_homography(thermal_wh: tuple[int, int], rgb_wh: tuple[int, int]) -> list[float]:
    """Thermal scaled to the RGB height and centred: what a side-by-side rig's calibration looks like."""
    s = rgb_wh[1] / thermal_wh[1]
    dx = (rgb_wh[0] - thermal_wh[0] * s) / 2.0
    return [s, 0.0, dx, 0.0, s, 0.0, 0.0, 0.0, 1.0]


def stamp_of(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def image_of(msg) -> np.ndarray:
    return np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.width, 3)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def default_model(checkpoint: Path, out_dir: Path) -> Path:
    """The released student's fusion graph, built once into out_dir (torch-free where torch is absent)."""
    from sage_ros.model.model_files import ensure_onnx

    return ensure_onnx(out_dir / "sage_student.onnx", checkpoint)


def as_messages(thermal_fields, rgb_fields) -> tuple:
    """Plain objects with an Image message's fields: what PairProcessor reads."""
    from types import SimpleNamespace

    return SimpleNamespace(**thermal_fields.__dict__), SimpleNamespace(**rgb_fields.__dict__)


def local_processors(names: list[str], model: Path, backend: str, threads: int, homography) -> dict:
    """One PairProcessor per configuration, as the node builds it (not yet warmed up)."""
    processors = {}
    for name in names:
        cfg = CONFIGS[name]
        settings = PipelineSettings(model=cfg.get("model.variant", str(model)), backend=backend, threads=threads,
                                    precision=cfg["precision"],
                                    resolution=cfg["fusion.resolution"],
                                    scale_adapted=cfg.get("fusion.scale_adapted", True))
        processors[name] = PairProcessor(build_pipeline(settings), ThermalNormalizer(), Registration(homography))
    return processors


def time_round(processors: dict, names: list[str], k: int, th_msg, rgb_msg, times: dict[str, list[float]],
               classes: bool = False) -> None:
    """Round k: each configuration once, in an order rotated by k (none always follows the same one).

    classes: whether class ids are asked for, as the node asks only while a mask/overlay subscriber exists.
    """
    for name in names[k % len(names):] + names[: k % len(names)]:
        start = time.perf_counter()
        processors[name].process(th_msg, rgb_msg, classes=classes)
        times[name].append((time.perf_counter() - start) * 1000.0)


def print_in_process(times: dict[str, list[float]], names: list[str]) -> None:
    print("| configuration | p50 ms | p95 ms | speed-up (p50) |")
    print("|---|---|---|---|")
    for name in names:
        p = percentiles_ms(times[name]) if times[name] else {"p50": float("nan"), "p95": float("nan")}
        base = percentiles_ms(times[BASELINE[name]])["p50"] if times.get(BASELINE[name]) else None
        speed = f"x{base / p['p50']:.2f}" if base and times[name] else "-"
        print(f"| {name}: {LABELS[name]} | {p['p50']:.0f} | {p['p95']:.0f} | {speed} |")


def in_process_only(names: list[str], args, model: Path) -> int:
    """The per-pair work without ROS for `names`, interleaved, in this process (its environment's ISA cap)."""
    thermal_wh, rgb_wh = parse_size(args.thermal), parse_size(args.rgb)
    counts, vis = frames(args.official, thermal_wh, rgb_wh)
    th_msg, rgb_msg = as_messages(encode_image(counts, "mono16"), encode_image(vis, "bgr8"))
    processors = local_processors(names, model, args.backend, args.threads, centred_homography(thermal_wh, rgb_wh))
    for processor in processors.values():
        processor.process(th_msg, rgb_msg, classes=args.masks)  # warm-up
    times: dict[str, list[float]] = {n: [] for n in names}
    for k in range(1, args.frames + 1):
        time_round(processors, names, k, th_msg, rgb_msg, times, args.masks)
    print(f"CPU as this process sees it: {read_cpu_features().summary()}")
    print_in_process(times, names)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", type=Path, default=REPO.parent / "shared" / "sage_official")
    parser.add_argument("--model", type=Path, default=None, help="ONNX model (default: the default model)")
    parser.add_argument("--thermal", default="640x512")
    parser.add_argument("--rgb", default="1280x720")
    parser.add_argument("--frames", type=int, default=10, help="paced pairs per configuration")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rate", type=float, default=10.0, help="free-running camera rate (Hz), 0 = skip")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--pair-timeout", type=float, default=60.0)
    parser.add_argument("--dds-profile", type=Path, default=None,
                        help="Fast DDS XML profile (FASTDDS_DEFAULT_PROFILES_FILE), e.g. "
                             "config/fastdds_large_frames.xml: larger shared-memory segments for multi-MB frames")
    parser.add_argument("--dds-profile-on", choices=("all", "nodes", "camera"), default="all",
                        help="which side gets --dds-profile: the nodes, this process (the camera and the viewer "
                             "of the outputs), or both")
    parser.add_argument("--in-process-frames", type=int, default=10,
                        help="pairs per ISA-capped configuration in the capped child process without ROS (0 = skip)")
    parser.add_argument("--in-process-only", action="store_true",
                        help="only the per-pair work without ROS, in this process (used for the capped child)")
    parser.add_argument("--old-transport", choices=("fastdds", "same"), default="fastdds",
                        help="the old configurations' Fast DDS settings: fastdds = Fast DDS defaults (what the old "
                             "node had), same = the node's current default (isolates resolution and precision)")
    parser.add_argument("--masks", action="store_true",
                        help="also subscribe to segmentation/mask (the nodes then compute class ids; below the RGB "
                             "size that is a segmentation pass at the RGB size) and ask for them in process")
    parser.add_argument("--configs", default="old,new,res,old-avx2,new-avx2",
                        help=f"comma-separated subset of {','.join(CONFIGS)}")
    args = parser.parse_args()

    names = [c for c in args.configs.split(",") if c]
    unknown = [c for c in names if c not in CONFIGS]
    if unknown:
        parser.error(f"unknown configuration(s) {unknown}; choose from {list(CONFIGS)}")
    thermal_wh, rgb_wh = parse_size(args.thermal), parse_size(args.rgb)
    cache = Path(tempfile.gettempdir()) / "sage_bench_default"
    model = args.model or default_model(args.official / "checkpoints.pt", cache)
    if args.in_process_only:
        return in_process_only(names, args, model)
    counts, vis = frames(args.official, thermal_wh, rgb_wh)
    homography = centred_homography(thermal_wh, rgb_wh)
    thermal_fields, rgb_fields = encode_image(counts, "mono16"), encode_image(vis, "bgr8")
    node_env: dict[str, str] = {}
    if args.dds_profile is not None:
        profile = str(args.dds_profile.resolve())
        if args.dds_profile_on in ("all", "camera"):
            os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = profile  # read once, when this process's rmw starts
        if args.dds_profile_on in ("all", "nodes"):
            node_env["FASTDDS_DEFAULT_PROFILES_FILE"] = profile
    features = read_cpu_features()
    print(f"CPU: {features.summary()}")
    if any(n in ENVS for n in names):
        print(f"*-avx2 nodes run with {AVX2_CAP}: {read_cpu_features(environ=AVX2_CAP).summary()}")
    print("(shared 2-core machine loaded by other jobs: absolute times vary; ratios come from one interleaved run)")
    print(f"thermal {args.thermal} mono16, RGB {args.rgb} bgr8, model {model.name}, backend {args.backend}, "
          f"threads {args.threads}, QoS reliable, {args.frames} paced pairs per configuration, Fast DDS profile "
          f"{args.dds_profile or 'default'}{' on ' + args.dds_profile_on if args.dds_profile else ''}; "
          f"nodes: their default profile (see each node log's 'Fast DDS profile' line), old configurations: "
          f"{'Fast DDS defaults' if args.old_transport == 'fastdds' else 'the same'}\n")

    nodes, probes, logs, node_side = {}, {}, {}, {}
    in_process: dict[str, list[float]] = {n: [] for n in names}
    try:
        for i, name in enumerate(names):
            domain = pick_domain_id(31 + 7 * i)
            # A configuration that picks its model by `model.variant` passes no model_path (rcl cannot parse an
            # empty `-p model_path:=`).
            params = {
                **({} if "model.variant" in CONFIGS[name] else {"model_path": str(model)}), "backend": args.backend,
                "threads": args.threads,
                "qos.reliability": "reliable", "registration.homography": homography,
                "diagnostics.period": 0.5, "diagnostics.latency_window": max(1, args.frames),
                **CONFIGS[name],
            }
            logs[name] = Path(tempfile.gettempdir()) / f"sage_bench_node_{name}_{domain}.log"
            old_transport = OLD_TRANSPORT if name in OLD_CONFIGS and args.old_transport == "fastdds" else {}
            env = {**old_transport, **node_env, **ENVS.get(name, {})}
            nodes[name] = NodeProcess(params, domain, logs[name], env=env).start()
            topics = ("fused/image_raw", "segmentation/mask") if args.masks else ("fused/image_raw",)
            probes[name] = Probe(domain, input_reliability="reliable", output_topics=topics)
        for name in names:
            if not probes[name].wait_for_node(180.0):
                print(f"node {name} did not start, see {logs[name]}")
                return 1
            said = re.search(r"Fast DDS profile: (.*)", logs[name].read_text(errors="replace"))
            print(f"{name}: Fast DDS profile: {said.group(1) if said else '(not logged)'}")

        # Which pairs each node masks (`segmentation.max_rate`, by stamp): the same rule as the node's.
        schedules = {n: MaskSchedule(float(CONFIGS[n].get("segmentation.max_rate", 0.0))) for n in names}

        def send_and_wait(name: str, stamp: int) -> tuple[float, object, float | None] | None:
            probe = probes[name]
            probe.publish("thermal/image_raw", thermal_fields, stamp, "thermal")
            probe.publish("rgb/image_raw", rgb_fields, stamp, "rgb")

            def found(topic: str = "fused/image_raw"):
                return next(((t, m) for t, m in probe.messages(topic) if stamp_of(m) == stamp), None)

            if not probe.wait_until(lambda: found() is not None, args.pair_timeout):
                return None
            recv, msg = found()
            mask_ms = None
            if args.masks and schedules[name].due(stamp):
                # The node computes the mask after the fused image is out. The next pair (of any node) is sent
                # only once the mask is back too: otherwise one node's segmentation pass runs on the same cores
                # as the next node's fusion, and the table would show that contention, not a node's latency.
                if probe.wait_until(lambda: found("segmentation/mask") is not None, args.pair_timeout):
                    mask_ms = (found("segmentation/mask")[0] - stamp) * 1e-6
                    schedules[name].masked(stamp)
            return (recv - stamp) * 1e-6, msg, mask_ms

        # The same per-pair work without ROS, in this process (decode, normalise, register, model, colour):
        # one run per configuration per round, between the node pairs, so it sees the same load. The
        # ISA-capped configurations need a process of their own (the cap is read once at load): they run
        # in a capped child process after the nodes (`--in-process-only`).
        local_names = [n for n in names if n not in ENVS]
        local = local_processors(local_names, model, args.backend, args.threads, homography)
        th_msg, rgb_msg = as_messages(thermal_fields, rgb_fields)
        for processor in local.values():
            processor.process(th_msg, rgb_msg, classes=args.masks)  # warm-up
        in_process: dict[str, list[float]] = {n: [] for n in names}
        e2e: dict[str, list[float]] = {n: [] for n in names}
        mask_e2e: dict[str, list[float]] = {n: [] for n in names}  # stamp -> mask received (--masks)
        quality: dict[str, list[float]] = {n: [] for n in names}
        lost = dict.fromkeys(names, 0)
        for k in range(args.frames + 1):  # pair 0 warms every node up and is not counted
            images = {}
            # Rotate the order each round so that no configuration always follows the same one.
            for name in names[k % len(names):] + names[: k % len(names)]:
                got = send_and_wait(name, time.time_ns())
                if got is None:
                    lost[name] += 1
                    continue
                if k:
                    e2e[name].append(got[0])
                    if got[2] is not None:
                        mask_e2e[name].append(got[2])
                images[name] = image_of(got[1])
            if k and local_names:
                time_round(local, local_names, k, th_msg, rgb_msg, in_process, args.masks)
            for name in names:
                base_name = BASELINE[name]
                if name != base_name and name in images and base_name in images:
                    quality[name].append(psnr(images[base_name], images[name]))

        time.sleep(1.5)  # one more diagnostics period: the node-side percentiles of the paced pairs
        node_side = {n: probes[n].latest_status() or {} for n in names}
        sustained = {}
        if args.rate > 0:
            for name in names:
                probe = probes[name]
                before = len(probe.messages("fused/image_raw"))
                masks_before = len(probe.messages("segmentation/mask")) if args.masks else 0
                sent, start = 0, time.monotonic()
                while time.monotonic() - start < args.seconds:
                    stamp = time.time_ns()
                    probe.publish("thermal/image_raw", thermal_fields, stamp, "thermal")
                    probe.publish("rgb/image_raw", rgb_fields, stamp, "rgb")
                    sent += 1
                    time.sleep(max(0.0, start + sent / args.rate - time.monotonic()))
                # Outputs that arrive within the window (+ one model time to drain the last pair).
                p50 = percentiles_ms(e2e[name])["p50"] if e2e[name] else 1000.0
                time.sleep(min(10.0, p50 / 1000.0 + 0.5))
                fused = len(probe.messages("fused/image_raw")) - before
                masks = len(probe.messages("segmentation/mask")) - masks_before if args.masks else 0
                elapsed = time.monotonic() - start
                sustained[name] = (sent, fused, fused / elapsed, masks / elapsed)
    finally:
        for probe in probes.values():
            probe.close()
        for node in nodes.values():
            node.stop()

    chosen = {}
    for name in names:
        text = logs[name].read_text(errors="replace") if logs[name].is_file() else ""
        # The student's start-up line (it starts with the first pair): "student started: openvino (bf16) ..."
        backend = re.search(r"student started: (.+?)(?: \(precision auto| \[|$)", text, re.M)
        why = re.search(r"precision auto -> (\S+) on (\S+): ([^\[\n]+)", text)
        chosen[name] = (backend.group(1) if backend else "?", why.group(3).strip() if why else "explicit")

    def p50_of(series: dict[str, list[float]], name: str) -> float | None:
        return percentiles_ms(series[name])["p50"] if series.get(name) else None

    print("| configuration | backend (precision) | e2e p50 ms | e2e p95 ms | speed-up (p50) vs its baseline | "
          f"node: stamp->published / processing / model p50 ms | sustained Hz (sent/fused at {args.rate:g} Hz) | "
          "PSNR vs its baseline, min dB |")
    print("|---|---|---|---|---|---|---|---|")
    for name in names:
        p = percentiles_ms(e2e[name]) if e2e[name] else {"p50": float("nan"), "p95": float("nan")}
        base = p50_of(e2e, BASELINE[name])
        speed = f"x{base / p['p50']:.2f}" if base and e2e[name] else "-"
        sent_fused = sustained.get(name)
        rate = f"{sent_fused[2]:.2f} ({sent_fused[0]}/{sent_fused[1]})" if sent_fused else "-"
        if sent_fused and args.masks:
            rate += f", masks {sent_fused[3]:.2f} Hz"
        q = f"{min(quality[name]):.1f}" if quality[name] else "-"
        side = node_side.get(name, {})
        # The node's processing counts from the RGB image's arrival (a thermal image arriving later is in it):
        # stamp->published minus processing = the RGB image's transport; e2e minus stamp->published = the
        # output's transport to this process.
        inside = " / ".join(f"{float(side.get(f'{key}_p50_ms', 'nan')):.0f}"
                            for key in ("latency", "processing", "inference"))
        print(f"| {name}: {LABELS[name]} | {chosen[name][0]} | {p['p50']:.0f} | {p['p95']:.0f} | {speed} | "
              f"{inside} | {rate} | {q} |")
    if args.masks:
        print("\nmask: stamp -> segmentation/mask received here (computed after the fused image is out), ms:")
        for name in names:
            m = percentiles_ms(mask_e2e[name]) if mask_e2e[name] else {"p50": float("nan"), "p95": float("nan")}
            print(f"  {name}: p50 {m['p50']:.0f}, p95 {m['p95']:.0f} ({len(mask_e2e[name])} masks)")
    print("\nsame pairs in this process without ROS (decode + normalise + register + model + colour), interleaved:")
    print_in_process(in_process, local_names)
    capped = [n for n in names if n in ENVS]
    if capped and args.in_process_frames > 0:
        # The cap is read when OpenVINO loads: a child process with the cap in its environment.
        print(f"\nthe same without ROS for {', '.join(capped)}, in a child process with {AVX2_CAP}, after the nodes:")
        sys.stdout.flush()
        command = [sys.executable, str(Path(__file__).resolve()), "--in-process-only", "--configs", ",".join(capped),
                   "--frames", str(args.in_process_frames), "--model", str(model), "--backend", args.backend,
                   "--threads", str(args.threads), "--thermal", args.thermal, "--rgb", args.rgb,
                   "--official", str(args.official)] + (["--masks"] if args.masks else [])
        subprocess.run(command, env={**os.environ, **AVX2_CAP}, check=False)
    for name in names:
        if lost[name]:
            print(f"{name}: {lost[name]} paced pairs lost (timeout {args.pair_timeout:g} s)")
        if chosen[name][1] != "explicit":
            print(f"{name}: precision auto reason: {chosen[name][1]}")
    print(f"node logs: {', '.join(str(p) for p in logs.values())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
