"""compose.attach_segmentation: student graph + standalone seg graph -> one two-output model (onnx only)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from sage_ros.model.compose import CLASS_IDS, ComposeError, attach_segmentation

ort = pytest.importorskip("onnxruntime")

DYN = [1, 1, "height", "width"]


def _student() -> onnx.ModelProto:
    # fused = tanh(2*vis - ir): values in [-1, 1], so the Clip before the seg graph matters.
    two = numpy_helper.from_array(np.array(2.0, np.float32), "two")
    nodes = [
        helper.make_node("Mul", ["vis_y", "two"], ["a"]),
        helper.make_node("Sub", ["a", "ir"], ["b"]),
        helper.make_node("Tanh", ["b"], ["fused_y"]),
    ]
    graph = helper.make_graph(
        nodes, "student",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, DYN) for n in ("vis_y", "ir")],
        [helper.make_tensor_value_info("fused_y", TensorProto.FLOAT, DYN)],
        [two],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _seg(extra_input: str | None = None, out_type: int = TensorProto.UINT8) -> onnx.ModelProto:
    # Class 1 where fused_y (+ the extra input) > 0.5, else 0; names collide with the student's on purpose.
    half = numpy_helper.from_array(np.array(0.5, np.float32), "two")  # same name as a student initializer
    inputs = ["fused_y"] + ([extra_input] if extra_input else [])
    nodes = []
    src = "fused_y"
    if extra_input:
        nodes.append(helper.make_node("Add", ["fused_y", extra_input], ["a"]))
        src = "a"
    nodes += [
        helper.make_node("Greater", [src, "two"], ["b"]),
        helper.make_node("Squeeze", ["b", "axis"], ["c"]),
        helper.make_node("Cast", ["c"], [CLASS_IDS], to=out_type),
    ]
    axis = numpy_helper.from_array(np.array([1], np.int64), "axis")
    graph = helper.make_graph(
        nodes, "seg",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", 1, "h", "w"]) for n in inputs],
        [helper.make_tensor_value_info(CLASS_IDS, out_type, ["batch", "h", "w"])],
        [half, axis],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model: onnx.ModelProto, vis: np.ndarray, ir: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"vis_y": vis, "ir": ir})


@pytest.mark.parametrize("extra", [None, "ir", "vis_y"])
def test_composed_model_has_student_output_and_clamped_seg(extra: str | None) -> None:
    rng = np.random.default_rng(0)
    vis = rng.random((1, 1, 5, 7), dtype=np.float32)
    ir = rng.random((1, 1, 5, 7), dtype=np.float32)
    model = attach_segmentation(_student(), _seg(extra))
    assert [o.name for o in model.graph.input] == ["vis_y", "ir"]
    assert [o.name for o in model.graph.output] == ["fused_y", CLASS_IDS]
    dims = [d.dim_param or d.dim_value for d in model.graph.output[1].type.tensor_type.shape.dim]
    assert dims == [1, "height", "width"]
    fused, ids = _run(model, vis, ir)
    # The student output is untouched: identical to running the student graph alone.
    np.testing.assert_array_equal(fused, _run(_student(), vis, ir)[0])
    np.testing.assert_allclose(fused, np.tanh(2 * vis - ir), atol=1e-6)
    seg_in = np.clip(fused, 0, 1) + ({"ir": ir, "vis_y": vis}[extra] if extra else 0)
    np.testing.assert_array_equal(ids, (seg_in > 0.5)[:, 0].astype(np.uint8))
    assert ids.dtype == np.uint8


def test_interface_errors_are_clear() -> None:
    with pytest.raises(ComposeError, match="uint8"):
        attach_segmentation(_student(), _seg(out_type=TensorProto.INT64))
    bad = _seg()
    bad.graph.input[0].name = "image"
    with pytest.raises(ComposeError, match="fused_y"):
        attach_segmentation(_student(), bad)
    with pytest.raises(ComposeError, match="student graph"):
        attach_segmentation(_seg(), _seg())


def test_real_student_with_shipped_head_matches_single_graph_export(checkpoint_path, tmp_path) -> None:
    """The composed default model equals the one-graph torch export of student + head, bit for bit."""
    pytest.importorskip("torch", reason="the one-graph reference export needs PyTorch")
    import cv2
    import torch

    from sage_ros.model.model_files import export_checkpoint
    from sage_ros.model.seg_head import SegHead, export_student_with_head, save_head

    # The older head format (.npz, exported through torch); the package now ships SegNet weights instead.
    torch.manual_seed(0)
    head_path = save_head(SegHead().eval(), tmp_path / "head.npz")
    reference = export_student_with_head(checkpoint_path, head_path, tmp_path / "one.onnx")
    composed = export_checkpoint(checkpoint_path, tmp_path / "composed.onnx", head_path)
    official = checkpoint_path.parent
    ir = cv2.imread(str(official / "Ir/00000.png"), cv2.IMREAD_GRAYSCALE)[None, None] / np.float32(255)
    vis = cv2.imread(str(official / "Vis/00000.png"))
    y = cv2.cvtColor(vis, cv2.COLOR_BGR2YCrCb)[None, None, :, :, 0] / np.float32(255)
    a = _run(onnx.load(reference), y, ir)
    b = _run(onnx.load(composed), y, ir)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
