"""The frozen, differentiable segmenter behind the teacher's task loss (SAGE_SPEC section 4).

A segmenter is an `nn.Module` returning class logits (N, C, h, w). Its attribute `inputs` names what it
reads, in order, from {"rgb", "fused_y", "vis_y", "ir"} (absent: ("rgb",), an RGB batch in [0, 1]
built from the teacher's fused Y and the visible chroma). It is frozen (no parameter gets gradients,
eval mode) but the teacher's fused image receives gradients through its input. Its optional attribute
`class_names` lets the trainer map dataset labels onto its classes by name.

Factories (`segmenter.factory`):
- `project`: this project's trained MSRS segmentation network (sage_ros/data/seg_net_msrs.npz, fused Y
  + infrared), loaded frozen by `ProjectSegmenter`.
- `package.module:callable`: your own, `callable(num_classes) -> nn.Module`, weights from
  `segmenter.weights`.
"""

from __future__ import annotations

import importlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

#: What a segmenter may read, by name (see module docstring).
INPUT_KINDS = ("rgb", "fused_y", "vis_y", "ir")
#: Dataset class names that mean the same object as a segmenter class of another name.
CLASS_ALIASES = {"bicycle": "bike", "motorcycle": "bike", "motorbike": "bike", "people": "person"}


def freeze(module: nn.Module) -> nn.Module:
    """No parameter is trained and BatchNorm/Dropout stay in inference mode; inputs still get gradients."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


class ProjectSegmenter(nn.Module):
    """This project's trained segmentation network as the teacher's frozen task segmenter.

    Wraps `sage_ros.networks.seg_net.SegNet` (inputs fused Y and/or infrared / visible Y, concatenated
    as channels). Inputs are images in [0, 1]; the fused Y is clamped to [0, 1] by the trainer first,
    as the runtime pipeline does.
    """

    _KIND_TO_INPUT = {"fused": "fused_y", "infrared": "ir", "visible": "vis_y"}

    def __init__(self, net: nn.Module, kinds: Sequence[str], class_names: Sequence[str], source: Path) -> None:
        super().__init__()
        self.net = net
        self.inputs = tuple(self._KIND_TO_INPUT[k] for k in kinds)
        self.class_names = tuple(class_names)
        self.source = Path(source)

    def forward(self, *images: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat(images, 1))


def load_project_segmenter(weights: str | Path | None = None) -> ProjectSegmenter:
    """The shipped (or a given) project segmentation network (a SegNet .npz), frozen."""
    from sage_ros.graphs.seg_graph import weights_present
    from sage_ros.networks.seg_net import default_net_path, load_net, read_metadata

    path = Path(weights) if weights is not None else default_net_path()
    # A SegNet ensemble is named by its .npz path but stored as member files (seg_graph).
    if not path.is_file() and not weights_present(path):
        raise FileNotFoundError(
            f"no project segmentation network at {path}: train one with `sage-ros train seg` or point "
            "segmenter.weights at it"
        )
    meta_path = path.with_suffix(".json")
    fmt = str(json.loads(meta_path.read_text()).get("format", "")) if meta_path.is_file() else ""
    if not fmt.startswith("sage_ros.seg_net"):
        raise ValueError(f"segmenter weights {path}: unknown format {fmt!r} (expected a seg_net file)")
    net, meta = load_net(path), read_metadata(path)
    kinds = list(meta["input_kinds"])
    names = [str(c["name"]) for c in sorted(meta["classes"], key=lambda c: int(c["id"]))]
    log.info("teacher task segmenter: %s (inputs %s, classes %s), frozen", path, kinds, names)
    return freeze(ProjectSegmenter(net, kinds, names, path))


def label_lookup(dataset_names: Sequence[str], segmenter_names: Sequence[str], ignore_index: int) -> torch.Tensor:
    """Dataset class id -> segmenter class id, by name (aliases such as bicycle -> bike).

    The segmenter's class 0 is its background ("none of my classes"): dataset classes it does not
    know map there, so the teacher is taught not to make them look like a car or a person. Returns a
    (256,) int64 table; ids past the dataset's classes and `ignore_index` stay `ignore_index`.
    """
    table = torch.full((256,), ignore_index, dtype=torch.int64)
    index = {n.lower(): i for i, n in enumerate(segmenter_names)}
    for i, name in enumerate(dataset_names):
        key = name.lower()
        table[i] = index.get(key, index.get(CLASS_ALIASES.get(key, ""), 0))
    return table


def segmenter_inputs(segmenter: nn.Module) -> tuple[str, ...]:
    kinds = tuple(getattr(segmenter, "inputs", ("rgb",)))
    unknown = [k for k in kinds if k not in INPUT_KINDS]
    if unknown:
        raise ValueError(f"segmenter inputs {unknown} unknown; a segmenter reads from {INPUT_KINDS}")
    return kinds


def build_segmenter(factory: str, num_classes: int, weights: str | Path | None = None) -> nn.Module:
    """Instantiate the configured segmenter, load its weights (if any) and freeze it."""
    if factory == "project":
        return load_project_segmenter(weights)
    mod_name, sep, attr = factory.partition(":")
    if not sep:
        raise ValueError(f"segmenter factory {factory!r} must be 'project' or 'package.module:callable'")
    try:
        fn = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"segmenter factory {factory!r} cannot be imported: {exc}") from exc
    module = fn(num_classes)
    if not isinstance(module, nn.Module):
        raise TypeError(f"segmenter factory {factory!r} returned {type(module).__name__}, not an nn.Module")
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"segmenter weights {path} do not exist")
        state = torch.load(path, map_location="cpu", weights_only=True)
        module.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
    return freeze(module)
