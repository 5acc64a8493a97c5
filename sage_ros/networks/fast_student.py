"""A cheaper SAGE student ("fast"): the released topology at a smaller width and depth.

Same inputs (visible Y, IR in [0, 1]), same output (Tanh fused Y), same five distillation taps
x1..x5 and the same state-dict layout as `SageStudent` (`module1.0.weight`, ... `final_decoder.0.bias`),
so BatchNorm folding, ONNX export and every backend treat it exactly like the released student.
What changes:
- `width` channels instead of 32 (cost of a 3x3 conv grows with width squared);
- `full_res_convs` conv layers in the two full-resolution blocks (module1, module5), which carry
  about three quarters of the released student's multiply-adds; the H/2 and H/4 blocks keep
  `low_res_convs`;
- `detail_gain`: where it is not 0, a fixed 7x7 unsharp mask after the Tanh, out + g (out - Gauss_1px(out))
  (state-dict key `detail.weight`, reflected borders). A small student renders fine texture a few percent
  softer than the released one; the gain is chosen after training so that its spatial frequency on train
  frames matches the released student's (`training.distill_student.calibrate_detail_gain`).

The weights this project distilled on MSRS live in `sage_ros/data/fast_student.npz` (plain float32
arrays, unfolded BatchNorm, the architecture in the `arch` entry) and their fusion-only ONNX export in
`sage_ros/data/fast_student.onnx`, so running the fast student needs no torch.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sage_ros.networks.student import NEGATIVE_SLOPE, SageStudent, channel_adjust


@dataclass(frozen=True)
class FastArch:
    """Architecture of a fast student; stored next to its weights."""

    width: int = 16
    full_res_convs: int = 2
    low_res_convs: int = 3
    detail_gain: float = 0.0


SHIPPED_ARCH = FastArch()


def _block(in_channels: int, width: int, convs: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = in_channels
    for _ in range(convs):
        layers += [
            nn.Conv2d(channels, width, 3, padding=1, bias=True),
            nn.BatchNorm2d(width),
            nn.LeakyReLU(NEGATIVE_SLOPE),
        ]
        channels = width
    return nn.Sequential(*layers)


class FastStudent(SageStudent):
    """forward(y, ir) -> (fused, (x1, x2, x3, x4, x5)), `SageStudent`'s own forward at `arch.width` channels."""

    def __init__(self, arch: FastArch = SHIPPED_ARCH) -> None:
        # Same topology and module names as the released student (so the same forward, export and
        # state-dict layout serve both); only the block depths and the width differ.
        nn.Module.__init__(self)
        if arch.width < 1 or arch.full_res_convs < 1 or arch.low_res_convs < 1:
            raise ValueError(f"invalid fast student architecture {arch}")
        self.arch = arch
        w = arch.width
        self.module1 = _block(2, w, arch.full_res_convs)
        self.module2 = _block(w, w, arch.low_res_convs)
        self.module3 = _block(w, w, arch.low_res_convs)
        self.adjust_channels4 = channel_adjust(2 * w, w)
        self.module4 = _block(w, w, arch.low_res_convs)
        self.adjust_channels5 = channel_adjust(2 * w, w)
        self.module5 = _block(w, w, arch.full_res_convs)
        self.final_decoder = nn.Sequential(nn.Conv2d(w, 1, 3, padding=1, bias=True), nn.Tanh())
        self.detail: nn.Conv2d | None = None
        if arch.detail_gain:
            self.detail = nn.Conv2d(1, 1, DETAIL_SIZE, padding=DETAIL_SIZE // 2, padding_mode="reflect", bias=False)
            self.detail.weight.data.copy_(torch.from_numpy(detail_kernel(arch.detail_gain))[None, None])
            self.detail.weight.requires_grad_(False)

    def forward(self, y: torch.Tensor, ir: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        fused, taps = super().forward(y, ir)
        return (fused if self.detail is None else self.detail(fused)), taps


DETAIL_SIZE = 7  # the unsharp mask's kernel: a Gaussian of sigma 1 px, cut at 3 sigma


def detail_kernel(gain: float) -> np.ndarray:
    """(7, 7) float32 kernel of out + gain (out - Gauss_1px(out)): identity times (1 + gain) minus gain times a
    normalised Gaussian of sigma 1 px."""
    r = np.arange(DETAIL_SIZE, dtype=np.float64) - DETAIL_SIZE // 2
    g = np.exp(-0.5 * r**2)
    gauss = np.outer(g, g) / np.outer(g, g).sum()
    kernel = -float(gain) * gauss
    kernel[DETAIL_SIZE // 2, DETAIL_SIZE // 2] += 1.0 + float(gain)
    return kernel.astype(np.float32)


# ------------------------------------------------------------------------------------------ cost


def conv_macs(model: nn.Module, height: int = 480, width: int = 640) -> int:
    """Multiply-adds of every convolution in one forward pass on an (H, W) frame.

    Counted from the real output shapes (forward hooks): out_elements * in_channels/groups * kh * kw.
    Pooling, resizing, BatchNorm (folded at export) and activations are not multiply-adds and are
    left out, as in the usual MAC/FLOP tables (SAGE_SPEC gives 20.0 GMAC at 640x480 this way).
    """
    total = 0

    def hook(module: nn.Conv2d, _inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        kh, kw = module.kernel_size
        total += output.numel() * (module.in_channels // module.groups) * kh * kw

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 1, height, width), torch.zeros(1, 1, height, width))
    finally:
        for h in handles:
            h.remove()
    return total


def parameter_count(model: nn.Module) -> int:
    """Trainable parameters (BatchNorm affine included, running statistics not)."""
    return sum(p.numel() for p in model.parameters())


def cost_table(models: dict[str, nn.Module], height: int = 480, width: int = 640) -> list[dict]:
    """Rows of (name, params, GMAC per frame, MAC per pixel, share of the first model's MACs)."""
    rows = []
    base = None
    for name, model in models.items():
        macs = conv_macs(model, height, width)
        base = base or macs
        rows.append(
            {
                "model": name,
                "params": parameter_count(model),
                "gmac": macs / 1e9,
                "mac_per_pixel": macs / (height * width),
                "mac_ratio": macs / base,
            }
        )
    return rows


# --------------------------------------------------------------------------------------- weights


class FastWeightsError(RuntimeError):
    """A fast-student weights file that is missing, unreadable or does not fit its architecture."""


def save_fast_weights(model: FastStudent, path: str | Path, metadata: dict | None = None) -> Path:
    """Write the state dict as plain float32 arrays (+ `arch` and `meta` JSON strings) to an .npz."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    arrays = {k: (v.astype(np.float32) if v.dtype.kind == "f" else v.astype(np.int64)) for k, v in arrays.items()}
    arrays["__arch__"] = np.array(json.dumps(asdict(model.arch)))
    arrays["__meta__"] = np.array(json.dumps(metadata or {}, sort_keys=True))
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)
    return path


def read_fast_metadata(path: str | Path) -> tuple[FastArch, dict]:
    with np.load(Path(path), allow_pickle=False) as data:
        return FastArch(**json.loads(str(data["__arch__"]))), json.loads(str(data["__meta__"]))


def load_fast_student(path: str | Path, eval_mode: bool = True) -> FastStudent:
    """Build the FastStudent an .npz describes and load it, requiring the exact key set and shapes."""
    path = Path(path)
    if not path.is_file():
        raise FastWeightsError(f"fast student weights {path} do not exist")
    try:
        with np.load(path, allow_pickle=False) as data:
            arch = FastArch(**json.loads(str(data["__arch__"])))
            state = {k: torch.from_numpy(np.array(data[k])) for k in data.files if not k.startswith("__")}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FastWeightsError(f"fast student weights {path} could not be read: {exc}") from exc
    model = FastStudent(arch)
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    bad = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or bad:
        raise FastWeightsError(
            f"fast student weights {path} do not fit {arch}: missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}, wrong shapes {bad[:3]}"
        )
    model.load_state_dict(state)
    return model.eval() if eval_mode else model
