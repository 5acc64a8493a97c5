"""`sage-ros make-bag`: a folder dataset (SAGE, MSRS, FMB, VIFB layouts) -> a ROS 2 bag."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from sage_ros.bags.dataset_bag import GT_TOPIC, RGB_TOPIC, THERMAL_TOPIC, MakeBagOptions, write_dataset_bag
from sage_ros.bags.detections import BOXES_TOPIC, PAIR_NAME_TOPIC
from sage_ros.evaluation.components import MSRS_YOLO_TO_ID, parse_yolo
from sage_ros.pairing.datasets import DatasetError, discover


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "make-bag",
        help="turn a folder dataset into a ROS 2 bag (thermal, RGB, ground truth)",
        description="Writes thermal/image_raw, rgb/image_raw and, where labels exist, "
        "segmentation/ground_truth, stamped at a chosen rate with optional jitter and thermal offset; "
        "with --boxes, human boxes as vision_msgs/Detection2DArray; each pair's name on /dataset/pair_names. "
        "Layouts: Ir/ Vis/ (SAGE samples), ir/ vi/ [label/] (MSRS), Infrared/ Visible/ [Label/] (MSRS, FMB).",
        epilog="exit status: 0 every pair written, 1 written with skipped pairs or unreadable box files (listed), "
        "2 nothing written (missing or empty dataset, output exists, bag could not be created)",
    )
    parser.add_argument("dataset", type=Path, help="dataset folder")
    parser.add_argument("--out", type=Path, required=True, help="bag folder to create (must not exist)")
    parser.add_argument(
        "--storage", choices=["mcap", "sqlite3"], default="mcap", help="bag storage (default mcap)"
    )
    parser.add_argument(
        "--split", default=None, help="split sub-folder or splits.csv split (e.g. test, eval)"
    )
    parser.add_argument("--limit", type=int, default=None, help="first N pairs only")
    parser.add_argument("--rate", type=float, default=10.0, help="frame rate in Hz (default 10)")
    parser.add_argument(
        "--start", type=float, default=1_700_000_000.0, help="first stamp, seconds since epoch"
    )
    parser.add_argument("--jitter-ms", type=float, default=0.0, help="uniform stamp jitter +- ms per message")
    parser.add_argument(
        "--thermal-offset-ms", type=float, default=0.0, help="thermal stamps this much later than RGB (ms)"
    )
    parser.add_argument("--thermal-encoding", choices=["mono8", "mono16"], default="mono8")
    parser.add_argument("--rgb-encoding", choices=["bgr8", "rgb8"], default="bgr8")
    parser.add_argument(
        "--mono16-offset", type=int, default=1000, help="mono16 counts = offset + gain * grey"
    )
    parser.add_argument("--mono16-gain", type=int, default=60)
    parser.add_argument("--thermal-topic", default=THERMAL_TOPIC)
    parser.add_argument("--rgb-topic", default=RGB_TOPIC)
    parser.add_argument("--gt-topic", default=GT_TOPIC)
    parser.add_argument(
        "--boxes", type=Path, default=None, metavar="DIR",
        help="folder of YOLO box files NAME.txt (`class cx cy w h`, normalised; MSRS classes 0 person, "
        "1 bicycle, 2 car), e.g. ../shared/datasets/msrs/boxes/fusion: written to --boxes-topic, stamped "
        "like the RGB frame; a pair without a file gets no message, an empty file an empty array",
    )
    parser.add_argument("--boxes-topic", default=BOXES_TOPIC, help=f"default {BOXES_TOPIC}")
    parser.add_argument(
        "--pair-names-topic", default=PAIR_NAME_TOPIC,
        help=f"std_msgs/String with each pair's file name, log time = its RGB stamp (default {PAIR_NAME_TOPIC}; "
        "eval-bag writes the names on its contact sheet); '' to leave it out",
    )
    parser.add_argument("--seed", type=int, default=0, help="jitter random seed")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        dataset = discover(args.dataset, split=args.split, limit=args.limit)
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    options = MakeBagOptions(
        storage=args.storage,
        rate_hz=args.rate,
        start_ns=int(round(args.start * 1e9)),
        jitter_ms=args.jitter_ms,
        thermal_offset_ms=args.thermal_offset_ms,
        thermal_encoding=args.thermal_encoding,
        rgb_encoding=args.rgb_encoding,
        mono16_offset=args.mono16_offset,
        mono16_gain=args.mono16_gain,
        thermal_topic=args.thermal_topic,
        rgb_topic=args.rgb_topic,
        gt_topic=args.gt_topic,
        boxes_topic=args.boxes_topic,
        pair_name_topic=args.pair_names_topic or None,
        seed=args.seed,
    )
    if args.boxes is not None and not args.boxes.is_dir():
        print(f"error: box folder {args.boxes} does not exist", file=sys.stderr)
        return 2
    for name in dataset.only_ir + dataset.only_vis:
        print(f"unpaired: {name} (no partner in the other folder), left out", file=sys.stderr)
    try:
        with tqdm(total=len(dataset.pairs), unit="pair", desc="writing bag", file=sys.stderr) as bar:
            summary = write_dataset_bag(
                dataset, args.out, options, on_frame=lambda _n: bar.update(), boxes=_box_source(args.boxes)
            )
    except (ValueError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name, reason in summary.skipped.items():
        print(f"skipped: {name}: {reason}", file=sys.stderr)
    for name, reason in summary.box_errors.items():
        print(f"boxes left out: {name}: {reason}", file=sys.stderr)
    counts = ", ".join(f"{t}: {n}" for t, n in summary.counts.items())
    where = f"{summary.path} ({options.storage}; {counts})"
    print(f"layout {dataset.layout}: wrote {summary.frames} frames to {where}")
    return 1 if summary.skipped or summary.box_errors else 0


def _box_source(folder: Path | None):
    """NAME, width, height -> the pixel boxes of folder/NAME.txt (MSRS YOLO classes), None without a file.

    The same parsing as `sage-ros seg eval` (`sage_ros.evaluation.components.parse_yolo`), so a bag's
    boxes equal the boxes that command scores against.
    """
    if folder is None:
        return None

    def boxes(name: str, width: int, height: int):
        path = folder / f"{name}.txt"
        if not path.is_file():
            return None
        return parse_yolo(path.read_text(), width, height, MSRS_YOLO_TO_ID, source=str(path))

    return boxes
