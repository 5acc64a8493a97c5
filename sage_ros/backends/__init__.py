"""Inference backends behind one interface, and the choice of the best one on this machine.

Backends are imported lazily: a robot that has only onnxruntime never imports torch, OpenVINO
or TensorRT.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass, field
from pathlib import Path

from sage_ros.backends.base import (
    BackendError,
    BackendOutput,
    BackendUnavailable,
    FusionBackend,
)

__all__ = [
    "BACKEND_NAMES",
    "BackendConfig",
    "BackendError",
    "BackendOutput",
    "BackendUnavailable",
    "FusionBackend",
    "PRECISIONS",
    "auto_order",
    "create_backend",
    "resolve_precision",
    "tensorrt_problem",
]

log = logging.getLogger(__name__)

BACKEND_NAMES = ("auto", "tensorrt", "openvino", "onnxruntime", "torch")


@dataclass
class BackendConfig:
    """What a backend needs; each backend reads the fields that concern it."""

    name: str = "auto"
    onnx_path: Path | None = None  # exported model (onnxruntime, openvino, tensorrt)
    weights_path: Path | None = None  # PyTorch checkpoint (torch backend)
    # auto (chosen per backend from the CPU's features, see cpu_features.choose_precision) | fp32 |
    # bf16 (openvino) | fp16 | int8 (tensorrt, torch cuda fp16). An explicit value always wins.
    precision: str = "fp32"
    threads: int | None = None  # CPU threads; None lets the runtime decide
    device: str = "cpu"  # torch device
    engine_path: Path | None = None  # tensorrt: an explicit engine file
    engine_dir: Path | None = None  # tensorrt: engine cache folder
    extra: dict = field(default_factory=dict)


def _module_present(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _cuda_device_present() -> bool:
    # Cheap check without importing torch or pycuda: the NVIDIA driver exposes device nodes.
    return Path("/dev/nvidia0").exists() or Path("/dev/nvhost-ctrl-gpu").exists()


def tensorrt_problem() -> str | None:
    """Why TensorRT cannot run here (missing module or device), or None when it can be tried."""
    missing = [
        what
        for what, present in (
            ("the tensorrt module is not importable", _module_present("tensorrt")),
            ("the pycuda module is not importable", _module_present("pycuda")),
            ("no CUDA device (/dev/nvidia0 or a Jetson GPU)", _cuda_device_present()),
        )
        if not present
    ]
    return "; ".join(missing) or None


def auto_order() -> list[str]:
    """Backends `auto` tries, best first, with the reason others are skipped logged."""
    order: list[str] = []
    problem = tensorrt_problem()
    if problem is None:
        order.append("tensorrt")
    else:
        log.info("backend auto: TensorRT skipped: %s (docs/jetson.md says how to install it)", problem)
    if _module_present("openvino"):
        order.append("openvino")
    if _module_present("onnxruntime"):
        order.append("onnxruntime")
    if _module_present("torch"):
        order.append("torch")
    return order


PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")


def resolve_precision(name: str, precision: str) -> tuple[str, str | None]:
    """(precision, note) backend `name` runs: `auto` is decided by the CPU's features; note says why."""
    if precision != "auto":
        return precision, None
    from sage_ros.cpu_features import choose_precision, read_cpu_features

    features = read_cpu_features()
    chosen, why = choose_precision(name, features)
    note = f"precision auto -> {chosen} on {name}: {why} [CPU: {features.summary()}]"
    log.info("%s", note)
    return chosen, note


def _create_one(name: str, config: BackendConfig) -> FusionBackend:
    note = None
    if config.precision == "auto":
        from dataclasses import replace

        precision, note = resolve_precision(name, config.precision)
        config = replace(config, precision=precision)
    backend = _create_named(name, config)
    backend.precision_note = note
    return backend


def _create_named(name: str, config: BackendConfig) -> FusionBackend:
    if name == "onnxruntime":
        from sage_ros.backends.onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(_need_onnx(config), threads=config.threads)
    if name == "openvino":
        from sage_ros.backends.openvino_backend import OpenVinoBackend

        precision = config.precision if config.precision in ("fp32", "bf16") else "fp32"
        return OpenVinoBackend(_need_onnx(config), precision=precision, threads=config.threads)
    if name == "torch":
        from sage_ros.backends.torch_backend import TorchBackend

        return TorchBackend(config)
    if name == "tensorrt":
        from sage_ros.backends.tensorrt_backend import TensorRtBackend

        return TensorRtBackend(config)
    raise BackendError(f"unknown backend {name!r}; choose one of {', '.join(BACKEND_NAMES)}")


def _need_onnx(config: BackendConfig) -> Path:
    if config.onnx_path is None:
        raise BackendError("this backend needs an ONNX model: run `sage-ros export` or pass --model")
    path = Path(config.onnx_path)
    if not path.is_file():
        raise BackendError(f"ONNX model {path} does not exist: run `sage-ros export` first")
    return path


def create_backend(config: BackendConfig) -> FusionBackend:
    """Create the named backend, or for `auto` the first one that starts on this machine."""
    if config.name != "auto":
        return _create_one(config.name, config)
    errors = []
    for name in auto_order():
        if name != "torch" and config.onnx_path is None:
            errors.append(f"{name}: no ONNX model given")
            continue
        if name == "torch" and config.weights_path is None:
            errors.append("torch: no weights given")
            continue
        try:
            backend = _create_one(name, config)
        except Exception as exc:  # noqa: BLE001 - a runtime failing to start in any way means: next one
            # BackendError carries our own message; anything else (a TypeError from a pybind11 factory,
            # a pycuda or OpenVINO error type) gets its type named so the log says what happened.
            why = str(exc) if isinstance(exc, BackendError) else f"{type(exc).__module__}.{type(exc).__name__}: {exc}"
            log.warning("backend auto: %s failed to start (%s); trying the next one", name, why)
            errors.append(f"{name}: {why}")
            continue
        log.info("backend auto: using %s", backend.description)
        return backend
    raise BackendUnavailable("no backend could start: " + "; ".join(errors or ["none installed"]))
