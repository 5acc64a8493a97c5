"""Finding the model a command or node should run, exporting it from the checkpoint when needed.

The default model is the released student plus the segmentation network this project trained on MSRS
(`sage_ros/data/seg_net_msrs.*`, made a graph without PyTorch, or the older `seg_head_msrs.npz`): one
graph, two outputs (fused Y exactly the student's, class ids), joined by `sage_ros.model.compose`. The
student graph is built by PyTorch's exporter when torch is installed and by the torch-free
`model.onnx_builder` otherwise.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import tempfile
from pathlib import Path

from sage_ros.model.weights import sha256_of
from sage_ros.paths import default_checkpoint, default_onnx, models_dir

log = logging.getLogger(__name__)

DEFAULT_HEAD = "default"  # sentinel: the segmentation network shipped in the package, when present
BUILDER_ENV = "SAGE_ROS_ONNX_BUILDER"  # "torch" or "numpy": force one student builder (tests, debugging)


def shipped_head() -> Path | None:
    """The segmentation network shipped in the package, as a standalone seg graph, if this install has it.

    Preferred: the network weights `data/seg_net_msrs.*` (an ensemble stored as its members), turned into
    a graph without PyTorch (`seg_graph`) once and kept in the models cache; else the older head weights
    `data/seg_head_msrs.npz` (turned into a graph with PyTorch).
    """
    from sage_ros.model.seg_graph import weights_present

    data = Path(__file__).resolve().parents[1] / "data"
    if weights_present(data / "seg_net_msrs.npz"):
        return shipped_seg_graph(data / "seg_net_msrs.npz")
    npz = data / "seg_head_msrs.npz"
    if npz.is_file():
        if torch_available():
            return npz
        log.warning("the shipped segmentation head %s needs PyTorch to become a graph and no segmentation "
                    "network is installed: the default model is fusion-only (no class ids)", npz.name)
    return None


def shipped_seg_graph(weights: Path, out_onnx: Path | None = None) -> Path:
    """The graph of the shipped network in the models cache, built (torch-free) when missing or when the
    weights changed since (the graph's sidecar records their sha256)."""
    from sage_ros.model.seg_graph import graph_from_weights, weights_sha256

    out_onnx = out_onnx or models_dir() / "seg_net_msrs.onnx"
    sidecar = out_onnx.with_suffix(".json")
    if out_onnx.is_file() and sidecar.is_file():
        try:
            if json.loads(sidecar.read_text()).get("weights_sha256") == weights_sha256(weights):
                return out_onnx
        except (OSError, ValueError):
            pass  # unreadable sidecar: build again
    log.info("building the segmentation graph %s from %s", out_onnx, weights.name)
    out_onnx.parent.mkdir(parents=True, exist_ok=True)
    # Built beside the target and moved into place (graph first, then the sidecar that vouches for it),
    # so a process starting at the same time never reads half a file.
    with tempfile.TemporaryDirectory(dir=out_onnx.parent) as tmp:
        built = graph_from_weights(weights, Path(tmp) / out_onnx.name)
        os.replace(built, out_onnx)
        os.replace(built.with_suffix(".json"), sidecar)
    return out_onnx


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


def torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


def _student_builder() -> str:
    forced = os.environ.get(BUILDER_ENV, "").strip().lower()
    if forced in ("torch", "numpy"):
        return forced
    # PyTorch's exporter where it is installed (development); the torch-free builder elsewhere.
    return "torch" if torch_available() else "numpy"


def build_student_model(checkpoint: Path, builder: str | None = None):
    """The fusion-only student graph (inputs vis_y, ir; output fused_y) as an onnx.ModelProto."""
    import onnx

    builder = builder or _student_builder()
    if builder == "numpy":
        from sage_ros.model.onnx_builder import build_student_onnx

        return build_student_onnx(checkpoint)
    from sage_ros.model.checkpoint import load_student
    from sage_ros.model.export import export_student

    with tempfile.TemporaryDirectory() as tmp:
        path = export_student(load_student(checkpoint), Path(tmp) / "student.onnx")
        return onnx.load(str(path))


def _head_sidecar(head_path: Path) -> dict:
    sidecar = head_path.with_suffix(".json")
    if not sidecar.is_file():
        raise RuntimeError(f"segmentation network {head_path}: metadata file {sidecar} is missing")
    try:
        return json.loads(sidecar.read_text())
    except ValueError as exc:
        raise RuntimeError(f"segmentation metadata {sidecar} is not valid JSON: {exc}") from exc


def load_seg_model(head_path: Path):
    """The standalone segmentation graph (input fused_y [+ ir/vis_y], output class_ids uint8).

    A `.onnx` file is read as is (no PyTorch); `.npz` head weights are exported with PyTorch.
    """
    import onnx

    head_path = Path(head_path)
    if head_path.suffix == ".onnx":
        return onnx.load(str(head_path))
    if not torch_available():
        raise RuntimeError(
            f"segmentation head {head_path.name} is stored as weights (.npz), which needs PyTorch to become "
            "a graph; use a standalone seg graph (.onnx, e.g. from `sage-ros seg train`) or --no-head"
        )
    from sage_ros.model.export import export_seg_head

    with tempfile.TemporaryDirectory() as tmp:
        return onnx.load(str(export_seg_head(head_path, Path(tmp) / "seg.onnx")))


def export_checkpoint(
    checkpoint: Path, onnx_path: Path, head: Path | str | None = None, builder: str | None = None
) -> Path:
    """Build the ONNX model from a student checkpoint (+ optionally a segmentation network).

    The student graph comes from PyTorch's exporter where torch is installed, else from the torch-free
    builder (same names, axes and outputs); a segmentation network is attached with
    `compose.attach_segmentation` in both cases, so both paths carry the identical seg subgraph.
    """
    import onnx

    from sage_ros.model.compose import attach_segmentation

    head_path = _resolve_head(head)
    checkpoint, onnx_path = Path(checkpoint), Path(onnx_path)
    builder = builder or _student_builder()
    model = build_student_model(checkpoint, builder)
    meta: dict = {"inputs": ["vis_y", "ir"], "outputs": ["fused_y"], "opset": 17,
                  "model": "sage_student", "classes": []}
    if head_path is not None:
        if not head_path.is_file():
            raise RuntimeError(f"segmentation network {head_path} does not exist")
        head_meta = _head_sidecar(head_path)
        if not isinstance(head_meta.get("classes"), list):
            raise RuntimeError(f"segmentation metadata {head_path.with_suffix('.json')} has no 'classes' list")
        model = attach_segmentation(model, load_seg_model(head_path))
        meta.update(
            outputs=["fused_y", "class_ids"],
            model="sage_student_seg",
            classes=head_meta["classes"],
            head={k: v for k, v in head_meta.items() if k != "classes"} | {"file": head_path.name},
        )
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    # Write next to the target then rename, so a reader never sees half a model.
    tmp_path = onnx_path.with_name(onnx_path.name + ".part")
    onnx.save(model, str(tmp_path))
    os.replace(tmp_path, onnx_path)
    # Record what the model was built from, so a stale export is detected and redone.
    meta.update(_provenance(checkpoint, head_path), checkpoint=str(checkpoint), builder=builder)
    onnx_path.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    log.info("built %s (student by %s%s)", onnx_path, builder, ", + segmentation" if head_path else "")
    return onnx_path


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
    from sage_ros.model.quantize import quantize_int8
    from sage_ros.paths import official_dir

    onnx_path = Path(onnx_path)
    int8_path = onnx_path.with_name(onnx_path.stem + "_int8.onnx")
    if int8_path.is_file() and int8_path.stat().st_mtime >= onnx_path.stat().st_mtime:
        return int8_path
    calibration_dir = Path(calibration_dir) if calibration_dir else official_dir()
    log.info("quantising %s to int8 with calibration pairs from %s", onnx_path, calibration_dir)
    return quantize_int8(onnx_path, int8_path, calibration_dir)
