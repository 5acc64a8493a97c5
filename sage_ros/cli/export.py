"""`sage-ros export`: checkpoint -> ONNX (BatchNorm folded, dynamic height/width, opset 17)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sage_ros.paths import default_checkpoint, default_onnx


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a student checkpoint to ONNX for the runtime backends",
        description="Export the student to ONNX with a JSON metadata sidecar (the torch-free builder; no PyTorch "
        "needed).",
    )
    parser.add_argument("--weights", type=Path, default=None, help=f"checkpoint (default {default_checkpoint()})")
    parser.add_argument("--out", type=Path, default=None, help=f"ONNX file (default {default_onnx()})")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sage_ros.model.model_files import export_checkpoint

    weights = args.weights or default_checkpoint()
    out = args.out or default_onnx()
    try:
        path = export_checkpoint(Path(weights), Path(out))
    except (RuntimeError, OSError, ValueError) as exc:  # CheckpointError is a RuntimeError
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"exported {path} (metadata {path.with_suffix('.json')})")
    return 0
