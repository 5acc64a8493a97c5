"""The scale-adapted student: the released student fine-tuned to fuse below the RGB size.

With `fusion.resolution: thermal` the model runs on images shrunk by about the thermal camera's pixel
ratio, and the fused luminance is brought back to the RGB size with the visible detail layer
(`pipeline.upsample_with_detail`). The released student does not answer a shrunk pair with the shrunk
version of its full-resolution answer: on the MSRS eval split the final image's MI is 6.8 % below
full-resolution fusion, and an oracle (the full-resolution result shrunk and brought back the same way)
is within 1 %. So the gap is the student's own response at the smaller scale, and the same network
with weights adapted to that scale closes it at no run-time cost (same graph, same multiply-adds).

The weights (`sage_ros/data/scale_student.npz`, trained by `sage-ros train scale`) are
the released state dict's keys as plain arrays, plus the fast-student `__arch__` / `__meta__` entries
(width 32, three convs per block: exactly the released topology) so the torch backend loads them as it
loads the fast student. A JSON sidecar records the recipe and the provenance. This module is torch-free:
the fusion graph is built by `onnx_builder` into the models cache.

Used only where it applies (`sage_ros.pipeline.builder`): below the RGB size, in place of the released
student, never at the RGB size (there the released student runs, bit-exact to upstream).
"""

from __future__ import annotations

import json
import logging
import zipfile
from pathlib import Path

import numpy as np

from sage_ros.graphs.npz_weights import read_sidecar
from sage_ros.paths import models_dir, sha256_of

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
    from sage_ros.graphs.onnx_builder import CheckpointError, check_student_state

    path = Path(path)
    if not path.is_file():
        raise ScaleStudentError(
            f"scale-adapted student weights {path} do not exist: reinstall sage_ros, or train them with "
            "`sage-ros train scale --out runs/scale --ship sage_ros/data`"
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
    """The scale-adapted student as a fusion graph, built once (torch-free) into the models cache and
    rebuilt when the weights change (the sidecar records their sha256)."""
    import onnx

    from sage_ros.graphs.onnx_builder import build_student_model_proto
    from sage_ros.model.model_files import cached_build

    weights = Path(weights) if weights else shipped_weights()
    state = read_state(weights)  # checked before anything is built
    meta_in = read_sidecar(weights, FORMAT, ScaleStudentError, "scale-adapted student")

    def write(tmp: Path) -> dict:
        onnx.save(build_student_model_proto(state), str(tmp))
        return {"inputs": ["vis_y", "ir"], "outputs": ["fused_y"], "opset": 17, "model": "sage_scale_student",
                "scale_student": {k: v for k, v in meta_in.items() if k != "format"}}

    return cached_build(Path(onnx_path) if onnx_path else models_dir() / GRAPH_NAME,
                        {"scale_student_sha256": sha256_of(weights)}, write, "scale-adapted student")


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
