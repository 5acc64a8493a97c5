"""Finding the model a command or node should run, exporting it from the checkpoint when needed."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from sage_ros.paths import default_checkpoint, default_onnx
from sage_ros.weights import sha256_of

log = logging.getLogger(__name__)


def onnx_is_current(onnx_path: Path, checkpoint: Path) -> bool:
    """True when `onnx_path` exists and its sidecar says it was exported from `checkpoint`'s bytes."""
    sidecar = onnx_path.with_suffix(".json")
    if not onnx_path.is_file() or not sidecar.is_file():
        return False
    try:
        meta = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return False
    return meta.get("checkpoint_sha256") == sha256_of(checkpoint)


def export_checkpoint(checkpoint: Path, onnx_path: Path) -> Path:
    """Export a student checkpoint to ONNX (needs torch: the development/training extra)."""
    try:
        from sage_ros.model.checkpoint import load_student
        from sage_ros.model.export import export_student
    except ImportError as exc:
        raise RuntimeError(
            "exporting to ONNX needs PyTorch (pip install 'sage_ros[torch]'); on a robot without torch, "
            "copy an exported .onnx from a development machine instead"
        ) from exc
    student = load_student(checkpoint)
    return export_student(student, onnx_path, checkpoint_sha256=sha256_of(checkpoint),
                          checkpoint=str(checkpoint))


def ensure_onnx(onnx_path: Path | None = None, checkpoint: Path | None = None) -> Path:
    """Return an ONNX model for `checkpoint`, exporting (once) when it is missing or stale."""
    onnx_path = Path(onnx_path) if onnx_path else default_onnx()
    checkpoint = Path(checkpoint) if checkpoint else default_checkpoint()
    if onnx_path.is_file() and not checkpoint.is_file():
        return onnx_path  # a deployed model without its checkpoint (e.g. on a robot)
    if onnx_is_current(onnx_path, checkpoint):
        return onnx_path
    log.info("exporting %s -> %s", checkpoint, onnx_path)
    return export_checkpoint(checkpoint, onnx_path)


def ensure_int8(onnx_path: Path, calibration_dir: Path | None = None) -> Path:
    """The int8 QDQ sibling `<name>_int8.onnx` of an fp32 model, calibrated once on real pairs."""
    from sage_ros.paths import official_dir
    from sage_ros.quantize import quantize_int8

    onnx_path = Path(onnx_path)
    int8_path = onnx_path.with_name(onnx_path.stem + "_int8.onnx")
    if int8_path.is_file() and int8_path.stat().st_mtime >= onnx_path.stat().st_mtime:
        return int8_path
    calibration_dir = Path(calibration_dir) if calibration_dir else official_dir()
    log.info("quantising %s to int8 with calibration pairs from %s", onnx_path, calibration_dir)
    return quantize_int8(onnx_path, int8_path, calibration_dir)
