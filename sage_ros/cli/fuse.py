"""`sage-ros fuse`: fuse folders of registered IR/visible pairs into colour images."""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from tqdm import tqdm

from sage_ros.backends import BackendError
from sage_ros.cli._common import add_backend_arguments, backend_from_args
from sage_ros.folder_fusion import fuse_folder, pair_folders
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
    add_backend_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        pairs, _, _ = pair_folders(args.ir, args.vis)
        backend = backend_from_args(args)
    except (FileNotFoundError, BackendError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    pipeline = FusionPipeline(backend, args.resolution)
    with tqdm(total=len(pairs), unit="pair", desc="fusing", file=sys.stderr) as bar:
        report = fuse_folder(pipeline, args.ir, args.vis, args.out, on_pair=lambda _name: bar.update())
    backend.close()
    for name in report.only_ir:
        print(f"unpaired: {name} is in {args.ir} but not in {args.vis}", file=sys.stderr)
    for name in report.only_vis:
        print(f"unpaired: {name} is in {args.vis} but not in {args.ir}", file=sys.stderr)
    for name, reason in report.failed.items():
        print(f"failed: {name}: {reason}", file=sys.stderr)
    times = list(report.inference_ms.values())
    median = f", median {statistics.median(times):.0f} ms/pair" if times else ""
    print(f"fused {len(report.fused)} of {len(pairs)} pairs into {args.out} with {backend.description}{median}")
    return 0 if report.ok else 1
