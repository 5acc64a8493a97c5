"""`sage-ros demo`: the released weights on the six sample pairs, end to end, on the best local backend."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from sage_ros import install_hint
from sage_ros.backends import BackendError
from sage_ros.cli._common import add_pipeline_arguments, pipeline_settings
from sage_ros.cli._folder_fusion import read_image, side_by_side, write_rgb
from sage_ros.model.classes import overlay
from sage_ros.model.weights import CHECKPOINT, FetchError, fetch, sample_pairs
from sage_ros.paths import MIRROR_ENV, default_onnx
from sage_ros.pipeline import PipelineError, build_pipeline


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="fetch the released model and fuse the six sample pairs (or run them through the node)",
        epilog="exit status: 0 every sample fused (and, with --live, every pair came back from the node); "
        "1 a download, model or node problem (said on stderr)",
        description="Fetches (or mirrors) the released weights and samples, fuses them, writes the fused "
        "images and a side-by-side sheet (IR | visible | fused | class overlay), prints per-image time.",
    )
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default demo_out)")
    parser.add_argument("--mirror", type=Path, default=None, help=f"local folder with the files (env {MIRROR_ENV})")
    parser.add_argument(
        "--live", action="store_true",
        help="also publish the pairs as live ROS 2 topics through the fusion node and save what it published",
    )
    add_pipeline_arguments(parser)
    # The demo reproduces upstream's own fused images (compared below): the released student in exact fp32
    # unless asked otherwise.
    parser.set_defaults(precision="fp32", model="sage")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    print("released weights and sample pairs (sha256-pinned):", flush=True)

    def progress(item, source: str = "") -> None:
        # Only the checkpoint line in full; the 18 sample images are summarised.
        if item.local == CHECKPOINT.local:
            where = source if source.startswith("already") else f"from {source}"
            print(f"  {item.local}: {where}; sha256 {item.sha256[:16]}... verified", flush=True)

    try:
        official = fetch(mirror=args.mirror, progress=progress)
    except FetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"  6 sample pairs + upstream results: sha256 verified, in {official}", flush=True)
    if args.detector:
        from sage_ros.cli.weights import fetch_detector_files

        fetch_detector_files()  # the masks' object detector, as `weights fetch` gets it (once)
    if args.weights is None:
        args.weights = official / CHECKPOINT.local
    _say_model_build(args)
    try:
        pipeline = build_pipeline(pipeline_settings(args))
    except (BackendError, PipelineError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    classes = pipeline.segmenter.class_table if pipeline.segmenter else None
    out = Path(args.out)
    rows = []
    print(f"fusing {len(sample_pairs(official))} sample pairs")
    for ir_path, vis_path in sample_pairs(official):
        ir, vis = read_image(ir_path), read_image(vis_path)
        result = pipeline.fuse(ir, vis)
        write_rgb(out / "fused" / ir_path.name, result.fused_rgb)
        shown = None
        if classes is not None and result.class_ids is not None:
            shown = overlay(result.fused_rgb, result.class_ids, classes, alpha=0.5)
            write_rgb(out / "overlay" / ir_path.name, shown)
        rows.append(side_by_side(ir, vis, result.fused_rgb, extra_rgb=shown))
        h, w = vis.shape[:2]
        check = _against_reference(official, ir_path.name, result.fused_rgb)
        print(f"  {ir_path.name}  {w}x{h}  {result.inference_ms:7.1f} ms{check}")
    sheet = out / "sheet.png"
    cv2.imwrite(str(sheet), np.vstack(rows))
    print(f"fused with {pipeline.description}")
    pipeline.close()
    columns = "IR | visible | fused" + (" | class overlay" if classes is not None else "")
    print(f"fused images: {out / 'fused'}\nside-by-side sheet ({columns}): {sheet}")
    if args.live:
        return _run_live(official, out, args)
    return 0


def _against_reference(official: Path, name: str, fused_rgb: np.ndarray) -> str:
    """'  max |diff| N vs upstream' when upstream's own fused image of this pair is in the cache."""
    ref = cv2.imread(str(official / "reference" / name), cv2.IMREAD_COLOR)
    if ref is None or ref.shape[:2] != fused_rgb.shape[:2]:
        return ""
    diff = int(np.abs(ref[..., ::-1].astype(np.int16) - fused_rgb.astype(np.int16)).max())
    return f"  max |diff| {diff} grey level{'s' if diff != 1 else ''} vs upstream's image"


def _say_model_build(args: argparse.Namespace) -> None:
    """Tell the user when the ONNX model is about to be built (a few seconds, once) and how."""
    from sage_ros.model.model_files import onnx_is_current
    from sage_ros.pipeline.builder import resolve_model

    if args.backend == "torch" or resolve_model(str(args.model), args.backend, args.weights)[0] != "sage":
        return
    model = default_onnx()
    if not onnx_is_current(model, Path(args.weights)):
        print(f"building the ONNX model {model} from the checkpoint (torch-free, once)...", flush=True)
    else:
        print(f"ONNX model {model}: current (built from this checkpoint)", flush=True)


def _run_live(official: Path, out: Path, args: argparse.Namespace) -> int:
    try:
        from sage_ros.cli._live_demo import run_live_demo
    except ImportError as exc:
        print(f"live mode needs rclpy ({install_hint('ros')}, or source a ROS 2 installation): {exc}",
              file=sys.stderr)
        return 1
    from sage_ros.model.model_files import ensure_onnx

    pairs = sample_pairs(official)
    print(f"publishing {len(pairs)} pairs as live topics through the sage_fusion node (real DDS)...")
    stats = run_live_demo(
        [p[0] for p in pairs], [p[1] for p in pairs],
        ensure_onnx(None, args.weights), out / "live",
        backend=args.backend if args.backend != "torch" else "auto",
        # The node fuses as the offline run above did (same precision and resolution rule).
        precision=args.precision,
        resolution=res if isinstance(res := args.resolution, str) else f"{res[1]}x{res[0]}",
    )
    print(f"  pairs sent {stats['pairs_sent']}, fused images received {stats['fused_received']}, "
          f"end-to-end latency p50 {stats['latency_p50_ms']:.0f} ms, max {stats['latency_max_ms']:.0f} ms")
    print(f"  what the node published: {out / 'live'}  (node log: {stats['node_log']})")
    return 0 if stats["fused_received"] == stats["pairs_sent"] else 1
