"""`sage-ros train`: offline training of new students (delegates to sage_ros.training)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    # sage_ros.training.cli imports only argparse at module level, so registering stays cheap.
    from sage_ros.training.cli import add_arguments, run

    parser = subparsers.add_parser(
        "train",
        help="train a SAGE student (SAM teacher, SPA, bi-level distillation) and export it",
        description="Offline training: `fit` trains, `masks` builds the SAM mask cache, `export` writes "
        "the ONNX the node loads, `tiny-sam` writes a random tiny SAM for smoke runs.",
    )
    add_arguments(parser)
    parser.set_defaults(func=run)
