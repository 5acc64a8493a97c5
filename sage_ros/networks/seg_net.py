"""A small segmentation network on the fused image (+ the infrared), exported as a standalone ONNX graph.

Why this shape: the metric a robot cares about is whole objects (one mask component per person or car),
so every output pixel must see a whole person or car. At 640x480 a near car is ~200 px wide. The
network therefore averages its inputs down by 4 (AveragePool 4x4: area averaging, exact and cheap in
every runtime), runs an encoder to 1/32 of the input (two dilated 3x3 convs at the bottom: a receptive
field of several hundred input pixels) and a light U-Net decoder back to 1/4; its 4 logits go out at
that size (the run-time stage upsamples the probabilities). About 0.3 G multiply-adds at 640x480 (the student: ~20 G).

Inputs: `fused_y` (N,1,H,W, the student's fused Y clamped to [0, 1]) and optionally `ir` / `vis_y`
(the student's own inputs). Its graph (`sage_ros/graphs/seg_graph.py`) outputs class probabilities at a
quarter of the input size; `sage_ros/pipeline/segmentation.py` turns them into class ids.
The same module trains on any input combination,
which is what the fused / visible / infrared experiment compares.

Weights on disk: `.npz` (plain arrays, no pickle) + `.json` sidecar (architecture, classes, training); an
ensemble as its members' files (`seg_graph.py`, which also builds the graph without PyTorch).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sage_ros.graphs.npz_weights import load_state
from sage_ros.graphs.seg_graph import (
    DOWNSAMPLE,
    INPUT_NAMES,
    NET_FORMAT,
    SegNetError,
    member_file_name,
    read_metadata,
    weight_files,
    write_seg_graph,
)

DEFAULT_NUM_CLASSES = 4  # MSRS ids: 0 background, 1 car, 2 person, 3 bike


def _cbr(cin: int, cout: int, stride: int = 1, dilation: int = 1, kernel: int = 3) -> nn.Sequential:
    # Conv -> BN in one Sequential so that model.export.fold_batchnorm removes every BN at export.
    pad = dilation * (kernel // 2)
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=pad, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def _up(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    # To the reference's own size, so odd sizes work (dynamic H, W in the exported graph).
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


class SegNet(nn.Module):
    """Images (N, len(inputs), H, W) in [0, 1] -> logits at 1/4 (forward_low) or full size (forward)."""

    def __init__(
        self,
        inputs: Sequence[str] = ("fused", "infrared"),
        num_classes: int = DEFAULT_NUM_CLASSES,
        widths: Sequence[int] = (16, 24, 48, 64),
    ) -> None:
        super().__init__()
        unknown = [k for k in inputs if k not in INPUT_NAMES]
        if not inputs or unknown:
            raise ValueError(f"inputs must be a non-empty subset of {list(INPUT_NAMES)}, got {list(inputs)}")
        self.inputs = tuple(inputs)
        self.num_classes = num_classes
        self.widths = tuple(int(w) for w in widths)
        w0, w1, w2, w3 = self.widths
        self.stem = _cbr(len(self.inputs), w0)  # 1/4 of the input
        self.enc1 = nn.Sequential(_cbr(w0, w1, stride=2), _cbr(w1, w1))  # 1/8
        self.enc2 = nn.Sequential(_cbr(w1, w2, stride=2), _cbr(w2, w2))  # 1/16
        self.enc3 = nn.Sequential(  # 1/32: context for whole cars
            _cbr(w2, w3, stride=2), _cbr(w3, w3, dilation=2), _cbr(w3, w3, dilation=4)
        )
        self.dec2 = nn.Sequential(_cbr(w3 + w2, w2, kernel=1), _cbr(w2, w2))
        self.dec1 = nn.Sequential(_cbr(w2 + w1, w1, kernel=1), _cbr(w1, w1))
        self.dec0 = nn.Sequential(_cbr(w1 + w0, w0, kernel=1), _cbr(w0, w0))
        self.classifier = nn.Conv2d(w0, num_classes, 1)

    def forward_low(self, low: torch.Tensor) -> torch.Tensor:
        """Logits at the network's own resolution for inputs already averaged down by 4 (training)."""
        e0 = self.stem(low - 0.5)
        e1 = self.enc1(e0)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        d2 = self.dec2(torch.cat([_up(e3, e2), e2], 1))
        d1 = self.dec1(torch.cat([_up(d2, e1), e1], 1))
        d0 = self.dec0(torch.cat([_up(d1, e0), e0], 1))
        return self.classifier(d0)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Full-size logits for full-size inputs (N, C, H, W)."""
        low = F.avg_pool2d(image, DOWNSAMPLE)
        return _up(self.forward_low(low), image)

    def shift_logits(self, bias: torch.Tensor) -> None:
        """Add a per-class constant to the logits, folded into the classifier bias (no run-time op)."""
        with torch.no_grad():
            self.classifier.bias += bias


class SegEnsemble(nn.Module):
    """Several SegNets of one architecture (e.g. seeds of one recipe) whose logits are averaged.

    Why: single networks trained on 223 pairs over-fit and differ from seed to seed about as much as
    recipes do; the average of their logits is steadier on unseen pairs (docs/segmentation.md). The
    inputs are pooled once and only the averaged 4 logits are upsampled, so K members cost K times the
    network's convolutions, not K times its upsampling and ArgMax. Same interface as SegNet."""

    def __init__(self, members: Sequence[SegNet]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        first = members[0]
        for m in members[1:]:
            if (m.inputs, m.num_classes, m.widths) != (first.inputs, first.num_classes, first.widths):
                raise ValueError(
                    "ensemble members must share inputs, classes and widths: "
                    f"{(first.inputs, first.num_classes, first.widths)} vs {(m.inputs, m.num_classes, m.widths)}"
                )
        self.members = nn.ModuleList(members)
        self.inputs, self.num_classes, self.widths = first.inputs, first.num_classes, first.widths

    def forward_low(self, low: torch.Tensor) -> torch.Tensor:
        total = self.members[0].forward_low(low)
        for member in self.members[1:]:
            total = total + member.forward_low(low)
        return total * (1.0 / len(self.members))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        low = F.avg_pool2d(image, DOWNSAMPLE)
        return _up(self.forward_low(low), image)

    def shift_logits(self, bias: torch.Tensor) -> None:
        # The same shift in every member shifts their mean by exactly that much.
        for member in self.members:
            member.shift_logits(bias)


def downsample(image: np.ndarray) -> np.ndarray:
    """HxW float32 -> (H//4)x(W//4) by 4x4 area averaging: exactly what AveragePool does in the graph."""
    h, w = (image.shape[0] // DOWNSAMPLE) * DOWNSAMPLE, (image.shape[1] // DOWNSAMPLE) * DOWNSAMPLE
    view = image[:h, :w].reshape(h // DOWNSAMPLE, DOWNSAMPLE, w // DOWNSAMPLE, DOWNSAMPLE)
    return view.mean(axis=(1, 3), dtype=np.float32)


def count_macs(net: SegNet, hw: tuple[int, int] = (480, 640)) -> float:
    """Multiply-adds of the convolutions for one input of size hw (pooling/upsampling/argmax excluded)."""
    total = 0.0

    def hook(module: nn.Conv2d, _inp, out) -> None:
        nonlocal total
        k = module.kernel_size[0] * module.kernel_size[1]
        total += out.shape[-1] * out.shape[-2] * module.in_channels * module.out_channels * k / module.groups

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, nn.Conv2d)]
    with torch.inference_mode():
        net.eval()(torch.zeros(1, len(net.inputs), *hw))
    for h in handles:
        h.remove()
    return total


# ---------------------------------------------------------------------------------------------
# Weights on disk


def metadata_path(path: str | Path) -> Path:
    return Path(path).with_suffix(".json")


def save_net(net: SegNet | SegEnsemble, path: str | Path, classes: list[dict], info: dict | None = None) -> Path:
    """Write `path` (.npz float32 state dict) and its `.json` sidecar (architecture, classes, info)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    members = list(net.members) if isinstance(net, SegEnsemble) else [net]
    # An ensemble is stored as its members (seg_graph's module docstring says why); one network as itself.
    files = [path] if len(members) == 1 else [path.parent / member_file_name(path, i) for i in range(len(members))]
    for member, file in zip(members, files, strict=True):
        np.savez_compressed(file, **{k: v.detach().cpu().numpy() for k, v in member.state_dict().items()})
    meta = {
        "format": NET_FORMAT,
        "members": len(members),
        "input_kinds": list(net.inputs),
        "num_classes": net.num_classes,
        "widths": list(net.widths),
        "classes": classes[: net.num_classes],
    }
    if len(members) > 1:
        meta["member_files"] = [f.name for f in files]
    meta.update(info or {})
    metadata_path(path).write_text(json.dumps(meta, indent=2) + "\n")
    return path


def load_net(path: str | Path) -> SegNet | SegEnsemble:
    """A SegNet (or an ensemble of them) from `path` (.npz name) and its sidecar, strict about keys and
    shapes, in eval mode."""
    path = Path(path)
    if not path.is_file() and not metadata_path(path).is_file():
        raise SegNetError(f"segmentation network weights {path} do not exist")
    meta = read_metadata(path)
    members = meta.get("members", 1)
    if not isinstance(members, int) or members < 1:
        raise SegNetError(f"{metadata_path(path)}: 'members' must be >= 1, found {members}")
    files = weight_files(path, meta) if members > 1 else [path]
    nets = []
    for file in files:
        if not file.is_file():
            raise SegNetError(f"segmentation network weights {file} do not exist")
        net = SegNet(meta["input_kinds"], int(meta["num_classes"]), meta["widths"])
        nets.append(load_state(net, file, SegNetError, "segmentation network"))
    return nets[0] if members == 1 else SegEnsemble(nets).eval()


def graph_input_names(net: SegNet | SegEnsemble) -> list[str]:
    return [INPUT_NAMES[k] for k in net.inputs]


def export_net(net: SegNet | SegEnsemble, out_onnx: str | Path, metadata: dict | None = None) -> Path:
    """Write the standalone seg graph (opset 17, dynamic N/H/W) and its `.json` sidecar.

    Next to weights `X.npz` the graph is `X.onnx` and both share `X.json`: pass the weights' metadata
    (read_metadata) so the one sidecar describes both. The graph is built by `seg_graph` from the
    weights as numpy arrays, the same builder `sage-ros weights fetch` uses without PyTorch.
    """
    members = list(net.members) if isinstance(net, SegEnsemble) else [net]
    states = [{k: v.detach().cpu().numpy() for k, v in m.state_dict().items()} for m in members]
    return write_seg_graph(states, graph_input_names(net), out_onnx, metadata)


def default_net_path() -> Path:
    """The network trained by this project on MSRS, shipped in the package (weights, .npz)."""
    return Path(__file__).resolve().parents[1] / "data" / "seg_net_msrs.npz"
