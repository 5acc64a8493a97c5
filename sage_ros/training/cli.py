"""`sage-ros train student ACTION`: the SAM-teacher distillation of a new SAGE student.

Actions: `fit` trains a teacher and a student, `masks` builds the SAM mask cache, `export` writes the ONNX
the node loads, `tiny-sam` writes a random tiny SAM for smoke runs. Multi-GPU: `torchrun --nproc_per_node N
-m sage_ros train student fit --config ...`. Only argparse at import time: `sage-ros --help` must not
import torch.
"""

from __future__ import annotations

import argparse
import logging
import sys

log = logging.getLogger("sage_ros.training")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The actions fit / masks / export / tiny-sam on `parser`."""
    sub = parser.add_subparsers(dest="train_command", metavar="ACTION")

    fit = sub.add_parser("fit", help="train a teacher and a student (bi-level distillation)")
    fit.add_argument("--config", help="YAML config (see config/train_*.yaml); defaults if omitted")
    fit.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                     help="override one config value, e.g. --set train.batch_size=2 (repeatable)")
    fit.add_argument("--steps", type=int, help="stop after this many iterations (train.max_steps)")
    fit.add_argument("--device", help="auto | cpu | cuda | cuda:N (train.device)")
    fit.add_argument("--out", help="output folder for checkpoints, logs and the ONNX (output.dir)")
    fit.add_argument("--resume", nargs="?", const="auto", default=None,
                     help="resume from a checkpoint file, or with no value from OUT/checkpoint_last.pt")
    fit.add_argument("--no-export", action="store_true", help="skip the ONNX export at the end")
    fit.set_defaults(train_func=_fit)

    masks = sub.add_parser("masks", help="build the SAM mask cache (top-K masks by area per image)")
    masks.add_argument("--config", required=True, help="YAML config: data.* and sam.* are used")
    masks.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    masks.add_argument("--device", default="auto", help="auto | cpu | cuda")
    masks.add_argument("--no-progress", action="store_true", help="no progress bar")
    masks.set_defaults(train_func=_masks)

    export = sub.add_parser("export", help="export the student of a training checkpoint to ONNX + metadata")
    export.add_argument("checkpoint", help="checkpoint_last.pt written by `fit`")
    export.add_argument("--out", required=True, help="ONNX path to write (the .json sidecar goes beside it)")
    export.set_defaults(train_func=_export)

    tiny = sub.add_parser("tiny-sam", help="write a tiny random SAM checkpoint (tests and smoke runs only)")
    tiny.add_argument("out", help="checkpoint path to write")
    tiny.add_argument("--img-size", type=int, default=64, help="encoder input size (multiple of 8)")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.set_defaults(train_func=_tiny_sam)


def _config(args: argparse.Namespace):
    from sage_ros.training.config import load_config

    overrides = list(args.overrides)
    if getattr(args, "steps", None) is not None:
        overrides.append(f"train.max_steps={args.steps}")
    if getattr(args, "device", None) is not None and args.train_command == "fit":
        overrides.append(f"train.device={args.device}")
    if getattr(args, "out", None) is not None and args.train_command == "fit":
        overrides.append(f"output.dir={args.out}")
    return load_config(args.config, overrides)


def _fit(args: argparse.Namespace) -> int:
    from sage_ros.training.trainer import Trainer, teardown_distributed

    cfg = _config(args)
    finished = False
    try:
        trainer = Trainer(cfg)
        result = trainer.fit(resume=args.resume, export=False if args.no_export else None)
        if trainer.env.is_main:
            log.info("done: %d steps; checkpoint %s; model %s", result.steps, result.checkpoint, result.onnx)
        finished = True
    finally:
        teardown_distributed(barrier=finished)
    return 0


def _masks(args: argparse.Namespace) -> int:
    from sage_ros.training.datasets import records_for
    from sage_ros.training.loop import resolve_device
    from sage_ros.training.sam import build_cache_for_config

    cfg = _config(args)
    records = records_for(cfg.data.layout, cfg.data.root, cfg.data.split)
    if cfg.data.limit:
        records = records[: int(cfg.data.limit)]
    report = build_cache_for_config(cfg, records, str(resolve_device(args.device)), not args.no_progress)
    log.info("mask cache %s: %d written, %d already there, %d with no mask kept", cfg.data.mask_cache,
             report.written, report.skipped, report.empty)
    return 0


def _export(args: argparse.Namespace) -> int:
    import torch

    from sage_ros.networks.checkpoint import load_student
    from sage_ros.training.config import config_from_dict
    from sage_ros.training.export import export_trained_student

    state = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
    cfg = config_from_dict(state.get("config", {}))
    student = load_student(args.checkpoint)
    path = export_trained_student(student, args.out, cfg, int(state.get("step", 0)))
    log.info("exported %s (+ %s)", path, path.with_suffix(".json").name)
    return 0


def _tiny_sam(args: argparse.Namespace) -> int:
    from sage_ros.training.sam import save_tiny_sam

    path = save_tiny_sam(args.out, img_size=args.img_size, seed=args.seed)
    log.info("wrote a random tiny SAM (no semantics; for tests and smoke runs) to %s", path)
    return 0


def run(args: argparse.Namespace) -> int:
    """Dispatch one training action; known failures become one clear message and exit code 2."""
    func = getattr(args, "train_func", None)
    if func is None:
        print("usage: sage-ros train student {fit,masks,export,tiny-sam} ... (see --help)", file=sys.stderr)
        return 2
    from sage_ros.networks.checkpoint import WeightsError
    from sage_ros.training.config import ConfigError
    from sage_ros.training.datasets import DatasetError
    from sage_ros.training.loop import TrainingError
    from sage_ros.training.sam import SamCheckpointError

    try:
        return int(func(args) or 0)
    except (ConfigError, DatasetError, SamCheckpointError, TrainingError, WeightsError, FileNotFoundError,
            ValueError) as exc:
        print(f"sage-ros train student {args.train_command}: error: {exc}", file=sys.stderr)
        return 2

