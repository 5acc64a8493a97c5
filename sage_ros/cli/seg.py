"""`sage-ros seg eval`: score the segmentation network; its trainer, `sage-ros train seg`, is defined here too.

    sage-ros seg eval        component-vs-box precision/recall/F1 at IoU 0.5 of a folder of masks
                             (`sage-ros fuse --masks`) on the MSRS eval split or on any folder with YOLO,
                             COCO or VOC boxes (--boxes, --class-map), with the spill of mask pixels
                             outside boxes

`train seg` needs the `training` extra (PyTorch); `eval` needs only numpy and OpenCV.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from sage_ros.evaluation.boxes import LAYOUTS
from sage_ros.paths import default_checkpoint

log = logging.getLogger(__name__)

_SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"
_SHARED_MSRS = _SHARED / "msrs"
_SHARED_THUMBS = _SHARED / "msrs_train_128"
_BOX_SOURCES = ["fusion", "infrared", "visible"]


def _data_options(parser: argparse.ArgumentParser, training: bool = True) -> None:
    parser.add_argument("--msrs", type=Path, default=_SHARED_MSRS, help="MSRS pairs with boxes/ and splits.csv")
    parser.add_argument("--box-source", choices=_BOX_SOURCES, default="fusion",
                        help="human boxes to train on / score against (default: fusion, drawn on fused images)")
    if training:
        parser.add_argument("--checkpoint", type=Path, default=None, help="student checkpoint (default: cache)")
        parser.add_argument("--cache-dir", type=Path, default=None, help="where the student's fused outputs are cached")
        parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `sage-ros train seg`; the defaults are the shipped network's recipe
    (docs/model_card.md), from its single definition."""
    from sage_ros.training.segmentation import recipe

    _data_options(parser)
    parser.add_argument("--thumbs", type=Path, default=_SHARED_THUMBS,
                        help="128x128 MSRS train thumbnails with boxes (extra training frames); 'none' to skip")
    parser.add_argument("--steps", type=int, default=recipe.STEPS)
    parser.add_argument("--batch", type=int, default=recipe.BATCH)
    parser.add_argument("--lr", type=float, default=recipe.LR)
    parser.add_argument("--widths", type=int, nargs=4, default=list(recipe.WIDTHS), metavar="W")
    parser.add_argument("--separation", type=float, default=recipe.SEPARATION, metavar="PX",
                        help="background lines this wide (pixels at the network's 1/4 resolution) between touching "
                        "objects of one class, so that they come out as separate components (0: none)")
    parser.add_argument("--separation-weight", type=float, default=recipe.SEPARATION_WEIGHT,
                        help="loss weight of the separation-line pixels")
    parser.add_argument("--seed", type=int, nargs="+", default=[0],
                        help="random seed; several seeds train one network each and ship the average of their "
                        f"logits (the shipped network: --seed {' '.join(map(str, recipe.SHIPPED_SEEDS))})")
    parser.add_argument("--gap-lines", type=float, default=0.0,
                        help="background lines in gaps of at most this many pixels (1/4 resolution) between facing "
                        "boxes of one class, in the first cycle (the recipe adds them in its fine-tuning cycle)")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default=recipe.PRECISION,
                        help="training arithmetic: bf16 autocast is 1.5-2x faster on CPUs with AMX or AVX-512 BF16 "
                             "(weights and loss stay float32; the exported graph is float32)")
    parser.add_argument("--inputs", default="fused,infrared",
                        help="comma-separated input images: fused, visible, infrared (default fused,infrared)")
    parser.add_argument("--init", type=Path, default=None,
                        help="start from these weights (.npz, same inputs and widths): one more training cycle "
                        "(no automatic restart after it), e.g. a member_s<seed>.npz with the appearance options")
    appearance = parser.add_argument_group(
        "camera-appearance augmentation", "other thermal cameras' looks (docs/segmentation.md, 'Other cameras'); "
        "off in the shipped recipe; measured: --ir-tone 0.8 --fused-tone 0.5 --zoom 0.5 2")
    appearance.add_argument("--zoom", type=float, nargs=2, default=list(recipe.ZOOM), metavar=("MIN", "MAX"),
                            help="random zoom range")
    appearance.add_argument("--ir-tone", type=float, default=0.0,
                            help="share of samples whose IR gets another camera's tone curve")
    appearance.add_argument("--ir-gamma", type=float, nargs=2, default=list(recipe.IR_GAMMA), metavar=("MIN", "MAX"),
                            help="gamma range of those tone curves")
    appearance.add_argument("--ir-equalize", type=float, default=recipe.IR_EQUALIZE,
                            help="share of those tone curves with histogram equalisation")
    appearance.add_argument("--ir-degrade", type=float, default=0.0,
                            help="share of samples whose IR gets the blur and noise of a lower-resolution core")
    appearance.add_argument("--fused-tone", type=float, default=0.0,
                            help="share of samples whose fused Y gets an independent milder tone curve")
    parser.add_argument("--restart-steps", type=int, default=recipe.RESTART_STEPS,
                        help="after the first cycle, a warm restart of this many steps from its calibrated weights "
                        "(0: none; skipped with --init or --labels)")
    parser.add_argument("--restart-lr", type=float, default=recipe.RESTART_LR, help="peak learning rate of the restart")
    parser.add_argument("--finetune-steps", type=int, default=recipe.FINETUNE_STEPS,
                        help="after the restart, a fine-tuning cycle of this many steps from its calibrated weights, "
                        "with gap lines in the targets (0: none)")
    parser.add_argument("--finetune-lr", type=float, default=recipe.FINETUNE_LR,
                        help="peak learning rate of the fine-tuning cycle")
    parser.add_argument("--finetune-gap-lines", type=float, default=recipe.FINETUNE_GAP_LINES,
                        help="background lines in gaps of at most this many pixels at 1/4 resolution between facing "
                        "boxes of one class, in the fine-tuning cycle (0: none)")
    parser.add_argument("--labels", nargs=2, metavar=("LAYOUT", "ROOT"), default=None,
                        help="train from pixel labels instead of boxes: LAYOUT msrs (ROOT/train/{ir,vi,"
                        "Segmentation_labels}) or fmb (ROOT/train/{Infrared,Visible,Label})")
    parser.add_argument("--classes", choices=["msrs", "fmb"], default="msrs",
                        help="class table of the labels (default msrs: 0 background, 1 car, 2 person, 3 bike)")
    parser.add_argument("--out", type=Path, required=True,
                        help="weights X.npz; X.onnx (standalone seg graph) and X.json are written beside it")
    parser.add_argument("--work-dir", type=Path, default=None, help="resume checkpoints (default: next to --out)")


def register(subparsers) -> None:
    parser = subparsers.add_parser("seg", help="score segmentation masks or networks (training: `train seg`)")
    sub = parser.add_subparsers(dest="seg_command", metavar="SEG_COMMAND")

    evaluate = sub.add_parser(
        "eval", help="score masks on the MSRS eval split or on any labelled folder (components vs boxes, IoU 0.5)",
        epilog="Several datasets in one call: each --masks starts one; --boxes, --layout, --class-map, "
        "--class-names and --name after it belong to it. A --masks without --boxes is scored on MSRS "
        "(--msrs, --split, --box-source). Example: seg eval --masks out/msrs_masks --masks out/m3fd_masks "
        "--boxes m3fd/Annotation --class-map People=person Car=car Bus=car Truck=car Motorcycle=bike")
    _data_options(evaluate, training=False)
    evaluate.add_argument("--masks", type=Path, default=None, action=_DatasetOption, required=True,
                      help="folder of 8-bit class-id PNGs named like the pairs (from `sage-ros fuse --masks`); "
                      "repeat for several datasets")
    evaluate.add_argument("--boxes", type=Path, action=_DatasetOption, metavar="PATH",
                          help="human boxes of the --masks before it: a folder of YOLO NAME.txt (+ classes.txt), "
                          "a COCO instances .json or a folder of VOC NAME.xml")
    evaluate.add_argument("--layout", choices=["auto", *LAYOUTS], action=_DatasetOption,
                          help="layout of --boxes (default auto: .json is COCO, .xml files VOC, .txt files YOLO)")
    evaluate.add_argument("--class-map", nargs="+", metavar="THEIRS=OURS", action=_DatasetOption,
                          help="dataset class -> ours (person, car, bike), case-insensitive; other dataset classes "
                          "are left out and counted (default: person, car, bike, bicycle as named)")
    evaluate.add_argument("--class-names", nargs="+", metavar="NAME", action=_DatasetOption,
                          help="YOLO class names in id order, when the folder has no classes.txt")
    evaluate.add_argument("--name", action=_DatasetOption, help="the dataset's name in the report")
    evaluate.add_argument("--split", default="eval", help="split of splits.csv to score (default eval)")
    evaluate.add_argument("--min-area", type=int, default=6, help="components smaller than this are speckle")
    evaluate.add_argument("--json", type=Path, default=None, help="also write the scores as JSON")
    evaluate.set_defaults(func=_eval)

    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])


def _checkpoint(args) -> Path | None:
    path = args.checkpoint or default_checkpoint()
    if not Path(path).is_file():
        log.error("student checkpoint %s not found: run `sage-ros weights fetch` or pass --checkpoint", path)
        return None
    return Path(path)


def _config(args, inputs: tuple[str, ...]):
    from sage_ros.training.segmentation.train_net import NetTrainConfig

    return NetTrainConfig(inputs=inputs, steps=args.steps, batch=args.batch, lr=args.lr, widths=tuple(args.widths),
                          seed=args.seed[0], threads=args.threads, separation=args.separation,
                          separation_weight=args.separation_weight, precision=args.precision,
                          gap_lines=args.gap_lines, zoom=tuple(args.zoom), ir_tone=args.ir_tone,
                          ir_gamma=tuple(args.ir_gamma), ir_equalize=args.ir_equalize,
                          ir_degrade=args.ir_degrade, fused_tone=args.fused_tone)


def _inputs(text: str) -> tuple[str, ...]:
    from sage_ros.networks.seg_net import INPUT_NAMES

    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    bad = [k for k in kinds if k not in INPUT_NAMES]
    if not kinds or bad:
        raise ValueError(f"inputs must be among {list(INPUT_NAMES)}, got {text!r}")
    return kinds


def _training_data(args, num_classes: int):
    """(calibration split, training frames): MSRS boxes + thumbnails, or a pixel-labelled train split
    (--labels: MSRS or FMB layout, no thumbnails, nothing to calibrate against)."""
    from sage_ros.training.segmentation.data import SplitData, load_pixel_labels, load_training_frames

    checkpoint = _checkpoint(args)
    if checkpoint is None:
        return None
    thumbs = None if str(args.thumbs).lower() == "none" else args.thumbs
    try:
        if not args.labels:
            return load_training_frames(args.msrs, thumbs, checkpoint, args.box_source, args.cache_dir, args.threads)
        frames = load_pixel_labels(*args.labels, "train", checkpoint, num_classes, args.cache_dir, args.threads)
        return SplitData(frames, [[] for _ in frames]), frames
    except (ValueError, OSError) as exc:
        log.error("could not load the training data: %s", exc)
        return None


def run_train(args: argparse.Namespace) -> int:
    """`sage-ros train seg`."""
    from sage_ros.training.segmentation.train_recipe import (
        fit,
        fit_cycles,
        fit_ensemble,
        recipe_restarts,
        save_trained,
    )

    try:
        inputs = _inputs(args.inputs)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    seeds = list(dict.fromkeys(args.seed))
    if len(seeds) > 1 and (args.init or args.labels):
        log.error("several seeds (an ensemble) train the box recipe from scratch: not with --init or --labels")
        return 2
    from dataclasses import replace

    from sage_ros.model.classes import class_table

    table = class_table(args.classes)
    data = _training_data(args, len(table.names))
    if data is None:
        return 1
    train, frames = data
    config = replace(_config(args, inputs), num_classes=len(table.names) if args.labels else 4,
                     init=str(args.init) if args.init else None)
    work_dir = args.work_dir or args.out.parent / (args.out.stem + "_work")
    restarts = recipe_restarts(args.restart_steps, args.restart_lr, args.finetune_steps, args.finetune_lr,
                               args.finetune_gap_lines)
    if args.init or args.labels:
        net, info = fit(config, frames, train, work_dir)
    elif len(seeds) > 1:
        net, info = fit_ensemble(config, seeds, restarts, frames, train, work_dir, table.to_json())
    else:
        net, info = fit_cycles(config, restarts, frames, train, work_dir, table.to_json())
    if args.labels:
        info |= {"targets": f"pixel labels ({args.labels[0]})", "dataset": str(args.labels[1])}
    else:
        from sage_ros.training.segmentation.data import input_tone

        info |= {"box_source": args.box_source, "targets": "box pseudo-masks from human boxes",
                 "dataset": "MSRS train split (full resolution) + MSRS train thumbnails",
                 "input_tone": input_tone(args.msrs)}
    save_trained(net, info, args.out, classes=table.to_json())
    if len(seeds) > 1:
        print(f"ensemble of {len(seeds)} networks (seeds {seeds}) written to {args.out} (+ .onnx, .json beside "
              f"it); members in {work_dir}, {info['train_seconds']:.0f} s of training")
    else:
        print(f"network written to {args.out} (+ .onnx, .json beside it); "
              f"loss {info['first_loss']:.3f} -> {info['final_loss']:.3f}, {info['train_seconds']:.0f} s")
    return 0


class _DatasetOption(argparse.Action):
    """`--masks` starts a dataset; the dataset options after it (--boxes, --layout, ...) belong to it.

    argparse has no repeated option groups, so the datasets are collected in order into `datasets`
    (a list of dicts); `masks` keeps the last folder.
    """

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        datasets = getattr(namespace, "datasets", None)
        if datasets is None:
            datasets = []  # a fresh list per parse (a shared default would leak between parses)
            namespace.datasets = datasets
        if self.dest == "masks":
            datasets.append({"masks": values})
            namespace.masks = values
            return
        if not datasets:
            parser.error(f"{option_string} belongs to a dataset: give the --masks folder before it")
        if self.dest in datasets[-1]:
            parser.error(f"{option_string} given twice for the masks in {datasets[-1]['masks']}")
        datasets[-1][self.dest] = values


def _eval(args) -> int:
    from sage_ros.evaluation.components import f1_table

    datasets = getattr(args, "datasets", None) or []
    for dataset in datasets:
        extra = sorted(k for k in dataset if k not in ("masks", "boxes"))
        if extra and "boxes" not in dataset:
            log.error("--%s for the masks in %s: only with --boxes (MSRS masks use --msrs and --box-source)",
                      extra[0].replace("_", "-"), dataset["masks"])
            return 2
    labelled = [d for d in datasets if "boxes" in d]
    results = {}
    msrs_masks = [d["masks"] for d in datasets if "boxes" not in d]
    if msrs_masks and not (args.msrs / "splits.csv").is_file():
        log.error("%s has no splits.csv: pass --msrs with the MSRS pairs, boxes/ and splits.csv", args.msrs)
        return 1
    for masks in msrs_masks:
        name, scores = _eval_masks(args, masks)
        if scores is None:
            return 1
        print(f"### {name}: components vs {args.box_source} boxes at IoU 0.5, {args.split} split\n")
        print(f1_table({name: scores}))
        results[name] = scores
    for dataset in labelled:
        name, scores = _eval_labelled(dataset, args.min_area)
        if scores is None:
            return 1
        info = scores["dataset"]
        print(f"{chr(10) if results else ''}### {name}: components vs {info['layout']} boxes {info['boxes']} at "
              f"IoU 0.5\n")
        print(f1_table({name: scores}))
        print(f"\n{scores['all']['images']} masks scored; {info['unlabelled_masks']} masks without labels and "
              f"{info['labelled_without_mask']} labelled images without a mask not scored; boxes of classes "
              f"left out by the class map: {_counts(info['unmapped_boxes'])}"
              + (f"; skipped: {_counts(info['skipped_boxes'])}" if info["skipped_boxes"] else ""))
        results[name] = scores
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items()) or "none"


def _eval_labelled(dataset: dict, min_area: int) -> tuple[str, dict | None]:
    """One --masks/--boxes dataset in any box layout: F1 and spill over all its labelled masks."""
    from sage_ros.evaluation.boxes import BoxFileError, parse_class_map, read_boxes
    from sage_ros.evaluation.components import CLASS_NAMES, score_mask_folder

    name = dataset.get("name") or f"masks {dataset['masks']}"
    try:
        class_map = parse_class_map(dataset.get("class_map"))
        labels = read_boxes(dataset["boxes"], dataset.get("layout") or "auto", dataset.get("class_names"))
        folder = score_mask_folder(dataset["masks"], labels, class_map, min_area=min_area)
    except (BoxFileError, ValueError, OSError) as exc:
        log.error("%s: %s", name, exc)
        return name, None
    if folder.labelled_without_mask:
        log.warning("%s: %d labelled images have no mask in %s (e.g. %s)", name, len(folder.labelled_without_mask),
                    dataset["masks"], folder.labelled_without_mask[0])
    scores = folder.to_json()
    info = {key: scores.pop(key) for key in ("unmapped_boxes", "unlabelled_masks", "labelled_without_mask")}
    info |= {"masks": str(dataset["masks"]), "boxes": str(labels.source), "layout": labels.layout,
             "class_map": {k: CLASS_NAMES[v] for k, v in class_map.items()},
             "skipped_boxes": dict(labels.skipped)}
    # The light of a frame is known only for MSRS: one "all" row, beside the dataset's description.
    return name, {"all": scores, "dataset": info}


def _eval_masks(args, masks: Path):
    """Score PNG masks of MSRS pairs without torch: the published masks are what is scored."""
    import cv2

    from sage_ros.evaluation.boxes import box_dir, msrs_lights, read_yolo
    from sage_ros.evaluation.components import components_to_detections, f1_scores, spill_fractions

    names = msrs_lights(args.msrs, args.split)
    dets, gts, lights, spill = {}, {}, {}, {}
    missing = []
    for name, light in sorted(names.items()):
        mask = cv2.imread(str(masks / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        if mask is None or mask.ndim != 2:
            missing.append(name)
            continue
        h, w = mask.shape
        gts[name] = read_yolo(box_dir(args.msrs, args.box_source) / f"{name}.txt", w, h)
        dets[name] = components_to_detections(mask, None, (1, 2, 3), min_area=args.min_area)
        spill[name] = spill_fractions(mask, gts[name])
        lights[name] = light
    if missing:
        log.error("%d %s pairs have no readable single-channel mask (e.g. %s)", len(missing), args.split, missing[0])
        return "masks", None
    scores = {}
    for light in ("day", "night", "all"):
        chosen = [n for n in dets if light == "all" or lights[n] == light]
        if chosen:
            scores[light] = f1_scores([dets[n] for n in chosen], [gts[n] for n in chosen],
                                      frame_spill=[spill[n] for n in chosen]).to_json()
    return f"masks {masks}", scores
