"""Model variants by name: `sage` (the released student), `fast` (this project's distilled student) and
`auto` (the default: one of the two, chosen from the machine by `choose_variant`).

`fast` is shipped in the package as a fusion-only ONNX graph (`data/fast_student.onnx`) plus its
weights as plain arrays (`data/fast_student.npz`, for the torch backend), so selecting it needs no
PyTorch and no download. Importing this module imports no torch.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from sage_ros.cpu_features import CpuFeatures

log = logging.getLogger(__name__)

VARIANTS = ("auto", "sage", "fast")
# `auto` takes the fast student on CPUs without fast bf16 only once it fuses like the released student on the
# MSRS eval split: PSNR of its fused Y against the released one's, mean and worst pair, and every fusion metric
# within 3 %. `python benchmarks/fast_student.py --record` measures that and writes it into its JSON.
FAST_GATE_DB = (35.0, 28.0)
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


def fast_quality() -> dict | None:
    """What `benchmarks/fast_student.py --record` measured of the shipped fast student, or None."""
    try:
        return json.loads(fast_onnx().with_suffix(".json").read_text()).get("quality_vs_released")
    except (OSError, ValueError, ModelVariantError):
        return None


def choose_variant(features: CpuFeatures, gpu_problem: str | None, quality: dict | None) -> tuple[str, str]:
    """(`sage` or `fast`, why) for `auto`: the released student where a GPU (TensorRT can run: `gpu_problem` is
    None), AMX or AVX-512 BF16 runs it fast enough; elsewhere the fast student, if it passes the quality gate."""
    if gpu_problem is None:
        return "sage", "model auto -> sage: TensorRT and a CUDA device are here"
    if features.bf16 or features.amx:
        return "sage", f"model auto -> sage: the CPU runs it in bf16 ({features.summary()})"
    if not quality:
        return "sage", "model auto -> sage: the fast student's quality against it is not recorded"
    mean, worst = float(quality["psnr_db_mean"]), float(quality["psnr_db_min"])
    measured = f"{mean:.1f} dB mean, {worst:.1f} dB worst pair against it on MSRS eval"
    if mean < FAST_GATE_DB[0] or worst < FAST_GATE_DB[1] or not quality.get("metrics_within_3pct"):
        return "sage", (f"model auto -> sage: no GPU or bf16 CPU, but the fast student ({measured}) is below the "
                        f"gate ({FAST_GATE_DB[0]:g} / {FAST_GATE_DB[1]:g} dB, every metric within 3 %)")
    return "fast", f"model auto -> fast: no GPU or bf16 CPU ({features.summary()}); fast student {measured}"
