"""Static checks that an exported ONNX graph will parse and build in TensorRT 8.6 / 10.x.

Runs with the `onnx` package only (no TensorRT): catches before a long Jetson build the problems
that otherwise surface as parser errors there (opset too new, custom ops, BatchNorm left unfolded,
fixed input sizes, wrong input/output names or types).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

# TensorRT 8.6 is the oldest we build with and its ONNX parser reads opsets up to 17.
MAX_OPSET = 17
INPUTS = ("vis_y", "ir")
FUSED_OUTPUT = "fused_y"

# ONNX operators the TensorRT 8.6 ONNX parser imports (TensorRT 10 supports all of them too), from
# onnx-tensorrt's operator support table. A graph using anything else needs a plugin.
TRT_SUPPORTED_OPS = frozenset(
    """
    Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization
    Cast Ceil Celu Clip Concat ConcatFromSequence Constant ConstantOfShape Conv ConvTranspose Cos Cosh
    CumSum DepthToSpace DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten
    Floor Gather GatherElements GatherND Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool Greater
    GreaterOrEqual GridSample GRU HardSigmoid HardSwish Hardmax Identity If InstanceNormalization
    IsInf IsNaN LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax Loop LpNormalization
    LpPool LRN LSTM MatMul Max MaxPool Mean MeanVarianceNormalization Min Mod Mul Neg NonMaxSuppression
    NonZero Not OneHot Or Pad Pow PRelu QuantizeLinear RandomNormal RandomNormalLike RandomUniform
    RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax
    ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence RNN
    RoiAlign Round ScatterElements ScatterND Scan Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice
    Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile
    TopK Transpose Trilu Unsqueeze Upsample Where Xor
    """.split()
)
# Supported by TensorRT but a sign that the export went wrong for this project.
UNWANTED_OPS = {
    "BatchNormalization": "BatchNorm was not folded into the convolutions (export with fold_batchnorm)",
    "Dropout": "the model was exported in training mode",
}
_RESIZE_MODES = {b"nearest", b"linear", b"cubic"}
_RESIZE_COORDS = {b"half_pixel", b"pytorch_half_pixel", b"align_corners", b"asymmetric", b"tf_half_pixel_for_nn"}


@dataclass
class CheckReport:
    """Findings of `check_onnx_for_tensorrt`; `ok` when there are no errors."""

    opset: int | None = None
    ops: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        lines = [f"opset {self.opset}, {sum(self.ops.values())} nodes: "
                 + ", ".join(f"{op} x{n}" for op, n in sorted(self.ops.items()))]
        lines += [f"ERROR: {e}" for e in self.errors]
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def _load(model_or_path):
    import onnx

    if isinstance(model_or_path, (str, Path)):
        return onnx.load(str(model_or_path))
    return model_or_path


def _dims(value_info) -> list:
    """Per dimension: an int for a fixed size, a str for a named dynamic one, None for unknown."""
    dims = []
    for d in value_info.type.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            dims.append(d.dim_param)
        else:
            dims.append(None)
    return dims


def _check_tensor(report: CheckReport, kind: str, vi, elem_types: set[int], rank: int,
                  dynamic_axes: tuple[int, ...], fixed: dict[int, int]) -> None:
    import onnx

    tt = vi.type.tensor_type
    type_names = "/".join(onnx.TensorProto.DataType.Name(t) for t in sorted(elem_types))
    if tt.elem_type not in elem_types:
        report.errors.append(
            f"{kind} {vi.name!r} is {onnx.TensorProto.DataType.Name(tt.elem_type)}, expected {type_names}"
        )
    if not tt.HasField("shape"):
        report.errors.append(f"{kind} {vi.name!r} has no shape")
        return
    dims = _dims(vi)
    if len(dims) != rank:
        report.errors.append(f"{kind} {vi.name!r} has rank {len(dims)} {dims}, expected rank {rank}")
        return
    for axis in dynamic_axes:
        if isinstance(dims[axis], int):
            report.errors.append(
                f"{kind} {vi.name!r} axis {axis} is fixed to {dims[axis]}: export with dynamic height/width "
                "so one engine profile serves every camera size"
            )
    for axis, size in fixed.items():
        if dims[axis] != size:
            report.errors.append(f"{kind} {vi.name!r} axis {axis} is {dims[axis]!r}, expected {size}")
    if kind == "output" and 0 not in fixed:
        # TensorRT derives output shapes from the input profile (batch 1), so a symbolic batch name on
        # an output is harmless, but one shared with another axis is a wrongly declared shape.
        batch = dims[0]
        if isinstance(batch, int) and batch != 1:
            report.errors.append(f"output {vi.name!r} axis 0 is {batch}, expected 1 (one image per call)")
        elif isinstance(batch, str) and batch in dims[1:]:
            report.errors.append(
                f"output {vi.name!r} declares dims {dims}: axis 0 is named {batch!r} like a spatial axis "
                "(a wrong shape from the export; expected 1 or a batch name of its own)"
            )


def check_onnx_for_tensorrt(model_or_path, max_opset: int = MAX_OPSET) -> CheckReport:
    """Check opset, operators, BatchNorm folding, I/O names, dtypes and dynamic axes."""
    import onnx

    model = _load(model_or_path)
    report = CheckReport()
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        report.errors.append(f"onnx.checker rejects the model: {str(exc).splitlines()[0]}")

    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            report.opset = int(imp.version)
        else:
            report.errors.append(f"opset import of custom domain {imp.domain!r}: TensorRT needs a plugin for it")
    if report.opset is None:
        report.errors.append("no default-domain opset import")
    elif report.opset > max_opset:
        report.errors.append(
            f"opset {report.opset} > {max_opset}: TensorRT 8.6's parser reads opsets up to {max_opset}"
        )
    if model.functions:
        report.warnings.append(f"{len(model.functions)} local functions: TensorRT inlines only some")

    graph = model.graph
    for node in graph.node:
        report.ops[node.op_type] += 1
        if node.domain not in ("", "ai.onnx"):
            report.errors.append(
                f"node {node.name or node.op_type!r} is {node.domain}::{node.op_type}: not in TensorRT"
            )
        elif node.op_type not in TRT_SUPPORTED_OPS:
            report.errors.append(f"operator {node.op_type} is not supported by the TensorRT ONNX parser")
        if node.op_type == "Resize":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            if attrs.get("mode", b"nearest") not in _RESIZE_MODES:
                report.errors.append(f"Resize mode {attrs.get('mode')!r} is not supported by TensorRT")
            if attrs.get("coordinate_transformation_mode", b"half_pixel") not in _RESIZE_COORDS:
                report.errors.append(
                    f"Resize coordinate mode {attrs['coordinate_transformation_mode']!r} is not supported"
                )
    for op, why in UNWANTED_OPS.items():
        if report.ops.get(op):
            report.errors.append(f"{report.ops[op]} {op} node(s): {why}")
    for init in graph.initializer:
        if init.data_type == onnx.TensorProto.DOUBLE:
            report.errors.append(f"initializer {init.name!r} is float64: TensorRT has no double kernels")

    initializer_names = {i.name for i in graph.initializer}
    inputs = {vi.name: vi for vi in graph.input if vi.name not in initializer_names}
    for name in INPUTS:
        if name not in inputs:
            report.errors.append(f"graph input {name!r} is missing (inputs: {sorted(inputs)})")
        else:
            _check_tensor(report, "input", inputs[name], {onnx.TensorProto.FLOAT}, 4, (2, 3), {0: 1, 1: 1})
    for name in sorted(set(inputs) - set(INPUTS)):
        report.errors.append(f"unexpected graph input {name!r}: the node feeds only {', '.join(INPUTS)}")

    outputs = {vi.name: vi for vi in graph.output}
    if FUSED_OUTPUT not in outputs:
        report.errors.append(f"graph output {FUSED_OUTPUT!r} is missing (outputs: {sorted(outputs)})")
    else:
        _check_tensor(report, "output", outputs[FUSED_OUTPUT], {onnx.TensorProto.FLOAT}, 4, (2, 3), {1: 1})
    for name in sorted(set(outputs) - {FUSED_OUTPUT}):
        report.warnings.append(f"extra graph output {name!r} will be computed and ignored")
    return report


def onnx_has_qdq(model_or_path) -> bool:
    """Whether the graph carries explicit quantisation (QuantizeLinear/DequantizeLinear nodes)."""
    if isinstance(model_or_path, (str, Path)):
        try:
            import onnx  # noqa: F401
        except ImportError:
            # Jetsons often lack the onnx package; op types are stored as plain strings in the file.
            return b"QuantizeLinear" in Path(model_or_path).read_bytes()
    model = _load(model_or_path)
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)
