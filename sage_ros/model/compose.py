"""Join the student's fusion graph and a standalone segmentation graph into one two-output model.

onnx only (no PyTorch), so the development export and the torch-free robot build produce the same
graph. The segmentation graph follows the contract of `sage_ros/data/seg_net_msrs.onnx`: input
`fused_y` (N, 1, H, W float32, the student's fused Y clamped to [0, 1]), optionally `ir` and/or
`vis_y` (the student's own inputs), and one output `class_ids` (N, H, W uint8). The composed model
has the student's inputs and outputs `fused_y` (exactly the student's, unclamped) and `class_ids`.
"""

from __future__ import annotations

import copy

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

STUDENT_INPUTS = ("vis_y", "ir")
FUSED = "fused_y"
CLASS_IDS = "class_ids"
SEG_PREFIX = "seg/"
# Name of the clamped fused Y inside the composed graph (what the seg graph's `fused_y` becomes).
CLAMPED = "seg/fused_y_clamped"


class ComposeError(ValueError):
    """A student or segmentation graph that does not follow the interface compose expects."""


def _names(values) -> list[str]:
    return [v.name for v in values]


def _opset(model: onnx.ModelProto, domain: str = "") -> int | None:
    for entry in model.opset_import:
        if entry.domain in (domain, "ai.onnx" if domain == "" else domain):
            return int(entry.version)
    return None


def _check_interfaces(student: onnx.ModelProto, seg: onnx.ModelProto) -> None:
    s_in, s_out = _names(student.graph.input), _names(student.graph.output)
    if s_in != list(STUDENT_INPUTS) or s_out != [FUSED]:
        raise ComposeError(
            f"student graph must have inputs {list(STUDENT_INPUTS)} and the single output {FUSED!r}; "
            f"found inputs {s_in}, outputs {s_out}"
        )
    g_in, g_out = _names(seg.graph.input), _names(seg.graph.output)
    # Initializers listed as inputs (old exporters) are not real inputs.
    init_names = {t.name for t in seg.graph.initializer}
    g_in = [n for n in g_in if n not in init_names]
    if FUSED not in g_in or not set(g_in) <= {FUSED, *STUDENT_INPUTS}:
        raise ComposeError(
            f"segmentation graph inputs must be {FUSED!r} plus optionally 'ir'/'vis_y'; found {g_in}"
        )
    if g_out != [CLASS_IDS]:
        raise ComposeError(f"segmentation graph must have the single output {CLASS_IDS!r}; found {g_out}")
    out_type = seg.graph.output[0].type.tensor_type.elem_type
    if out_type != TensorProto.UINT8:
        raise ComposeError(
            f"segmentation output {CLASS_IDS!r} must be uint8, found {TensorProto.DataType.Name(out_type)}"
        )
    if seg.functions:
        raise ComposeError("segmentation graphs with model-local functions are not supported")
    for node in seg.graph.node:
        for attr in node.attribute:
            if attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
                raise ComposeError(f"segmentation node {node.name or node.op_type} has a subgraph (unsupported)")
    s_op, g_op = _opset(student), _opset(seg)
    if s_op is None or g_op is None:
        raise ComposeError("both graphs must import the default ONNX domain")
    if g_op > s_op:
        raise ComposeError(f"segmentation graph uses opset {g_op}, newer than the student's {s_op}")
    other = [(o.domain, o.version) for o in seg.opset_import if o.domain not in ("", "ai.onnx")]
    if other:
        raise ComposeError(f"segmentation graph imports custom domains {other} (unsupported)")


def _fused_shape_dims(student: onnx.ModelProto) -> list[onnx.TensorShapeProto.Dimension]:
    dims = list(student.graph.output[0].type.tensor_type.shape.dim)
    if len(dims) != 4:
        raise ComposeError(f"student output {FUSED!r} must be rank 4 (N, 1, H, W), found rank {len(dims)}")
    return dims


def attach_segmentation(student: onnx.ModelProto, seg: onnx.ModelProto) -> onnx.ModelProto:
    """Return one model: the student unchanged, plus Clip(fused_y, 0, 1) -> seg graph -> class_ids.

    Every name of the segmentation graph is prefixed with `seg/` except the student inputs it reads,
    so the two parts cannot collide. `class_ids` is declared (N, H, W) with the student's own batch and
    dynamic height/width names, which is what the TensorRT checks and the backends expect.
    """
    _check_interfaces(student, seg)
    dims = _fused_shape_dims(student)
    out = copy.deepcopy(student)
    graph = out.graph
    seg_graph = seg.graph
    init_names = {t.name for t in seg_graph.initializer}
    # Seg input name -> name in the composed graph.
    rename: dict[str, str] = {FUSED: CLAMPED}
    for value in seg_graph.input:
        if value.name in STUDENT_INPUTS:
            rename[value.name] = value.name

    def mapped(name: str) -> str:
        if not name:
            return name  # an omitted optional input stays omitted
        if name not in rename:
            rename[name] = CLASS_IDS if name == CLASS_IDS else SEG_PREFIX + name
        return rename[name]

    # The seg net was trained on the clamped output; the student's Tanh output is in [-1, 1].
    lo = numpy_helper.from_array(np.array(0.0, dtype=np.float32), SEG_PREFIX + "clip_min")
    hi = numpy_helper.from_array(np.array(1.0, dtype=np.float32), SEG_PREFIX + "clip_max")
    graph.initializer.extend([lo, hi])
    graph.node.append(
        helper.make_node("Clip", [FUSED, lo.name, hi.name], [CLAMPED], name=SEG_PREFIX + "clamp_fused")
    )
    for tensor in seg_graph.initializer:
        t = copy.deepcopy(tensor)
        t.name = mapped(tensor.name)
        graph.initializer.append(t)
    for node in seg_graph.node:
        n = copy.deepcopy(node)
        del n.input[:]
        del n.output[:]
        n.input.extend(mapped(x) for x in node.input)
        n.output.extend(mapped(x) for x in node.output)
        n.name = SEG_PREFIX + (node.name or node.op_type)
        graph.node.append(n)
    for value in seg_graph.value_info:
        if value.name in init_names or value.name in rename and rename[value.name] in STUDENT_INPUTS:
            continue
        v = copy.deepcopy(value)
        v.name = mapped(value.name)
        graph.value_info.append(v)
    class_dims = [dims[0], dims[2], dims[3]]
    shape = [d.dim_param if d.dim_param else (d.dim_value if d.HasField("dim_value") else None) for d in class_dims]
    graph.output.append(helper.make_tensor_value_info(CLASS_IDS, TensorProto.UINT8, shape))
    # Metadata of the seg graph travels with it, namespaced, so provenance is not lost.
    for prop in seg.metadata_props:
        out.metadata_props.append(onnx.StringStringEntryProto(key=SEG_PREFIX + prop.key, value=prop.value))
    onnx.checker.check_model(out)
    return out


def segmentation_inputs(seg: onnx.ModelProto) -> list[str]:
    """The graph inputs a segmentation model reads (initializers excluded)."""
    init_names = {t.name for t in seg.graph.initializer}
    return [v.name for v in seg.graph.input if v.name not in init_names]
