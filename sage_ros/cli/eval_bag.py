"""`sage-ros eval-bag`: replay a bag through the node's pairing and fusion; write a report and a bag."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from tqdm import tqdm

from sage_ros.backends import BackendError
from sage_ros.bags.detections import BOXES_TOPIC, PAIR_NAME_TOPIC
from sage_ros.bags.reader import BagReadError
from sage_ros.cli._common import add_pipeline_arguments, pipeline_settings
from sage_ros.evaluation.metrics import FUSION_METRICS
from sage_ros.evaluation.plots import write_plots
from sage_ros.evaluation.report import build_report, mean_metrics, render_markdown
from sage_ros.evaluation.runner import EvalOptions, evaluate_bag
from sage_ros.image.thermal import MODES, NormalizerConfig
from sage_ros.node.settings import PARAMS
from sage_ros.paths import write_atomic
from sage_ros.pipeline import PipelineError, build_pipeline

SLOP_DEFAULT = next(p.default for p in PARAMS if p.name == "sync.slop")  # one value for node and eval-bag


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval-bag",
        help="replay a ROS 2 bag through the fusion node's pipeline and report metrics",
        description="Reads the bag (MCAP or sqlite3, damaged ones by scanning), pairs thermal and RGB "
        "frames with the node's synchroniser, fuses them, and writes report.json, report.md, PNG plots "
        "and an output bag with the inputs plus /fused/image_raw and the class-id masks. With a boxes topic "
        "(vision_msgs/Detection2DArray, `make-bag --boxes`) the "
        "class-id mask is scored against the boxes as `sage-ros seg eval` does.",
        epilog="exit status: 0 all good, 1 evaluated with problems (counted in report.json), 2 nothing evaluated "
        "or the model could not start, 3 the results could not be written (disk full, ...): the incomplete "
        "output is removed",
    )
    parser.add_argument("bag", type=Path, help="bag folder, or a single .mcap / .db3 file")
    parser.add_argument("--out", type=Path, required=True, help="output folder for the report, plots and bag")
    parser.add_argument("--thermal-topic", default="/thermal/image_raw")
    parser.add_argument("--rgb-topic", default="/rgb/image_raw")
    parser.add_argument(
        "--gt-topic", default="/segmentation/ground_truth", help="mono8 class-id labels (optional)"
    )
    parser.add_argument(
        "--boxes-topic", default=BOXES_TOPIC,
        help="vision_msgs/Detection2DArray human boxes, matched to pairs by the RGB stamp: mask components "
        f"are scored against them at IoU 0.5 (default {BOXES_TOPIC}; skipped with a note when absent)",
    )
    parser.add_argument(
        "--min-area", type=int, default=6, help="mask components smaller than this (px) are speckle (default 6)"
    )
    parser.add_argument(
        "--pair-names-topic", default=PAIR_NAME_TOPIC,
        help=f"std_msgs/String pair names written by make-bag, shown on the contact sheet (default {PAIR_NAME_TOPIC})",
    )
    parser.add_argument(
        "--slop", type=float, default=SLOP_DEFAULT,
        help=f"pairing tolerance in seconds (default {SLOP_DEFAULT}, the node's sync.slop default)",
    )
    parser.add_argument("--queue-size", type=int, default=10, help="synchroniser queue per input")
    parser.add_argument(
        "--thermal-offset-ms", type=float, default=0.0, help="added to thermal stamps before pairing"
    )
    parser.add_argument(
        "--thermal-mode", choices=("auto", "per-frame", *MODES), default="auto",
        help="mono16/32FC1 normalisation: percentile = the node's window smoothed across frames, "
        "per-frame = percentile window of each frame alone, fixed = --thermal-range; auto (default) = "
        "per-frame for a dataset bag (it has the ground-truth topic), percentile for a camera stream",
    )
    parser.add_argument(
        "--thermal-range",
        type=float,
        nargs=2,
        metavar=("MIN", "MAX"),
        default=None,
        help="fixed thermal window (counts or deg C); implies --thermal-mode fixed",
    )
    parser.add_argument("--no-output-bag", action="store_true", help="report only")
    parser.add_argument(
        "--no-metrics", action="store_true", help="skip fusion metrics (pairing, latency, bag only)"
    )
    parser.add_argument("--rank-metric", choices=FUSION_METRICS, default="Qabf", help="contact sheet ranking")
    parser.add_argument("--max-pairs", type=int, default=None, help="stop after N pairs")
    parser.add_argument("--force", action="store_true", help="replace an existing output bag in --out")
    add_pipeline_arguments(parser)
    parser.set_defaults(func=run)


def _write_failed(out_dir: Path, bag_out: Path | None, exc: OSError) -> int:
    """Writing the results failed: say so, and leave nothing that could pass for a complete result."""
    removed = []
    for path in (bag_out, out_dir / "report.json", out_dir / "report.md"):
        if path is not None and path.exists():
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
            removed.append(path.name)
    where = f" ({exc.filename})" if exc.filename else ""
    print(
        f"error: writing the results under {out_dir} failed: {exc.strerror or exc}{where}; the evaluation is "
        f"incomplete" + (f", removed the partial {', '.join(removed)}" if removed else ""),
        file=sys.stderr,
    )
    return 3


def run(args: argparse.Namespace) -> int:
    if not Path(args.bag).exists():
        print(f"error: bag {args.bag} does not exist (a bag folder, or a single .mcap / .db3 file)", file=sys.stderr)
        return 2
    out_dir: Path = args.out
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    status = _run(args, out_dir)
    if created and status == 2 and out_dir.is_dir() and not any(out_dir.iterdir()):
        out_dir.rmdir()  # nothing evaluated: leave no empty output folder behind
    return status


def _run(args: argparse.Namespace, out_dir: Path) -> int:
    bag_out = None if args.no_output_bag else out_dir / "fused_bag"
    if bag_out is not None and bag_out.exists():
        if not args.force:
            print(f"error: {bag_out} exists; pass --force to replace it", file=sys.stderr)
            return 2
        shutil.rmtree(bag_out)
    thermal = None  # auto: chosen by the runner from the bag's topics
    if args.thermal_range is not None:
        thermal = NormalizerConfig(mode="fixed", fixed_min=args.thermal_range[0], fixed_max=args.thermal_range[1])
    elif args.thermal_mode == "per-frame":
        thermal = NormalizerConfig(ema_alpha=1.0)
    elif args.thermal_mode != "auto":
        thermal = NormalizerConfig(mode=args.thermal_mode)
    options = EvalOptions(
        thermal_topic=args.thermal_topic,
        rgb_topic=args.rgb_topic,
        gt_topic=args.gt_topic,
        boxes_topic=args.boxes_topic,
        pair_names_topic=args.pair_names_topic,
        box_min_area=args.min_area,
        slop_s=args.slop,
        queue_size=args.queue_size,
        thermal_offset_ms=args.thermal_offset_ms,
        thermal=thermal,
        compute_metrics=not args.no_metrics,
        output_bag=bag_out,
        max_pairs=args.max_pairs,
    )
    try:
        if thermal is not None:
            thermal.validate()
        pipeline = build_pipeline(pipeline_settings(args))
    except (ValueError, BackendError, FileNotFoundError, PipelineError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    model_path = args.model
    try:
        result = evaluate_bag(
            args.bag,
            pipeline,
            options,
            class_table=pipeline.segmenter.class_table if pipeline.segmenter else None,
            progress=lambda total: tqdm(total=total, unit="msg", desc="replaying", file=sys.stderr),
        )
    except BagReadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # writing the output bag: disk full, file size limit, read-only...
        return _write_failed(out_dir, bag_out, exc)
    finally:
        pipeline.close()
    try:
        plots = write_plots(result, mean_metrics(result), out_dir, args.rank_metric)
        files = {"report_json": str(out_dir / "report.json"), "report_md": str(out_dir / "report.md")}
        files.update({f"plot_{k}": str(v) for k, v in plots.items()})
        if bag_out is not None:
            files["output_bag"] = str(bag_out)
        report = build_report(result, str(model_path) if args.backend != "torch" else None, files)
        # The report goes last and whole (temporary file, then rename): a report.json that exists
        # describes outputs that were all written.
        md = render_markdown(report, {k: v.name for k, v in plots.items()})
        write_atomic(out_dir / "report.md", md)
        write_atomic(out_dir / "report.json", json.dumps(report, indent=2) + "\n")
    except OSError as exc:
        return _write_failed(out_dir, bag_out, exc)

    problems = report["problems"]
    if problems["total"]:
        counts = ", ".join(f"{k}: {v}" for k, v in problems["counts"].items())
        print(f"problems ({problems['total']}): {counts} (details in report.json)", file=sys.stderr)
    n = len(result.pairs)
    print(f"evaluated {n} pairs from {args.bag} with {result.backend}")
    mean = report["mean"]
    if mean:
        print("mean " + ", ".join(f"{k} {mean['SAGE'][k]:.3f}" for k in FUSION_METRICS) + " (SAGE)")
    boxes = report["masks_vs_boxes"]
    if "scores" in boxes:
        every = boxes["scores"].get("all")
        if every:
            f1 = "-" if every["mean_f1"] is None else f"{every['mean_f1']:.2f}"
            print(f"masks vs boxes ({boxes['topic']}, IoU 0.5): mean F1 {f1} over "
                  f"{boxes['pairs_scored']} pairs ({boxes['pairs_without_boxes']} without boxes)")
    else:
        print(f"masks vs boxes: {boxes['note']}")
    for name, path in files.items():
        print(f"{name}: {path}")
    if n == 0:
        return 2
    return 1 if problems["total"] else 0
