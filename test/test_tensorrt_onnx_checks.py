"""Static TensorRT checks on the REAL exported student, and on small graphs that break one rule each."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="the ONNX checks need the onnx package")
from onnx import TensorProto, helper  # noqa: E402

from sage_ros.tensorrt.onnx_checks import (  # noqa: E402
    MAX_OPSET,
    TRT_SUPPORTED_OPS,
    check_onnx_for_tensorrt,
    onnx_has_qdq,
)


@pytest.fixture(scope="module")
def student_model(student_onnx: Path):
    return onnx.load(str(student_onnx))


def test_real_student_passes_every_check(student_model) -> None:
    report = check_onnx_for_tensorrt(student_model)
    assert report.ok, report.summary()
    assert report.warnings == []


def test_real_student_graph_facts(student_model) -> None:
    opsets = {imp.domain: imp.version for imp in student_model.opset_import}
    assert set(opsets) <= {"", "ai.onnx"} and opsets.get("", opsets.get("ai.onnx")) <= MAX_OPSET
    ops = {n.op_type for n in student_model.graph.node}
    assert ops <= TRT_SUPPORTED_OPS, ops - TRT_SUPPORTED_OPS
    assert "BatchNormalization" not in ops, "BatchNorm must be folded into the convolutions"
    assert {"Conv", "LeakyRelu", "MaxPool", "Resize", "Concat", "Tanh"} <= ops
    assert all(n.domain in ("", "ai.onnx") for n in student_model.graph.node)

    inputs = {vi.name: vi for vi in student_model.graph.input}
    assert set(inputs) == {"vis_y", "ir"}
    for vi in inputs.values():
        tt = vi.type.tensor_type
        assert tt.elem_type == TensorProto.FLOAT
        dims = tt.shape.dim
        assert [d.dim_value for d in dims[:2]] == [1, 1]
        assert all(d.dim_param and not d.dim_value for d in dims[2:]), "height/width must be dynamic"
    (out,) = student_model.graph.output
    assert out.name == "fused_y" and out.type.tensor_type.elem_type == TensorProto.FLOAT
    assert all(d.dim_param for d in out.type.tensor_type.shape.dim[2:])
    assert not onnx_has_qdq(student_model)


def _graph(nodes, inputs=None, outputs=None, opset=17, initializers=(), h="height", w="width"):
    inputs = inputs or [
        helper.make_tensor_value_info("vis_y", TensorProto.FLOAT, [1, 1, h, w]),
        helper.make_tensor_value_info("ir", TensorProto.FLOAT, [1, 1, h, w]),
    ]
    outputs = outputs or [helper.make_tensor_value_info("fused_y", TensorProto.FLOAT, [1, 1, h, w])]
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


ADD = [helper.make_node("Add", ["vis_y", "ir"], ["fused_y"])]


def test_minimal_good_graph_passes() -> None:
    assert check_onnx_for_tensorrt(_graph(ADD)).ok


@pytest.mark.parametrize(
    "model, message",
    [
        (_graph(ADD, opset=18), "opset 18 > 17"),
        (_graph(ADD, h=480, w=640), "axis 2 is fixed to 480"),
        (
            _graph(
                [helper.make_node("Add", ["vis_y", "ir"], ["s"]),
                 helper.make_node("BatchNormalization", ["s", "g", "b", "m", "v"], ["fused_y"])],
                initializers=[helper.make_tensor(n, TensorProto.FLOAT, [1], [1.0]) for n in "gbmv"],
            ),
            "BatchNorm was not folded",
        ),
        (
            _graph([helper.make_node("Add", ["vis_y", "ir"], ["s"]),
                    helper.make_node("Unique", ["s"], ["fused_y"])]),
            "operator Unique is not supported",
        ),
        (
            _graph([helper.make_node("Add", ["vis_y", "ir"], ["s"]),
                    helper.make_node("MyFusion", ["s"], ["fused_y"], domain="com.example")]),
            "com.example::MyFusion",
        ),
        (
            _graph(ADD, inputs=[
                helper.make_tensor_value_info("vis_y", TensorProto.FLOAT, [1, 1, "h", "w"]),
                helper.make_tensor_value_info("ir", TensorProto.DOUBLE, [1, 1, "h", "w"]),
            ]),
            "input 'ir' is DOUBLE, expected FLOAT",
        ),
        (
            _graph([helper.make_node("Add", ["y", "ir"], ["fused_y"])], inputs=[
                helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, "h", "w"]),
                helper.make_tensor_value_info("ir", TensorProto.FLOAT, [1, 1, "h", "w"]),
            ]),
            "graph input 'vis_y' is missing",
        ),
        (
            _graph([helper.make_node("Add", ["vis_y", "ir"], ["out"])],
                   outputs=[helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 1, "h", "w"])]),
            "graph output 'fused_y' is missing",
        ),
        (
            _graph(ADD, outputs=[helper.make_tensor_value_info("fused_y", TensorProto.FLOAT16, [1, 1, "h", "w"])]),
            "output 'fused_y' is FLOAT16",
        ),
        (
            _graph(ADD, inputs=[
                helper.make_tensor_value_info("vis_y", TensorProto.FLOAT, [1, "h", "w"]),
                helper.make_tensor_value_info("ir", TensorProto.FLOAT, [1, 1, "h", "w"]),
            ]),
            "rank 3",
        ),
    ],
    ids=["opset18", "fixed_size", "batchnorm", "unsupported_op", "custom_domain", "double_input",
         "input_name", "output_name", "fp16_output", "input_rank"],
)
def test_each_broken_rule_is_reported(model, message: str) -> None:
    report = check_onnx_for_tensorrt(model)
    assert not report.ok
    assert any(message in e for e in report.errors), report.errors


def test_qdq_graph_is_recognised(tmp_path: Path) -> None:
    scale = helper.make_tensor("s", TensorProto.FLOAT, [], [0.01])
    zero = helper.make_tensor("z", TensorProto.INT8, [], [0])
    model = _graph(
        [helper.make_node("QuantizeLinear", ["vis_y", "s", "z"], ["q"]),
         helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"]),
         helper.make_node("Add", ["d", "ir"], ["fused_y"])],
        initializers=[scale, zero],
    )
    assert check_onnx_for_tensorrt(model).ok
    path = tmp_path / "qdq.onnx"
    onnx.save(model, str(path))
    assert onnx_has_qdq(path) and onnx_has_qdq(model)


def test_fp16_copy_of_real_student_keeps_float32_io_and_matches(student_onnx: Path) -> None:
    """The strongly typed (TensorRT 11) FP16 route: graph in float16, I/O still float32."""
    ort = pytest.importorskip("onnxruntime")
    from sage_ros.tensorrt.onnx_fp16 import convert_to_fp16

    model = onnx.load(str(student_onnx))
    half = convert_to_fp16(model)
    onnx.checker.check_model(half)
    assert check_onnx_for_tensorrt(half).ok
    assert all(i.data_type == TensorProto.FLOAT16 for i in half.graph.initializer if i.data_type in (1, 10))
    rng = np.random.default_rng(7)
    feeds = {n: rng.random((1, 1, 60, 80), dtype=np.float32) for n in ("vis_y", "ir")}
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    got = ort.InferenceSession(half.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    assert got.dtype == np.float32 and got.shape == ref.shape
    psnr = 10 * np.log10(4.0 / np.mean((got - ref) ** 2))  # Tanh output spans [-1, 1]
    assert psnr > 50, psnr
