"""Build a TensorRT engine from the exported student ONNX, on TensorRT 8.6, 10.x and later.

The API moved between versions: 8.x needs the EXPLICIT_BATCH network flag (ignored from 10.0);
10.x still has the FP16/INT8 builder flags (deprecated from 10.12, "weak typing"); 11.x removed them,
so FP16 there means a strongly typed network built from an ONNX whose tensors are float16, and INT8
means Q/DQ nodes in the ONNX. `plan_build` makes those decisions from the names the installed
TensorRT exposes (a pure function, tested without TensorRT); `build_engine` carries them out.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from sage_ros.tensorrt.engine_cache import PRECISIONS, EngineCacheError, EngineSpec

log = logging.getLogger(__name__)

REQUIRED_INPUTS = ("vis_y", "ir")
HEARTBEAT_S = 30.0  # a Jetson build takes minutes: say it is alive this often


class BuildError(EngineCacheError):
    """The engine cannot be built with these options on this TensorRT."""


def parse_trt_version(version: str) -> tuple[int, int, int]:
    """'10.3.0.26' -> (10, 3, 0); '8.6.2' -> (8, 6, 2)."""
    parts = [int(p) for p in re.findall(r"\d+", str(version))[:3]]
    if not parts:
        raise ValueError(f"not a TensorRT version: {version!r}")
    return tuple(parts + [0] * (3 - len(parts)))  # type: ignore[return-value]


@dataclass(frozen=True)
class BuildOptions:
    """Build settings beyond the EngineSpec (which holds precision, profile and DLA core)."""

    workspace_mb: int = 1024
    dla_core: int | None = None
    calib_dir: Path | None = None  # INT8: a folder of real pairs (see calibrator.find_pairs)
    calib_cache: Path | None = None  # INT8: calibration cache file, reused when present
    calib_count: int = 64
    calib_hw: tuple[int, int] | None = None  # INT8: calibration size; default the profile's opt


@dataclass(frozen=True)
class BuildPlan:
    """What to set on TensorRT objects, by member name, for one precision on one version."""

    network_flags: tuple[str, ...]  # NetworkDefinitionCreationFlag members
    builder_flags: tuple[str, ...]  # BuilderFlag members to set
    convert_onnx_fp16: bool  # strongly typed FP16: feed a float16 copy of the ONNX
    use_calibrator: bool  # implicit INT8 quantisation with the entropy calibrator
    notes: tuple[str, ...] = ()
    clear_flags: tuple[str, ...] = ()  # BuilderFlag members on by default to switch off


def plan_build(
    version: str,
    precision: str,
    builder_flags: set[str] | frozenset[str],
    network_flags: set[str] | frozenset[str],
    dla_core: int | None = None,
    onnx_has_qdq: bool = False,
) -> BuildPlan:
    """Decide flags and route for `precision` given the installed TensorRT's flag names.

    Feature names rather than version numbers decide, because point releases removed flags; the
    version only decides EXPLICIT_BATCH (required before 10, deprecated and ignored from 10).
    """
    if precision not in PRECISIONS:
        raise BuildError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    major = parse_trt_version(version)[0]
    net: list[str] = []
    flags: list[str] = []
    notes: list[str] = []
    if major < 10:
        if "EXPLICIT_BATCH" not in network_flags:
            raise BuildError(f"TensorRT {version} has no EXPLICIT_BATCH flag: TensorRT 8.5 or newer is needed")
        net.append("EXPLICIT_BATCH")
    weak_fp16 = "FP16" in builder_flags
    typed = "STRONGLY_TYPED" in network_flags
    convert = False
    calibrate = False
    if precision == "fp16":
        if weak_fp16:
            flags.append("FP16")
        elif typed:
            net.append("STRONGLY_TYPED")
            convert = True
            notes.append("no FP16 builder flag on this TensorRT: building a strongly typed float16 network")
        else:
            raise BuildError(f"TensorRT {version} offers neither the FP16 flag nor strongly typed networks")
    elif precision == "int8":
        if onnx_has_qdq:
            # Explicit quantisation: the scales are in the graph, no calibrator.
            if typed:
                net.append("STRONGLY_TYPED")
            elif "INT8" in builder_flags:
                flags.append("INT8")
            notes.append("the ONNX has Q/DQ nodes: explicit INT8 quantisation, no calibration")
        elif "INT8" in builder_flags:
            flags.append("INT8")
            # Layers without an INT8 kernel then fall back to FP16 instead of FP32.
            if weak_fp16:
                flags.append("FP16")
            calibrate = True
        else:
            raise BuildError(
                f"TensorRT {version} has no INT8 builder flag (implicit quantisation was removed): INT8 "
                "needs an ONNX with QuantizeLinear/DequantizeLinear nodes (e.g. from NVIDIA ModelOpt); "
                "use --precision fp16 instead"
            )
    if dla_core is not None:
        if precision == "fp32":
            raise BuildError("the DLA runs FP16 or INT8 only: use --precision fp16 or int8 with --dla-core")
        if "GPU_FALLBACK" in builder_flags:
            flags.append("GPU_FALLBACK")  # Resize/Tanh variants the DLA lacks run on the GPU
    # TensorRT enables TF32 on Ampere and newer by default; "fp32" here means full fp32 so that the
    # engine reproduces the reference (use fp16 for speed).
    clear = ("TF32",) if precision == "fp32" and "TF32" in builder_flags else ()
    return BuildPlan(tuple(net), tuple(flags), convert, calibrate, tuple(notes), clear)


def _flag_names(enum_type) -> set[str]:
    return set(getattr(enum_type, "__members__", {}))


class _Heartbeat:
    """Logs elapsed time every HEARTBEAT_S while a build runs (TensorRT is silent for minutes)."""

    def __init__(self, what: str, every: float = HEARTBEAT_S) -> None:
        self._what = what
        self._every = every
        self._stop = threading.Event()
        self._start = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="trt-build-heartbeat", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            log.info("%s: still building, %.0f s elapsed", self._what, time.monotonic() - self._start)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)


def build_engine(spec: EngineSpec, options: BuildOptions, logger=None) -> bytes:
    """Parse spec.onnx_path, configure and build; returns the serialised plan.

    Needs a current CUDA context when INT8 calibration runs (the calibrator copies batches to the
    device): the callers (backend, CLI) hold one around this call.
    """
    import tensorrt as trt

    if spec.onnx_path is None:
        raise BuildError("no ONNX model to build from")
    from sage_ros.tensorrt.onnx_checks import onnx_has_qdq

    logger = logger or trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    plan = plan_build(
        trt.__version__,
        spec.precision,
        _flag_names(trt.BuilderFlag),
        _flag_names(trt.NetworkDefinitionCreationFlag),
        dla_core=spec.dla_core,
        onnx_has_qdq=spec.precision == "int8" and onnx_has_qdq(spec.onnx_path),
    )
    for note in plan.notes:
        log.info("build: %s", note)
    creation = 0
    for name in plan.network_flags:
        creation |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
    network = builder.create_network(creation)
    parser = trt.OnnxParser(network, logger)
    if plan.convert_onnx_fp16:
        from sage_ros.tensorrt.onnx_fp16 import fp16_onnx_bytes

        model_bytes = fp16_onnx_bytes(spec.onnx_path)
    else:
        model_bytes = Path(spec.onnx_path).read_bytes()
    if not parser.parse(model_bytes):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise BuildError(f"TensorRT could not parse {spec.onnx_path}: " + " | ".join(errors))
    inputs = [network.get_input(i).name for i in range(network.num_inputs)]
    missing = [name for name in REQUIRED_INPUTS if name not in inputs]
    if missing:
        raise BuildError(f"{spec.onnx_path} lacks inputs {missing} (has {inputs}): not a sage_ros export")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_mb) << 20)
    for name in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    for name in plan.clear_flags:
        config.clear_flag(getattr(trt.BuilderFlag, name))
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in spec.profile.input_shapes().items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)

    calibrator = None
    if plan.use_calibrator:
        calibrator = _attach_calibrator(trt, builder, config, spec, options)
    if spec.dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(spec.dla_core)

    what = f"{Path(spec.onnx_path).name} ({spec.precision}, TensorRT {trt.__version__})"
    log.info("build: starting %s, profile min %s opt %s max %s", what, spec.profile.min, spec.profile.opt,
             spec.profile.max)
    start = time.monotonic()
    with _Heartbeat(what):
        serialized = builder.build_serialized_network(network, config)
    del calibrator  # held until here so its device buffers outlive the build; freed now
    if serialized is None:
        raise BuildError(f"TensorRT failed to build {what}; its log above says why")
    log.info("build: %s done in %.1f s", what, time.monotonic() - start)
    return bytes(serialized)


def _attach_calibrator(trt, builder, config, spec: EngineSpec, options: BuildOptions):
    from sage_ros.tensorrt.calibrator import (
        calibration_cache_path,
        iter_calibration_batches,
        make_entropy_calibrator,
        read_cache,
    )

    hw = options.calib_hw or spec.profile.opt
    cache = options.calib_cache or calibration_cache_path(Path(spec.onnx_path).parent, spec, hw)
    if options.calib_dir is None and read_cache(cache) is None:
        raise BuildError(
            f"INT8 needs calibration data: pass --calib DIR (a folder of real IR/visible pairs) or an "
            f"existing calibration cache (looked for {cache})"
        )
    batches = (
        iter_calibration_batches(options.calib_dir, hw, options.calib_count) if options.calib_dir else iter(())
    )
    # Calibration runs at one size: a profile fixed at that size.
    calib_profile = builder.create_optimization_profile()
    for name in REQUIRED_INPUTS:
        shape = (1, 1, *hw)
        calib_profile.set_shape(name, shape, shape, shape)
    config.set_calibration_profile(calib_profile)
    calibrator = make_entropy_calibrator(batches, cache, hw)
    config.int8_calibrator = calibrator
    log.info("build: INT8 calibration at %dx%d, cache %s", hw[0], hw[1], cache)
    return calibrator
