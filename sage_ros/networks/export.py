"""Export the student to ONNX: BatchNorm folded, dynamic height/width, opset fit for TensorRT 8.6-10."""

from __future__ import annotations

import copy
import json
import logging
import warnings
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from sage_ros.networks.student import SageStudent, StudentFusionOnly

log = logging.getLogger(__name__)

# TensorRT 8.6 parses ONNX opsets up to 17; TensorRT 10 accepts it too.
OPSET = 17
INPUT_NAMES = ["vis_y", "ir"]


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """Return a copy in eval mode where every Conv2d directly followed by a BatchNorm2d is fused.

    The folded BatchNorm becomes Identity, so the exported graph has no BatchNormalization node.
    """
    module = copy.deepcopy(module).eval()
    for child in module.modules():
        if isinstance(child, nn.Sequential):
            items = list(child._modules.items())
            for (_, first), (name_b, second) in zip(items, items[1:], strict=False):
                if isinstance(first, nn.Conv2d) and isinstance(second, nn.BatchNorm2d):
                    fused = fuse_conv_bn_eval(first, second)
                    first.weight = fused.weight
                    first.bias = fused.bias
                    child._modules[name_b] = nn.Identity()
    return module


def export_onnx(
    model: nn.Module,
    out_path: str | Path,
    output_names: list[str],
    sample_hw: tuple[int, int] = (480, 640),
    metadata: dict | None = None,
) -> Path:
    """Export `model(vis_y, ir) -> outputs` with dynamic H and W; writes a JSON sidecar too."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    h, w = sample_hw
    inputs = (torch.rand(1, 1, h, w), torch.rand(1, 1, h, w))
    dynamic_axes = {name: {2: "height", 3: "width"} for name in INPUT_NAMES}
    for name in output_names:
        dynamic_axes[name] = {2: "height", 3: "width"} if name == "fused_y" else {1: "height", 2: "width"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(),
            inputs,
            str(out_path),
            input_names=INPUT_NAMES,
            output_names=output_names,
            dynamic_axes=dynamic_axes,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    _declare_output_dims(out_path)
    meta = {"inputs": INPUT_NAMES, "outputs": output_names, "opset": OPSET}
    meta.update(metadata or {})
    out_path.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    log.info("exported %s", out_path)
    return out_path


def _declare_output_dims(path: Path) -> None:
    """Write the true output shapes into the graph: (1, 1, height, width) and (1, height, width).

    The TorchScript exporter's shape inference declared class_ids as [height, height, width] (batch
    axis named like the height), which the TensorRT checks rightly reject; the values are unaffected.
    """
    import onnx

    model = onnx.load(str(path))
    wanted = {"fused_y": [1, 1, "height", "width"], "class_ids": [1, "height", "width"]}
    for output in model.graph.output:
        dims = wanted.get(output.name)
        if dims is None or len(output.type.tensor_type.shape.dim) != len(dims):
            continue
        for dim, value in zip(output.type.tensor_type.shape.dim, dims, strict=True):
            if isinstance(value, int):
                dim.dim_value = value
            else:
                dim.dim_param = value
    onnx.save(model, str(path))


def export_student(student: SageStudent, out_path: str | Path, **metadata) -> Path:
    """Export the fusion-only student graph (one output, `fused_y`)."""
    wrapped = StudentFusionOnly(fold_batchnorm(student))
    meta = {"model": "sage_student", "classes": []}
    meta.update(metadata)
    return export_onnx(wrapped, out_path, ["fused_y"], metadata=meta)
