"""GPU check of the student: PyTorch fp32/fp16 (+ channels_last, torch.compile), TensorRT, ORT CPU.

Prints, per size, the median latency of each variant after warm-up (CUDA synchronised), its speed-up
over PyTorch fp32 eager on the same device, and the PSNR of its fused Y (8-bit) against that fp32
output. One process, one real image pair (resized), so the numbers are comparable.

    python benchmarks/device_check.py [--device cuda|cpu] [--sizes 640x480 1024x768] [--runs 30]
                                      [--json out.json] [--no-compile] [--budget-s 150]

Sizes are WIDTHxHEIGHT as in benchmarks/backends.py. `--device cpu` runs the same code on the CPU
(quick local check of the script; its numbers are not GPU numbers). TensorRT rows appear only where
tensorrt + pycuda import; the ONNX Runtime CPU row only where onnxruntime and onnx import.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

T0 = time.monotonic()


def elapsed() -> float:
    return time.monotonic() - T0


def psnr8(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR of two fused Y images in [0, 1] after the pipeline's 8-bit rounding."""
    a8 = np.floor(np.clip(a, 0, 1) * 255 + 0.5)
    b8 = np.floor(np.clip(b, 0, 1) * 255 + 0.5)
    mse = float(np.mean((a8 - b8) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def load_pair(official: Path, w: int, h: int) -> tuple[np.ndarray, np.ndarray, str]:
    """(Y, IR) float32 HxW in [0, 1] from the released sample pair 00000, else a synthetic pair."""
    try:
        import cv2

        from sage_ros.image.imaging import infrared_to_grey, visible_to_ycrcb

        vis = cv2.imread(str(official / "Vis" / "00000.png"), cv2.IMREAD_COLOR)
        ir = cv2.imread(str(official / "Ir" / "00000.png"), cv2.IMREAD_UNCHANGED)
        if vis is not None and ir is not None:
            vis = cv2.resize(vis, (w, h), interpolation=cv2.INTER_AREA)
            ir = cv2.resize(ir, (w, h), interpolation=cv2.INTER_AREA)
            return visible_to_ycrcb(vis).y, infrared_to_grey(ir), "real pair 00000"
    except ImportError:
        pass
    # Smooth synthetic content (not noise, which no fusion network sees) when the data is absent.
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    y = 0.5 + 0.4 * np.sin(xx / 37.0) * np.cos(yy / 23.0)
    ir = np.clip(1.0 - ((xx - w / 2) ** 2 + (yy - h / 2) ** 2) / (w * h / 2), 0, 1)
    return y.astype(np.float32), ir.astype(np.float32), "synthetic pair (../shared absent)"


def _default_official() -> Path:
    # ../shared beside the repository (development machines), or shared/ inside a copied work tree.
    for root in (REPO.parent / "shared", REPO / "shared"):
        if (root / "sage_official").is_dir():
            return root / "sage_official"
    return REPO.parent / "shared" / "sage_official"


def p90(times: list[float]) -> float:
    ordered = sorted(times)
    return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]


class Timer:
    def __init__(self, torch, device) -> None:
        self.torch = torch
        self.cuda = device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def median_ms(self, fn, warmup: int, runs: int) -> tuple[float, float, object]:
        out = None
        for _ in range(warmup):
            out = fn()
        self.sync()
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            out = fn()
            self.sync()
            times.append((time.perf_counter() - start) * 1000.0)
        return statistics.median(times), p90(times), out


def torch_variants(torch, student, device, args) -> list[tuple[str, object, dict]]:
    """(label, module, options) for every PyTorch variant worth timing on this device."""
    import copy

    def channels_last(module):  # Module.to(memory_format=...) converts in place: work on a copy
        return copy.deepcopy(module).to(memory_format=torch.channels_last)

    fp16_ok = device.type == "cuda" or args.fp16_on_cpu
    variants = [
        ("torch fp32 eager", student, {"dtype": torch.float32}),
        ("torch tf32 eager", student, {"dtype": torch.float32, "tf32": True}),
        ("torch fp32 channels_last", channels_last(student), {"dtype": torch.float32, "channels_last": True}),
    ]
    if fp16_ok:
        half = copy.deepcopy(student).half()
        variants.append(("torch fp16 eager", half, {"dtype": torch.float16}))
        variants.append(("torch fp16 channels_last", channels_last(half),
                         {"dtype": torch.float16, "channels_last": True}))
    if args.compile:
        variants.append(("torch fp32 compile", student, {"dtype": torch.float32, "compile": True}))
        if fp16_ok:
            variants.append(("torch fp16 compile", half, {"dtype": torch.float16, "compile": True}))
    return variants


def run_torch(torch, label, module, opts, device, y, ir, timer, args, notes) -> dict | None:
    dtype = opts["dtype"]
    fmt = torch.channels_last if opts.get("channels_last") else torch.contiguous_format
    yt = torch.from_numpy(y)[None, None].to(device, dtype).contiguous(memory_format=fmt)
    it = torch.from_numpy(ir)[None, None].to(device, dtype).contiguous(memory_format=fmt)
    fn_module = module
    compile_s = None
    if opts.get("compile"):
        if elapsed() > args.budget_s - 45:
            notes.append(f"{label}: skipped, time budget ({args.budget_s:.0f} s) nearly spent")
            return None
        start = time.monotonic()
        try:
            fn_module = torch.compile(module, dynamic=False)
            with torch.inference_mode():
                fn_module(yt, it)
            timer.sync()
        except Exception as exc:  # inductor needs a compiler/triton; report instead of failing the check
            notes.append(f"{label}: unavailable ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})")
            return None
        compile_s = time.monotonic() - start

    def model_only():
        with torch.inference_mode():
            return fn_module(yt, it)

    def end_to_end():  # numpy in, numpy out: what a backend call costs the node
        with torch.inference_mode():
            a = torch.from_numpy(y)[None, None].to(device, dtype, non_blocking=False)
            b = torch.from_numpy(ir)[None, None].to(device, dtype, non_blocking=False)
            if opts.get("channels_last"):
                a = a.contiguous(memory_format=fmt)
                b = b.contiguous(memory_format=fmt)
            return fn_module(a, b).float().cpu().numpy()

    if opts.get("tf32") and device.type != "cuda":
        return None  # TF32 is a CUDA (Ampere+) mode
    tf32_before = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = bool(opts.get("tf32"))
    try:
        ms, p90, _ = timer.median_ms(model_only, args.warmup, args.runs)
        e2e_ms, _, out = timer.median_ms(end_to_end, max(1, args.warmup // 2), args.runs)
    except Exception as exc:  # e.g. fp16 kernels missing on this CPU build
        notes.append(f"{label}: failed ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})")
        return None
    finally:
        torch.backends.cudnn.allow_tf32 = tf32_before
    row = {"variant": label, "ms": ms, "p90_ms": p90, "e2e_ms": e2e_ms, "out": out[0, 0]}
    if compile_s is not None:
        row["compile_s"] = compile_s
    return row


def run_backend(label, make, y, ir, warmup, runs) -> dict | None:
    backend = make()
    try:
        for _ in range(warmup):
            out = backend.infer(y, ir).fused_y
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            out = backend.infer(y, ir).fused_y
            times.append((time.perf_counter() - start) * 1000.0)
    finally:
        backend.close()
    med = statistics.median(times)
    return {"variant": label, "ms": med, "p90_ms": p90(times), "e2e_ms": med, "out": out}


def environment(torch, device) -> dict:
    env = {"python": platform.python_version(), "torch": torch.__version__, "device": str(device)}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(gpu=props.name, compute_capability=f"{props.major}.{props.minor}",
                   cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
    else:
        env["cpu"] = platform.processor() or platform.machine()
        env["threads"] = torch.get_num_threads()
    for name in ("tensorrt", "pycuda", "onnxruntime", "onnx"):
        try:
            module = __import__(name)
            env[name] = getattr(module, "__version__", "present")
        except ImportError:
            env[name] = None
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default=None, help="cuda | cuda:N | cpu (default: cuda when available)")
    parser.add_argument("--sizes", nargs="+", default=["640x480", "1024x768"], help="WIDTHxHEIGHT")
    parser.add_argument("--runs", type=int, default=None, help="timed runs (default 30 on CUDA, 3 on CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up runs (default 10 on CUDA, 1 on CPU)")
    parser.add_argument("--cpu-runs", type=int, default=5, help="timed runs of the ONNX Runtime CPU baseline")
    parser.add_argument("--weights", type=Path, default=None)
    parser.add_argument("--official", type=Path, default=_default_official(),
                        help="released weights + Ir/ Vis/ pairs (default ../shared/sage_official)")
    parser.add_argument("--compile", dest="compile", action="store_true", default=None,
                        help="time torch.compile variants (default: on for CUDA)")
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument("--no-ort", action="store_true", help="skip the ONNX Runtime CPU baseline")
    parser.add_argument("--no-trt", action="store_true", help="skip TensorRT even where it is installed")
    parser.add_argument("--fp16-on-cpu", action="store_true", help="also run the fp16 variants on the CPU")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for PyTorch and ONNX Runtime")
    parser.add_argument("--budget-s", type=float, default=150.0, help="skip optional variants past this")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)

    import torch

    from sage_ros.networks.checkpoint import load_student
    from sage_ros.paths import default_checkpoint

    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
        if args.device == "cpu":
            print("note: no CUDA device visible to PyTorch: running on the CPU (not GPU numbers)")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but PyTorch sees no CUDA device", file=sys.stderr)
        return 1
    cuda = device.type == "cuda"
    args.runs = args.runs or (30 if cuda else 3)
    args.warmup = args.warmup if args.warmup is not None else (10 if cuda else 1)
    if args.compile is None:
        args.compile = cuda
    if args.threads:
        torch.set_num_threads(args.threads)
    if cuda:
        torch.backends.cudnn.benchmark = True  # fixed sizes per stream: let cuDNN pick its fastest kernels
        # PyTorch runs fp32 convolutions as TF32 by default on Ampere+: the fp32 reference must be fp32.
        # The "tf32" row shows what that default buys.
        torch.backends.cudnn.allow_tf32 = False
    weights = args.weights or args.official / "checkpoints.pt"
    if not weights.is_file():
        weights = default_checkpoint()
    if not weights.is_file():
        print(f"error: no student checkpoint at {weights} (pass --weights)", file=sys.stderr)
        return 1
    from sage_ros.networks.student import StudentFusionOnly

    # The deployable graph: fused Y only (the distillation taps are not computed into outputs).
    student = StudentFusionOnly(load_student(weights)).to(device).eval()
    env = environment(torch, device)
    print("device check:", json.dumps(env))
    print(f"weights {weights}; median of {args.runs} runs after {args.warmup} warm-up, CUDA synchronised; "
          "ms = model only (inputs on device), e2e = numpy in -> numpy out")

    tmp = Path(tempfile.mkdtemp(prefix="sage_device_check_"))
    onnx_path = _export(weights, tmp, args)
    sizes = []
    for size in args.sizes:
        w, h = (int(v) for v in size.lower().split("x"))
        sizes.append((w, h))
    results: dict = {"environment": env, "sizes": {}, "notes": []}
    notes: list[str] = results["notes"]
    # The model the node runs by default is this fusion graph (segmentation is its own graph, on the CPU).
    results["default_model"] = _check_default(onnx_path)
    timer = Timer(torch, device)
    for w, h in sizes:
        y, ir, source = load_pair(args.official, w, h)
        rows = []
        for label, module, opts in torch_variants(torch, student, device, args):
            row = run_torch(torch, label, module, opts, device, y, ir, timer, args, notes)
            if row:
                rows.append(row)
        rows += _trt_rows(onnx_path, sizes, tmp, y, ir, args, notes)
        if onnx_path is not None and not args.no_ort:
            from sage_ros.backends import BackendConfig, create_backend

            row = run_backend("onnxruntime CPU fp32",
                              lambda: create_backend(BackendConfig(name="onnxruntime", onnx_path=onnx_path,
                                                                   threads=args.threads)),
                              y, ir, 1, args.cpu_runs)
            rows.append(row)
        _report(w, h, source, rows, results)
        if args.json:  # after every size, so a run cut short by the timeout still leaves its numbers
            _write_json(args.json, results)
    if notes:
        print("\nnotes:\n  " + "\n  ".join(notes))
    print(f"\ntotal {elapsed():.1f} s")
    results["total_s"] = elapsed()
    if args.json:
        _write_json(args.json, results)
        print(f"results written to {args.json}")
    return 0


def _write_json(path: Path, results: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")


def _export(weights: Path, tmp: Path, args) -> Path | None:
    if args.no_ort and (args.no_trt or not _trt_present()):
        return None
    try:
        from sage_ros.networks.checkpoint import load_student
        from sage_ros.networks.export import export_student

        return export_student(load_student(weights), tmp / "sage_student.onnx")
    except Exception as exc:  # onnx missing on the GPU machine: torch rows still run
        print(f"note: ONNX export failed, no ONNX Runtime/TensorRT rows ({type(exc).__name__}: {exc})")
        return None


def _check_default(path: Path | None) -> dict:
    """Static TensorRT checks of the default model (what `build-engine --check-only` runs)."""
    if path is None:
        return {"exported": False}
    from sage_ros.tensorrt.onnx_checks import check_onnx_for_tensorrt

    report = check_onnx_for_tensorrt(path)
    print(f"default model {path.name}: TensorRT static checks {'pass' if report.ok else 'FAIL'}")
    if not report.ok:
        print(report.summary())
    import onnx

    outputs = [o.name for o in onnx.load(str(path), load_external_data=False).graph.output]
    return {"exported": True, "trt_checks_ok": report.ok, "errors": report.errors, "outputs": outputs}


def _trt_present() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("tensorrt", "pycuda"))


def _trt_rows(onnx_path, sizes, tmp, y, ir, args, notes, label: str = "",
              precisions: tuple[str, ...] = ("fp32", "fp16")) -> list[dict]:
    if onnx_path is None or args.no_trt:
        return []
    if not _trt_present():
        if "tensorrt: not installed (tensorrt/pycuda not importable)" not in notes:
            notes.append("tensorrt: not installed (tensorrt/pycuda not importable)")
        return []
    from sage_ros.backends import BackendConfig, BackendError, create_backend

    hs = sorted(h for _, h in sizes)
    ws = sorted(w for w, _ in sizes)
    # One dynamic profile covering every size checked: the same engine serves all rows.
    profile = {"min": [hs[0], ws[0]], "opt": [hs[0], ws[0]], "max": [hs[-1], ws[-1]]}
    rows = []
    for precision in precisions:
        config = BackendConfig(name="tensorrt", onnx_path=onnx_path, precision=precision,
                               engine_dir=tmp / "engines", device=args.device, extra={"profile": profile})
        try:
            rows.append(run_backend(f"tensorrt {label}{precision} (e2e)", lambda c=config: create_backend(c),
                                    y, ir, args.warmup, args.runs))
        except BackendError as exc:
            notes.append(f"tensorrt {label}{precision}: {exc}")
        except Exception as exc:  # noqa: BLE001 - a pycuda/TensorRT error type: report it, keep the other rows
            notes.append(f"tensorrt {label}{precision}: {type(exc).__module__}.{type(exc).__name__}: {exc}")
    return rows


def _report(w: int, h: int, source: str, rows: list[dict], results: dict) -> None:
    base = next((r for r in rows if r["variant"] == "torch fp32 eager"), None)
    print(f"\n{w}x{h} ({source})")
    print(f"  {'variant':28s} {'ms':>8s} {'p90':>8s} {'e2e ms':>8s} {'speed-up':>9s} {'PSNR vs fp32':>13s} "
          f"{'max|diff|':>10s}")
    ref = np.asarray(base["out"], dtype=np.float32) if base else None
    table = []
    for row in rows:
        out = np.asarray(row.pop("out"), dtype=np.float32)
        ref_here = out if ref is None else ref
        row["psnr_db"] = psnr8(out, ref_here)
        row["max_abs_diff"] = float(np.max(np.abs(np.clip(out, 0, 1) - np.clip(ref_here, 0, 1))))
        row["speedup"] = base["ms"] / row["ms"] if base else 1.0
        extra = f"  (compile {row['compile_s']:.0f} s)" if "compile_s" in row else ""
        print(f"  {row['variant']:28s} {row['ms']:8.2f} {row['p90_ms']:8.2f} {row['e2e_ms']:8.2f} "
              f"{row['speedup']:8.2f}x {row['psnr_db']:10.1f} dB {row['max_abs_diff']:10.2e}{extra}", flush=True)
        table.append(row)
    results["sizes"][f"{w}x{h}"] = table


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
