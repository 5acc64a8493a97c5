"""Model variants by name: `sage` (the released student) and `fast` (this project's distilled student).

`fast` is shipped in the package as a fusion-only ONNX graph (`data/fast_student.onnx`) plus its
weights as plain arrays (`data/fast_student.npz`, for the torch backend), so selecting it needs no
PyTorch and no download. Importing this module imports no torch.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

VARIANTS = ("sage", "fast")
FAST_ONNX_NAME = "fast_student.onnx"
FAST_WEIGHTS_NAME = "fast_student.npz"


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
            "with `sage-ros train fast --out runs/fast --ship sage_ros/data`"
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
