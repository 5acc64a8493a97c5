"""The frozen, differentiable segmenter behind the teacher's task loss (SAGE_SPEC section 4).

Any `nn.Module` mapping an RGB batch (N, 3, H, W) in [0, 1] to class logits (N, C, h, w) fits. It is
frozen (no parameter gets gradients, eval mode) but the teacher's fused image receives gradients
through its input. `tiny` is a small random network for tests and smoke runs only: for real training
plug a segmenter trained on your dataset with `segmenter.factory: package.module:callable`.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import torch
from torch import nn


class TinySegmenter(nn.Module):
    """Two convolutions; random weights (seeded) — exercises the loss path, knows no classes."""

    def __init__(self, num_classes: int, width: int = 16, seed: int = 0) -> None:
        super().__init__()
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        self.net = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, num_classes, 3, padding=1)
        )
        torch.random.set_rng_state(generator_state)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        return self.net(rgb)


def freeze(module: nn.Module) -> nn.Module:
    """No parameter is trained and BatchNorm/Dropout stay in inference mode; inputs still get gradients."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


def build_segmenter(factory: str, num_classes: int, weights: str | Path | None = None) -> nn.Module:
    """Instantiate the configured segmenter, load its weights (if any) and freeze it."""
    if factory == "tiny":
        module = TinySegmenter(num_classes)
    else:
        mod_name, sep, attr = factory.partition(":")
        if not sep:
            raise ValueError(f"segmenter factory {factory!r} must be 'tiny' or 'package.module:callable'")
        try:
            fn = getattr(importlib.import_module(mod_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"segmenter factory {factory!r} cannot be imported: {exc}") from exc
        module = fn(num_classes)
        if not isinstance(module, nn.Module):
            raise TypeError(
                f"segmenter factory {factory!r} returned {type(module).__name__}, not an nn.Module"
            )
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"segmenter weights {path} do not exist")
        state = torch.load(path, map_location="cpu", weights_only=True)
        module.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
    return freeze(module)
