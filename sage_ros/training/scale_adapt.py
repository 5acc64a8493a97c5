"""Adapt the released student to fusing below the RGB size: the scale-adapted student (issue 11).

    sage-ros train scale --out runs/scale                      # the shipped recipe
    sage-ros train scale --out runs/scale --ship sage_ros/data

Why and how it was chosen: docs/speed.md and sage_ros/model/scale_student.py. Recipe: for every MSRS train frame
and each scale s in --scales the thermal camera is simulated at 1/s per side (pixel averaging) and registered
back to the RGB size (bilinear), as the node registers a real one; the target is the released student at full
size on (visible Y, registered IR), computed once at the start. The student starts from the released weights,
BatchNorm statistics frozen (the released graph), and fuses visible Y shrunk by s with the simulated thermal
image; the loss is taken after the pipeline's upsampler at gain 1 (`upsample_with_detail`): L1 plus L1 of
horizontal and vertical differences, on whole frames. Outputs in --out: scale_student.npz (the released key
set plus the fast-student `__arch__` / `__meta__` entries) with its sidecar scale_student.json, metrics.csv.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from sage_ros.image.imaging import visible_to_ycrcb
from sage_ros.model.scale_student import DETAIL_GAIN, FORMAT, WEIGHTS_NAME
from sage_ros.networks.checkpoint import load_student
from sage_ros.networks.fast_student import FastArch, FastStudent, save_fast_weights
from sage_ros.paths import sha256_of
from sage_ros.pipeline import detail_gain, resize_area
from sage_ros.training.datasets import read_pair, records_for
from sage_ros.training.loop import CSV_NAME, StepLoop, TrainingError, add_run_arguments, config_from_args, run_command

log = logging.getLogger(__name__)

# The shipped scale-adapted student was trained around the ratio of a 640x512 thermal camera to a 1280x720
# RGB camera (1.68 per side), with neighbours on both sides so that other rigs land inside the range.
DEFAULT_SCALES = (1.4, 1.667, 2.0)


@dataclass
class ScaleAdaptConfig:
    teacher: str = ""
    data: str = ""
    scales: tuple[float, ...] = DEFAULT_SCALES
    steps: int = 900
    batch: int = 2
    lr: float = 1e-4
    min_lr_ratio: float = 0.02
    grad_weight: float = 1.0
    seed: int = 0
    limit: int | None = None  # first N train frames (tests)


def simulated_pair(y: np.ndarray, ir8: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Y shrunk, thermal image at 1/scale per side, that image registered back to Y's size), all float32.

    The thermal camera is simulated by pixel averaging; registration is the bilinear resize the node applies.
    """
    h, w = y.shape
    small = (max(16, round(h / scale)), max(16, round(w / scale)))
    ir_cam = cv2.resize(ir8, (small[1], small[0]), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    ir_reg = cv2.resize(ir_cam, (w, h), interpolation=cv2.INTER_LINEAR)
    return resize_area(y, small), ir_cam, ir_reg


class ScaleBank:
    """Train frames (Y, IR) and the teacher's full-resolution fused Y per scale, in memory (float16 targets)."""

    def __init__(self, cfg: ScaleAdaptConfig, teacher: torch.nn.Module, device: torch.device) -> None:
        records = records_for("msrs", cfg.data, "train")[: cfg.limit]
        if not records:
            raise TrainingError(f"no train pairs in {cfg.data} (splits.csv `train` rows)")
        self.y: list[np.ndarray] = []
        self.ir8: list[np.ndarray] = []
        self.target: dict[float, list[np.ndarray]] = {s: [] for s in cfg.scales}
        start = time.perf_counter()
        with torch.no_grad():
            for r in records:
                pair = read_pair(r)  # refuses pairs of different sizes
                y, ir8 = visible_to_ycrcb(pair["vis_bgr"]).y, pair["ir_u8"]
                self.y.append(y)
                self.ir8.append(ir8)
                for s in cfg.scales:
                    _, _, ir_reg = simulated_pair(y, ir8, s)
                    t = teacher(plane_tensor(y, device), plane_tensor(ir_reg, device))[0].clamp(0, 1)
                    self.target[s].append(t[0, 0].cpu().numpy().astype(np.float16))
        log.info("data: %d MSRS train frames x %d scales, teacher outputs in %.0f s", len(records),
                 len(cfg.scales), time.perf_counter() - start)


def plane_tensor(a: np.ndarray, device: torch.device) -> torch.Tensor:
    """An (H, W) plane as a (1, 1, H, W) float32 tensor on `device`."""
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None, None].to(device)


def final_luma(student_out: torch.Tensor, y: torch.Tensor, y_small: torch.Tensor) -> torch.Tensor:
    """The pipeline's upsampler at gain 1 (`upsample_with_detail`, without the final clip), differentiable.

    Bilinear with half-pixel centres (align_corners=False) is cv2.INTER_LINEAR's convention.
    """
    size = y.shape[-2:]
    up = F.interpolate(student_out, size=size, mode="bilinear", align_corners=False)
    return up + DETAIL_GAIN * (y - F.interpolate(y_small, size=size, mode="bilinear", align_corners=False))


def adapt_loss(final: torch.Tensor, target: torch.Tensor, grad_weight: float) -> torch.Tensor:
    loss = F.l1_loss(final, target)
    for dim in (-1, -2):
        loss = loss + grad_weight * F.l1_loss(final.diff(dim=dim), target.diff(dim=dim))
    return loss


def lr_at(cfg: ScaleAdaptConfig, step: int) -> float:
    """Cosine from lr to lr * min_lr_ratio over the run."""
    floor = cfg.min_lr_ratio
    return cfg.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * step / max(1, cfg.steps))))


class ScaleAdapter(StepLoop):
    """The released student fine-tuned through the upsampler; `fit()` runs to `cfg.steps`."""

    csv_fields = ["step", "lr", "scale", "loss_grey", "step_ms"]

    def __init__(self, cfg: ScaleAdaptConfig, out_dir: Path, device: str = "cpu") -> None:
        super().__init__(cfg, out_dir, device)
        torch.manual_seed(cfg.seed)
        self.bank = ScaleBank(cfg, load_student(cfg.teacher).to(self.device).eval(), self.device)
        self.student = load_student(cfg.teacher).to(self.device).eval()  # eval: the released BatchNorm statistics
        self.opt = torch.optim.Adam(self.student.parameters(), lr=cfg.lr)
        self.rng = np.random.default_rng(cfg.seed)

    def state(self) -> dict:
        return {"student": self.student.state_dict(), "opt": self.opt.state_dict(),
                "rng": self.rng.bit_generator.state}

    def load_state(self, state: dict) -> None:
        self.student.load_state_dict(state["student"])
        self.opt.load_state_dict(state["opt"])
        self.rng.bit_generator.state = state["rng"]

    def train_step(self) -> dict:
        cfg, device = self.cfg, self.device
        lr = lr_at(cfg, self.step)
        for group in self.opt.param_groups:
            group["lr"] = lr
        scale = float(cfg.scales[self.rng.integers(len(cfg.scales))])
        loss = torch.zeros((), device=device)
        for i in self.rng.integers(len(self.bank.y), size=cfg.batch):
            # No mirroring: the teacher's answer to a mirrored frame is not its mirrored answer.
            y, ir8, target = self.bank.y[i], self.bank.ir8[i], self.bank.target[scale][i].astype(np.float32)
            y_small, ir_cam, _ = simulated_pair(y, ir8, scale)
            ys_t = plane_tensor(y_small, device)
            out = self.student(ys_t, plane_tensor(ir_cam, device))[0]
            final = final_luma(out, plane_tensor(y, device), ys_t)
            loss = loss + adapt_loss(final, plane_tensor(target, device), cfg.grad_weight) / cfg.batch
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return {"lr": lr, "scale": scale, "loss_grey": float(loss.detach()) * 255.0}

    def finish(self) -> list[Path]:
        """scale_student.npz and its sidecar (format, recipe, provenance, detail-gain reference)."""
        with open(self.out_dir / CSV_NAME, newline="") as handle:  # the whole run, resumed parts included
            rows = {int(r["step"]): r for r in csv.DictReader(handle)}
        losses = [float(rows[s]["loss_grey"]) for s in range(1, self.step + 1) if s in rows]
        meta = {
            "format": FORMAT,
            "what": "the released SAGE student fine-tuned to fuse below the RGB size (sage_ros.model.scale_student)",
            "teacher_sha256": sha256_of(Path(self.cfg.teacher)),
            "data": "MSRS train split (splits.csv)",
            "train_frames": len(self.bank.y),
            "detail_gain": DETAIL_GAIN,
            "detail_gain_reference": round(self.detail_reference(), 4),
            "recipe": {k: v for k, v in asdict(self.cfg).items() if k not in ("teacher", "data")},
            "loss_grey_first20": float(np.mean(losses[:20])) if losses else None,
            "loss_grey_last20": float(np.mean(losses[-20:])) if losses else None,
            "train_seconds": round(sum(float(r["step_ms"]) for r in rows.values()) / 1e3, 1),
            "license": "MIT (derived from the released SAGE student, github.com/RollingPlain/SAGE)",
        }
        # Width 32 with three convs in every block is the released topology: FastStudent holds it as is.
        arrays = FastStudent(FastArch(32, 3, 3))
        arrays.load_state_dict(self.student.state_dict())
        path = save_fast_weights(arrays, self.out_dir / WEIGHTS_NAME, {"kind": "scale_adapted"})
        path.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
        return [path, path.with_suffix(".json")]

    def detail_reference(self) -> float:
        """Mean `pipeline.detail_gain` of the student's output on the train frames at the training scales: the
        fine-detail response the run-time gain is measured against (scale_student.detail_reference)."""
        gains = []
        with torch.no_grad():
            for y, ir8 in zip(self.bank.y, self.bank.ir8, strict=True):
                for scale in self.cfg.scales:
                    y_small, ir_cam, _ = simulated_pair(y, ir8, scale)
                    out = self.student.eval()(plane_tensor(y_small, self.device), plane_tensor(ir_cam, self.device))[0]
                    gains.append(detail_gain(out.clamp(0, 1)[0, 0].cpu().numpy(), y_small))
        return float(np.mean(gains))


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `sage-ros train scale` on `p` (defaults: the shipped recipe)."""
    add_run_arguments(p, ScaleAdaptConfig)
    p.add_argument("--scales", default=",".join(str(s) for s in DEFAULT_SCALES),
                   help="RGB / thermal size ratios per side to train for")
    p.add_argument("--limit", type=int, default=None, help="only the first N train frames")


def parse_scales(text: str, native: bool) -> tuple[float, ...]:
    """`--scales` (comma-separated RGB / thermal size ratios per side): each > 1, or >= 1 where `native`
    (full size kept in the loss); TrainingError with the rule otherwise."""
    try:
        scales = tuple(float(s) for s in str(text).split(","))
    except ValueError:
        raise TrainingError(f"--scales {text!r}: comma-separated numbers, e.g. 1.4,1.667,2") from None
    if any(s < 1.0 or (s == 1.0 and not native) for s in scales):
        rule = ">= 1 (fusion at or below the RGB size)" if native else "> 1 (fusion below the RGB size)"
        raise TrainingError(f"--scales {text}: every ratio must be {rule}")
    return scales


def _make(args: argparse.Namespace) -> ScaleAdapter:
    scales = parse_scales(args.scales, native=False)
    return ScaleAdapter(config_from_args(ScaleAdaptConfig, args, scales=scales), args.out, args.device)


def run(args: argparse.Namespace) -> int:
    """`sage-ros train scale` (see `run_command`)."""
    return run_command("scale", args, _make)
