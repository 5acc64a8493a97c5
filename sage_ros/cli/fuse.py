"""`sage-ros fuse`: fuse folders of registered IR/visible pairs into colour images."""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from pathlib import Path

from tqdm import tqdm

from sage_ros.backends import BackendError
from sage_ros.cli._common import add_pipeline_arguments, pipeline_settings
from sage_ros.cli._folder_fusion import fuse_folder, pair_folders
from sage_ros.pipeline import PipelineError, build_pipeline

EXIT_CODES = """exit status:
  0  every pair fused (files without a partner are listed, not counted as failures)
  1  some pairs could not be fused or written (each is listed with its reason)
  2  nothing to do or the model could not start: missing folder, empty split, model or backend error"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "fuse",
        help="fuse a folder of IR images with a folder of visible images",
        description="Pairs files by name, writes fused RGB PNGs with the same names; "
        "unpaired, unreadable or mismatched files are reported and skipped.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--ir", type=Path, required=True, help="folder of infrared images")
    parser.add_argument("--vis", type=Path, required=True, help="folder of visible images (same names)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--masks", type=Path, default=None,
                        help="also write each pair's class-id mask here (8-bit PNG, same name; MSRS ids "
                        "0 background, 1 car, 2 person, 3 bike)")
    parser.add_argument("--overlays", type=Path, default=None,
                        help="also write the class colours blended over each fused image here")
    parser.add_argument("--split", default=None,
                        help="fuse only the pairs of this split (e.g. eval) named in the dataset's splits.csv "
                        "(name,split columns; MSRS layout: beside the --ir folder)")
    parser.add_argument("--splits", type=Path, default=None,
                        help="the split file for --split (default: splits.csv in the --ir folder's parent)")
    add_pipeline_arguments(parser)
    parser.set_defaults(func=run)


def split_names(path: Path, split: str) -> set[str]:
    """The pair names of `split` in a `name,split[,...]` CSV file."""
    try:
        with open(path, newline="") as handle:
            names = {row["name"] for row in csv.DictReader(handle) if row.get("split") == split}
    except (OSError, KeyError) as exc:
        raise FileNotFoundError(f"split file {path} needs name and split columns: {exc}") from None
    if not names:
        raise FileNotFoundError(f"split {split!r} names no pair in {path}")
    return names


def run(args: argparse.Namespace) -> int:
    try:
        only = None
        if args.split is not None:
            only = split_names(args.splits or Path(args.ir).resolve().parent / "splits.csv", args.split)
        pairs, _, _ = pair_folders(args.ir, args.vis)
        wanted = args.masks is not None or args.overlays is not None
        pipeline = build_pipeline(pipeline_settings(args, segmentation=wanted))
    except (FileNotFoundError, BackendError, PipelineError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if wanted and pipeline.segmenter is None:
        print(f"error: {pipeline.notes[-1]}", file=sys.stderr)
        pipeline.close()
        return 2
    total = len(pairs) if only is None else len([p for p in pairs if p[0] in only])
    try:
        with tqdm(total=total, unit="pair", desc="fusing", file=sys.stderr) as bar:
            report = fuse_folder(
                pipeline, args.ir, args.vis, args.out, on_pair=lambda _name: bar.update(),
                masks_dir=args.masks, overlays_dir=args.overlays,
                class_table=pipeline.segmenter.class_table if pipeline.segmenter else None, only=only,
            )
        description = pipeline.description
    except (BackendError, PipelineError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        pipeline.close()
    for name in report.only_ir:
        print(f"unpaired: {name} is in {args.ir} but not in {args.vis}", file=sys.stderr)
    for name in report.only_vis:
        print(f"unpaired: {name} is in {args.vis} but not in {args.ir}", file=sys.stderr)
    for name, reason in report.failed.items():
        print(f"failed: {name}: {reason}", file=sys.stderr)
    times = list(report.inference_ms.values())
    median = f", median {statistics.median(times):.0f} ms/pair" if times else ""
    print(f"fused {len(report.fused)} of {total} pairs into {args.out} with {description}{median}")
    if args.masks is not None:
        print(f"class-id masks in {args.masks}")
    if args.overlays is not None:
        print(f"class overlays in {args.overlays}")
    if total == 0:
        return 2
    return 0 if report.ok else 1
