"""`sage-ros seg ...`: train, evaluate and export the segmentation head (needs the `training` extra).

    sage-ros seg train       train a head on fused (or visible/infrared) images of MSRS or FMB
    sage-ros seg eval        AP50 (components vs human boxes) and mIoU (vs pseudo-masks) of a head
    sage-ros seg experiment  the SAGE claim: same head on fused vs visible vs infrared, one table
    sage-ros seg export      the released student + a head as one ONNX model with two outputs
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from sage_ros.paths import default_checkpoint

log = logging.getLogger(__name__)

_SHARED_MSRS = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "msrs"


def _common_data(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path, default=None, help="student checkpoint (default: cache)")
    parser.add_argument(
        "--msrs", type=Path, default=_SHARED_MSRS, help="MSRS subset with boxes/ and splits.csv"
    )
    parser.add_argument(
        "--box-source", choices=["infrared", "visible", "fusion"], default="infrared",
        help="which human boxes become pseudo-masks (default: infrared, the most complete)",
    )
    parser.add_argument(
        "--pseudo", choices=["thermal", "box"], default="box",
        help="pseudo-mask rule: 'box' fills each box (default: its components score AP50 71 vs the IR "
        "boxes on MSRS eval), 'thermal' keeps the warm pixels in it (AP50 29: parts of objects)",
    )
    parser.add_argument(
        "--labels", nargs=2, metavar=("LAYOUT", "ROOT"), default=None,
        help="train from pixel labels instead of boxes: LAYOUT is msrs or fmb",
    )
    parser.add_argument("--cache-dir", type=Path, default=None, help="where fused outputs are cached")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")


def _train_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, nargs=2, default=[240, 320], metavar=("H", "W"))
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")


def register(subparsers) -> None:
    parser = subparsers.add_parser("seg", help="segmentation head: train, eval, experiment, export")
    sub = parser.add_subparsers(dest="seg_command", metavar="SEG_COMMAND")

    train = sub.add_parser("train", help="train a head (default: on fused MSRS train pairs)")
    _common_data(train)
    _train_options(train)
    train.add_argument("--input", choices=["fused", "visible", "infrared"], default="fused")
    train.add_argument("--classes", choices=["msrs", "fmb"], default="msrs")
    train.add_argument("--out", type=Path, required=True, help="head weights (.npz; a .json is written too)")
    train.add_argument("--no-calibrate", action="store_true",
                       help="skip the background-bias calibration on the training split")
    train.set_defaults(func=_train)

    evaluate = sub.add_parser("eval", help="score a head on the MSRS eval split")
    _common_data(evaluate)
    evaluate.add_argument("--head", type=Path, default=None, help="head .npz (default: the shipped one)")
    evaluate.add_argument("--input", choices=["fused", "visible", "infrared"], default=None,
                          help="input kind (default: what the head was trained on)")
    evaluate.add_argument("--split", default="eval")
    evaluate.add_argument("--pseudo-oracle", action="store_true",
                          help="score the pseudo-masks themselves (the ceiling of a head trained on them)")
    evaluate.set_defaults(func=_eval)

    experiment = sub.add_parser("experiment", help="fused vs visible vs infrared heads, one table")
    _common_data(experiment)
    _train_options(experiment)
    experiment.add_argument("--out-dir", type=Path, required=True)
    experiment.set_defaults(func=_experiment)

    export = sub.add_parser("export", help="student + head -> one ONNX model (fused_y, class_ids)")
    export.add_argument("--checkpoint", type=Path, default=None)
    export.add_argument("--head", type=Path, default=None, help="head .npz (default: the shipped one)")
    export.add_argument("--out", type=Path, default=None, help="default: <cache>/models/sage_student_seg.onnx")
    export.set_defaults(func=_export)
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])


def _checkpoint(args) -> Path | None:
    path = args.checkpoint or default_checkpoint()
    if not Path(path).is_file():
        log.error("student checkpoint %s not found: run `sage-ros weights fetch` or pass --checkpoint", path)
        return None
    return Path(path)


def _samples(args, split: str, num_classes: int):
    from sage_ros.training.segmentation.data import load_msrs_boxes, load_pixel_labels

    checkpoint = _checkpoint(args)
    if checkpoint is None:
        return None
    try:
        if args.labels:
            layout, root = args.labels
            return load_pixel_labels(layout, root, split, checkpoint, num_classes, args.cache_dir, args.threads)
        return load_msrs_boxes(
            args.msrs, split, checkpoint, args.box_source, args.pseudo, args.cache_dir, threads=args.threads
        )
    except (ValueError, OSError) as exc:
        log.error("could not load the %s data: %s", split, exc)
        return None


def _config(args, input_kind: str, num_classes: int):
    from sage_ros.training.segmentation.train import HeadTrainConfig

    return HeadTrainConfig(
        input_kind=input_kind, num_classes=num_classes, steps=args.steps, batch=args.batch,
        crop_hw=tuple(args.crop), lr=args.lr, seed=args.seed, threads=args.threads, device=args.device,
    )


def _data_info(args) -> dict:
    if args.labels:
        return {"targets": f"pixel labels ({args.labels[0]})"}
    return {"targets": f"pseudo-masks ({args.pseudo}) from {args.box_source} boxes", "dataset": "MSRS train"}


def _train(args) -> int:
    from sage_ros.classes import class_table
    from sage_ros.model.seg_head import DEFAULT_NUM_CLASSES, save_head
    from sage_ros.training.segmentation.train import calibrate_background, train_head, training_info

    table = class_table(args.classes)
    num_classes = len(table.names) if args.labels else DEFAULT_NUM_CLASSES
    samples = _samples(args, "train", num_classes)
    if not samples:
        return 1
    config = _config(args, args.input, num_classes)
    head, losses = train_head(samples, config)
    info = training_info(config, samples, losses) | _data_info(args)
    if not args.no_calibrate:
        info |= calibrate_background(head, samples, args.input, None if args.labels else args.box_source)
    path = save_head(head, args.out, table, info=info)
    print(f"head written to {path} (loss {losses[0]:.3f} -> {sum(losses[-20:]) / len(losses[-20:]):.3f})")
    return 0


def _eval(args) -> int:
    from sage_ros.model.seg_head import HeadWeightsError, default_head_path, load_head, read_head_metadata
    from sage_ros.training.segmentation.experiment import evaluate_head as run_eval
    from sage_ros.training.segmentation.experiment import markdown_table

    if args.pseudo_oracle:
        return _oracle(args)
    head_path = args.head or default_head_path()
    try:
        head = load_head(head_path)
        kind = args.input or read_head_metadata(head_path).get("trained_on", "fused")
    except HeadWeightsError as exc:
        log.error("%s", exc)
        return 1
    samples = _samples(args, args.split, head.num_classes)
    if not samples:
        return 1
    results = {kind: run_eval(head, samples, kind)}
    for source in ("fusion", "infrared", "visible"):
        print(f"### {head_path.name} on {kind} images, scored against {source} boxes\n")
        print(markdown_table(results, source) + "\n")
    return 0


def _oracle(args) -> int:
    from sage_ros.model.seg_head import DEFAULT_NUM_CLASSES
    from sage_ros.training.segmentation.experiment import markdown_table, score_pseudo_masks

    samples = _samples(args, args.split, DEFAULT_NUM_CLASSES)
    if not samples:
        return 1
    results = {f"pseudo-masks ({args.pseudo}, {args.box_source} boxes)": score_pseudo_masks(samples)}
    for source in ("fusion", "infrared", "visible"):
        print(f"### Pseudo-masks as predictions, scored against {source} boxes\n")
        print(markdown_table(results, source) + "\n")
    return 0


def _experiment(args) -> int:
    from sage_ros.model.seg_head import DEFAULT_NUM_CLASSES
    from sage_ros.training.segmentation.experiment import run_experiment

    train_samples = _samples(args, "train", DEFAULT_NUM_CLASSES)
    eval_samples = _samples(args, "eval", DEFAULT_NUM_CLASSES)
    if not train_samples or not eval_samples:
        return 1
    run_experiment(train_samples, eval_samples, _config(args, "fused", DEFAULT_NUM_CLASSES), args.out_dir,
                   extra_info=_data_info(args), box_source=None if args.labels else args.box_source)
    print((args.out_dir / "experiment.md").read_text())
    return 0


def _export(args) -> int:
    from sage_ros.model.checkpoint import WeightsError
    from sage_ros.model.seg_head import HeadWeightsError, export_student_with_head
    from sage_ros.paths import models_dir

    checkpoint = _checkpoint(args)
    if checkpoint is None:
        return 1
    out = args.out or models_dir() / "sage_student_seg.onnx"
    try:
        path = export_student_with_head(checkpoint, args.head, out)
    except (WeightsError, HeadWeightsError) as exc:
        log.error("%s", exc)
        return 1
    meta = json.loads(path.with_suffix(".json").read_text())
    print(f"exported {path} with outputs {meta['outputs']} and {len(meta['classes'])} classes")
    return 0
