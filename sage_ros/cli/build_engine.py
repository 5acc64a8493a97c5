"""`sage-ros build-engine`: exported ONNX -> cached TensorRT engine (+ JSON sidecar)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "build-engine",
        help="build (or verify the cache of) a TensorRT engine from an exported ONNX model",
        description=(
            "Check the ONNX graph for TensorRT, then build an engine named "
            "<model>-<onnx sha256[:12]>-trt<version>-sm<cc>-<precision>.engine with a JSON sidecar, "
            "or reuse the cached one when it matches this machine and model. Needs TensorRT + pycuda "
            "(docs/jetson.md); --check-only needs only the onnx package."
        ),
    )
    parser.add_argument("model", type=Path,
                        help="exported ONNX model (sage-ros export); a bare file name that is not in the "
                             "current folder is looked up in the models cache (~/.cache/sage_ros/models)")
    parser.add_argument("--precision", choices=["fp32", "fp16", "int8"], default="fp16",
                        help="engine precision (default fp16; int8 needs an ONNX with symmetric int8 Q/DQ nodes)")
    parser.add_argument("--min", dest="min_hw", default=None, metavar="HxW", help="smallest input size")
    parser.add_argument("--opt", dest="opt_hw", default=None, metavar="HxW",
                        help="size TensorRT tunes for (your camera's)")
    parser.add_argument("--max", dest="max_hw", default=None, metavar="HxW", help="largest input size")
    parser.add_argument("--engine-dir", type=Path, default=None,
                        help="engine cache folder (default: $SAGE_ROS_HOME/engines)")
    parser.add_argument("--engine", type=Path, default=None,
                        help="write/check this engine file instead of the cache name")
    parser.add_argument("--workspace-mb", type=int, default=1024, help="builder workspace (default 1024 MB)")
    parser.add_argument("--dla-core", type=int, default=None,
                        help="Jetson Xavier/Orin: run on this DLA core (fp16/int8), GPU fallback on")
    parser.add_argument("--device", default="cuda:0", help="CUDA device (default cuda:0)")
    parser.add_argument("--force", action="store_true", help="rebuild even when the cached engine matches")
    parser.add_argument("--check-only", action="store_true",
                        help="only run the static ONNX checks (no TensorRT needed)")
    parser.add_argument("--skip-checks", action="store_true", help="build even if the static checks fail")
    parser.set_defaults(func=run)


def _static_checks(model: Path) -> tuple[bool, str]:
    """(passed, report text); passes with a note when the onnx package is not installed."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        return True, "static ONNX checks skipped: the onnx package is not installed (pip install onnx)"
    from sage_ros.tensorrt.onnx_checks import check_onnx_for_tensorrt

    try:
        report = check_onnx_for_tensorrt(model)
    except Exception as exc:  # a file that is not ONNX at all: onnx raises DecodeError and friends
        return False, f"ERROR: {model} could not be read as ONNX: {exc}"
    return report.ok, report.summary()


def resolve_model(model: Path) -> Path:
    """`model` as given when it exists; a bare name (`sage_student.onnx`, as the docs write it) otherwise
    resolves against the models cache, where `sage-ros export` and `weights fetch` put it."""
    if model.is_file() or model.parent != Path("."):
        return model
    from sage_ros.paths import models_dir

    cached = models_dir() / model.name
    if cached.is_file():
        log.info("using %s from the models cache", cached)
        print(f"model: {cached} (from the models cache)")
        return cached
    return model


def _looked_in(model: Path) -> str:
    if model.parent != Path("."):
        return str(model.parent)
    from sage_ros.paths import models_dir

    return f"the current folder and {models_dir()}"


def run(args: argparse.Namespace) -> int:
    from sage_ros.tensorrt.shapes import ShapeError, profile_from_args

    model = resolve_model(Path(args.model))
    if not model.is_file():
        print(f"error: ONNX model {args.model} does not exist (looked in {_looked_in(Path(args.model))}): run "
              "`sage-ros export` first, or give the path of the .onnx", file=sys.stderr)
        return 1
    try:
        profile = profile_from_args(args.min_hw, args.opt_hw, args.max_hw)
    except ShapeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.dla_core is not None and args.precision == "fp32":
        print("error: the DLA runs fp16 or int8 only: add --precision fp16 or int8", file=sys.stderr)
        return 2

    passed, text = _static_checks(model)
    print(f"ONNX checks for TensorRT ({model.name}):\n{text}")
    if not passed and not args.skip_checks:
        print("error: the ONNX model fails the TensorRT checks above (use --skip-checks to try anyway)",
              file=sys.stderr)
        return 1
    if args.check_only:
        return 0
    return _build(args, model, profile)


def _build(args: argparse.Namespace, model: Path, profile) -> int:
    from sage_ros.backends.base import BackendUnavailable
    from sage_ros.backends.tensorrt_backend import default_engine_dir, import_tensorrt
    from sage_ros.tensorrt.engine_cache import EngineCache, EngineCacheError, EngineSpec

    try:
        trt, _ = import_tensorrt()
    except BackendUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    from sage_ros.tensorrt.builder import build_engine
    from sage_ros.tensorrt.runtime import CudaContext, device_index

    try:
        ctx = CudaContext(device_index(args.device))
    except Exception as exc:
        print(f"error: no usable CUDA device: {exc}", file=sys.stderr)
        return 1
    try:
        machine = ctx.machine_info(trt.__version__)
        log.info("TensorRT %s on %s (sm%s)", machine.tensorrt_version, machine.gpu_name, machine.sm)
        spec = EngineSpec.from_onnx(model, args.precision, profile, args.dla_core)
        logger = trt.Logger(trt.Logger.INFO if getattr(args, "verbose", False) else trt.Logger.WARNING)
        with ctx.current():
            runtime = trt.Runtime(logger)
            cache = EngineCache(args.engine_dir or default_engine_dir(), machine,
                                build_fn=lambda s: build_engine(s, args.workspace_mb, logger),
                                deserialize_fn=runtime.deserialize_cuda_engine)
            result = cache.load_or_build(spec, engine_path=args.engine, force=args.force)
            result.engine = None  # release the engine while its runtime and context still exist
    except EngineCacheError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        ctx.close()
    state = "built" if result.built else "up to date"
    print(f"engine {state}: {result.path}")
    print(json.dumps(result.sidecar, indent=2, sort_keys=True))
    return 0
