"""Time every CPU backend variant on the released student, in one process, against PyTorch eager fp32.

Prints ms/frame (median of --runs after --warmup), the speed-up over PyTorch eager fp32 (the upstream
pipeline) and the PSNR of each variant's fused Y (as 8-bit) against the fp32 output.

    python benchmarks/backends.py [--sizes 640x480 1024x768] [--runs 10]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sage_ros.backends import BackendConfig, BackendError, create_backend  # noqa: E402
from sage_ros.image.imaging import infrared_to_grey, unit_to_uint8, visible_to_ycrcb  # noqa: E402
from sage_ros.paths import default_checkpoint  # noqa: E402


def psnr8(a: np.ndarray, b: np.ndarray) -> float:
    a8, b8 = unit_to_uint8(a).astype(np.float64), unit_to_uint8(b).astype(np.float64)
    mse = float(np.mean((a8 - b8) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def real_pair(official: Path, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    ir = cv2.resize(cv2.imread(str(official / "Ir/00000.png")), (w, h), interpolation=cv2.INTER_AREA)
    vis = cv2.resize(cv2.imread(str(official / "Vis/00000.png")), (w, h), interpolation=cv2.INTER_AREA)
    return visible_to_ycrcb(vis).y, infrared_to_grey(ir)


def time_backend(backend, y, ir, warmup: int, runs: int) -> tuple[float, np.ndarray]:
    for _ in range(warmup):
        out = backend.infer(y, ir).fused_y
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        out = backend.infer(y, ir).fused_y
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), np.clip(out, 0, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, default=None)
    parser.add_argument("--official", type=Path, default=REPO.parent / "shared/sage_official",
                        help="folder with Ir/ Vis/ sample pairs (real content for int8 calibration and PSNR)")
    parser.add_argument("--sizes", nargs="+", default=["640x480", "1024x768"])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    weights = args.weights or (args.official / "checkpoints.pt")
    if not weights.is_file():
        weights = default_checkpoint()
    from sage_ros.graphs.quantize import quantize_int8
    from sage_ros.model.model_files import export_checkpoint

    tmp = Path(tempfile.mkdtemp(prefix="sage_bench_"))
    onnx_path = export_checkpoint(weights, tmp / "student.onnx")
    int8_path = quantize_int8(onnx_path, tmp / "student_int8.onnx", args.official)
    variants = [
        ("torch eager fp32 (baseline)", BackendConfig(name="torch", weights_path=weights, threads=args.threads)),
        ("onnxruntime fp32", BackendConfig(name="onnxruntime", onnx_path=onnx_path, threads=args.threads)),
        ("onnxruntime int8 (QDQ)", BackendConfig(name="onnxruntime", onnx_path=int8_path, threads=args.threads)),
        ("openvino fp32", BackendConfig(name="openvino", onnx_path=onnx_path, threads=args.threads)),
        ("openvino bf16 hint", BackendConfig(name="openvino", onnx_path=onnx_path, precision="bf16",
                                             threads=args.threads)),
        ("openvino int8 (QDQ)", BackendConfig(name="openvino", onnx_path=int8_path, threads=args.threads)),
    ]
    from sage_ros.cpu_features import choose_precision, read_cpu_features

    features = read_cpu_features()
    print(f"CPU: {features.summary()}  (a shared machine: compare rows of one run, not runs)")
    for name in ("openvino", "onnxruntime"):
        chosen, why = choose_precision(name, features)
        print(f"  precision auto on {name}: {chosen} ({why})")
    print(f"weights {weights}; median of {args.runs} runs after {args.warmup} warm-up; one process")
    for size in args.sizes:
        w, h = (int(v) for v in size.split("x"))
        y, ir = real_pair(args.official, w, h)
        print(f"\n{w}x{h}")
        print(f"  {'variant':32s} {'ms/frame':>9s} {'speed-up':>9s} {'PSNR vs fp32':>13s}")
        base_ms, base_out = None, None
        for label, config in variants:
            try:
                backend = create_backend(config)
            except BackendError as exc:
                print(f"  {label:32s} unavailable: {exc}")
                continue
            ms, out = time_backend(backend, y, ir, args.warmup, args.runs)
            backend.close()
            if base_ms is None:
                base_ms, base_out = ms, out
            quality = psnr8(out, base_out)
            print(f"  {label:32s} {ms:9.1f} {base_ms / ms:8.2f}x {quality:10.1f} dB", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
