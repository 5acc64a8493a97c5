"""Model variants by name: `sage` (the released student) and `fast` (this project's distilled student).

`fast` is shipped in the package as a fusion-only ONNX graph (`data/fast_student.onnx`) plus its
weights as plain arrays (`data/fast_student.npz`, for the torch backend), so selecting it needs no
PyTorch and no download. Like the default model, it is joined with the shipped segmentation network
by `sage_ros.model.compose.attach_segmentation` (onnx only) into one two-output graph, cached next to
the default export and rebuilt when either file changes. Importing this module imports no torch.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from sage_ros.model.weights import sha256_of
from sage_ros.paths import models_dir

log = logging.getLogger(__name__)

VARIANTS = ("sage", "fast")
FAST_ONNX_NAME = "fast_student.onnx"
FAST_WEIGHTS_NAME = "fast_student.npz"
FAST_COMPOSED_NAME = "sage_fast_student.onnx"


class ModelVariantError(RuntimeError):
    """A variant name that is unknown, or whose shipped files are missing from this install."""


def _data_dir() -> Path:
    return Path(__file__).resolve().parents[1] / "data"


def fast_onnx() -> Path:
    """The shipped fusion-only fast student graph (inputs vis_y, ir; output fused_y)."""
    path = _data_dir() / FAST_ONNX_NAME
    if not path.is_file():
        raise ModelVariantError(
            f"the fast student graph {path} is missing from this install: reinstall sage_ros, or train one "
            "with `python -m sage_ros.training.distill_student --out runs/fast --ship sage_ros/data`"
        )
    return path


def fast_weights() -> Path:
    """The shipped fast student weights (.npz of plain arrays), for the torch backend."""
    path = _data_dir() / FAST_WEIGHTS_NAME
    if not path.is_file():
        raise ModelVariantError(f"the fast student weights {path} are missing from this install")
    return path


def variant_of(model: str | Path | None) -> str | None:
    """The variant a `--model` / `model_path` value names, or None when it is a file path (or empty).

    A file that exists wins over a variant name, so a model file called `fast` in the working folder
    still loads as a file.
    """
    if model is None or str(model) == "":
        return None
    text = str(model)
    if text in VARIANTS and not Path(text).is_file():
        return text
    return None


def check_variant(name: str) -> str:
    if name not in VARIANTS:
        raise ModelVariantError(f"unknown model variant {name!r}; choose one of {', '.join(VARIANTS)}")
    return name


def sidecar_matches(path: Path, provenance: dict) -> bool:
    """Whether `path` exists with a JSON sidecar that records exactly these provenance values."""
    sidecar = path.with_suffix(".json")
    if not path.is_file() or not sidecar.is_file():
        return False
    try:
        meta = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return False
    return all(meta.get(k) == v for k, v in provenance.items())


def ensure_fast_onnx(onnx_path: Path | None = None, head: Path | str | None = "default") -> Path:
    """The fast student as the model to run: composed with the segmentation network when one is shipped.

    `head="default"` uses the package's segmentation network (as the default model does), None gives the
    fusion-only graph (the shipped file itself). The composed graph is written to `onnx_path` (default:
    <models dir>/sage_fast_student.onnx) with a JSON sidecar, and reused while its sources are unchanged.
    """
    from sage_ros.model.model_files import _head_sidecar, _resolve_head

    student = fast_onnx()
    head_path = _resolve_head(head)
    if head_path is None:
        return student
    target = Path(onnx_path) if onnx_path else models_dir() / FAST_COMPOSED_NAME
    provenance = {"fast_student_sha256": sha256_of(student), "head_sha256": sha256_of(head_path)}
    if sidecar_matches(target, provenance):
        return target
    import onnx

    from sage_ros.model.compose import attach_segmentation
    from sage_ros.model.model_files import load_seg_model

    head_meta = _head_sidecar(head_path)
    model = attach_segmentation(onnx.load(str(student)), load_seg_model(head_path))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".part")
    onnx.save(model, str(tmp))
    os.replace(tmp, target)
    student_meta = json.loads(student.with_suffix(".json").read_text())
    meta = {
        "inputs": ["vis_y", "ir"],
        "outputs": ["fused_y", "class_ids"],
        "opset": student_meta.get("opset", 17),
        "model": "sage_fast_student_seg",
        "classes": head_meta["classes"],
        "head": {k: v for k, v in head_meta.items() if k != "classes"} | {"file": head_path.name},
        "fast_student": {k: v for k, v in student_meta.items() if k not in ("inputs", "outputs", "classes")},
        **provenance,
    }
    target.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    log.info("built %s (fast student + segmentation %s)", target, head_path.name)
    return target
