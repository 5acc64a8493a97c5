"""Cost of the segmentation head: student alone vs student+head, per backend, same process.

    python benchmarks/seg_head.py [--checkpoint PATH] [--head PATH] [--size 480 640] [--repeats 15]

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--head", type=Path, default=None, help="head .npz (default: the shipped one)")
    parser.add_argument("--size", type=int, nargs=2, default=[480, 640], metavar=("H", "W"))
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads per backend (default: runtime's)")
    parser.add_argument("--backends", nargs="+", default=["onnxruntime", "openvino", "torch"])
    args = parser.parse_args(argv)

    from sage_ros.model.checkpoint import load_student
    from sage_ros.model.export import export_student
    from sage_ros.model.seg_head import (
        SegHead,
        count_macs_per_pixel,
        default_head_path,
        export_student_with_head,
    )

    checkpoint = args.checkpoint or (SHARED_CHECKPOINT if SHARED_CHECKPOINT.is_file() else default_checkpoint())
    if not checkpoint.is_file():
        print(f"no student checkpoint at {checkpoint}: run `sage-ros weights fetch` or pass --checkpoint")
        return 1
    head_path = args.head or default_head_path()
    if not head_path.is_file():
        print(f"no head weights at {head_path}: run `sage-ros seg train` or pass --head")
        return 1
    h, w = args.size
    rng = np.random.default_rng(0)
    y = rng.random((h, w), dtype=np.float32)
    ir = rng.random((h, w), dtype=np.float32)
    print(f"input {w}x{h}, {args.repeats} alternating runs each, threads={args.threads or 'default'}")
    print(f"head: {count_macs_per_pixel(SegHead()):.0f} MAC/pixel (student ~65.1 k)")
    columns = ["median wall", "best wall", "median cpu"]
    header = "".join(f"{c + ' ms (student / +head / ratio)':>42}" for c in columns)
    print(f"{'backend':<12}{header}")
    with tempfile.TemporaryDirectory() as tmp:
        alone_onnx = export_student(load_student(checkpoint), Path(tmp) / "student.onnx")
        seg_onnx = export_student_with_head(checkpoint, head_path, Path(tmp) / "student_seg.onnx")
        for name in args.backends:
            plain = BackendConfig(name=name, onnx_path=alone_onnx, weights_path=checkpoint, threads=args.threads)
            seg = BackendConfig(name=name, onnx_path=seg_onnx, weights_path=checkpoint, threads=args.threads)
            seg.extra["head_path"] = str(head_path)
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
