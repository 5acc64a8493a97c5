"""Weights stored as `.npz` (plain arrays, no pickle) with a `.json` sidecar: one strict reader.

The segmentation network and the older segmentation head share this format; both must refuse a missing
or foreign sidecar and any key or shape mismatch with one clear message that names the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch only where weights are loaded into a module: the sidecar reader is torch-free
    from torch import nn


def sidecar_path(path: str | Path) -> Path:
    return Path(path).with_suffix(".json")


def read_sidecar(path: str | Path, fmt: str, error: type[Exception], what: str) -> dict:
    """The sidecar of `path` as a dict, checked to declare format `fmt`; `error(...)` otherwise."""
    sidecar = sidecar_path(path)
    if not sidecar.is_file():
        raise error(f"{what} {path}: metadata file {sidecar} is missing")
    try:
        meta = json.loads(sidecar.read_text())
    except json.JSONDecodeError as exc:
        raise error(f"{what} metadata {sidecar} is not valid JSON: {exc}") from exc
    if meta.get("format") != fmt:
        raise error(f"{sidecar}: format {meta.get('format')!r}, expected {fmt!r}")
    return meta


def load_state(module: nn.Module, path: str | Path, error: type[Exception], what: str) -> nn.Module:
    """Fill `module` from the arrays in `path`, strict about keys and shapes; returns it in eval mode."""
    import torch

    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise error(f"{what} weights {path} could not be read: {exc}") from exc
    expected = module.state_dict()
    if set(arrays) != set(expected):
        missing = sorted(set(expected) - set(arrays))[:3]
        extra = sorted(set(arrays) - set(expected))[:3]
        raise error(f"{path} does not match the {what}: missing {missing}, unexpected {extra}")
    for k, v in expected.items():
        if tuple(arrays[k].shape) != tuple(v.shape):
            raise error(f"{path}: {k} has shape {arrays[k].shape}, expected {tuple(v.shape)}")
    module.load_state_dict({k: torch.from_numpy(np.array(a)) for k, a in arrays.items()})
    return module.eval()
