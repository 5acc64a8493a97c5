"""Safe, strict loading of SAGE student weights with errors that say what went wrong."""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch

from sage_ros.networks.student import SageStudent


class WeightsError(RuntimeError):
    """A weights file that is missing, unreadable, truncated or not a SAGE student."""


def _unwrap(obj: object) -> Mapping[str, torch.Tensor]:
    # Checkpoints written by training wrap the state dict; DataParallel prefixes keys with 'module.'.
    if isinstance(obj, Mapping) and "student" in obj and isinstance(obj["student"], Mapping):
        obj = obj["student"]
    elif isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise TypeError(f"expected a state dict, found {type(obj).__name__}")
    if obj and all(k.startswith("module.module") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict on the CPU with `weights_only=True` (no arbitrary code from pickles)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(
            f"weights file {path} does not exist: run `sage-ros weights fetch` or pass --weights"
        )
    if path.stat().st_size == 0:
        raise WeightsError(f"weights file {path} is empty (an interrupted download?)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise WeightsError(
            f"weights file {path} could not be read as a PyTorch checkpoint "
            f"(truncated or corrupt?): {exc}"
        ) from exc
    except Exception as exc:  # unpickling of foreign objects is refused by weights_only
        raise WeightsError(f"weights file {path} is not a plain state dict: {exc}") from exc
    try:
        state = _unwrap(obj)
    except TypeError as exc:
        raise WeightsError(f"weights file {path}: {exc}") from exc
    return {k: v for k, v in state.items()}


def load_student(path: str | Path, eval_mode: bool = True) -> SageStudent:
    """Build a SageStudent and load `path` into it, requiring the released key set exactly."""
    state = read_state_dict(path)
    model = SageStudent()
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise WeightsError(
            f"weights file {path} is not a SAGE student checkpoint: "
            f"{len(missing)} expected keys missing (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]}); "
            f"expected {len(expected)} keys such as 'module1.0.weight' and 'final_decoder.0.bias'"
        )
    bad_shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if tuple(state[k].shape) != tuple(v.shape)
    ]
    if bad_shapes:
        raise WeightsError(f"weights file {path} has tensors of the wrong shape: {bad_shapes[:3]}")
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    if eval_mode:
        model.eval()
    return model
