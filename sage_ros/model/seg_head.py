"""A light segmentation head on the fused image, and the student+head model exported as one graph.

The head reads a single-channel image in [0, 1] (at run time the clamped fused Y of the student; for
the SAGE experiment also the visible Y or the infrared alone), so the same architecture can be trained
on any of the three inputs and compared fairly. It works at 1/2 to 1/8 resolution and costs about
3.4 k multiply-adds per input pixel (the student costs about 65 k), then upsamples its logits to the input
size. The combined graph computes class ids in-graph (ArgMax then Cast to uint8), two ops that ONNX
Runtime, OpenVINO and TensorRT all run, so every backend gets fused Y and class ids from one call.

Weights are stored as `.npz` (plain arrays, no pickle) with a `.json` sidecar naming the classes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sage_ros.model.classes import ClassTable, class_table
from sage_ros.model.npz_weights import load_state, read_sidecar
from sage_ros.model.student import SageStudent

# MSRS ids 0 unlabelled, 1 car, 2 person, 3 bike: the classes human boxes exist for.
DEFAULT_NUM_CLASSES = 4
HEAD_FORMAT = "sage_ros.seg_head/1"


def _conv_bn_relu(
    cin: int, cout: int, stride: int = 1, dilation: int = 1, kernel: int = 3
) -> nn.Sequential:
    # Conv -> BN pairs inside a Sequential so that export.fold_batchnorm removes every BN node.
    pad = dilation * (kernel // 2)
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=pad, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def _resize(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    # Resize to the reference's own size (not a fixed factor) so odd H, W work, as in the student.
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


class SegHead(nn.Module):
    """Image (N, 1, H, W) in [0, 1] -> class logits (N, C, H, W).

    Encoder at 1/2, 1/4, 1/8 with two dilated convs for context (a car at 640x480 is up to ~200 px
    wide), decoder back to 1/2 with skips (a distant person is ~8 px wide), then bilinear upsampling of
    the logits only, which is far cheaper than a full-resolution decoder. About 90 k parameters.
    """

    def __init__(self, num_classes: int = DEFAULT_NUM_CLASSES, width: int = 32) -> None:
        super().__init__()
        w1, w2, w3 = width // 2, width, width * 3 // 2
        self.num_classes = num_classes
        self.width = width
        self.enc1 = _conv_bn_relu(1, w1, stride=2)  # 1/2
        self.enc2 = nn.Sequential(_conv_bn_relu(w1, w2, stride=2), _conv_bn_relu(w2, w2))  # 1/4
        self.enc3 = nn.Sequential(
            _conv_bn_relu(w2, w3, stride=2),
            _conv_bn_relu(w3, w3, dilation=2),
            _conv_bn_relu(w3, w3, dilation=4),
        )  # 1/8
        self.dec2 = _conv_bn_relu(w3 + w2, w2)  # 1/4
        # 1x1 at 1/2: the spatial context is already in dec2; a 3x3 here cost ~8% of the student.
        self.dec1 = _conv_bn_relu(w2 + w1, w1, kernel=1)  # 1/2
        self.classifier = nn.Conv2d(w1, num_classes, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        # Centre the input so that the first conv needs no large bias.
        e1 = self.enc1(image - 0.5)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        d2 = self.dec2(torch.cat([_resize(e3, e2), e2], 1))
        d1 = self.dec1(torch.cat([_resize(d2, e1), e1], 1))
        return _resize(self.classifier(d1), image)


class StudentWithHead(nn.Module):
    """forward(vis_y, ir) -> (fused_y, class_ids): the released student untouched, plus the head.

    fused_y is exactly the student's output (the head only reads it); class_ids is (N, H, W) uint8.
    """

    def __init__(self, student: SageStudent, head: SegHead) -> None:
        super().__init__()
        self.student = student
        self.head = head

    def forward(self, vis_y: torch.Tensor, ir: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fused = self.student(vis_y, ir)[0]
        # The pipeline clamps the Tanh output to [0, 1] before use; the head was trained on that.
        logits = self.head(torch.clamp(fused, 0.0, 1.0))
        class_ids = torch.argmax(logits, dim=1).to(torch.uint8)
        return fused, class_ids


def count_macs_per_pixel(head: SegHead) -> float:
    """Multiply-adds of the convolutions per input pixel (upsampling and argmax excluded)."""
    total = 0.0
    scale = {"enc1": 4, "enc2": 16, "enc3": 64, "dec2": 16, "dec1": 4, "classifier": 4}
    for name, module in head.named_modules():
        if isinstance(module, nn.Conv2d):
            # Every conv's cost counts at its output resolution (the table above).
            k = module.kernel_size[0] * module.kernel_size[1]
            total += module.in_channels * module.out_channels * k / scale[name.split(".")[0]]
    return total


# ---------------------------------------------------------------------------------------------
# Weights on disk: .npz of the state dict + .json sidecar


def head_metadata_path(head_path: str | Path) -> Path:
    return Path(head_path).with_suffix(".json")


def save_head(
    head: SegHead, path: str | Path, table: ClassTable | None = None, info: dict | None = None
) -> Path:
    """Write `path` (.npz, float32 state dict) and `path.json` (classes, architecture, training info)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().numpy() for k, v in head.state_dict().items()}
    np.savez_compressed(path, **state)
    table = table or class_table("msrs")
    meta = {
        "format": HEAD_FORMAT,
        "num_classes": head.num_classes,
        "width": head.width,
        "classes": table.to_json()[: head.num_classes],
    }
    meta.update(info or {})
    head_metadata_path(path).write_text(json.dumps(meta, indent=2) + "\n")
    return path


class HeadWeightsError(RuntimeError):
    """A head weights file that is missing, corrupt or does not match the head architecture."""


def read_head_metadata(path: str | Path) -> dict:
    return read_sidecar(path, HEAD_FORMAT, HeadWeightsError, "segmentation head")


def load_head(path: str | Path) -> SegHead:
    """Build a SegHead from `path` (.npz) and its sidecar; strict about keys and shapes; eval mode."""
    path = Path(path)
    if not path.is_file():
        raise HeadWeightsError(f"segmentation head weights {path} do not exist")
    meta = read_head_metadata(path)
    head = SegHead(num_classes=int(meta["num_classes"]), width=int(meta.get("width", 32)))
    return load_state(head, path, HeadWeightsError, "segmentation head")


def head_class_table(path: str | Path) -> list[dict]:
    """The `classes` entries of a head's metadata (what the exported model's sidecar carries)."""
    return list(read_head_metadata(path)["classes"])


def default_head_path() -> Path:
    """The head trained by this project on the MSRS train split, shipped inside the package."""
    return Path(__file__).resolve().parents[1] / "data" / "seg_head_msrs.npz"


def export_student_with_head(
    checkpoint_path: str | Path, head_path: str | Path | None, out_onnx: str | Path
) -> Path:
    """Export the released student + a trained head as ONE ONNX graph with outputs fused_y, class_ids.

    BatchNorm is folded in both parts; the sidecar `<out>.json` names the classes and colours.
    """
    from sage_ros.model.checkpoint import load_student
    from sage_ros.model.export import export_onnx, fold_batchnorm

    head_path = Path(head_path) if head_path is not None else default_head_path()
    student = load_student(checkpoint_path)
    head = load_head(head_path)
    meta = read_head_metadata(head_path)
    model = StudentWithHead(fold_batchnorm(student), fold_batchnorm(head)).eval()
    metadata = {
        "model": "sage_student_seg",
        "classes": meta["classes"],
        "head": {k: v for k, v in meta.items() if k not in ("classes",)} | {"file": head_path.name},
    }
    return export_onnx(model, out_onnx, ["fused_y", "class_ids"], metadata=metadata)
