"""The scale-adapted student: the released student fine-tuned to fuse below the RGB size.

With `fusion.resolution: thermal` the model runs on images shrunk by about the thermal camera's pixel
ratio, and the fused luminance is brought back to the RGB size with the visible detail layer
(`pipeline.upsample_with_detail`). The released student does not answer a shrunk pair with the shrunk
version of its full-resolution answer: on the MSRS eval split the final image's MI is 6.8 % below
full-resolution fusion, and an oracle (the full-resolution result shrunk and brought back the same way)
is within 1 %. So the gap is the student's own response at the smaller scale, and the same network
with weights adapted to that scale closes it at no run-time cost (same graph, same multiply-adds).

The weights (`sage_ros/data/scale_student.npz`, trained by `python -m sage_ros.training.scale_adapt`) are
the released state dict's keys as plain arrays, plus the fast-student `__arch__` / `__meta__` entries
(width 32, three convs per block: exactly the released topology) so the torch backend loads them as it
loads the fast student. A JSON sidecar records the recipe and the provenance. This module is torch-free:
the fusion-only graph is built by `onnx_builder` into the models cache; below the RGB size the class ids
come from the segmentation network run at the RGB size (`seg_stage`).

Used only where it applies: the pipeline runs it when the fusion size is below the RGB size, and the
released student (bit-exact to upstream) whenever it fuses at the RGB size.
"""

from __future__ import annotations

import json
import logging
import os
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import numpy as np

from sage_ros.model.npz_weights import read_sidecar
from sage_ros.model.weights import sha256_of
from sage_ros.paths import models_dir

log = logging.getLogger(__name__)

WEIGHTS_NAME = "scale_student.npz"
GRAPH_NAME = "sage_student_scale_fusion.onnx"  # fusion-only, in the models cache
FORMAT = "sage_ros.scale_student/1"
# The detail layer's gain the student was trained with (end to end through the upsampler). At run time
# the gain is that, scaled down where the adapted student passes less fine detail than it does on its
# training frames (`detail_reference`): on MSRS that changes nothing, on other cameras' scenes (VIFB) it
# keeps the image from coming out sharper than full-resolution fusion (AG +4.5 % with a fixed 1).
DETAIL_GAIN = 1.0


class ScaleStudentError(RuntimeError):
    """Scale-adapted student weights that are missing, unreadable or do not fit the student."""


def shipped_weights() -> Path:
    return Path(__file__).resolve().parents[1] / "data" / WEIGHTS_NAME


def read_state(path: str | Path) -> dict[str, np.ndarray]:
    """The student state dict stored in `path` (numpy arrays, released key set), checked; torch-free."""
    from sage_ros.model.onnx_builder import CheckpointError, check_student_state

    path = Path(path)
    if not path.is_file():
        raise ScaleStudentError(
            f"scale-adapted student weights {path} do not exist: reinstall sage_ros, or train them with "
            "`python -m sage_ros.training.scale_adapt --out runs/scale --ship sage_ros/data`"
        )
    read_sidecar(path, FORMAT, ScaleStudentError, "scale-adapted student")
    try:
        with np.load(path, allow_pickle=False) as data:
            state = {k: np.array(data[k]) for k in data.files if not k.startswith("__")}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ScaleStudentError(f"scale-adapted student weights {path} could not be read: {exc}") from exc
    try:
        check_student_state(state, source=str(path))
    except CheckpointError as exc:
        raise ScaleStudentError(str(exc)) from None
    bad = [k for k, v in state.items() if v.dtype.kind == "f" and not np.isfinite(v).all()]
    if bad:
        raise ScaleStudentError(f"scale-adapted student weights {path}: non-finite values in {bad[:3]}")
    return state


def ensure_scale_onnx(weights: Path | None = None, onnx_path: Path | None = None) -> Path:
    """The scale-adapted student as a fusion-only model file, built once (torch-free) into the models cache.

    Fusion-only because below the RGB size the class ids come from the segmentation network run at the RGB
    size (`seg_stage`), never from inside this graph. Rebuilt when the weights change (the sidecar records
    their sha256).
    """
    import onnx

    from sage_ros.model.model_variants import sidecar_matches
    from sage_ros.model.onnx_builder import build_student_model_proto

    weights = Path(weights) if weights else shipped_weights()
    target = Path(onnx_path) if onnx_path else models_dir() / GRAPH_NAME
    provenance = {"scale_student_sha256": sha256_of(weights) if weights.is_file() else None}
    if provenance["scale_student_sha256"] and sidecar_matches(target, provenance):
        return target
    model = build_student_model_proto(read_state(weights))
    meta_in = read_sidecar(weights, FORMAT, ScaleStudentError, "scale-adapted student")
    meta = {"inputs": ["vis_y", "ir"], "outputs": ["fused_y"], "opset": 17, "model": "sage_scale_student",
            "classes": [], "scale_student": {k: v for k, v in meta_in.items() if k != "format"}}
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".part")  # never half a model for a reader starting now
    onnx.save(model, str(tmp))
    os.replace(tmp, target)
    target.with_suffix(".json").write_text(json.dumps(meta | provenance, indent=2) + "\n")
    log.info("built %s (scale-adapted student)", target)
    return target


def detail_reference(weights: str | Path | None = None) -> float | None:
    """The adapted student's mean measured detail gain on its training frames (sidecar
    `detail_gain_reference`), or None when the sidecar has none (then the gain stays DETAIL_GAIN)."""
    meta = read_sidecar(Path(weights) if weights else shipped_weights(), FORMAT, ScaleStudentError,
                        "scale-adapted student")
    value = meta.get("detail_gain_reference")
    if value is None:
        return None
    if not isinstance(value, (int, float)) or not 0.05 <= float(value) <= 2.0:
        raise ScaleStudentError(f"scale-adapted student sidecar: detail_gain_reference {value!r} is not a gain")
    return float(value)


def _model_sidecar(config) -> dict | None:
    """The JSON sidecar of the config's ONNX model (an int8 sibling's: its fp32 model's), or None."""
    if config.onnx_path is None:
        return None
    onnx_path = Path(config.onnx_path)
    if onnx_path.stem.endswith("_int8"):
        onnx_path = onnx_path.with_name(onnx_path.stem[: -len("_int8")] + onnx_path.suffix)
    try:
        meta = json.loads(onnx_path.with_suffix(".json").read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def is_released_student(config) -> bool:
    """Whether `config` (a BackendConfig) runs the released student, judged by provenance, not by file name.

    ONNX models: the sidecar's `checkpoint_sha256` (written by every export; an int8 sibling is judged by its
    fp32 model's sidecar). The torch backend: the checkpoint's own sha256. The fast variant, a custom model,
    or a file without a sidecar are not the released student.
    """
    from sage_ros.model.weights import CHECKPOINT

    if config.name == "torch":
        path = config.weights_path
        return path is not None and Path(path).is_file() and sha256_of(Path(path)) == CHECKPOINT.sha256
    meta = _model_sidecar(config)
    return meta is not None and meta.get("checkpoint_sha256") == CHECKPOINT.sha256


class ReducedPlan(NamedTuple):
    """What runs below the RGB size: the adapted student's BackendConfig (None: the released student, as
    configured) and the segmentation graph to run at the RGB size on its result (None: no class ids there)."""

    config: object | None
    seg_graph: Path | None
    why: str
    detail_reference: float | None = None  # see `detail_reference`


def reduced_scale_config(config, use: bool) -> ReducedPlan:
    """The plan for fusing below the RGB size with the scale-adapted student, or why there is none.

    config: the main model's BackendConfig. use: the user's switch (`fusion.scale_adapted`,
    `--scale-adapted`). The adapted weights are a fine-tune of the released student, so they replace only
    that model (`is_released_student`); a custom model or the fast variant keeps its own weights at every
    scale. The adapted student runs fusion-only; the class ids come from the same segmentation network as
    the main model's (none, or the shipped one: `sage_ros.model.seg_stage`) run at the RGB size. A model
    with another network keeps the released student.
    """
    if not use:
        return ReducedPlan(None, None, "scale-adapted student off: the released student runs at every fusion size")
    if not is_released_student(config):
        return ReducedPlan(None, None,
                           "scale-adapted student not used: the configured model is not the released student")
    weights = shipped_weights()
    from sage_ros.model.model_files import _resolve_head

    if config.name == "torch":
        # The torch backend's model has its head in config.extra (an .npz head), or none: fusion only here.
        return ReducedPlan(replace(config, weights_path=weights), None,
                           f"below the RGB size: scale-adapted student {weights.name}", detail_reference(weights))
    head_sha = (_model_sidecar(config) or {}).get("head_sha256")
    seg_graph: Path | None = None
    if head_sha is not None:
        shipped = _resolve_head("default")
        if shipped is None or sha256_of(shipped) != head_sha:
            return ReducedPlan(None, None, (
                "scale-adapted student not used: the model's segmentation network is not the shipped one, and "
                "the class ids must come from the same network at every fusion size"))
        if shipped.suffix != ".onnx":  # the older .npz head: a graph only through PyTorch
            return ReducedPlan(None, None, "scale-adapted student not used: the shipped head is not a graph here")
        seg_graph = shipped
    onnx_path = ensure_scale_onnx(weights)
    if config.precision == "int8" and config.name in ("onnxruntime", "openvino"):
        from sage_ros.model.model_files import ensure_int8

        onnx_path = ensure_int8(onnx_path)
    why = f"below the RGB size: scale-adapted student {onnx_path.name}"
    if seg_graph is not None:
        why += f", class ids from {seg_graph.name} at the RGB size"
    return ReducedPlan(replace(config, onnx_path=onnx_path), seg_graph, why, detail_reference(weights))
