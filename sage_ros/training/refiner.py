"""Offline training of the full-resolution refiner for `fusion.resolution: thermal` (PyTorch).

The thermal-resolution path (sage_ros/pipeline.py) fuses at the thermal camera's pixel count and adds the
visible detail back. With the scale-adapted student there (the default; --no-scale-adapted: the released
student, whose path it was first trained for) it is 44.1 dB from full-resolution fusion. The refiner is a
residual CNN at the RGB size, input (that output, visible Y, registered IR), output that output plus a
correction, trained to reproduce the released student's full-resolution fusion on the MSRS **train** split
(thermal camera simulated at 384x288 for 640x480 pairs: 2.78x fewer pixels, a 640x512 thermal camera
beside a 1280x720 RGB one). The runtime builds its graph from the saved arrays without PyTorch
(sage_ros/model/refiner.py).

    python -m sage_ros.training.refiner --model MODEL.onnx --out sage_ros/data/refiner_msrs.npz
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import cv2
import numpy as np

from sage_ros.model.refiner import REFINER_FORMAT, layer_keys

THERMAL_HW = (288, 384)  # the simulated thermal camera for MSRS's 640x480 pairs
CROP = 96
BATCH = 16


def build_split(msrs: Path, split: str, full, low) -> tuple[np.ndarray, np.ndarray]:
    """Inputs (N, 3, H, W) = (thermal-path output, visible Y, registered IR) and targets (N, H, W) = the
    full-resolution fused Y, for the pairs of `split` in msrs/splits.csv. `full`/`low`: FusionPipelines
    at `rgb` and `thermal` on the released student."""
    from sage_ros.image.imaging import visible_to_ycrcb

    with open(msrs / "splits.csv") as handle:
        names = [r["name"] for r in csv.DictReader(handle) if r["split"] == split]
    if not names:
        raise ValueError(f"no {split!r} pairs in {msrs / 'splits.csv'}")
    th, tw = THERMAL_HW
    inputs, targets = [], []
    for name in names:
        ir8 = cv2.imread(str(msrs / "ir" / f"{name}.png"), cv2.IMREAD_GRAYSCALE)
        vis = cv2.imread(str(msrs / "vi" / f"{name}.png"))
        if ir8 is None or vis is None:
            raise FileNotFoundError(f"MSRS pair {name} missing under {msrs}")
        ir_cam = cv2.resize(ir8, (tw, th), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
        ir_reg = cv2.resize(ir_cam, (vis.shape[1], vis.shape[0]), interpolation=cv2.INTER_LINEAR)
        target = full.fuse(ir_reg, vis, thermal_hw=THERMAL_HW).fused_y
        shipped = low.fuse(ir_cam, vis, thermal_hw=THERMAL_HW, classes=False).fused_y
        inputs.append(np.stack([shipped, visible_to_ycrcb(vis).y, ir_reg]).astype(np.float32))
        targets.append(target.astype(np.float32))
    return np.stack(inputs), np.stack(targets)


def make_refiner(width: int, layers: int = 3, kernel: int = 3):
    """3x3 convs 3 -> width (-> width) -> 1 with ReLUs between; output = input channel 0 + body(x).
    layers=1: one linear kernel x kernel filter 3 -> 1 (a baseline; the runtime graph takes 3x3 convs).
    The last conv starts at zero, so training starts from the thermal-path output itself."""
    import torch.nn as nn

    if layers not in (1, 2, 3):
        raise ValueError(f"layers must be 1, 2 or 3, not {layers}")
    mods: list[nn.Module] = []
    if layers >= 2:
        mods += [nn.Conv2d(3, width, 3, padding=1), nn.ReLU()]
    if layers == 3:
        mods += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU()]
    mods.append(nn.Conv2d(width if layers >= 2 else 3, 1, kernel if layers == 1 else 3,
                          padding=(kernel if layers == 1 else 3) // 2))
    nn.init.zeros_(mods[-1].weight)
    nn.init.zeros_(mods[-1].bias)
    body = nn.Sequential(*mods)

    class Refiner(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = body

        def forward(self, x):
            return x[:, :1] + self.body(x)

    return Refiner()


def train_refiner(x: np.ndarray, y: np.ndarray, width: int = 8, layers: int = 3, steps: int = 2000, seed: int = 0,
                  model=None):
    """L1 on random CROPxCROP crops, Adam 1e-3 with a cosine schedule; deterministic for a seed.
    `model`: train this module (input (N, 3, h, w), output (N, 1, h, w)) instead of make_refiner(width, layers)."""
    import torch

    torch.manual_seed(seed)
    model = make_refiner(width, layers) if model is None else model
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    n, h, w = xt.shape[0], xt.shape[2], xt.shape[3]
    crop = min(CROP, h, w)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, n, (BATCH,), generator=gen)
        ys = torch.randint(0, h - crop + 1, (BATCH,), generator=gen)
        xs = torch.randint(0, w - crop + 1, (BATCH,), generator=gen)
        xb = torch.stack([xt[i, :, a:a + crop, b:b + crop] for i, a, b in zip(idx, ys, xs, strict=True)])
        yb = torch.stack([yt[i, a:a + crop, b:b + crop] for i, a, b in zip(idx, ys, xs, strict=True)])[:, None]
        loss = (model(xb) - yb).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()


def refiner_arrays(model) -> dict[str, np.ndarray]:
    """The model's weights under the runtime's keys (conv0.weight, conv0.bias, ...)."""
    convs = [m for m in model.body if m.__class__.__name__ == "Conv2d"]
    arrays = {}
    for (wkey, bkey), conv in zip(layer_keys(len(convs)), convs, strict=True):
        arrays[wkey] = conv.weight.detach().numpy().astype(np.float32)
        arrays[bkey] = conv.bias.detach().numpy().astype(np.float32)
    return arrays


def save_refiner(model, path: Path, provenance: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **refiner_arrays(model))
    meta = {"format": REFINER_FORMAT, **provenance}
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="the released student as ONNX (fusion output)")
    parser.add_argument("--msrs", type=Path, default=Path(__file__).resolve().parents[3] / "shared" / "datasets"
                        / "msrs", help="MSRS folder with ir/, vi/ and splits.csv")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-scale-adapted", dest="scale_adapted", action="store_false",
                        help="refine the released student's thermal path (default: the scale-adapted student's, "
                        "which is what the defaults run below the RGB size)")
    args = parser.parse_args(argv)
    import torch

    from sage_ros.backends import BackendConfig, create_backend
    from sage_ros.pipeline import FusionPipeline, reduced_scale_model

    torch.set_num_threads(args.threads)
    config = BackendConfig(name="onnxruntime", onnx_path=args.model, threads=args.threads)
    backend = create_backend(config)
    reduced, why = reduced_scale_model(config, args.scale_adapted, threads=args.threads)
    print(why)
    full, low = FusionPipeline(backend, "rgb"), FusionPipeline(backend, "thermal", reduced=reduced)
    x, y = build_split(args.msrs, "train", full, low)
    start = time.time()
    model = train_refiner(x, y, args.width, args.layers, args.steps, args.seed)
    save_refiner(model, args.out, {
        "what": "residual refiner after fusion.resolution=thermal (sage_ros.training.refiner)",
        "trained_on": f"MSRS train split ({len(x)} pairs of splits.csv), thermal camera simulated at "
                      f"{THERMAL_HW[1]}x{THERMAL_HW[0]} for 640x480 pairs (2.78x fewer pixels)",
        "target": "the released SAGE student's full-resolution fused Y (onnxruntime fp32)",
        "input": why,
        "width": args.width, "layers": args.layers, "steps": args.steps, "seed": args.seed,
        "crop": CROP, "batch": BATCH, "loss": "L1", "optimizer": "Adam 1e-3, cosine",
        "torch": torch.__version__, "train_seconds": round(time.time() - start, 1),
    })
    print(f"wrote {args.out} ({len(x)} training pairs, {time.time() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
