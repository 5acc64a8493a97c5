"""Thin pycuda runtime for one TensorRT engine: context, stream, pinned buffers, async execution.

I/O goes by tensor name (`set_input_shape`, `set_tensor_address`, `execute_async_v3`), the API of
TensorRT 8.5 and later. Buffers (page-locked host + device) are allocated once per input size, so a
steady camera stream allocates nothing per frame on the device side.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import numpy as np

from sage_ros.tensorrt.engine_cache import MachineInfo
from sage_ros.tensorrt.shapes import ShapeProfile

log = logging.getLogger(__name__)


class RuntimeError_(RuntimeError):
    """A TensorRT/CUDA failure while running (named to avoid shadowing the builtin)."""


def profile_problem(hw: tuple[int, int], profile: ShapeProfile | None) -> str | None:
    """Why a frame of size hw cannot run on an engine built for `profile` (None: it can)."""
    if profile is None or profile.contains(hw):
        return None
    return (
        f"frame {hw[0]}x{hw[1]} is outside the engine's profile (min {profile.min[0]}x{profile.min[1]}, "
        f"max {profile.max[0]}x{profile.max[1]}): rebuild with `sage-ros build-engine --max HxW`"
    )


def device_index(device: str | None) -> int:
    """'cuda:1' -> 1; 'cuda', 'cpu', '' or None -> 0 (TensorRT always runs on a CUDA device)."""
    if device and ":" in device:
        try:
            return int(device.split(":", 1)[1])
        except ValueError:
            return 0
    return 0


class CudaContext:
    """The device's primary context, made current only around our calls.

    ROS executors call from varying threads: pushing/popping the primary context per call works from
    any thread, unlike pycuda.autoinit which binds a context to the importing thread.
    """

    def __init__(self, index: int = 0) -> None:
        import pycuda.driver as cuda

        cuda.init()
        if index >= cuda.Device.count():
            raise RuntimeError_(f"CUDA device {index} does not exist ({cuda.Device.count()} found)")
        self.cuda = cuda
        self.device = cuda.Device(index)
        self._ctx = self.device.retain_primary_context()
        self._closed = False

    @contextlib.contextmanager
    def current(self) -> Iterator[None]:
        self._ctx.push()
        try:
            yield
        finally:
            self.cuda.Context.pop()

    def machine_info(self, trt_version: str) -> MachineInfo:
        major, minor = self.device.compute_capability()
        return MachineInfo(trt_version, self.device.name(), f"{major}.{minor}")

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._ctx.detach()


class TrtRunner:
    """Runs one deserialised engine on float32 NCHW inputs; outputs come back as numpy arrays."""

    def __init__(self, engine, context: CudaContext) -> None:
        import tensorrt as trt

        self._cuda = context.cuda
        self._ctx = context
        self.engine = engine
        with context.current():
            self.exec_context = engine.create_execution_context()
            if self.exec_context is None:
                raise RuntimeError_("TensorRT could not create an execution context (out of GPU memory?)")
            self.stream = self._cuda.Stream()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}
        self.inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        self._key: tuple[int, ...] | None = None  # the input shapes the buffers are for
        self._host: dict[str, np.ndarray] = {}
        self._device: dict = {}

    def _allocate(self, key: tuple[int, ...], inputs: dict[str, np.ndarray]) -> None:
        """Set the input shapes, allocate buffers for them and point the context at them."""
        self._free()
        ctx = self.exec_context
        shapes = {}
        for name in self.inputs:
            shapes[name] = tuple(inputs[name].shape)
            if ctx.set_input_shape(name, shapes[name]) is False:
                raise RuntimeError_(f"TensorRT refused input shape {shapes[name]} for {name!r}")
        shapes.update({name: tuple(ctx.get_tensor_shape(name)) for name in self.outputs})
        bad = {n: s for n, s in shapes.items() if any(d < 0 for d in s)}
        if bad:
            raise RuntimeError_(f"TensorRT left dynamic dimensions unresolved: {bad}")
        for name, shape in shapes.items():
            self._host[name] = self._cuda.pagelocked_empty(shape, self.dtypes[name])
            self._device[name] = self._cuda.mem_alloc(max(self._host[name].nbytes, 1))
            ctx.set_tensor_address(name, int(self._device[name]))
        log.debug("tensorrt: allocated buffers for %s", shapes)
        self._key = key

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Copy in, execute, copy out, synchronise; returns fresh arrays (the pinned ones are reused)."""
        missing = [n for n in self.inputs if n not in inputs]
        if missing:
            raise RuntimeError_(f"missing engine inputs {missing}")
        key = tuple(s for n in self.inputs for s in inputs[n].shape)
        cuda, stream = self._cuda, self.stream
        with self._ctx.current():
            if key != self._key:
                self._allocate(key, inputs)
            for name in self.inputs:
                np.copyto(self._host[name], inputs[name], casting="same_kind")
                cuda.memcpy_htod_async(self._device[name], self._host[name], stream)
            if not self.exec_context.execute_async_v3(stream.handle):
                raise RuntimeError_("TensorRT execution failed (see the TensorRT log)")
            for name in self.outputs:
                cuda.memcpy_dtoh_async(self._host[name], self._device[name], stream)
            stream.synchronize()
            return {name: self._host[name].copy() for name in self.outputs}

    def _free(self) -> None:
        for mem in self._device.values():
            mem.free()
        self._device.clear()
        self._host.clear()
        self._key = None

    def close(self) -> None:
        with self._ctx.current():
            self._free()
            self.exec_context = None
            self.engine = None
