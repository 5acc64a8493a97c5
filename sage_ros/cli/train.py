"""`sage-ros train TRAINER ...`: the one offline-training command.

    sage-ros train student fit|masks|export|tiny-sam   SAM-teacher distillation of a new SAGE student
    sage-ros train fast                                the released student distilled into the fast student
    sage-ros train scale                               the scale-adapted student (fusion below the RGB size)
    sage-ros train seg                                 the segmentation network (SegNet)

Each trainer owns its options and its run: `add_arguments(parser)` and `run(args)` in its module. They are
imported only when their verb is parsed, so `sage-ros --help` and `sage-ros train --help` import no torch.
Multi-GPU: `torchrun --nproc_per_node N -m sage_ros train student fit --config ...`.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence

from sage_ros import install_hint

# verb -> (help, module, its options function, its run function)
TRAINERS: dict[str, tuple[str, str, str, str]] = {
    "student": ("SAGE student by SAM-teacher distillation: fit, masks (SAM mask cache), export, tiny-sam",
                "sage_ros.training.cli", "add_arguments", "run"),
    "fast": ("distil the released student into the cheaper fast student (no SAM)",
             "sage_ros.training.distill_student", "add_arguments", "run"),
    "scale": ("adapt the released student to fusing below the RGB size (the scale-adapted student)",
              "sage_ros.training.scale_adapt", "add_arguments", "run"),
    "seg": ("train the segmentation network (fused + IR inputs, MSRS boxes or pixel labels)",
            "sage_ros.cli.seg", "add_train_arguments", "run_train"),
}


class _TrainerParser(argparse.ArgumentParser):
    """The parser of one trainer verb: its options are added from the trainer's module on first use."""

    def __init__(self, *args: object, trainer: tuple[str, str, str] | None = None, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self._trainer = trainer

    def _load(self) -> None:
        trainer, self._trainer = self._trainer, None
        if trainer is None:
            return
        module_name, add_arguments, run = trainer
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            missing = str(getattr(exc, "name", None) or exc).split(".")[0]
            self.exit(1, f"{self.prog}: needs the Python package '{missing}': {install_hint('training')}\n")
        getattr(module, add_arguments)(self)
        self.set_defaults(func=getattr(module, run))

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        self._load()
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        self._load()
        return super().format_help()


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="offline training: student (SAM teacher), fast, scale, seg",
        description="Offline training. Run `sage-ros train TRAINER --help` for the options of one trainer.",
    )
    trainers = parser.add_subparsers(dest="trainer", metavar="TRAINER", parser_class=_TrainerParser)
    for verb, (help_text, *trainer) in TRAINERS.items():
        trainers.add_parser(verb, help=help_text, description=help_text, trainer=tuple(trainer))
    parser.set_defaults(func=lambda _args: (parser.print_help(), 2)[1])
