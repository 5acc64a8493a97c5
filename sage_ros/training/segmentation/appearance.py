"""The appearance cycle: fine-tune each member of a trained ensemble with camera-appearance augmentation.

The shipped ensemble (recipe.py's three cycles per seed) keys on how bright the IR is: on cameras other
than MSRS's it paints road, sky and walls as car. This cycle carries each member on from its weights for
`recipe.APPEARANCE_STEPS` steps with random thermal-camera tone curves on the IR, a milder independent
curve on the fused Y and wider zoom (train_net.NetTrainConfig's appearance fields; docs/segmentation.md,
"Other cameras"), then calibrates each member's and the ensemble's logit biases on the TRAIN split, as the
recipe does. The shipped network does not go through it (docs/segmentation.md, "Other cameras": in 400
steps it cut the M3FD spill but cost MSRS 0.09 mean F1); the experiment, from a trained ensemble:

    python -m sage_ros.training.segmentation.appearance --base BASE.npz --out X.npz
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from sage_ros.model.classes import class_table
from sage_ros.networks.seg_net import SegEnsemble, SegNet, count_macs, load_net, read_metadata, save_net
from sage_ros.paths import sha256_of
from sage_ros.training.segmentation import recipe
from sage_ros.training.segmentation.net_data import LowFrame
from sage_ros.training.segmentation.train_net import NetTrainConfig, calibrate_background, config_json, train_net

log = logging.getLogger(__name__)

FULL_HW = (480, 640)
_SHARED = Path(__file__).resolve().parents[3].parent / "shared" / "datasets"  # as `sage-ros train seg`
# A member's own bias calibration after the cycle: the background grid alone (the ensemble's calibration,
# afterwards, runs the full grids of calibrate_background).
MEMBER_BACKGROUND_GRID = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5)


def appearance_config(**overrides) -> NetTrainConfig:
    """The appearance cycle's training configuration (recipe.py), with `overrides`."""
    base = NetTrainConfig(
        steps=recipe.APPEARANCE_STEPS, lr=recipe.APPEARANCE_LR, warmup=recipe.APPEARANCE_WARMUP,
        gap_lines=recipe.FINETUNE_GAP_LINES, zoom=recipe.APPEARANCE_ZOOM, ir_tone=recipe.APPEARANCE_IR_TONE,
        ir_gamma=recipe.APPEARANCE_IR_GAMMA, ir_equalize=recipe.APPEARANCE_IR_EQUALIZE,
        ir_degrade=recipe.APPEARANCE_IR_DEGRADE, fused_tone=recipe.APPEARANCE_FUSED_TONE,
    )
    return replace(base, **overrides)


def split_members(base: str | Path, work_dir: Path, classes: list[dict],
                  keep: Sequence[int] | None = None) -> list[Path]:
    """The members of the ensemble at `base` (those numbered in `keep`, default all) as standalone networks
    in `work_dir` (what --init takes)."""
    net = load_net(base)
    members = list(net.members) if isinstance(net, SegEnsemble) else [net]
    paths = []
    for i, member in enumerate(members):
        if keep is not None and i not in keep:
            continue
        path = work_dir / f"base_m{i}.npz"
        state = {k: v.detach().cpu().numpy() for k, v in member.state_dict().items()}
        if path.is_file():
            # Kept when it holds these weights: a zip's timestamps change its sha256, which resuming checks.
            with np.load(path) as old:
                if set(old.files) == set(state) and all(np.array_equal(old[k], v) for k, v in state.items()):
                    paths.append(path)
                    continue
        save_net(member, path, classes, {"input_kinds": list(member.inputs), "base": str(base), "member": i})
        paths.append(path)
    return paths


def finetune_member(init: Path, config: NetTrainConfig, frames: Sequence[LowFrame], calib) -> tuple[SegNet, dict]:
    """One member through the appearance cycle from `init`, its background bias calibrated on `calib`
    (the TRAIN split: SplitData)."""
    start = time.perf_counter()
    config = replace(config, init=str(init))
    net, losses = train_net(frames, config)
    seconds = time.perf_counter() - start
    calibration = calibrate_background(net, calib.frames, calib.boxes, FULL_HW, grid=MEMBER_BACKGROUND_GRID,
                                       class_grid=(0.0,))
    tail = max(len(losses) // 10, 1)
    return net, {"steps": config.steps, "lr": config.lr, "seed": config.seed, "init_sha256": sha256_of(init),
                 "train_seconds": round(seconds, 1), "seconds_per_step": round(seconds / max(config.steps, 1), 3),
                 "final_loss": float(np.mean(losses[-tail:])) if losses else None,
                 "class_biases": calibration["class_biases"],
                 "train_mean_f1": calibration["calibrated_train_mean_f1"]}


def finetune_ensemble(
    base: str | Path, config: NetTrainConfig, frames: Sequence[LowFrame], calib, work_dir: Path,
    classes: list[dict] | None = None, keep: Sequence[int] | None = None,
) -> tuple[SegEnsemble, dict]:
    """The members of `base` (numbered in `keep`, default all) through the appearance cycle (member i with
    seed i; a member already in `work_dir` from the same start, configuration and seed is reused), then the
    ensemble calibrated again on the TRAIN split. Returns the ensemble and its sidecar information."""
    classes = classes or class_table("msrs").to_json()
    work_dir.mkdir(parents=True, exist_ok=True)
    starts = split_members(base, work_dir, classes, keep)
    members, summaries = [], []
    for init in starts:
        i = int(init.stem.removeprefix("base_m"))
        member_config = replace(config, seed=i)
        out = work_dir / f"appearance_m{i}.npz"
        meta = read_metadata(out) if out.is_file() else {}
        cycle = meta.get("appearance_cycle") or {}
        if cycle.get("init_sha256") == sha256_of(init) and meta.get("train_config") == config_json(
                replace(member_config, init=str(init))):
            log.info("member %d: using %s (this cycle, this start)", i, out)
            net = load_net(out)
        else:
            net, cycle = finetune_member(init, member_config, frames, calib)
            save_net(net, out, classes, {"input_kinds": list(net.inputs), "appearance_cycle": cycle,
                                         "train_config": config_json(replace(member_config, init=str(init)))})
            log.info("member %d: %.0f s (%.2f s/step), train mean F1 %.3f", i, cycle["train_seconds"],
                     cycle["seconds_per_step"], cycle["train_mean_f1"])
        members.append(net)
        summaries.append({"member": i, "weights_sha256": sha256_of(out)} | cycle)
    ensemble = SegEnsemble(members)
    calibration = calibrate_background(ensemble, calib.frames, calib.boxes, FULL_HW)
    base_meta = read_metadata(Path(base))
    recipe_config = config_json(config)
    recipe_config.pop("seed")
    recipe_config["init"] = "the members of the base ensemble"
    info = {
        "input_kinds": list(config.inputs),
        "train_config": base_meta.get("train_config"),
        "ensemble": base_meta.get("ensemble"),
        "appearance_cycle": {"config": recipe_config, "base_weights_sha256": base_meta.get("weights_sha256")
                             or base_meta.get("sha256"), "base_members": [m["member"] for m in summaries],
                             "members": summaries},
        "train_frames": base_meta.get("train_frames"),
        "train_seconds": round(float(base_meta.get("train_seconds") or 0.0)
                               + sum(m["train_seconds"] for m in summaries), 1),
        "macs_640x480": count_macs(ensemble),
        "parameters": int(sum(p.numel() for p in ensemble.parameters())),
    } | calibration
    for key in ("box_source", "targets", "dataset"):
        if key in base_meta:
            info[key] = base_meta[key]
    return ensemble, info


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sage_ros.training.segmentation.appearance",
        description="fine-tune each member of a segmentation ensemble with camera-appearance augmentation "
        "(the appearance cycle of the shipped network)")
    parser.add_argument("--base", type=Path, required=True,
                        help="the ensemble before this cycle (.npz + .json; `sage-ros train seg --seed 0 1 2 3 4`)")
    parser.add_argument("--out", type=Path, required=True, help="weights X.npz (+ member files, .json, .onnx)")
    parser.add_argument("--msrs", type=Path, default=None, help="MSRS pairs with boxes/ and splits.csv")
    parser.add_argument("--thumbs", type=Path, default=None, help="128x128 MSRS train thumbnails; 'none' to skip")
    parser.add_argument("--checkpoint", type=Path, default=None, help="student checkpoint (default: cache)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="where the student's fused outputs are cached")
    parser.add_argument("--work-dir", type=Path, default=None, help="members (default: next to --out)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--members", type=int, nargs="+", default=list(recipe.APPEARANCE_MEMBERS),
                        help="which members of --base go through the cycle and into --out (numbered from 0)")
    parser.add_argument("--steps", type=int, default=recipe.APPEARANCE_STEPS)
    parser.add_argument("--lr", type=float, default=recipe.APPEARANCE_LR)
    add_appearance_arguments(parser)
    return parser


def add_appearance_arguments(parser: argparse.ArgumentParser) -> None:
    """The augmentation options (defaults: the appearance cycle's, recipe.py); `train seg` can take them
    too and pass args.zoom, args.ir_tone, args.ir_degrade and args.fused_tone to NetTrainConfig."""
    parser.add_argument("--zoom", type=float, nargs=2, default=list(recipe.APPEARANCE_ZOOM), metavar=("MIN", "MAX"))
    parser.add_argument("--ir-tone", type=float, default=recipe.APPEARANCE_IR_TONE,
                        help="share of samples whose IR gets another camera's tone curve")
    parser.add_argument("--ir-degrade", type=float, default=recipe.APPEARANCE_IR_DEGRADE,
                        help="share of samples whose IR gets the blur and noise of a lower-resolution core")
    parser.add_argument("--fused-tone", type=float, default=recipe.APPEARANCE_FUSED_TONE,
                        help="share of samples whose fused Y gets an independent milder tone curve")


def main(argv: Sequence[str] | None = None) -> int:
    from sage_ros.paths import default_checkpoint
    from sage_ros.training.segmentation.net_experiment import load_training_frames, save_trained

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args = build_parser().parse_args(argv)
    checkpoint = args.checkpoint or default_checkpoint()
    thumbs = args.thumbs or _SHARED / "msrs_train_128"
    thumbs = None if str(thumbs).lower() == "none" else thumbs
    train, frames = load_training_frames(args.msrs or _SHARED / "msrs", thumbs, checkpoint, "fusion",
                                         args.cache_dir, args.threads)
    config = appearance_config(steps=args.steps, lr=args.lr, zoom=tuple(args.zoom), ir_tone=args.ir_tone,
                               ir_degrade=args.ir_degrade, fused_tone=args.fused_tone, threads=args.threads)
    work_dir = args.work_dir or args.out.parent / (args.out.stem + "_appearance_work")
    classes = read_metadata(args.base).get("classes") or class_table("msrs").to_json()
    net, info = finetune_ensemble(args.base, config, frames, train, work_dir, classes, args.members)
    save_trained(net, info, args.out, classes=classes)
    count = len(getattr(net, "members", [net]))
    print(f"ensemble of {count} written to {args.out} (+ .onnx, .json); members in {work_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
