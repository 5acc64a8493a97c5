"""A PyTorch student (released topology, fast or scale-adapted, trained or not) to its fusion graph, through the
one torch-free builder (`graphs.onnx_builder`): BatchNorm folded, dynamic height/width, opset 17."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from sage_ros.graphs.onnx_builder import build_student_model_proto, save_student_onnx


def export_student(student: nn.Module, out_path: str | Path, **metadata) -> Path:
    """Write the fusion-only graph (inputs vis_y, ir; output fused_y) and its JSON sidecar."""
    state = {k: v.detach().cpu().numpy() for k, v in student.state_dict().items()}
    return save_student_onnx(build_student_model_proto(state), out_path, {"model": "sage_student"} | metadata)
