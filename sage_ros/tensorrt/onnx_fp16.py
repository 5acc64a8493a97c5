"""A float16 copy of the student ONNX for strongly typed TensorRT builds (TensorRT 11: no FP16 flag).

In a strongly typed network the tensor types in the graph decide the precision, so FP16 means the
weights and activations are float16 in the ONNX itself. The node keeps feeding and reading float32:
Cast nodes at the graph inputs and outputs keep the I/O contract (`vis_y`, `ir`, `fused_y` float32).
Tensors that ONNX requires to stay float32 (Resize's roi/scales) are left alone.
"""

from __future__ import annotations

from pathlib import Path


def convert_to_fp16(model):
    """Return a converted copy of `model` (an onnx.ModelProto); float32 I/O kept via Cast nodes."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    keep_fp32 = {
        node.input[i]
        for node in graph.node
        if node.op_type == "Resize"
        for i in (1, 2)
        if len(node.input) > i and node.input[i]
    }

    def to_half(tensor):
        return numpy_helper.from_array(numpy_helper.to_array(tensor).astype("float16"), tensor.name)

    for i, init in enumerate(graph.initializer):
        if init.data_type == TensorProto.FLOAT and init.name not in keep_fp32:
            graph.initializer[i].CopyFrom(to_half(init))
    for node in graph.node:
        if any(out in keep_fp32 for out in node.output):
            continue
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == TensorProto.FLOAT:
                attr.t.CopyFrom(to_half(attr.t))
            if node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT:
                attr.i = TensorProto.FLOAT16

    float_inputs = [vi.name for vi in graph.input if vi.type.tensor_type.elem_type == TensorProto.FLOAT]
    float_outputs = [vi.name for vi in graph.output if vi.type.tensor_type.elem_type == TensorProto.FLOAT]
    renamed_in = {name: f"{name}__fp16" for name in float_inputs}
    renamed_out = {name: f"{name}__fp16" for name in float_outputs}
    # Nodes that read a graph output (the segmentation head reads fused_y) read its float16 version,
    # so the graph stays topologically sorted and typed consistently.
    renamed_reads = {**renamed_in, **renamed_out}
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in renamed_reads:
                node.input[i] = renamed_reads[name]
        for i, name in enumerate(node.output):
            if name in renamed_out:
                node.output[i] = renamed_out[name]
    casts_in = [
        helper.make_node("Cast", [name], [half], to=TensorProto.FLOAT16, name=f"cast_in_{name}")
        for name, half in renamed_in.items()
    ]
    casts_out = [
        helper.make_node("Cast", [half], [name], to=TensorProto.FLOAT, name=f"cast_out_{name}")
        for name, half in renamed_out.items()
    ]
    nodes = casts_in + list(graph.node) + casts_out
    del graph.node[:]
    graph.node.extend(nodes)
    # Old intermediate types say float32; let shape inference recompute them.
    del graph.value_info[:]
    return onnx.shape_inference.infer_shapes(model)


def fp16_onnx_bytes(onnx_path: str | Path) -> bytes:
    import onnx

    return convert_to_fp16(onnx.load(str(onnx_path))).SerializeToString()
