"""Static TensorRT checks on the REAL exported student, and on small graphs that break one rule each."""

from __future__ import annotations

from pathlib import Path

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


# ------------------------------------------------------------------ the default model


@pytest.fixture(scope="module")
def default_model_path(checkpoint_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model users get by default (`sage-ros export`, `weights fetch`, the node), built by the same
    function they go through: the released student's fusion graph (segmentation is a graph of its own)."""
    from sage_ros.model.model_files import ensure_onnx

    return ensure_onnx(tmp_path_factory.mktemp("default_model") / "sage_student.onnx", checkpoint_path)


def test_default_model_passes_every_static_tensorrt_check(default_model_path: Path, capsys) -> None:
    model = onnx.load(str(default_model_path))
    assert [o.name for o in model.graph.output] == ["fused_y"], "the student graph is fusion-only"
    report = check_onnx_for_tensorrt(model)
    assert report.ok, report.summary()
    assert report.warnings == []
    assert not onnx_has_qdq(model) and not onnx_has_qdq(default_model_path)
    # ... and the command a user runs agrees.
    from sage_ros.cli import main

    assert main(["build-engine", str(default_model_path), "--check-only"]) == 0
    assert "ERROR" not in capsys.readouterr().out


def test_engine_spec_of_the_default_model(default_model_path: Path) -> None:
    """The TensorRT engine-cache key is computed from the default model like from the student."""
    from sage_ros.tensorrt.engine_cache import EngineSpec
    from sage_ros.tensorrt.shapes import DEFAULT_PROFILE

    spec = EngineSpec.from_onnx(default_model_path, "fp16", DEFAULT_PROFILE)
    assert spec.onnx_sha256 and len(spec.onnx_sha256) == 64


def test_an_extra_output_is_a_warning_not_an_error() -> None:
    """A model with more outputs than fused_y (e.g. an earlier export with class ids) still builds: the
    backend reads fused_y and says the rest is computed for nothing."""
    outputs = [helper.make_tensor_value_info("fused_y", TensorProto.FLOAT, [1, 1, "height", "width"]),
               helper.make_tensor_value_info("class_ids", TensorProto.UINT8, [1, "height", "width"])]
    nodes = [*ADD, helper.make_node("ArgMax", ["fused_y"], ["a"], axis=1, keepdims=0),
             helper.make_node("Cast", ["a"], ["class_ids"], to=TensorProto.UINT8)]
    report = check_onnx_for_tensorrt(_graph(nodes, outputs=outputs))
    assert report.ok, report.errors
    assert report.warnings == ["extra graph output 'class_ids' will be computed and ignored"]


def test_default_model_passes_the_tensorrt_checks(checkpoint_path: Path, tmp_path: Path) -> None:
    """The default model as `sage-ros weights fetch` builds it (the torch-free builder) passes every check."""
    from sage_ros.model.model_files import export_checkpoint

    path = export_checkpoint(checkpoint_path, tmp_path / "sage_student.onnx")
    report = check_onnx_for_tensorrt(path)
    assert report.ok and not report.warnings, report.summary()
    assert [o.name for o in onnx.load(str(path)).graph.output] == ["fused_y"]
