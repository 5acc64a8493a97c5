"""Model variants by name: `sage` (the released student), `fast` (this project's distilled student) and
`auto` (the default: one of the two, chosen from the machine by `choose_variant`).

`fast` is shipped in the package as a fusion-only ONNX graph (`data/fast_student.onnx`) plus its
weights as plain arrays (`data/fast_student.npz`, for the torch backend), so selecting it needs no
PyTorch and no download. Importing this module imports no torch.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

from sage_ros.cpu_features import CpuFeatures

log = logging.getLogger(__name__)

VARIANTS = ("auto", "sage", "fast")
# `auto` takes the fast student on CPUs without fast bf16 only once it fuses like the released student on the
# MSRS eval split: PSNR of its fused Y against the released one's, mean and worst pair, and every fusion metric
# within 3 %. `python benchmarks/fast_student.py --record` measures that and writes it into its JSON.
FAST_GATE_DB = (35.0, 28.0)
# What "fast enough" means for the released student on a CPU with AVX-512 BF16 but no AMX: its cost there is
# per core and nearly linear in cores (OpenVINO bf16, the scale-adapted student at a 640x512 thermal camera's
# fusion size beside 1280x720 RGB, 763x429: 237 ms on 1 thread, 123 ms on 2, 2-core AMD EPYC, 2026-12-07).
# 10 Hz with masks leaves the student about 40 ms of the 100 ms: the rest of a pair (decode, register, colour,
# transport) measured 35-40 ms on that CPU and the mask follows the fused image by 45-60 ms
# (benchmarks/node_latency.py --masks: e2e p50 80-96 ms with the fast student at 44-52 ms inside the node), so
# it takes ceil(237 / 40) = 6 usable CPUs. Fewer: the fast student (81 ms on 1 thread, 42 ms on 2). AMX runs
# the released student several times faster per core: always it.
RELEASED_BF16_MS_PER_CORE = 237.0
STUDENT_BUDGET_MS = 40.0
RELEASED_BF16_MIN_CORES = math.ceil(RELEASED_BF16_MS_PER_CORE / STUDENT_BUDGET_MS)
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


def small_unsharp_of(model_path: str | Path | None) -> float:
    """The `unsharp` amount a student's training calibrated for its output below the RGB size (0: none).

    Read from the distillation metadata (`reduced_scale.unsharp`, written by `sage-ros train fast`): the ONNX
    graph's JSON sidecar, or the `__meta__` entry of the .npz the torch backend loads. Files without it
    (the released student, a user's export) get 0: their output goes to the upsampler as it is.
    """
    if model_path is None:
        return 0.0
    path = Path(model_path)
    try:
        if path.suffix == ".npz":
            import numpy as np

            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["__meta__"])) if "__meta__" in data.files else {}
        else:
            meta = json.loads(path.with_suffix(".json").read_text()).get("distillation") or {}
        return float((meta.get("reduced_scale") or {}).get("unsharp", 0.0))
    except (OSError, ValueError, TypeError, AttributeError, KeyError):
        return 0.0  # no readable metadata: nothing to apply (the model file itself is checked elsewhere)


def choose_variant(features: CpuFeatures, gpu_problem: str | None, quality: dict | None) -> tuple[str, str]:
    """(`sage` or `fast`, why) for `auto`: the released student where a GPU (TensorRT can run: `gpu_problem` is
    None), AMX, or AVX-512 BF16 on enough cores runs it fast enough; elsewhere the fast student, if it passes
    the quality gate. Decided from the machine (flags, usable cores), never from its load."""
    if gpu_problem is None:
        return "sage", "model auto -> sage: TensorRT and a CUDA device are here"
    if features.amx:
        return "sage", f"model auto -> sage: the CPU runs it in bf16 on AMX ({features.summary()})"
    if features.bf16 and (features.cores >= RELEASED_BF16_MIN_CORES or features.cores <= 0):
        return "sage", f"model auto -> sage: the CPU runs it in bf16 ({features.summary()})"
    if features.bf16:
        cpu = (f"AVX-512 BF16 on {features.cores} usable CPUs (the released student needs "
               f">= {RELEASED_BF16_MIN_CORES} for 10 Hz with masks)")
    else:
        cpu = "no GPU or bf16 CPU"
    if not quality:
        return "sage", f"model auto -> sage: {cpu}, but the fast student's quality against it is not recorded"
    mean, worst = float(quality["psnr_db_mean"]), float(quality["psnr_db_min"])
    measured = f"{mean:.1f} dB mean, {worst:.1f} dB worst pair against it on MSRS eval"
    if mean < FAST_GATE_DB[0] or worst < FAST_GATE_DB[1] or not quality.get("metrics_within_3pct"):
        return "sage", (f"model auto -> sage: {cpu}, but the fast student ({measured}) is below the "
                        f"gate ({FAST_GATE_DB[0]:g} / {FAST_GATE_DB[1]:g} dB, every metric within 3 %)")
    return "fast", f"model auto -> fast: {cpu} ({features.summary()}); fast student {measured}"
