"""Thin pycuda runtime for one TensorRT engine: context, stream, pinned buffers, async execution.

TensorRT 10 addresses I/O by tensor name (`set_input_shape`, `set_tensor_address`,
`execute_async_v3`); 8.x engines are run through binding indices and `execute_async_v2`.
Buffers (page-locked host + device) are allocated once per input size and reused for every frame
of that size, so a steady camera stream allocates nothing per frame on the device side.
"""

from __future__ import annotations

import contextlib
import logging
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from sage_ros.tensorrt.builder import parse_trt_version
from sage_ros.tensorrt.engine_cache import MachineInfo
from sage_ros.tensorrt.shapes import ShapeProfile

log = logging.getLogger(__name__)

MAX_CACHED_SHAPES = 2  # a node sees one size; two covers a resolution switch without thrashing


class RuntimeError_(RuntimeError):
    """A TensorRT/CUDA failure while running (named to avoid shadowing the builtin)."""


def execution_api(trt_version: str) -> str:
    """'v3' (tensor names + execute_async_v3) from TensorRT 10, 'v2' (bindings) before."""
    return "v3" if parse_trt_version(trt_version)[0] >= 10 else "v2"


def profile_problem(hw: tuple[int, int], profile: ShapeProfile | None) -> str | None:
    """Why a frame of size hw cannot run on an engine built for `profile` (None: it can)."""
    if profile is None or profile.contains(hw):
        return None
    return (
        f"frame {hw[0]}x{hw[1]} is outside the engine's profile (min {profile.min[0]}x{profile.min[1]}, "
        f"max {profile.max[0]}x{profile.max[1]}): rebuild with `sage-ros build-engine --max HxW` "
        "or set the node's engine profile to the camera size"
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


@dataclass
class _Tensor:
    name: str
    is_input: bool
    dtype: np.dtype
    index: int  # binding index (v2) or I/O index (v3)


class _Buffers:
    """Pinned host and device memory for one input size."""

    def __init__(self, cuda, shapes: dict[str, tuple[int, ...]], dtypes: dict[str, np.dtype]) -> None:
        self.shapes = shapes
        self.host = {n: cuda.pagelocked_empty(shapes[n], dtypes[n]) for n in shapes}
        self.device = {n: cuda.mem_alloc(max(self.host[n].nbytes, 1)) for n in shapes}

    def free(self) -> None:
        for mem in self.device.values():
            mem.free()
        self.device.clear()
        self.host.clear()


class TrtRunner:
    """Runs one deserialised engine on float32 NCHW inputs; outputs come back as numpy arrays."""

    def __init__(self, engine, trt_version: str, context: CudaContext) -> None:
        import tensorrt as trt

        self._trt = trt
        self._cuda = context.cuda
        self._ctx = context
        self.api = execution_api(trt_version)
        self.engine = engine
        with context.current():
            self.exec_context = engine.create_execution_context()
            if self.exec_context is None:
                raise RuntimeError_("TensorRT could not create an execution context (out of GPU memory?)")
            self.stream = self._cuda.Stream()
        self.tensors = self._describe()
        self.inputs = [t.name for t in self.tensors if t.is_input]
        self.outputs = [t.name for t in self.tensors if not t.is_input]
        self._buffers: OrderedDict[tuple[int, ...], _Buffers] = OrderedDict()
        self._active: tuple[int, ...] | None = None

    def _describe(self) -> list[_Tensor]:
        trt, engine = self._trt, self.engine
        tensors = []
        if self.api == "v3":
            for i in range(engine.num_io_tensors):
                name = engine.get_tensor_name(i)
                is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
                dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
                tensors.append(_Tensor(name, is_input, dtype, i))
        else:
            for i in range(engine.num_bindings):
                dtype = np.dtype(trt.nptype(engine.get_binding_dtype(i)))
                tensors.append(_Tensor(engine.get_binding_name(i), engine.binding_is_input(i), dtype, i))
        return tensors

    def _activate(self, key: tuple[int, ...], inputs: dict[str, np.ndarray]) -> _Buffers:
        """Set input shapes, (re)use buffers for this size, point the context at them."""
        ctx = self.exec_context
        for t in self.tensors:
            if t.is_input:
                shape = tuple(inputs[t.name].shape)
                ok = ctx.set_input_shape(t.name, shape) if self.api == "v3" else ctx.set_binding_shape(t.index, shape)
                if ok is False:
                    raise RuntimeError_(f"TensorRT refused input shape {shape} for {t.name!r}")
        bufs = self._buffers.get(key)
        if bufs is None:
            shapes, dtypes = {}, {}
            for t in self.tensors:
                if t.is_input:
                    shapes[t.name] = tuple(inputs[t.name].shape)
                elif self.api == "v3":
                    shapes[t.name] = tuple(ctx.get_tensor_shape(t.name))
                else:
                    shapes[t.name] = tuple(ctx.get_binding_shape(t.index))
                dtypes[t.name] = t.dtype
            bad = {n: s for n, s in shapes.items() if any(d < 0 for d in s)}
            if bad:
                raise RuntimeError_(f"TensorRT left dynamic dimensions unresolved: {bad}")
            bufs = _Buffers(self._cuda, shapes, dtypes)
            self._buffers[key] = bufs
            log.debug("tensorrt: allocated buffers for %s", shapes)
            while len(self._buffers) > MAX_CACHED_SHAPES:
                _, old = self._buffers.popitem(last=False)
                old.free()
        else:
            self._buffers.move_to_end(key)
        if self.api == "v3":
            for t in self.tensors:
                ctx.set_tensor_address(t.name, int(bufs.device[t.name]))
        self._active = key
        return bufs

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Copy in, execute, copy out, synchronise; returns fresh arrays (the pinned ones are reused)."""
        missing = [n for n in self.inputs if n not in inputs]
        if missing:
            raise RuntimeError_(f"missing engine inputs {missing}")
        key = tuple(s for n in self.inputs for s in inputs[n].shape)
        cuda, stream = self._cuda, self.stream
        with self._ctx.current():
            bufs = self._buffers[key] if key == self._active else self._activate(key, inputs)
            for name in self.inputs:
                np.copyto(bufs.host[name], inputs[name], casting="same_kind")
                cuda.memcpy_htod_async(bufs.device[name], bufs.host[name], stream)
            if self.api == "v3":
                ok = self.exec_context.execute_async_v3(stream.handle)
            else:
                bindings = [int(bufs.device[t.name]) for t in sorted(self.tensors, key=lambda t: t.index)]
                ok = self.exec_context.execute_async_v2(bindings=bindings, stream_handle=stream.handle)
            if not ok:
                raise RuntimeError_("TensorRT execution failed (see the TensorRT log)")
            for name in self.outputs:
                cuda.memcpy_dtoh_async(bufs.host[name], bufs.device[name], stream)
            stream.synchronize()
            return {name: bufs.host[name].copy() for name in self.outputs}

    def close(self) -> None:
        with self._ctx.current():
            for bufs in self._buffers.values():
                bufs.free()
            self._buffers.clear()
            self.exec_context = None
            self.engine = None
