"""A trained student -> the ONNX model + JSON metadata sidecar that the node and backends load."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from sage_ros import __version__
from sage_ros.model.classes import ClassTable, class_table
from sage_ros.networks.export import export_student
from sage_ros.training.config import TrainConfig

# What the exported graph expects, stated for users who feed it from their own code.
INPUT_NORMALISATION = {
    "vis_y": "luminance of the 8-bit BGR visible image (OpenCV COLOR_BGR2YCrCb, BT.601) divided by 255",
    "ir": "infrared as one grey channel divided by 255 (or a float image already in [0, 1])",
    "layout": "NCHW float32, N=1, C=1, any H and W",
    "fused_y": "Tanh output; clamp to [0, 1], recombine with the visible Cr/Cb (sage_ros.image.imaging)",
}


def class_table_for(classes: str | list[str]) -> ClassTable:
    """A built-in class set by name ('msrs', 'fmb') or a table from a list of names (grey palette)."""
    if isinstance(classes, str):
        return class_table(classes)
    if not classes:
        raise ValueError("output.classes is an empty list")
    from sage_ros.model.classes import table_from_json

    return table_from_json([{"id": i, "name": str(n)} for i, n in enumerate(classes)])


def export_trained_student(student: nn.Module, out_path: str | Path, cfg: TrainConfig, steps: int) -> Path:
    """Export with metadata: classes, input normalisation and the training config hash."""
    device = next(student.parameters()).device
    table = class_table_for(cfg.output.classes)
    meta = {
        "classes": table.to_json(),
        "input_normalisation": INPUT_NORMALISATION,
        "training": {
            "config_hash": cfg.hash(),
            "steps": int(steps),
            "dataset": {"layout": cfg.data.layout, "split": cfg.data.split},
            "sam_checkpoint": Path(cfg.sam.checkpoint).name if cfg.sam.checkpoint else None,
            # Provenance of the teacher's task loss.
            "segmenter": {
                "factory": cfg.segmenter.factory,
                "weights": Path(cfg.segmenter.weights).name if cfg.segmenter.weights else None,
            },
            "sage_ros_version": __version__,
        },
    }
    try:
        return export_student(student.cpu(), out_path, **meta)
    finally:
        student.to(device)
