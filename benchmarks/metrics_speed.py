"""Time the fusion metrics on one 640x480 pair (MSRS when ../shared is present, else synthetic).

Prints the time of each metric, of all nine for one fused image, and of a full eval-bag pair
(SAGE + three baselines) with the shared-source scorer against four independent calls, in this process.

    python benchmarks/metrics_speed.py [--repeat 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np

from sage_ros.evaluation import metrics as m
from sage_ros.evaluation.baselines import BASELINES, score_methods

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def load_pair() -> tuple[np.ndarray, np.ndarray, str]:
    ir_path = SHARED / "datasets" / "msrs" / "ir" / "00012N.png"
    if ir_path.is_file():
        ir = cv2.imread(str(ir_path), cv2.IMREAD_GRAYSCALE)
        vis = cv2.imread(str(ir_path.parents[1] / "vi" / ir_path.name))
        return ir, cv2.cvtColor(vis, cv2.COLOR_BGR2YCrCb)[..., 0], f"MSRS {ir_path.stem}"
    rng = np.random.default_rng(0)
    smooth = cv2.GaussianBlur(rng.uniform(0, 255, (480, 640)), (0, 0), 3)
    return (
        np.clip(smooth * 3 - 250, 0, 255).astype(np.uint8),
        rng.integers(0, 256, (480, 640), np.uint8),
        "synthetic",
    )


def best_ms(fn, repeat: int) -> float:
    """Best CPU time of this process in ms: on a shared machine wall time mostly measures neighbours.

    With one OpenCV thread (the default here) CPU time is the single-core compute time.
    """
    times = []
    for _ in range(repeat):
        start = time.process_time()
        fn()
        times.append((time.process_time() - start) * 1000.0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per timing; the best is reported")
    parser.add_argument("--threads", type=int, default=1, help="OpenCV threads (default 1: one core)")
    args = parser.parse_args()
    cv2.setNumThreads(args.threads)
    a, b, source = load_pair()
    f = (a.astype(np.float64) + b) / 2.0  # any fused image: cost does not depend on content
    m.FusionScorer(a, b).score(f)  # warm-up (imports scikit-image)
    print(
        f"pair: {source}, {a.shape[1]}x{a.shape[0]}, OpenCV threads {args.threads}, "
        f"best CPU time of {args.repeat} runs"
    )
    single = {
        "EN": lambda: m.entropy(f),
        "SD": lambda: m.standard_deviation(f),
        "SF": lambda: m.spatial_frequency(f),
        "AG": lambda: m.average_gradient(f),
        "MI": lambda: m.mutual_information(a, b, f),
        "SCD": lambda: m.scd(a, b, f),
        "VIF": lambda: m.vif(a, b, f),
        "Qabf": lambda: m.qabf(a, b, f),
        "SSIM": lambda: m.ssim(a, b, f),
    }
    for name, fn in single.items():
        print(f"  {name:5s} {best_ms(fn, args.repeat):8.1f} ms")
    one = best_ms(lambda: m.FusionScorer(a, b).score(f), args.repeat)
    print(f"all nine metrics, one fused image: {one:.1f} ms")
    fused_images = [f] + [make(a, b) for make in BASELINES.values()]
    independent = best_ms(lambda: [m.FusionScorer(a, b).score(x) for x in fused_images], args.repeat)
    shared = best_ms(lambda: score_methods(a, b, f), args.repeat)
    print(
        f"eval-bag pair (SAGE + {len(BASELINES)} baselines): independent {independent:.1f} ms, "
        f"shared-source scorer {shared:.1f} ms, ratio {independent / shared:.2f}x"
    )


if __name__ == "__main__":
    main()
