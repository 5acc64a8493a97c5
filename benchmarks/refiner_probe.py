"""Experiment: can a tiny learned refiner bring `fusion.resolution: thermal` within 3 % on every metric?

Not part of the runtime. The shipped path fuses at the thermal camera's pixel count and adds the visible
detail layer back (sage_ros/pipeline.py); on the MSRS eval split it is 42 dB from full-resolution fusion,
but MI is 6.8 % lower and VIF 4.8 % higher (docs/speed.md). Here a residual CNN at the RGB size,
input (shipped output, visible Y, registered IR), output shipped + correction, is trained to reproduce
the released student's full-resolution fusion.

Protocol as in resolution_quality.py: MSRS pairs (640x480), thermal camera simulated at 384x288 (2.78x
fewer pixels). Trained with sage_ros.training.refiner (the shipped refiner, `three8`, is this recipe at
seed 0) on the `train` split of splits.csv, scored on the `eval` split with sage_ros.evaluation.metrics
against full-resolution fusion. Then each refiner's
time at 1280x720 on the CPU backends (OpenVINO fp32 / bf16, ONNX Runtime fp32), 2 threads, median of 15.

    python benchmarks/refiner_probe.py --model MODEL.onnx [--arch three8,two4,lin3] [--steps 2000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from resolution_quality import cpu_flags_line, psnr, scores_of  # noqa: E402

from sage_ros.backends import BackendConfig, create_backend  # noqa: E402
from sage_ros.evaluation.metrics import FusionScorer  # noqa: E402
from sage_ros.image.imaging import unit_to_uint8  # noqa: E402
from sage_ros.pipeline import FusionPipeline, reduced_scale_model  # noqa: E402
from sage_ros.training.refiner import THERMAL_HW, build_split, make_refiner, train_refiner  # noqa: E402

MSRS = REPO.parent / "shared" / "datasets" / "msrs"
SHOWN = ("EN", "SD", "SF", "AG", "MI", "SCD", "VIF", "Qabf", "SSIM", "MI(IR,F)", "MI(VIS,F)")


def make_probe_model(arch: str):
    """three<W> / two<W>: the refiner with 3 or 2 convs of width W; lin<K>: one linear KxK filter."""
    for prefix, layers in (("three", 3), ("two", 2), ("lin", 1)):
        if arch.startswith(prefix) and arch[len(prefix):].isdigit():
            size = int(arch[len(prefix):])
            return make_refiner(size, layers) if layers > 1 else make_refiner(1, 1, kernel=size)
    raise SystemExit(f"unknown arch {arch!r}: use three<W>, two<W> or lin<K>")


def score(model, x, y) -> tuple[dict, dict, float, float]:
    import torch

    full_m, shipped_m, refined_m, p_shipped, p_refined = [], [], [], [], []
    with torch.no_grad():
        for xi, yi in zip(x, y, strict=True):
            refined = model(torch.from_numpy(xi)[None])[0, 0].clamp(0, 1).numpy()
            ir8, vis8, full8 = unit_to_uint8(xi[2]), unit_to_uint8(xi[1]), unit_to_uint8(yi)
            scorer = FusionScorer(ir8, vis8)
            full_m.append(scores_of(scorer, ir8, vis8, full8))
            shipped8, refined8 = unit_to_uint8(xi[0]), unit_to_uint8(refined)
            shipped_m.append(scores_of(scorer, ir8, vis8, shipped8))
            refined_m.append(scores_of(scorer, ir8, vis8, refined8))
            p_shipped.append(psnr(full8, shipped8))
            p_refined.append(psnr(full8, refined8))

    def rel(rows):
        out = {}
        for k in SHOWN:
            base = float(np.mean([m[k] for m in full_m]))
            out[k] = (float(np.mean([m[k] for m in rows])) - base) / abs(base) * 100.0
        return out

    return rel(shipped_m), rel(refined_m), float(np.mean(p_shipped)), float(np.mean(p_refined))


def time_refiner(model, threads: int) -> dict[str, float]:
    """Median ms at 1280x720 on OpenVINO fp32 / bf16 and ONNX Runtime fp32 (whichever are installed)."""
    import torch

    x = np.random.default_rng(0).random((1, 3, 720, 1280), dtype=np.float32)
    path = Path(tempfile.mkdtemp()) / "refiner.onnx"
    torch.onnx.export(model, torch.from_numpy(x), str(path), input_names=["x"], output_names=["y"],
                      opset_version=17, dynamo=False)
    runners = {}
    try:
        import openvino as ov

        core = ov.Core()
        for prec in ("f32", "bf16"):
            req = core.compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                        "INFERENCE_PRECISION_HINT": prec}).create_infer_request()
            runners[f"openvino {prec}"] = lambda r=req: r.infer({0: x})
    except ImportError:
        pass
    try:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        runners["onnxruntime fp32"] = lambda s=sess: s.run(None, {"x": x})
    except ImportError:
        pass
    out = {}
    for name, run in runners.items():
        for _ in range(3):
            run()
        times = []
        for _ in range(15):
            start = time.perf_counter()
            run()
            times.append((time.perf_counter() - start) * 1000.0)
        out[name] = float(np.median(times))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="fusion ONNX model (the released student)")
    parser.add_argument("--arch", default="three8,two4,lin3")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-scale-adapted", dest="scale_adapted", action="store_false",
                        help="the released student's thermal path (what the first refiner was trained on)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    print(f"CPU: {cpu_flags_line()}")
    config = BackendConfig(name="onnxruntime", onnx_path=args.model, threads=args.threads)
    backend = create_backend(config)
    # The path the defaults run below the RGB size (the scale-adapted student), as the shipped refiner's training.
    reduced, why = reduced_scale_model(config, args.scale_adapted, threads=args.threads)
    print(why)
    full, low = FusionPipeline(backend, "rgb"), FusionPipeline(backend, "thermal", reduced=reduced)
    x_train, y_train = build_split(MSRS, "train", full, low)
    x_eval, y_eval = build_split(MSRS, "eval", full, low)
    print(f"MSRS train {len(x_train)} / eval {len(x_eval)} pairs, thermal camera simulated at "
          f"{THERMAL_HW[1]}x{THERMAL_HW[0]}, {args.steps} steps, seed {args.seed}\n")
    rows = []
    for arch in [a for a in args.arch.split(",") if a]:
        start = time.time()
        torch.manual_seed(args.seed)  # the initial weights as train_refiner draws them: three8 = the shipped file
        model = train_refiner(x_train, y_train, steps=args.steps, seed=args.seed, model=make_probe_model(arch))
        train_s = time.time() - start
        shipped, refined, p_shipped, p_refined = score(model, x_eval, y_eval)
        macs = sum(p.numel() for n, p in model.named_parameters() if n.endswith("weight"))
        rows.append((arch, macs, train_s, shipped, refined, p_shipped, p_refined, time_refiner(model, args.threads)))
    print("| metric vs full resolution (eval split) | shipped | " + " | ".join(
        f"+ refiner {r[0]} ({r[1]} MAC/px)" for r in rows) + " |")
    print("|---|---|" + "---|" * len(rows))
    print(f"| Y PSNR | {rows[0][5]:.1f} dB | " + " | ".join(f"{r[6]:.1f} dB" for r in rows) + " |")
    for k in SHOWN:
        print(f"| {k} | {rows[0][3][k]:+.2f} % | " + " | ".join(f"{r[4][k]:+.2f} %" for r in rows) + " |")
    worst = [max(abs(r[4][k]) for k in SHOWN[:9]) for r in rows]
    print(f"| largest of the nine | {max(abs(rows[0][3][k]) for k in SHOWN[:9]):.2f} % | "
          + " | ".join(f"{w:.2f} %" for w in worst) + " |")
    print("\nrefiner time at 1280x720 (median ms), training time:")
    for r in rows:
        print(f"  {r[0]}: " + ", ".join(f"{k} {v:.1f}" for k, v in r[7].items()) + f"; trained in {r[2]:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
