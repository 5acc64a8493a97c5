"""Finding the model a command or node should run, exporting it from the checkpoint when needed.

The default model is the released student plus the segmentation head this project trained on MSRS
(`sage_ros/data/seg_head_msrs.npz`): one graph, two outputs (fused Y exactly the student's, class ids).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from sage_ros.paths import default_checkpoint, default_onnx
from sage_ros.weights import sha256_of

log = logging.getLogger(__name__)

DEFAULT_HEAD = "default"  # sentinel: the head shipped in the package, when present


def shipped_head() -> Path | None:
    """The head trained by this project and shipped in the package, if this install has it."""
    path = Path(__file__).resolve().parent / "data" / "seg_head_msrs.npz"
    return path if path.is_file() else None


def _resolve_head(head: Path | str | None) -> Path | None:
    if head == DEFAULT_HEAD:
        return shipped_head()
    return Path(head) if head else None


def _provenance(checkpoint: Path, head: Path | None) -> dict:
    return {
        "checkpoint_sha256": sha256_of(checkpoint),
        "head_sha256": sha256_of(head) if head else None,
    }


def onnx_is_current(onnx_path: Path, checkpoint: Path, head: Path | str | None = DEFAULT_HEAD) -> bool:
    """True when `onnx_path` exists and its sidecar says it was exported from these exact files."""
    sidecar = onnx_path.with_suffix(".json")
    if not onnx_path.is_file() or not sidecar.is_file():
        return False
    try:
        meta = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return False
    wanted = _provenance(checkpoint, _resolve_head(head))
    return all(meta.get(k) == v for k, v in wanted.items())


def export_checkpoint(checkpoint: Path, onnx_path: Path, head: Path | str | None = None) -> Path:
    """Export a student checkpoint (and optionally a segmentation head) to ONNX. Needs torch."""
    head_path = _resolve_head(head)
    try:
        from sage_ros.model.checkpoint import load_student
        from sage_ros.model.export import export_student
        from sage_ros.model.seg_head import export_student_with_head
    except ImportError as exc:
        raise RuntimeError(
            "exporting to ONNX needs PyTorch (pip install 'sage_ros[torch]'); on a robot without torch, "
            "copy an exported .onnx (and its .json) from a development machine instead"
        ) from exc
    checkpoint, onnx_path = Path(checkpoint), Path(onnx_path)
    if head_path is None:
        path = export_student(load_student(checkpoint), onnx_path)
    else:
        path = export_student_with_head(checkpoint, head_path, onnx_path)
    # Record what the model was built from, so a stale export is detected and redone.
    sidecar = path.with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    meta.update(_provenance(checkpoint, head_path), checkpoint=str(checkpoint))
    sidecar.write_text(json.dumps(meta, indent=2) + "\n")
    return path


def ensure_onnx(
    onnx_path: Path | None = None, checkpoint: Path | None = None, head: Path | str | None = DEFAULT_HEAD
) -> Path:
    """Return an ONNX model for `checkpoint` (+ head), exporting (once) when missing or stale."""
    onnx_path = Path(onnx_path) if onnx_path else default_onnx()
    checkpoint = Path(checkpoint) if checkpoint else default_checkpoint()
    if onnx_path.is_file() and not checkpoint.is_file():
        return onnx_path  # a deployed model without its checkpoint (e.g. on a robot)
    if onnx_is_current(onnx_path, checkpoint, head):
        return onnx_path
    log.info("exporting %s -> %s", checkpoint, onnx_path)
    return export_checkpoint(checkpoint, onnx_path, head)


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
