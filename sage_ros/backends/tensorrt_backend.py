"""TensorRT backend: a cached engine built from the exported ONNX, run through pycuda.

tensorrt and pycuda are imported inside the constructor, so importing this module is free and a
machine without them gets `BackendUnavailable` with what to install.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from sage_ros import install_hint
from sage_ros.backends.base import (
    FUSED_OUTPUT,
    BackendError,
    BackendOutput,
    BackendUnavailable,
    FusionBackend,
    squeeze_outputs,
)
from sage_ros.paths import cache_dir
from sage_ros.tensorrt.builder import build_engine, version_problem
from sage_ros.tensorrt.engine_cache import PRECISIONS, EngineCache, EngineCacheError, EngineSpec
from sage_ros.tensorrt.runtime import CudaContext, TrtRunner, device_index, profile_problem
from sage_ros.tensorrt.shapes import DEFAULT_PROFILE, ShapeError, ShapeProfile

log = logging.getLogger(__name__)


def default_engine_dir() -> Path:
    """Engines live beside the exported models in the user cache unless engine_dir is given."""
    return cache_dir() / "engines"


def import_tensorrt():
    """(tensorrt, pycuda.driver), or BackendUnavailable saying which one is missing or unsupported and why."""
    missing = []
    try:
        import tensorrt as trt
    except (ImportError, OSError) as exc:  # OSError: libnvinfer.so present but unloadable
        missing.append(f"tensorrt ({exc})")
        trt = None
    try:
        import pycuda.driver as cuda
    except (ImportError, OSError) as exc:  # e.g. libcuda.so.1 missing on a machine without the driver
        missing.append(f"pycuda ({exc})")
        cuda = None
    if missing:
        raise BackendUnavailable(
            "the tensorrt backend needs TensorRT's Python bindings and pycuda, missing: " + "; ".join(missing)
            + ". On a Jetson they come with JetPack (python3-libnvinfer) plus `pip install pycuda`; on a "
            f"desktop `{install_hint('tensorrt')}` (needs the CUDA toolkit to build pycuda). See docs/jetson.md"
        )
    problem = version_problem(trt.__version__)
    if problem:
        raise BackendUnavailable(problem)
    return trt, cuda


class TensorRtBackend(FusionBackend):
    name = "tensorrt"

    def __init__(self, config) -> None:  # BackendConfig; untyped to avoid an import cycle
        trt, _ = import_tensorrt()
        precision = config.precision
        if precision not in PRECISIONS:
            log.warning("tensorrt backend: precision %r not available, using fp32", precision)
            precision = "fp32"
        extra = dict(config.extra or {})
        try:  # extra["profile"]: {"min": [H, W], "opt": ..., "max": ...}
            profile = ShapeProfile.from_json(extra["profile"]) if extra.get("profile") else DEFAULT_PROFILE
        except ShapeError as exc:
            raise BackendError(f"tensorrt backend: bad engine profile: {exc}") from exc
        dla_core = extra.get("dla_core")
        onnx_path = Path(config.onnx_path) if config.onnx_path is not None else None
        if onnx_path is not None and not onnx_path.is_file() and config.engine_path is not None:
            # A robot given only an engine (the node always passes its default model path).
            log.info("tensorrt backend: %s absent, using engine %s as given", onnx_path, config.engine_path)
            onnx_path = None
        if onnx_path is None and config.engine_path is None:
            raise BackendError("the tensorrt backend needs an ONNX model (onnx_path) or an engine (engine_path)")
        try:
            if onnx_path is not None:
                spec = EngineSpec.from_onnx(onnx_path, precision, profile, dla_core)
            else:
                stem = Path(config.engine_path).stem.split("-")[0] or "model"
                spec = EngineSpec(stem, None, None, precision, profile, dla_core)
        except EngineCacheError as exc:
            raise BackendError(str(exc)) from exc

        try:
            self._cuda_ctx = CudaContext(device_index(config.device))
        except Exception as exc:  # pycuda._driver.Error subclasses (not builtins) without a driver or device
            raise BackendUnavailable(f"tensorrt backend: no usable CUDA device ({_why(exc)})") from exc
        # From here on the CUDA context is ours: any failure must release it before leaving. TensorRT's
        # factories raise TypeError ("pybind11::init(): factory function returned nullptr") when the
        # device is unusable, pycuda raises pycuda._driver.Error subclasses: neither is a RuntimeError.
        try:
            machine = self._cuda_ctx.machine_info(trt.__version__)
            logger = trt.Logger(trt.Logger.WARNING)
            with self._cuda_ctx.current():
                runtime = trt.Runtime(logger)
                cache = EngineCache(
                    config.engine_dir or default_engine_dir(),
                    machine,
                    build_fn=lambda s: build_engine(s, logger=logger),
                    deserialize_fn=runtime.deserialize_cuda_engine,
                )
                result = cache.load_or_build(spec, engine_path=config.engine_path)
            self._runner = TrtRunner(result.engine, self._cuda_ctx)
        except Exception as exc:  # noqa: BLE001 - see above: every start failure releases the context
            self._release_context()
            if isinstance(exc, EngineCacheError):
                raise BackendError(f"tensorrt backend: {exc}") from exc
            raise BackendUnavailable(f"tensorrt backend: TensorRT could not start ({_why(exc)})") from exc
        self._runtime = runtime  # the engine must not outlive its runtime
        shapes = result.sidecar.get("shapes")
        self._engine_profile = ShapeProfile.from_json(shapes) if shapes else None
        if FUSED_OUTPUT not in self._runner.outputs:
            self.close()
            raise BackendError(f"engine {result.path} has no {FUSED_OUTPUT!r} output ({self._runner.outputs})")
        self.engine_path = result.path  # for diagnostics: which cached engine runs
        self.engine_built = result.built  # True when this start had to build it
        self._precision = result.sidecar.get("precision", precision)
        self._machine = machine

    @property
    def description(self) -> str:
        return (
            f"tensorrt {self._machine.tensorrt_version} {self.engine_path.name} ({self._machine.gpu_name}, "
            f"{self._precision})"
        )

    def _infer(self, vis_y: np.ndarray, ir: np.ndarray) -> BackendOutput:
        problem = profile_problem(vis_y.shape[-2:], self._engine_profile)
        if problem:
            raise BackendError(problem)
        try:
            out = self._runner.run({"vis_y": vis_y, "ir": ir})
        except Exception as exc:  # CUDA errors come as pycuda types; the caller keeps running
            raise BackendError(f"tensorrt inference failed: {exc}") from exc
        return squeeze_outputs(out[FUSED_OUTPUT])

    def _release_context(self) -> None:
        ctx = getattr(self, "_cuda_ctx", None)
        self._cuda_ctx = None
        if ctx is not None:
            try:
                ctx.close()
            except Exception as exc:  # noqa: BLE001 - already failing: report, never mask the first error
                log.warning("tensorrt backend: releasing the CUDA context failed: %s", _why(exc))

    def close(self) -> None:
        runner = getattr(self, "_runner", None)
        if runner is not None:
            runner.close()
            self._runner = None
        self._release_context()


def _why(exc: BaseException) -> str:
    """'TypeError: ...' with the module of non-builtin types (pycuda._driver.LogicError: ...)."""
    kind = type(exc)
    name = kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
    return f"{name}: {exc}"
