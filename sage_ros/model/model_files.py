"""Every model file derived from another, built once into the models cache and rebuilt when its source changes.

Derived files: the released student's fusion graph (from the downloaded checkpoint, by the torch-free
`graphs.onnx_builder`), the scale-adapted student's graph, the
segmentation graph (from the shipped network weights), and int8 QDQ copies. Each is written beside its
target and moved into place, with a JSON sidecar recording what it was built from (`provenance`), so a
stale file is detected by content, never by file times, and a reader never sees half a file.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from sage_ros.paths import default_checkpoint, default_onnx, models_dir, sha256_of

log = logging.getLogger(__name__)

SEG_WEIGHTS = "seg_net_msrs.npz"  # the shipped segmentation network (its members: seg_net_msrs.m<i>.npz)
SEG_GRAPH = "seg_net_msrs.onnx"  # its graph in the models cache
# Bumped when a builder's output changes for the same source, so cached files are rebuilt.
SEG_GRAPH_FORMAT = 2  # 2: class probabilities at 1/4 size (1: ArgMax ids at the input size)


def sidecar_matches(path: Path, provenance: dict) -> bool:
    """Whether `path` exists with a JSON sidecar that records exactly these provenance values."""
    sidecar = Path(path).with_suffix(".json")
    if not Path(path).is_file() or not sidecar.is_file():
        return False
    try:
        meta = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and all(meta.get(k) == v for k, v in provenance.items())


def cached_build(target: Path, provenance: dict, build: Callable[[Path], dict], what: str) -> Path:
    """`target`, built by `build(tmp_path) -> metadata` unless its sidecar already records `provenance`.

    The file is written to a temporary name in the target's folder and renamed, then its sidecar
    (metadata + provenance) is written the same way: a sidecar that exists vouches for a whole file.
    """
    target = Path(target)
    if sidecar_matches(target, provenance):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("building %s (%s)", target, what)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        built = Path(tmp) / target.name
        meta = build(built) | provenance
        sidecar = built.with_suffix(".json")
        sidecar.write_text(json.dumps(meta, indent=2) + "\n")
        os.replace(built, target)
        os.replace(sidecar, target.with_suffix(".json"))
    return target


def student_provenance(checkpoint: Path) -> dict:
    # `outputs`: earlier exports joined a segmentation network into the same graph; those are rebuilt.
    return {"checkpoint_sha256": sha256_of(checkpoint), "outputs": ["fused_y"]}


def export_checkpoint(checkpoint: Path, onnx_path: Path) -> Path:
    """The student checkpoint as a fusion graph with its sidecar (always rebuilt: `ensure_onnx` caches)."""
    import onnx

    from sage_ros.graphs.onnx_builder import build_student_onnx

    checkpoint, onnx_path = Path(checkpoint), Path(onnx_path)
    model = build_student_onnx(checkpoint)  # fails before anything is written

    def write(tmp: Path) -> dict:
        onnx.save(model, str(tmp))
        return {"inputs": ["vis_y", "ir"], "outputs": ["fused_y"], "opset": 17, "model": "sage_student",
                "checkpoint": str(checkpoint)}

    onnx_path.with_suffix(".json").unlink(missing_ok=True)  # explicit export: always build
    return cached_build(onnx_path, student_provenance(checkpoint), write, "student")


def onnx_is_current(onnx_path: Path, checkpoint: Path) -> bool:
    """True when `onnx_path` exists and its sidecar says it was built from this exact checkpoint."""
    return Path(checkpoint).is_file() and sidecar_matches(Path(onnx_path), student_provenance(Path(checkpoint)))


def ensure_onnx(onnx_path: Path | None = None, checkpoint: Path | None = None) -> Path:
    """The released-format student as a fusion graph for `checkpoint`, exported (once) when missing or stale."""
    onnx_path = Path(onnx_path) if onnx_path else default_onnx()
    checkpoint = Path(checkpoint) if checkpoint else default_checkpoint()
    if onnx_path.is_file() and not checkpoint.is_file():
        return onnx_path  # a deployed model without its checkpoint (e.g. on a robot)
    if onnx_is_current(onnx_path, checkpoint):
        return onnx_path
    return export_checkpoint(checkpoint, onnx_path)


def ensure_int8(onnx_path: Path, calibration_dir: Path | None = None) -> Path:
    """The int8 QDQ sibling `<name>_int8.onnx` of an fp32 model, calibrated once on real pairs."""
    from sage_ros.graphs.quantize import quantize_int8
    from sage_ros.paths import official_dir

    onnx_path = Path(onnx_path)
    calibration_dir = Path(calibration_dir) if calibration_dir else official_dir()
    provenance = {"source_sha256": sha256_of(onnx_path), "calibration": str(calibration_dir)}

    def write(tmp: Path) -> dict:
        quantize_int8(onnx_path, tmp, calibration_dir)
        return {"model": "int8 QDQ", "source": onnx_path.name}

    return cached_build(int8_path(onnx_path), provenance, write, f"int8, calibrated on pairs from {calibration_dir}")


def int8_path(onnx_path: Path) -> Path:
    """Where the int8 copy of `onnx_path` goes: beside it, except for a model shipped inside the package
    (the fast student), whose copy goes to the models cache: an installed package is no place to write."""
    onnx_path = Path(onnx_path)
    package_data = Path(__file__).resolve().parents[1] / "data"
    folder = models_dir() if onnx_path.resolve().parent == package_data else onnx_path.parent
    return folder / (onnx_path.stem + "_int8.onnx")


def shipped_seg_weights() -> Path:
    return Path(__file__).resolve().parents[1] / "data" / SEG_WEIGHTS


def ensure_seg_graph(weights: Path | None = None, out_onnx: Path | None = None) -> Path:
    """The segmentation network's graph (probabilities; `seg_graph`), built torch-free into the models cache."""
    from sage_ros.graphs.seg_graph import graph_from_weights, read_metadata, weights_sha256

    weights = Path(weights) if weights else shipped_seg_weights()
    # The input tone range lives in the sidecar only: a change to it rebuilds the graph's sidecar too.
    provenance = {"weights_sha256": weights_sha256(weights), "graph_format": SEG_GRAPH_FORMAT,
                  "input_tone": read_metadata(weights).get("input_tone")}

    def write(tmp: Path) -> dict:
        graph_from_weights(weights, tmp)
        return json.loads(tmp.with_suffix(".json").read_text())

    return cached_build(Path(out_onnx) if out_onnx else models_dir() / SEG_GRAPH, provenance, write,
                        f"segmentation graph from {weights.name}")
