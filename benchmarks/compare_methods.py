"""Mean fusion metrics of SAGE, the baselines and other methods' saved outputs on the same pairs.

Published methods ship fused images, not models; this scores every folder of fused images on the
pairs all of them cover, with exactly the metric code eval-bag uses (F = Y of the colour image).

    python benchmarks/compare_methods.py --ir IR_DIR --vis VIS_DIR --model student.onnx \\
        --method SeAFusion=peers/SeAFusion --method LSAFusion=peers/LSAFusion --out table.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sage_ros.evaluation.baselines import BASELINES, luminance_of_bgr, luminance_of_rgb  # noqa: E402
from sage_ros.evaluation.metrics import FUSION_METRICS, FusionScorer  # noqa: E402
from sage_ros.evaluation.report import markdown_table  # noqa: E402
from sage_ros.pairing.datasets import images_by_stem, read_infrared, read_visible  # noqa: E402


def compare(
    ir_dir: Path, vis_dir: Path, methods: dict[str, Path], pipeline: Any = None
) -> tuple[list[str], dict[str, dict[str, float]]]:
    """(pair names used, method -> metric -> mean). SAGE is run through `pipeline` when given."""
    irs, viss = images_by_stem(ir_dir), images_by_stem(vis_dir)
    common = set(irs) & set(viss)
    folders = {name: images_by_stem(folder) for name, folder in methods.items()}
    for files in folders.values():
        common &= set(files)
    used = sorted(common)
    if not used:
        raise ValueError("no pair is covered by every method folder")
    sums: dict[str, list[dict[str, float]]] = {}
    for name in tqdm(used, unit="pair", desc="scoring", file=sys.stderr):
        ir = read_infrared(irs[name])
        vis = read_visible(viss[name])
        vis_y = luminance_of_bgr(vis)
        scorer = FusionScorer(ir, vis_y)
        fused: dict[str, np.ndarray] = {}
        if pipeline is not None:
            fused["SAGE"] = luminance_of_rgb(pipeline.fuse(ir, vis).fused_rgb)
        for method, files in folders.items():
            image = cv2.imread(str(files[name]), cv2.IMREAD_COLOR)
            if image is None:
                raise ValueError(f"{files[name]}: not a readable image")
            fused[method] = luminance_of_bgr(image)
        for method, make in BASELINES.items():
            fused[method] = make(ir, vis_y)
        for method, image in fused.items():
            sums.setdefault(method, []).append(scorer.score(image))
    means = {m: {k: float(np.mean([s[k] for s in rows])) for k in FUSION_METRICS} for m, rows in sums.items()}
    return used, means


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ir", type=Path, required=True)
    parser.add_argument("--vis", type=Path, required=True)
    parser.add_argument(
        "--method", action="append", default=[], metavar="NAME=DIR", help="folder of fused images"
    )
    parser.add_argument("--model", type=Path, default=None, help="ONNX student: adds SAGE (onnxruntime)")
    parser.add_argument(
        "--out", type=Path, default=None, help="write the table (markdown) and a .json beside it"
    )
    args = parser.parse_args(argv)
    methods = {}
    for item in args.method:
        name, _, folder = item.partition("=")
        if not folder:
            parser.error(f"--method expects NAME=DIR, got {item!r}")
        methods[name] = Path(folder)
    pipeline = None
    if args.model is not None:
        from sage_ros.pipeline import PipelineSettings, build_pipeline

        pipeline = build_pipeline(PipelineSettings(model=str(args.model), backend="onnxruntime", resolution="rgb",
                                                   segmentation=False))
    used, means = compare(args.ir, args.vis, methods, pipeline)
    table = markdown_table(means)
    print(f"{len(used)} pairs: {', '.join(used)}")
    print(table)
    if args.out is not None:
        args.out.write_text(table)
        args.out.with_suffix(".json").write_text(json.dumps({"pairs": used, "mean": means}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
