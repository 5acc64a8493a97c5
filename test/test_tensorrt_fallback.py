"""`backend: auto` when TensorRT is installed but cannot start: log why, release CUDA, fall back.

There is no GPU here, so the two failure modes seen on real machines are reproduced with TEST DOUBLES
of the absent hardware stack, injected into sys.modules: a `tensorrt` whose `Runtime` raises the
TypeError pybind11 raises when the C++ factory returns nullptr (no usable device), and a
`pycuda.driver` whose errors are `pycuda._driver.Error` subclasses (not builtins). The doubles only
stand in for the hardware; what is tested is the project's reaction: sage_ros.backends and the
tensorrt backend, the real exported student and the real fallback backend.
"""

from __future__ import annotations

import importlib.machinery
import logging
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import sage_ros.backends as backends
from sage_ros.backends import BackendConfig, BackendUnavailable, create_backend


def _module(name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, loader=None)  # find_spec() sees it
    return module


class FakeHardware:
    """Test double of tensorrt + pycuda on a machine whose GPU cannot be used; records context use."""

    def __init__(self, fail: str) -> None:
        self.fail = fail
        self.retained = 0
        self.detached = 0
        self.pushed = 0
        self.popped = 0
        self.modules = self._build()

    def _build(self) -> dict[str, types.ModuleType]:
        hw = self
        _driver = _module("pycuda._driver")

        class Error(Exception):  # pycuda's own hierarchy: not RuntimeError
            pass

        class LogicError(Error):
            pass

        class CudaRuntimeError(Error):
            pass

        CudaRuntimeError.__name__ = "RuntimeError"
        for cls in (Error, LogicError, CudaRuntimeError):
            cls.__module__, cls.__qualname__ = "pycuda._driver", cls.__name__
        _driver.Error, _driver.LogicError, _driver.RuntimeError = Error, LogicError, CudaRuntimeError

        class PrimaryContext:
            def push(self) -> None:
                hw.pushed += 1
                if hw.fail == "push":
                    raise CudaRuntimeError("cuCtxPushCurrent failed: unknown error")

            def detach(self) -> None:
                hw.detached += 1

        class Device:
            @staticmethod
            def count() -> int:
                return 1

            def __init__(self, index: int) -> None:
                self.index = index

            def name(self) -> str:
                return "test double GPU"

            def compute_capability(self) -> tuple[int, int]:
                return (8, 7)

            def retain_primary_context(self) -> PrimaryContext:
                hw.retained += 1
                return PrimaryContext()

        class Context:
            @staticmethod
            def pop() -> None:
                hw.popped += 1

        driver = _module("pycuda.driver")

        def init() -> None:
            if hw.fail == "init":
                raise LogicError("cuInit failed: no CUDA-capable device is detected")

        driver.init, driver.Device, driver.Context = init, Device, Context
        driver.Error, driver.LogicError = Error, LogicError
        pycuda = _module("pycuda")
        pycuda.driver, pycuda._driver = driver, _driver

        trt = _module("tensorrt")
        trt.__version__ = "11.4.0" if hw.fail == "trt11" else "10.3.0"

        class Logger:
            WARNING, INFO = 2, 3

            def __init__(self, level: int) -> None:
                self.level = level

        class Runtime:
            def __init__(self, logger: Logger) -> None:
                # What TensorRT's pybind11 binding raises when createInferRuntime returns nullptr.
                raise TypeError("pybind11::init(): factory function returned nullptr")

        trt.Logger, trt.Runtime = Logger, Runtime
        return {"tensorrt": trt, "pycuda": pycuda, "pycuda.driver": driver, "pycuda._driver": _driver}


@pytest.fixture
def hardware(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> FakeHardware:
    hw = FakeHardware(request.param)
    for name, module in hw.modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    # The device node check looks at /dev: the double says a GPU is there, as on the failing machines.
    monkeypatch.setattr(backends, "_cuda_device_present", lambda: True)
    return hw


@pytest.mark.parametrize(
    "hardware, why",
    [
        ("runtime", "TypeError: pybind11::init(): factory function returned nullptr"),
        ("push", "pycuda._driver.RuntimeError: cuCtxPushCurrent failed"),
        ("init", "pycuda._driver.LogicError: cuInit failed"),
        ("trt11", "TensorRT 11.4.0 is not supported: sage_ros runs TensorRT 8.6 to 10.x"),
    ],
    indirect=["hardware"],
    ids=["trt_runtime_typeerror", "pycuda_push_error", "pycuda_init_error", "unsupported_tensorrt"],
)
def test_auto_falls_back_when_tensorrt_cannot_start(hardware: FakeHardware, why: str, student_onnx: Path,
                                                     tmp_path: Path, caplog) -> None:
    assert backends.auto_order()[0] == "tensorrt"
    config = BackendConfig(name="auto", onnx_path=student_onnx, threads=1, engine_dir=tmp_path / "engines")
    with caplog.at_level(logging.INFO, logger="sage_ros.backends"):
        backend = create_backend(config)
    try:
        assert backend.name in ("openvino", "onnxruntime")
        lines = [r.getMessage() for r in caplog.records if "tensorrt failed to start" in r.getMessage()]
        assert len(lines) == 1 and why in lines[0], lines
        # The CUDA primary context retained for TensorRT was released again, pushes were popped.
        assert hardware.retained == hardware.detached
        assert hardware.pushed == hardware.popped or hardware.fail == "push"
        out = backend.infer(np.full((32, 48), 0.5, np.float32), np.full((32, 48), 0.25, np.float32))
        assert out.fused_y.shape == (32, 48) and np.isfinite(out.fused_y).all()
    finally:
        backend.close()
    if hardware.fail not in ("init", "trt11"):  # these stop before a context is retained
        assert hardware.retained == 1


@pytest.mark.parametrize("hardware", ["runtime"], indirect=True)
def test_explicit_tensorrt_says_why_and_releases_the_context(hardware: FakeHardware, student_onnx: Path,
                                                              tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailable, match="TensorRT could not start .*TypeError: pybind11"):
        create_backend(BackendConfig(name="tensorrt", onnx_path=student_onnx, engine_dir=tmp_path))
    assert hardware.retained == hardware.detached == 1
    assert hardware.pushed == hardware.popped == 1
