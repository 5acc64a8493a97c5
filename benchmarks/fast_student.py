"""The fast student against the released student: cost, speed on every CPU backend, quality on MSRS eval.

One process, one run:
1. cost: multiply-adds per 640x480 frame (every convolution, from the real shapes) and parameters;
2. speed: ms per 640x480 frame of both fusion-only models on onnxruntime, OpenVINO and PyTorch eager,
   timed interleaved (released, fast, released, fast, ...) so machine load hits both alike; median of
   --runs after --warmup; CPU flags printed next to the numbers;
3. quality: the nine fusion metrics (sage_ros.evaluation.metrics, F = Y of the colour output, as eval-bag and
   benchmarks/compare_methods.py score) of both models on every MSRS `eval` pair of splits.csv, the fast/released
   ratio per metric (acceptance: >= 0.97 on each), and the PSNR of the fast student's fused Y (8-bit)
   against the released student's.

    python benchmarks/fast_student.py [--fast-npz runs/fast/fast_student.npz] [--out results.md] [--record]

    python benchmarks/fast_student.py --shapes 16/2/3,16/1/3,12/2/3,8/2/3,8/1/3 [--size 768x432]

--shapes only times candidate shapes (width / full-resolution convs / low-resolution convs) with random
weights (the cost of a graph does not depend on its weights) on OpenVINO fp32 at the node's fusion size,
interleaved, as ratios against the shipped shape: what a smaller student would buy before training one. Run it
under `ONEDNN_MAX_CPU_ISA=AVX2` to see an AVX2-only CPU's kernels.

--record writes the quality result (all eval pairs) into the fast student's JSON sidecar as
`quality_vs_released`: what `model: auto` reads before it lets the fast student replace the released one.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sage_ros.backends import BackendConfig, BackendError, create_backend  # noqa: E402
from sage_ros.cpu_features import read_cpu_features  # noqa: E402
from sage_ros.evaluation.baselines import luminance_of_bgr, luminance_of_rgb  # noqa: E402
from sage_ros.evaluation.metrics import FUSION_METRICS, FusionScorer  # noqa: E402
from sage_ros.image.imaging import infrared_to_grey, unit_to_uint8, visible_to_ycrcb  # noqa: E402
from sage_ros.pairing.datasets import images_by_stem, read_infrared, read_visible  # noqa: E402
from sage_ros.pipeline import PipelineSettings, build_pipeline  # noqa: E402

BACKENDS = ("onnxruntime", "openvino", "torch")
QUALITY_TOLERANCE = 0.97  # the fast student must keep >= 97 % of each metric of the released one


def psnr8(a: np.ndarray, b: np.ndarray) -> float:
    a8, b8 = unit_to_uint8(a).astype(np.float64), unit_to_uint8(b).astype(np.float64)
    mse = float(np.mean((a8 - b8) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def eval_names(msrs: Path) -> list[str]:
    with (msrs / "splits.csv").open(newline="") as handle:
        return sorted(row["name"] for row in csv.DictReader(handle) if row["split"] == "eval")


def build_models(checkpoint: Path, fast_npz: Path, fast_onnx: Path | None, tmp: Path) -> dict[str, dict]:
    """Fusion-only ONNX + torch weights of both models."""
    from sage_ros.networks.checkpoint import load_student
    from sage_ros.networks.export import export_student
    from sage_ros.training.distill_student import export_fast_onnx

    released_onnx = export_student(load_student(checkpoint), tmp / "released.onnx")
    if fast_onnx is None:
        fast_onnx = export_fast_onnx(fast_npz, tmp / "fast.onnx")
    return {
        "released": {"onnx": released_onnx, "weights": checkpoint},
        "fast": {"onnx": fast_onnx, "weights": fast_npz},
    }


def cost(models: dict[str, dict]) -> list[dict]:
    from sage_ros.networks.checkpoint import load_student
    from sage_ros.networks.fast_student import cost_table, load_fast_student

    return cost_table(
        {"released student": load_student(models["released"]["weights"]),
         "fast student": load_fast_student(models["fast"]["weights"])}
    )


def speed(models: dict[str, dict], pair: tuple[np.ndarray, np.ndarray], threads: int, runs: int,
          warmup: int, backends: tuple[str, ...]) -> list[dict]:
    y, ir = pair
    rows = []
    for name in backends:
        try:
            live = {
                m: create_backend(BackendConfig(name=name, onnx_path=spec["onnx"], weights_path=spec["weights"],
                                                threads=threads))
                for m, spec in models.items()
            }
        except BackendError as exc:  # not installed here: say so in the table
            rows.append({"backend": name, "error": str(exc)})
            continue
        outputs = {}
        for backend in live.values():
            for _ in range(warmup):
                backend.infer(y, ir)
        times: dict[str, list[float]] = {m: [] for m in live}
        for _ in range(runs):
            for m, backend in live.items():
                start = time.perf_counter()
                outputs[m] = backend.infer(y, ir).fused_y
                times[m].append((time.perf_counter() - start) * 1e3)
        rel, fast = statistics.median(times["released"]), statistics.median(times["fast"])
        rows.append({
            "backend": name,
            "description": live["fast"].description,
            "released_ms": rel,
            "fast_ms": fast,
            "speedup": rel / fast,
            "fast_vs_released_psnr_db": psnr8(np.clip(outputs["fast"], 0, 1), np.clip(outputs["released"], 0, 1)),
        })
        print(f"  {name}: released {rel:.1f} ms, fast {fast:.1f} ms, x{rel / fast:.2f}", file=sys.stderr)
    return rows


def quality(models: dict[str, dict], msrs: Path, threads: int, limit: int | None) -> dict:
    pipes = {
        m: build_pipeline(PipelineSettings(model=str(spec["onnx"]), backend="onnxruntime", threads=threads,
                                           resolution="rgb", segmentation=False))
        for m, spec in models.items()
    }
    irs, viss = images_by_stem(msrs / "ir"), images_by_stem(msrs / "vi")
    names = eval_names(msrs)[:limit] if limit else eval_names(msrs)
    scores: dict[str, list[dict[str, float]]] = {m: [] for m in pipes}
    psnrs = []
    for name in names:
        ir, vis = read_infrared(irs[name]), read_visible(viss[name])
        scorer = FusionScorer(ir, luminance_of_bgr(vis))
        fused = {}
        for m, pipe in pipes.items():
            result = pipe.fuse(ir, vis)
            fused[m] = result.fused_y
            scores[m].append(scorer.score(luminance_of_rgb(result.fused_rgb)))
        psnrs.append(psnr8(np.clip(fused["fast"], 0, 1), np.clip(fused["released"], 0, 1)))
    means = {m: {k: float(np.mean([s[k] for s in rows])) for k in FUSION_METRICS} for m, rows in scores.items()}
    ratios = {k: means["fast"][k] / means["released"][k] for k in FUSION_METRICS}
    return {
        "pairs": len(names),
        "means": means,
        "ratio": ratios,
        "within_3pct": {k: r >= QUALITY_TOLERANCE for k, r in ratios.items()},
        "better": [k for k, r in ratios.items() if r > 1.0],
        "psnr_db_mean": float(np.mean(psnrs)),
        "psnr_db_min": float(np.min(psnrs)),
    }


def record(report: dict, fast_onnx: Path, limit: int | None) -> None:
    """The quality result into the fast student's sidecar, for `model: auto` (model_variants.choose_variant)."""
    q = report.get("quality")
    if not q or limit:
        raise SystemExit("--record needs the quality run on every eval pair (no --skip-quality, no --limit)")
    sidecar = fast_onnx.with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    meta["quality_vs_released"] = {
        "split": "MSRS eval", "pairs": q["pairs"], "psnr_db_mean": round(q["psnr_db_mean"], 2),
        "psnr_db_min": round(q["psnr_db_min"], 2), "metrics_within_3pct": all(q["within_3pct"].values()),
        "ratio": {k: round(v, 4) for k, v in q["ratio"].items()},
        "measured_by": "benchmarks/fast_student.py --record (onnxruntime fp32, 640x480)", "cpu": report["cpu"],
    }
    sidecar.write_text(json.dumps(meta, indent=2) + "\n")
    print(f"recorded in {sidecar}")


def markdown(report: dict) -> str:
    lines = [f"CPU: {report['cpu']}; threads {report['threads']}; load average at start {report['load']}", ""]
    if report.get("cost"):
        lines += ["| model | parameters | GMAC per 640x480 frame | MAC per pixel | MACs vs released |",
                  "|---|---:|---:|---:|---:|"]
        for r in report["cost"]:
            lines.append(f"| {r['model']} | {r['params']:,} | {r['gmac']:.2f} | {r['mac_per_pixel']:,.0f} | "
                         f"{100 * r['mac_ratio']:.1f} % |")
        lines.append("")
    if report.get("speed"):
        lines += ["| backend (fp32, 640x480) | released ms | fast ms | speed-up | fast vs released PSNR dB |",
                  "|---|---:|---:|---:|---:|"]
        for r in report["speed"]:
            if "error" in r:
                lines.append(f"| {r['backend']} | not run: {r['error']} | | | |")
            else:
                lines.append(f"| {r['backend']} | {r['released_ms']:.1f} | {r['fast_ms']:.1f} | "
                             f"{r['speedup']:.2f}x | {r['fast_vs_released_psnr_db']:.1f} |")
        lines.append("")
    q = report.get("quality")
    if q:
        lines += [f"Quality on {q['pairs']} MSRS eval pairs (onnxruntime fp32, native 640x480):", "",
                  "| model | " + " | ".join(FUSION_METRICS) + " |", "|---" * (len(FUSION_METRICS) + 1) + "|"]
        for m in ("released", "fast"):
            lines.append(f"| {m} | " + " | ".join(f"{q['means'][m][k]:.3f}" for k in FUSION_METRICS) + " |")
        lines.append("| fast / released | " + " | ".join(
            f"{q['ratio'][k]:.3f}{'' if q['within_3pct'][k] else ' (!)'}" for k in FUSION_METRICS) + " |")
        lines += ["", f"Within 3 %: {sum(q['within_3pct'].values())} of 9; better than released: "
                  f"{len(q['better'])} of 9 ({', '.join(q['better']) or 'none'}). PSNR of the fast student's "
                  f"fused Y against the released student's: mean {q['psnr_db_mean']:.2f} dB, "
                  f"worst pair {q['psnr_db_min']:.2f} dB."]
    return "\n".join(lines) + "\n"


def shape_speed(shapes: list[str], size: str, threads: int, runs: int, warmup: int) -> list[dict]:
    """ms per frame of a fast student of each `width/full/low` shape (random weights, unsharp mask included),
    OpenVINO fp32, timed interleaved; ratio against the shipped shape, which always runs first."""
    import dataclasses

    import openvino as ov

    from sage_ros.networks.export import export_student
    from sage_ros.networks.fast_student import SHIPPED_ARCH, FastArch, FastStudent, conv_macs

    w, h = (int(v) for v in size.lower().split("x"))
    shipped = f"{SHIPPED_ARCH.width}/{SHIPPED_ARCH.full_res_convs}/{SHIPPED_ARCH.low_res_convs}"
    core, compiled = ov.Core(), {}
    with tempfile.TemporaryDirectory() as tmp:
        for shape in [shipped] + [s for s in shapes if s != shipped]:
            width, full, low = (int(v) for v in shape.split("/"))
            arch = dataclasses.replace(FastArch(width, full, low), detail_gain=0.15)
            model = FastStudent(arch).eval()
            graph = export_student(model, Path(tmp) / f"{width}_{full}_{low}.onnx")
            compiled[shape] = (core.compile_model(core.read_model(str(graph)), "CPU", {
                "INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32"}), conv_macs(model, h, w) / 1e9)
    rng = np.random.default_rng(0)
    feeds = {name: rng.random((1, 1, h, w), dtype=np.float32) for name in ("vis_y", "ir")}
    times: dict[str, list[float]] = {shape: [] for shape in compiled}
    for k in range(warmup + runs):
        for shape, (model, _) in compiled.items():
            start = time.perf_counter()
            model(feeds)
            if k >= warmup:
                times[shape].append((time.perf_counter() - start) * 1e3)
    base = statistics.median(times[shipped])
    return [{"shape": shape, "gmac": gmac, "ms": statistics.median(times[shape]),
             "speedup": base / statistics.median(times[shape])} for shape, (_, gmac) in compiled.items()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=REPO.parent / "shared/sage_official/checkpoints.pt")
    parser.add_argument("--fast-npz", type=Path, default=REPO / "sage_ros/data/fast_student.npz")
    parser.add_argument("--fast-onnx", type=Path, default=None,
                        help="fusion-only fast ONNX (default: exported from --fast-npz)")
    parser.add_argument("--msrs", type=Path, default=REPO.parent / "shared/datasets/msrs")
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--limit", type=int, default=None, help="score only the first N eval pairs")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--out", type=Path, default=None, help="write the markdown here (and .json beside it)")
    parser.add_argument("--record", action="store_true",
                        help="write the quality result into the fast ONNX's JSON sidecar (model: auto reads it)")
    parser.add_argument("--shapes", default=None,
                        help="only time these width/full/low shapes against the shipped one (comma-separated)")
    parser.add_argument("--size", default="768x432", help="--shapes: frame WxH (default: the node's fusion size "
                        "for a 640x512 thermal camera beside 1280x720 RGB)")
    args = parser.parse_args()
    if args.shapes:
        print(f"CPU: {read_cpu_features().summary()}; threads {args.threads}; OpenVINO fp32, {args.size}, median of "
              f"{args.runs}; load average at start {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
        print("| shape (width / full-res convs / low-res convs) | GMAC | ms | speed-up vs shipped |")
        print("|---|---:|---:|---:|")
        for row in shape_speed(args.shapes.split(","), args.size, args.threads, args.runs, args.warmup):
            print(f"| {row['shape']} | {row['gmac']:.2f} | {row['ms']:.1f} | x{row['speedup']:.2f} |")
        return 0
    for path, what in ((args.checkpoint, "released checkpoint"), (args.fast_npz, "fast student weights")):
        if not path.is_file():
            parser.error(f"{what} {path} does not exist")
    if not (args.msrs / "splits.csv").is_file():
        parser.error(f"{args.msrs}/splits.csv does not exist (the shared MSRS folder)")

    cpu = read_cpu_features()
    report: dict = {"cpu": cpu.summary(), "threads": args.threads,
                    "load": " ".join(f"{v:.1f}" for v in os.getloadavg())}
    with tempfile.TemporaryDirectory() as tmp:
        models = build_models(args.checkpoint, args.fast_npz, args.fast_onnx, Path(tmp))
        report["cost"] = cost(models)
        if not args.skip_speed:
            name = eval_names(args.msrs)[0]
            vis = read_visible(images_by_stem(args.msrs / "vi")[name])
            ir = read_infrared(images_by_stem(args.msrs / "ir")[name])
            y = visible_to_ycrcb(vis).y
            pair = (y, infrared_to_grey(ir))
            if y.shape != (480, 640):
                parser.error(f"eval pair {name} is {y.shape[::-1]}, expected 640x480")
            report["speed"] = speed(models, pair, args.threads, args.runs, args.warmup, tuple(args.backends))
        if not args.skip_quality:
            report["quality"] = quality(models, args.msrs, args.threads, args.limit)
    text = markdown(report)
    print(text)
    if args.record:
        record(report, args.fast_onnx or REPO / "sage_ros/data/fast_student.onnx", args.limit)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
