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
        description="Export the student to ONNX with a JSON metadata sidecar (PyTorch's exporter when torch is "
        "installed, else the torch-free builder: same graph).",
    )
    parser.add_argument("--weights", type=Path, default=None, help=f"checkpoint (default {default_checkpoint()})")
    parser.add_argument("--out", type=Path, default=None, help=f"ONNX file (default {default_onnx()})")
    parser.add_argument(
        "--head", type=Path, default=None,
        help="segmentation head (.npz) to export with the student (default: the head shipped with sage_ros)",
    )
    parser.add_argument("--no-head", action="store_true", help="fusion only: one output, no class ids")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sage_ros.model.checkpoint import WeightsError
    from sage_ros.model.model_files import DEFAULT_HEAD, export_checkpoint

    weights = args.weights or default_checkpoint()
    out = args.out or default_onnx()
    try:
        head = None if args.no_head else (args.head or DEFAULT_HEAD)
        path = export_checkpoint(Path(weights), Path(out), head)
    except (WeightsError, RuntimeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"exported {path} (metadata {path.with_suffix('.json')})")
    return 0
