"""Options shared by the subcommands that run the model."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from sage_ros.backends import BACKEND_NAMES, BackendConfig, FusionBackend, create_backend
from sage_ros.paths import default_checkpoint, default_onnx

log = logging.getLogger(__name__)


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model and backend")
    group.add_argument(
        "--backend", choices=BACKEND_NAMES, default="auto",
        help="inference backend (default: auto = best available: tensorrt > openvino > onnxruntime > torch)",
    )
    group.add_argument(
        "--weights", type=Path, default=None,
        help=f"student checkpoint (.pt) (default: {default_checkpoint()})",
    )
    group.add_argument(
        "--model", type=Path, default=None,
        help=f"exported ONNX model, or a variant name: sage (the released student, exported from --weights when "
        f"missing: {default_onnx()}) or fast (the shipped distilled student, 18%% of the MACs; no torch needed)",
    )
    group.add_argument(
        "--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16", "int8"],
        help="auto (default): chosen from the CPU's features and logged (bf16 on OpenVINO with AVX-512 BF16/AMX, "
        "else fp32); bf16: OpenVINO on CPUs with AMX/AVX512-BF16; int8: QDQ model on CPU backends, calibrated "
        "engine on TensorRT; fp16: TensorRT, torch on CUDA",
    )
    group.add_argument(
        "--resolution", type=_resolution, default="thermal",
        help="fusion resolution: thermal (default; about the thermal image's pixel count, RGB detail added back "
        "at the RGB size), rgb (the visible image's size), or WIDTHxHEIGHT",
    )
    group.add_argument(
        "--scale-adapted", action=argparse.BooleanOptionalAction, default=True,
        help="below the RGB size, run the shipped scale-adapted student (the released one fine-tuned to fuse there "
        "as it does at full size; same cost; default on); --no-scale-adapted: the released student at every size",
    )
    group.add_argument(
        "--refine", action="store_true",
        help="with a thermal/WxH resolution below the RGB size: the shipped full-resolution refiner after the "
        "detail layer (closer to full-resolution fusion, a few percent more time; docs/speed.md)",
    )
    group.add_argument(
        "--calib", type=Path, default=None,
        help="folder of real pairs (Ir/ + Vis/) for int8 calibration (default: the sample pairs)",
    )
    group.add_argument("--threads", type=int, default=None, help="CPU threads for the backend")
    group.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    group.add_argument("--engine-dir", type=Path, default=None, help="TensorRT engine cache folder")


def _resolution(text: str) -> str | tuple[int, int]:
    from sage_ros.pipeline import parse_resolution

    try:
        return parse_resolution(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def backend_from_args(args: argparse.Namespace, config: BackendConfig | None = None) -> FusionBackend:
    """Create the backend the options ask for (or `config`, already made from them), exporting the ONNX
    model first if needed."""
    backend = create_backend(config or backend_config_from_args(args))
    log.info("backend: %s", backend.description)
    return backend


def backend_config_from_args(args: argparse.Namespace) -> BackendConfig:
    """The BackendConfig the options ask for, exporting the ONNX model first if needed."""
    from sage_ros.model.model_files import ensure_onnx
    from sage_ros.model.model_variants import ensure_fast_onnx, fast_weights, variant_of

    variant = variant_of(args.model)
    weights = args.weights or default_checkpoint()
    onnx_path = None if variant else args.model
    if variant == "fast":
        # The shipped distilled student: its graph needs no torch, its .npz weights serve the torch backend.
        weights = args.weights or fast_weights()
        if args.backend != "torch":
            onnx_path = ensure_fast_onnx()
    elif args.backend != "torch":
        if onnx_path is None or not Path(onnx_path).is_file():
            onnx_path = ensure_onnx(onnx_path, weights)
    if args.precision == "int8" and args.backend in ("onnxruntime", "openvino"):
        # CPU int8 runs a QDQ copy of the model; TensorRT calibrates int8 itself from the fp32 graph.
        from sage_ros.model.model_files import ensure_int8

        onnx_path = ensure_int8(onnx_path, getattr(args, "calib", None))
    return BackendConfig(
        name=args.backend,
        onnx_path=onnx_path,
        weights_path=weights if Path(weights).is_file() else None,
        precision=args.precision,
        threads=args.threads,
        device=args.device,
        engine_dir=args.engine_dir,
    )


def reduced_from_args(args: argparse.Namespace, config: BackendConfig):
    """The scale-adapted student (`pipeline.ReducedScaleModel`) for fusion below the RGB size, or None.

    config: the main model's BackendConfig (`backend_config_from_args`). None with `--resolution rgb`,
    `--no-scale-adapted`, or a model other than the released student.
    """
    from sage_ros.pipeline import reduced_scale_model

    if getattr(args, "resolution", "rgb") == "rgb":
        return None
    reduced, why = reduced_scale_model(config, args.scale_adapted, threads=args.threads or 0)
    log.info("%s", why)
    return reduced


def refiner_from_args(args: argparse.Namespace, backend):
    """The full-resolution refiner when `--refine` was given, else None (sage_ros/model/refiner.py)."""
    if not getattr(args, "refine", False):
        return None
    from sage_ros.model.refiner import refiner_for_backend

    return refiner_for_backend(backend, threads=args.threads or 0)
