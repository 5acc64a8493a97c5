"""The options every subcommand that runs the model shares, and their one translation into PipelineSettings."""

from __future__ import annotations

import argparse
from pathlib import Path

from sage_ros.backends import BACKEND_NAMES, PRECISIONS
from sage_ros.paths import default_checkpoint, default_onnx
from sage_ros.pipeline import PipelineSettings, parse_resolution
from sage_ros.pipeline.detection import DEFAULT_MIN_SCORE
from sage_ros.pipeline.segmentation import DEFAULT_MIN_CONFIDENCE, DEFAULT_MIN_OBJECT_CONFIDENCE, PEAK_FRACTION


def add_pipeline_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model and backend")
    group.add_argument(
        "--backend", choices=BACKEND_NAMES, default="auto",
        help="inference backend (default: auto = best available: tensorrt > openvino > onnxruntime > torch)",
    )
    group.add_argument(
        "--model", default="auto",
        help=f"auto (default: sage or fast, chosen from the machine and logged), sage (the released student, "
        f"exported from --weights when missing: {default_onnx()}), fast (the shipped distilled student, 18%% of "
        "the MACs), or an exported ONNX fusion model",
    )
    group.add_argument(
        "--weights", type=Path, default=None,
        help=f"student checkpoint (.pt) for --model sage and the torch backend (default: {default_checkpoint()})",
    )
    group.add_argument(
        "--precision", default="auto", choices=PRECISIONS,
        help="auto (default): chosen from the CPU's features and logged (bf16 on OpenVINO with AVX-512 BF16/AMX, "
        "else fp32); bf16: OpenVINO on CPUs with AMX/AVX512-BF16; int8: QDQ model on CPU backends, a symmetric "
        "Q/DQ model on TensorRT; fp16: TensorRT, torch on CUDA",
    )
    group.add_argument(
        "--resolution", type=_resolution, default="thermal",
        help="fusion resolution: thermal (default; about the thermal image's pixel count, RGB detail added back "
        "at the RGB size), rgb (the visible image's size), or WIDTHxHEIGHT",
    )
    group.add_argument(
        "--scale-adapted", action=argparse.BooleanOptionalAction, default=True,
        help="below the RGB size, run the shipped scale-adapted student in place of the released one (fine-tuned "
        "to fuse there as it does at full size; same cost; default on)",
    )
    group.add_argument(
        "--min-confidence", type=float, default=DEFAULT_MIN_CONFIDENCE,
        help=f"segmentation: a pixel whose most probable class is below this probability is background "
        f"(default {DEFAULT_MIN_CONFIDENCE}; 0 = never abstain)",
    )
    group.add_argument(
        "--min-object-confidence", type=float, default=DEFAULT_MIN_OBJECT_CONFIDENCE,
        help=f"segmentation: a region of one class whose most confident pixel is below this is background, and a "
        f"kept region loses its pixels below {PEAK_FRACTION:g} of that peak (default {DEFAULT_MIN_OBJECT_CONFIDENCE}; "
        "0 = off)",
    )
    group.add_argument(
        "--no-detector", dest="detector", action="store_false",
        help="segmentation: without the COCO object detector's boxes (the MSRS-trained network alone)",
    )
    group.add_argument(
        "--detector-min-score", type=_score, default=DEFAULT_MIN_SCORE,
        help=f"segmentation: the object detector's lowest kept box score, in (0, 1) (default {DEFAULT_MIN_SCORE}; "
        "lower finds more distant objects and paints more false ones)",
    )
    group.add_argument(
        "--calib", type=Path, default=None,
        help="folder of real pairs (Ir/ + Vis/) for int8 calibration (default: the sample pairs)",
    )
    group.add_argument("--threads", type=int, default=0, help="CPU threads per runtime (default: the runtime's)")
    group.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    group.add_argument("--engine-dir", type=Path, default=None, help="TensorRT engine cache folder")


def _score(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"{value:g} is not in (0, 1)")
    return value


def _resolution(text: str) -> str | tuple[int, int]:
    try:
        return parse_resolution(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def pipeline_settings(args: argparse.Namespace, segmentation: bool = True) -> PipelineSettings:
    """The PipelineSettings the shared options ask for (`build_pipeline` makes the pipeline)."""
    return PipelineSettings(
        model=str(args.model), weights=args.weights, backend=args.backend, precision=args.precision,
        threads=args.threads or 0, device=args.device, engine_dir=args.engine_dir, resolution=args.resolution,
        scale_adapted=args.scale_adapted, segmentation=segmentation, min_confidence=args.min_confidence,
        min_object_confidence=args.min_object_confidence, detector=args.detector,
        detector_min_score=args.detector_min_score,
        calib=args.calib,
    )
