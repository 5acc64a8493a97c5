"""INT8 calibration for TensorRT's implicit quantisation: real pairs in, a calibration cache out.

The data side (finding pairs, turning them into the network's inputs, the cache file) is plain
numpy/OpenCV and tested without TensorRT; `make_entropy_calibrator` wraps it in TensorRT's
IInt8EntropyCalibrator2 (TensorRT 8.6 and 10.x; deprecated from 10.1, removed in 11).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import cv2
import numpy as np

from sage_ros.image.imaging import ImageInputError, infrared_to_grey, visible_to_ycrcb
from sage_ros.pairing.datasets import images_by_stem
from sage_ros.tensorrt.engine_cache import EngineSpec

log = logging.getLogger(__name__)

# (infrared folder, visible folder) layouts of the public datasets and of upstream SAGE's test data.
PAIR_LAYOUTS = (("ir", "vi"), ("ir", "vis"), ("Ir", "Vis"), ("IR", "VI"), ("infrared", "visible"))


class CalibrationError(ValueError):
    """Calibration data that cannot be used."""


def find_pairs(folder: str | Path) -> list[tuple[Path, Path]]:
    """(infrared, visible) files matched by name inside one of PAIR_LAYOUTS under `folder`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CalibrationError(f"calibration folder {folder} does not exist")
    for ir_name, vis_name in PAIR_LAYOUTS:
        ir_dir, vis_dir = folder / ir_name, folder / vis_name
        if not (ir_dir.is_dir() and vis_dir.is_dir()):
            continue
        visible = images_by_stem(vis_dir)
        pairs = [(p, visible[stem]) for stem, p in images_by_stem(ir_dir).items() if stem in visible]
        if pairs:
            return pairs
    layouts = ", ".join(f"{a}/+{b}/" for a, b in PAIR_LAYOUTS)
    raise CalibrationError(
        f"no infrared/visible pairs under {folder}: expected sub-folders ({layouts}) holding images "
        "with the same names"
    )


def pick_evenly(items: list, count: int) -> list:
    """Up to `count` items spread over the whole list (day and night scenes both, not the first N)."""
    if count <= 0 or count >= len(items):
        return list(items)
    idx = np.linspace(0, len(items) - 1, count).round().astype(int)
    return [items[i] for i in dict.fromkeys(idx.tolist())]


def pair_to_inputs(ir_path: Path, vis_path: Path, hw: tuple[int, int]) -> dict[str, np.ndarray]:
    """Read one pair and produce the network inputs at (H, W): float32 (1, 1, H, W) in [0, 1]."""
    ir = cv2.imread(str(ir_path), cv2.IMREAD_UNCHANGED)
    vis = cv2.imread(str(vis_path), cv2.IMREAD_COLOR)
    if ir is None or vis is None:
        raise CalibrationError(f"cannot read pair {ir_path.name} / {vis_path.name}")
    h, w = hw
    # The same colour and grey conversions the node uses, so INT8 ranges match what it will see.
    y = visible_to_ycrcb(vis).y
    grey = infrared_to_grey(ir)
    out = {}
    for name, img in (("vis_y", y), ("ir", grey)):
        if img.shape != (h, w):
            interp = cv2.INTER_AREA if img.shape[0] > h else cv2.INTER_LINEAR
            img = cv2.resize(img, (w, h), interpolation=interp)
        out[name] = np.ascontiguousarray(img, dtype=np.float32).reshape(1, 1, h, w)
    return out


def iter_calibration_batches(
    folder: str | Path, hw: tuple[int, int], count: int = 64
) -> Iterator[dict[str, np.ndarray]]:
    """Batches of one pair each, read lazily (a Jetson has little memory to spare while building)."""
    pairs = pick_evenly(find_pairs(folder), count)
    log.info("calibration: %d pairs from %s at %dx%d", len(pairs), folder, hw[0], hw[1])
    for ir_path, vis_path in pairs:
        try:
            yield pair_to_inputs(ir_path, vis_path, hw)
        except (CalibrationError, ImageInputError) as exc:
            log.warning("calibration: skipping %s (%s)", ir_path.name, exc)


def calibration_cache_path(folder: Path, spec: EngineSpec, hw: tuple[int, int]) -> Path:
    """`<model>-<onnx sha256[:12]>-<H>x<W>.calib`: the scales belong to one graph and input size."""
    sha = (spec.onnx_sha256 or "unknown")[:12]
    return Path(folder) / f"{spec.model}-{sha}-{hw[0]}x{hw[1]}.calib"


def read_cache(path: str | Path | None) -> bytes | None:
    if path is None:
        return None
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError:
        return None
    return data or None


def write_cache(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(bytes(data))
    os.replace(tmp, path)
    log.info("calibration: wrote cache %s (%d bytes)", path, len(data))


def make_entropy_calibrator(batches: Iterable[dict[str, np.ndarray]], cache_path: Path, hw: tuple[int, int]):
    """An IInt8EntropyCalibrator2 feeding `batches`; needs a current CUDA context (pycuda)."""
    import pycuda.driver as cuda
    import tensorrt as trt

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self._batches = iter(batches)
            nbytes = hw[0] * hw[1] * np.dtype(np.float32).itemsize
            # One device buffer per input for the whole calibration, not one per batch.
            self._device = {name: cuda.mem_alloc(nbytes) for name in ("vis_y", "ir")}
            self._count = 0

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names):  # device pointers in the order of `names`; None ends calibration
            try:
                batch = next(self._batches)
            except StopIteration:
                log.info("calibration: fed %d batches", self._count)
                return None
            pointers = []
            for name in names:
                if name not in self._device:
                    raise CalibrationError(f"calibrator has no data for input {name!r}")
                cuda.memcpy_htod(self._device[name], np.ascontiguousarray(batch[name], dtype=np.float32))
                pointers.append(int(self._device[name]))
            self._count += 1
            return pointers

        def read_calibration_cache(self):
            data = read_cache(cache_path)
            if data:
                log.info("calibration: using cache %s", cache_path)
            return data

        def write_calibration_cache(self, cache) -> None:
            try:
                write_cache(cache_path, bytes(cache))
            except OSError as exc:  # a read-only model folder must not fail a finished calibration
                log.warning("calibration: could not write cache %s (%s); next INT8 build calibrates again",
                            cache_path, exc)

    return EntropyCalibrator()
