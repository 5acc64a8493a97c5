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


def _check_tensor(report: CheckReport, kind: str, vi, fixed: dict[int, int]) -> None:
    """float32 NCHW with dynamic height and width, N/C sizes as in `fixed`."""
    import onnx

    tt = vi.type.tensor_type
    if tt.elem_type != onnx.TensorProto.FLOAT:
        report.errors.append(f"{kind} {vi.name!r} is {onnx.TensorProto.DataType.Name(tt.elem_type)}, expected FLOAT")
    if not tt.HasField("shape"):
        report.errors.append(f"{kind} {vi.name!r} has no shape")
        return
    # Per dimension: an int for a fixed size, a str for a named dynamic one, None for unknown.
    dims = [int(d.dim_value) if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim]
    if len(dims) != 4:
        report.errors.append(f"{kind} {vi.name!r} has rank {len(dims)} {dims}, expected rank 4")
        return
    for axis in (2, 3):
        if isinstance(dims[axis], int):
            report.errors.append(
                f"{kind} {vi.name!r} axis {axis} is fixed to {dims[axis]}: export with dynamic height/width "
                "so one engine profile serves every camera size"
            )
    for axis, size in fixed.items():
        if dims[axis] != size:
            report.errors.append(f"{kind} {vi.name!r} axis {axis} is {dims[axis]!r}, expected {size}")


def check_onnx_for_tensorrt(model_or_path, max_opset: int = MAX_OPSET) -> CheckReport:
    """Check opset, operators, BatchNorm folding, I/O names, dtypes and dynamic axes."""
    import onnx

    model = onnx.load(str(model_or_path)) if isinstance(model_or_path, (str, Path)) else model_or_path
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

    graph = model.graph
    for node in graph.node:
        report.ops[node.op_type] += 1
        if node.domain not in ("", "ai.onnx"):
            report.errors.append(
                f"node {node.name or node.op_type!r} is {node.domain}::{node.op_type}: not in TensorRT"
            )
        elif node.op_type not in TRT_SUPPORTED_OPS:
            report.errors.append(f"operator {node.op_type} is not supported by the TensorRT ONNX parser")
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
            _check_tensor(report, "input", inputs[name], {0: 1, 1: 1})
    for name in sorted(set(inputs) - set(INPUTS)):
        report.errors.append(f"unexpected graph input {name!r}: the node feeds only {', '.join(INPUTS)}")

    outputs = {vi.name: vi for vi in graph.output}
    if FUSED_OUTPUT not in outputs:
        report.errors.append(f"graph output {FUSED_OUTPUT!r} is missing (outputs: {sorted(outputs)})")
    else:
        _check_tensor(report, "output", outputs[FUSED_OUTPUT], {1: 1})
    for name in sorted(set(outputs) - {FUSED_OUTPUT}):
        report.warnings.append(f"extra graph output {name!r} will be computed and ignored")
    return report


def onnx_has_qdq(model_or_path) -> bool:
    """Whether the graph carries explicit quantisation (QuantizeLinear/DequantizeLinear nodes)."""
    if isinstance(model_or_path, (str, Path)):
        # Op types are plain strings in the file, so no onnx package is needed (Jetsons often lack it).
        return b"QuantizeLinear" in Path(model_or_path).read_bytes()
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model_or_path.graph.node)
