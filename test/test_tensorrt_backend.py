"""The tensorrt backend: clear failure without TensorRT, `auto` fallback, and (GPU only) real runs.

The GPU tests need TensorRT, pycuda and a CUDA device; on machines without them they are skipped
with that reason. They build real engines from the exported student and compare with onnxruntime.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from sage_ros.backends import BackendConfig, BackendError, BackendUnavailable, auto_order, create_backend


def _present(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


HAVE_TRT = _present("tensorrt") and _present("pycuda")
HAVE_CUDA = Path("/dev/nvidia0").exists() or Path("/dev/nvhost-ctrl-gpu").exists()
needs_no_trt = pytest.mark.skipif(HAVE_TRT, reason="TensorRT and pycuda are installed here")
needs_gpu = pytest.mark.skipif(
    not (HAVE_TRT and HAVE_CUDA),
    reason=f"needs TensorRT + pycuda + a CUDA device (tensorrt/pycuda importable: {HAVE_TRT}, "
    f"CUDA device: {HAVE_CUDA}); run on a Jetson or a GPU machine with `pip install -e '.[tensorrt]'` (docs/jetson.md)",
)


@needs_no_trt
def test_backend_without_tensorrt_is_unavailable_with_install_hint(student_onnx: Path) -> None:
    with pytest.raises(BackendUnavailable) as info:
        create_backend(BackendConfig(name="tensorrt", onnx_path=student_onnx))
    message = str(info.value)
    assert "tensorrt" in message and "pycuda" in message and "docs/jetson.md" in message


def test_importing_backend_module_needs_neither_tensorrt_nor_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys; import sage_ros.backends.tensorrt_backend, sage_ros.cli.build_engine, "
        "sage_ros.tensorrt.engine_cache, sage_ros.tensorrt.runtime, sage_ros.tensorrt.builder; "
        "bad = [m for m in ('torch', 'tensorrt', 'pycuda', 'onnx') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_no_trt
def test_auto_falls_back_with_a_clear_log_line(student_onnx: Path, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="sage_ros.backends"):
        order = auto_order()
        backend = create_backend(BackendConfig(name="auto", onnx_path=student_onnx, threads=1))
    try:
        assert "tensorrt" not in order
        assert backend.name in ("openvino", "onnxruntime")
        line = next(r.getMessage() for r in caplog.records if "TensorRT skipped" in r.getMessage())
        assert "tensorrt module is not importable" in line and "docs/jetson.md" in line
        assert any("using" in r.getMessage() and backend.name in r.getMessage() for r in caplog.records)
        # ... and the fallback really fuses.
        out = backend.infer(np.full((32, 48), 0.5, np.float32), np.full((32, 48), 0.25, np.float32))
        assert out.fused_y.shape == (32, 48) and np.isfinite(out.fused_y).all()
    finally:
        backend.close()


# ----------------------------------------------------------------------------- GPU only


@pytest.fixture(scope="module")
def real_pair(official_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    from sage_ros.image.imaging import infrared_to_grey, visible_to_ycrcb

    vis = cv2.imread(str(official_dir / "Vis" / "00000.png"), cv2.IMREAD_COLOR)
    ir = cv2.imread(str(official_dir / "Ir" / "00000.png"), cv2.IMREAD_UNCHANGED)
    return visible_to_ycrcb(vis).y[:240, :320].copy(), infrared_to_grey(ir)[:240, :320].copy()


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((np.clip(a, 0, 1) - np.clip(b, 0, 1)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


@needs_gpu
@pytest.mark.parametrize("precision, min_psnr", [("fp32", 60.0), ("fp16", 40.0)])
def test_gpu_engine_matches_onnxruntime_and_is_cached(
    student_onnx: Path, tmp_path: Path, real_pair, precision: str, min_psnr: float
) -> None:
    y, ir = real_pair
    extra = {"profile": {"min": [64, 64], "opt": [240, 320], "max": [480, 640]}}
    config = BackendConfig(name="tensorrt", onnx_path=student_onnx, precision=precision,
                           engine_dir=tmp_path, device="cuda:0", extra=extra)
    ref_backend = create_backend(BackendConfig(name="onnxruntime", onnx_path=student_onnx))
    ref = ref_backend.infer(y, ir).fused_y
    ref_backend.close()
    first = create_backend(config)
    try:
        assert first.engine_built
        got = first.infer(y, ir).fused_y
        assert got.shape == ref.shape and _psnr(got, ref) > min_psnr
        again = first.infer(y, ir).fused_y  # reused buffers give the same answer
        np.testing.assert_array_equal(got, again)
        small = first.infer(y[:64, :96].copy(), ir[:64, :96].copy()).fused_y  # shape switch inside profile
        assert small.shape == (64, 96)
        with pytest.raises(BackendError, match="outside the engine's profile"):
            first.infer(np.zeros((720, 1280), np.float32), np.zeros((720, 1280), np.float32))
        assert first.infer(y, ir).fused_y.shape == ref.shape  # still running after the bad frame
    finally:
        first.close()
    second = create_backend(config)
    try:
        assert not second.engine_built, "a matching cached engine must be loaded, not rebuilt"
        assert second.engine_path == first.engine_path
    finally:
        second.close()


@needs_gpu
def test_gpu_int8_needs_a_qdq_graph(student_onnx: Path, tmp_path: Path) -> None:
    """The exported student has no Q/DQ nodes: int8 says what it needs instead of calibrating."""
    with pytest.raises(BackendError, match="QuantizeLinear/DequantizeLinear"):
        create_backend(BackendConfig(name="tensorrt", onnx_path=student_onnx, precision="int8", engine_dir=tmp_path))
