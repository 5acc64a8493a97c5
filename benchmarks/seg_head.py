"""Cost of the segmentation network: student alone vs student+network, per backend, same process.

    python benchmarks/seg_head.py [--checkpoint PATH] [--net SEG.onnx] [--size 480 640] [--repeats 15]

Both models run on the same random 640x480 input in alternation (A, B, A, B, ...), so a machine whose
load changes during the run (other jobs, frequency scaling) affects both alike; the median of each is
reported with the ratio (budget: student+head <= 1.30 x student). On a shared machine wall time is
noisy, so the best wall time and the process CPU time per call (all threads summed, insensitive to
other jobs taking the cores) are reported too.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from sage_ros.backends import BackendConfig, BackendError, create_backend
from sage_ros.paths import default_checkpoint

SHARED_CHECKPOINT = Path(__file__).resolve().parents[1].parent / "shared" / "sage_official" / "checkpoints.pt"


def _time_pair(a, b, y: np.ndarray, ir: np.ndarray, repeats: int) -> dict[str, list[list[float]]]:
    for backend in (a, b):  # warm-up: first calls allocate and pick kernels
        backend.infer(y, ir)
        backend.infer(y, ir)
    times: dict[str, list[list[float]]] = {"wall": [[], []], "cpu": [[], []]}
    for _ in range(repeats):
        for index, backend in enumerate((a, b)):
            wall, cpu = time.perf_counter(), time.process_time()
            backend.infer(y, ir)
            times["cpu"][index].append((time.process_time() - cpu) * 1000.0)
            times["wall"][index].append((time.perf_counter() - wall) * 1000.0)
    return times


def _cpu_flags() -> str:
    """Model name and the SIMD flags that matter for these runtimes, from /proc/cpuinfo."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "?")
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")
    return f"{model}; " + " ".join(f for f in wanted if f in flags)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--net", type=Path, default=None,
                        help="standalone seg graph .onnx (default: the graph of the shipped network)")
    parser.add_argument("--size", type=int, nargs=2, default=[480, 640], metavar=("H", "W"))
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads per backend (default: runtime's)")
    parser.add_argument("--backends", nargs="+", default=["onnxruntime", "openvino"])
    parser.add_argument("--precision", default="fp32",
                        help="fp32 (default) | bf16 | auto (what the node picks on this CPU) | int8, for both models")
    args = parser.parse_args(argv)

    from sage_ros.model.model_files import export_checkpoint, shipped_head

    checkpoint = args.checkpoint or (SHARED_CHECKPOINT if SHARED_CHECKPOINT.is_file() else default_checkpoint())
    if not checkpoint.is_file():
        print(f"no student checkpoint at {checkpoint}: run `sage-ros weights fetch` or pass --checkpoint")
        return 1
    head_path = args.net or shipped_head()
    if head_path is None or not Path(head_path).is_file():
        print(f"no segmentation network at {head_path}: run `sage-ros seg train` or pass --net")
        return 1
    h, w = args.size
    rng = np.random.default_rng(0)
    y = rng.random((h, w), dtype=np.float32)
    ir = rng.random((h, w), dtype=np.float32)
    print(f"input {w}x{h}, {args.repeats} alternating runs each, threads={args.threads or 'default'}, "
          f"precision {args.precision}")
    print(f"network: {head_path}")
    print("CPU flags: " + _cpu_flags())
    columns = ["median wall", "best wall", "median cpu"]
    header = "".join(f"{c + ' ms (student / +head / ratio)':>42}" for c in columns)
    print(f"{'backend':<12}{header}")
    with tempfile.TemporaryDirectory() as tmp:
        alone_onnx = export_checkpoint(checkpoint, Path(tmp) / "student.onnx", None)
        seg_onnx = export_checkpoint(checkpoint, Path(tmp) / "student_seg.onnx", head_path)
        for name in args.backends:
            plain, seg = (BackendConfig(name=name, onnx_path=path, weights_path=checkpoint, threads=args.threads,
                                        precision=args.precision) for path in (alone_onnx, seg_onnx))
            try:
                a, b = create_backend(plain), create_backend(seg)
            except BackendError as exc:
                print(f"{name:<12} skipped: {exc}")
                continue
            times = _time_pair(a, b, y, ir, args.repeats)
            a.close()
            b.close()
            cells = []
            for kind, pick in (("wall", statistics.median), ("wall", min), ("cpu", statistics.median)):
                ta, tb = pick(times[kind][0]), pick(times[kind][1])
                cells.append(f"{ta:9.1f} / {tb:9.1f} / {tb / ta:5.2f}")
            print(f"{name:<12}" + "".join(f"{c:>42}" for c in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
