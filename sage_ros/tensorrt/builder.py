"""Build a TensorRT engine (8.6 or 10.x) from the exported student ONNX.

8.x needs the EXPLICIT_BATCH network flag (deprecated and ignored from 10.0). INT8 is explicit
quantisation only: the ONNX carries the scales in Q/DQ nodes, so no calibrator runs (TensorRT's
implicit calibration is deprecated from 10.1). `plan_build` is pure and tested without TensorRT.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from sage_ros.tensorrt.engine_cache import EngineCacheError, EngineSpec

log = logging.getLogger(__name__)

REQUIRED_INPUTS = ("vis_y", "ir")
HEARTBEAT_S = 30.0  # a Jetson build takes minutes: say it is alive this often
SUPPORTED = ((8, 6), (11, 0))  # [first, past-the-end): the name-based I/O API (8.5+) and the FP16/INT8 flags (<11)


class BuildError(EngineCacheError):
    """The engine cannot be built with these options on this TensorRT."""


def parse_trt_version(version: str) -> tuple[int, int, int]:
    """'10.3.0.26' -> (10, 3, 0); '8.6.2' -> (8, 6, 2)."""
    parts = [int(p) for p in re.findall(r"\d+", str(version))[:3]]
    if not parts:
        raise ValueError(f"not a TensorRT version: {version!r}")
    return tuple(parts + [0] * (3 - len(parts)))  # type: ignore[return-value]


def version_problem(version: str) -> str | None:
    """Why this TensorRT cannot be used (None: it can)."""
    if SUPPORTED[0] <= parse_trt_version(version)[:2] < SUPPORTED[1]:
        return None
    return f"TensorRT {version} is not supported: sage_ros runs TensorRT 8.6 to 10.x (docs/jetson.md)"


@dataclass(frozen=True)
class BuildPlan:
    """What to set on TensorRT objects, by member name, for one precision on one version."""

    network_flags: tuple[str, ...]  # NetworkDefinitionCreationFlag members
    builder_flags: tuple[str, ...]  # BuilderFlag members to set
    clear_flags: tuple[str, ...] = ()  # BuilderFlag members on by default to switch off


def plan_build(version: str, precision: str, dla_core: int | None = None, onnx_has_qdq: bool = False) -> BuildPlan:
    """Flags for `precision` on TensorRT `version` (8.6 .. 10.x)."""
    if precision == "int8" and not onnx_has_qdq:
        raise BuildError(
            "INT8 engines are built from an ONNX with symmetric int8 QuantizeLinear/DequantizeLinear nodes "
            "(e.g. from NVIDIA ModelOpt); this one has none: use --precision fp16"
        )
    flags = {"fp32": [], "fp16": ["FP16"], "int8": ["INT8"]}[precision]
    if dla_core is not None:
        if precision == "fp32":
            raise BuildError("the DLA runs FP16 or INT8 only: use --precision fp16 or int8 with --dla-core")
        flags.append("GPU_FALLBACK")  # Resize/Tanh variants the DLA lacks run on the GPU
    network = ("EXPLICIT_BATCH",) if parse_trt_version(version)[0] < 10 else ()
    # TensorRT enables TF32 on Ampere and newer by default; "fp32" here means full fp32 so that the
    # engine reproduces the reference (use fp16 for speed).
    return BuildPlan(network, tuple(flags), ("TF32",) if precision == "fp32" else ())


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


def build_engine(spec: EngineSpec, workspace_mb: int = 1024, logger=None) -> bytes:
    """Parse spec.onnx_path, configure and build; returns the serialised plan."""
    import tensorrt as trt

    from sage_ros.tensorrt.onnx_checks import onnx_has_qdq

    qdq = spec.precision == "int8" and onnx_has_qdq(spec.onnx_path)
    plan = plan_build(trt.__version__, spec.precision, spec.dla_core, onnx_has_qdq=qdq)
    logger = logger or trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    creation = 0
    for name in plan.network_flags:
        creation |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
    network = builder.create_network(creation)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(spec.onnx_path).read_bytes()):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise BuildError(f"TensorRT could not parse {spec.onnx_path}: " + " | ".join(errors))
    inputs = [network.get_input(i).name for i in range(network.num_inputs)]
    missing = [name for name in REQUIRED_INPUTS if name not in inputs]
    if missing:
        raise BuildError(f"{spec.onnx_path} lacks inputs {missing} (has {inputs}): not a sage_ros export")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    for name in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    for name in plan.clear_flags:
        config.clear_flag(getattr(trt.BuilderFlag, name))
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in spec.profile.input_shapes().items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    if spec.dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(spec.dla_core)

    what = f"{Path(spec.onnx_path).name} ({spec.precision}, TensorRT {trt.__version__})"
    log.info("build: starting %s, profile min %s opt %s max %s", what, spec.profile.min, spec.profile.opt,
             spec.profile.max)
    start = time.monotonic()
    with _Heartbeat(what):
        serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BuildError(f"TensorRT failed to build {what}; its log above says why")
    log.info("build: %s done in %.1f s", what, time.monotonic() - start)
    return bytes(serialized)
