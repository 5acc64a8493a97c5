"""`sage-ros fuse`: fuse folders of registered IR/visible pairs into colour images."""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from tqdm import tqdm

from sage_ros.backends import BackendError
from sage_ros.cli._common import (
    add_backend_arguments,
    backend_config_from_args,
    backend_from_args,
    reduced_from_args,
    refiner_from_args,
)
from sage_ros.cli._folder_fusion import fuse_folder, pair_folders
from sage_ros.pipeline import FusionPipeline


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "fuse",
        help="fuse a folder of IR images with a folder of visible images",
        description="Pairs files by name, writes fused RGB PNGs with the same names; "
        "unpaired, unreadable or mismatched files are reported and skipped.",
    )
    parser.add_argument("--ir", type=Path, required=True, help="folder of infrared images")
    parser.add_argument("--vis", type=Path, required=True, help="folder of visible images (same names)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--masks", type=Path, default=None,
                        help="also write each pair's class-id mask here (8-bit PNG, same name; MSRS ids "
                        "0 background, 1 car, 2 person, 3 bike); needs a model with a segmentation output")
    parser.add_argument("--overlays", type=Path, default=None,
                        help="also write the class colours blended over each fused image here")
    add_backend_arguments(parser)
    parser.set_defaults(func=run)


def _class_table(args: argparse.Namespace):
    """The classes named in the model's sidecar (the MSRS classes when it names none)."""
    from sage_ros.model.classes import load_class_table
    from sage_ros.paths import default_onnx

    model = getattr(args, "model", None)
    return load_class_table(model if model and Path(model).is_file() else default_onnx())


def run(args: argparse.Namespace) -> int:
    try:
        pairs, _, _ = pair_folders(args.ir, args.vis)
        config = backend_config_from_args(args)  # once: the model file is checked or exported here
        backend = backend_from_args(args, config)
        refiner = refiner_from_args(args, backend)
        reduced = reduced_from_args(args, config)
    except (FileNotFoundError, BackendError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    pipeline = FusionPipeline(backend, args.resolution, refiner, reduced)
    with tqdm(total=len(pairs), unit="pair", desc="fusing", file=sys.stderr) as bar:
        report = fuse_folder(
            pipeline, args.ir, args.vis, args.out, on_pair=lambda _name: bar.update(),
            masks_dir=args.masks, overlays_dir=args.overlays, class_table=_class_table(args),
        )
    backend.close()
    if reduced is not None:
        reduced.close()
    for name in report.only_ir:
        print(f"unpaired: {name} is in {args.ir} but not in {args.vis}", file=sys.stderr)
    for name in report.only_vis:
        print(f"unpaired: {name} is in {args.vis} but not in {args.ir}", file=sys.stderr)
    for name, reason in report.failed.items():
        print(f"failed: {name}: {reason}", file=sys.stderr)
    times = list(report.inference_ms.values())
    median = f", median {statistics.median(times):.0f} ms/pair" if times else ""
    print(f"fused {len(report.fused)} of {len(pairs)} pairs into {args.out} with {backend.description}{median}")
    if args.masks is not None:
        print(f"class-id masks in {args.masks}")
    return 0 if report.ok else 1
