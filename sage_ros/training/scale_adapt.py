"""Adapt the released student to fusing below the RGB size: the scale-adapted student (issue 11).

    sage-ros train scale --out runs/scale                      # the shipped recipe
    sage-ros train scale --out runs/scale --ship sage_ros/data

Why (sage_ros/model/scale_student.py): at `fusion.resolution: thermal` the released student sees a pair
shrunk by about 1.7 per side and answers differently from the shrunk version of its full-resolution answer
(MI of the final image -6.8 % on the MSRS eval split). Same network, same cost, weights adapted to the scale.

Recipe (the shipped weights: 900 steps, batch 2, lr 1e-4 cosine to 2e-6, seed 0; on 2 CPU cores about 9 min
for the teacher outputs and 9 min of steps):
- Data: the MSRS train split (splits.csv `train`). For every frame and each scale s in --scales the thermal
  camera is simulated at 1/s per side (pixel averaging) and registered back to the RGB size (bilinear), as the
  node registers a real one. Teacher: the released student at full size on (visible Y, registered IR), the
  result `fusion.resolution: rgb` gives. Computed once at the start.
- Student: the released student's architecture initialised from its weights, BatchNorm statistics frozen (so
  the graph and its folding are the released ones). Input: visible Y shrunk by s (pixel averaging) and the
  simulated thermal image, exactly what the pipeline feeds the model.
- Loss, end to end through the pipeline's upsampler at gain 1 (`upsample_with_detail`):
  final = up(S) + (Y - up(Y_small)); L1(final, T) + L1 of their horizontal and vertical differences.
  So the student also learns the band the detail layer does not restore.
- Whole frames, so the result holds at frame borders too.

Outputs in --out: scale_student.npz (plain arrays, the released key set, plus the fast-student `__arch__` /
`__meta__` entries for the torch backend), scale_student.json (format, recipe, provenance), metrics.csv.
Choose with `benchmarks/resolution_quality.py` on the eval split, never on train pairs.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from sage_ros.image.imaging import visible_to_ycrcb
from sage_ros.model.scale_student import DETAIL_GAIN, FORMAT, WEIGHTS_NAME
from sage_ros.networks.checkpoint import load_student
from sage_ros.paths import sha256_of
from sage_ros.pipeline import resize_area
from sage_ros.training.datasets import msrs_records, read_pair, shared_default

log = logging.getLogger(__name__)

CSV_NAME = "metrics.csv"
# The shipped scale-adapted student was trained around the ratio of a 640x512 thermal camera to a 1280x720
# RGB camera (1.68 per side), with neighbours on both sides so that other rigs land inside the range.
DEFAULT_SCALES = (1.4, 1.667, 2.0)


class ScaleAdaptError(RuntimeError):
    """A run that cannot start, with what to change."""


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
    extra: dict = field(default_factory=dict)


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

    def __init__(self, cfg: ScaleAdaptConfig, teacher: torch.nn.Module | None, device: str = "cpu") -> None:
        # teacher None: the frames only (to measure a trained student), no targets.
        records = msrs_records(cfg.data, "train")[: cfg.limit]
        if not records:
            raise ScaleAdaptError(f"no train pairs in {cfg.data} (splits.csv `train` rows)")
        self.names = [r.name for r in records]
        self.y: list[np.ndarray] = []
        self.ir8: list[np.ndarray] = []
        self.target: dict[float, list[np.ndarray]] = {s: [] for s in cfg.scales}
        start = time.perf_counter()
        with torch.no_grad():
            for r in records:
                pair = read_pair(r)
                y = visible_to_ycrcb(pair["vis_bgr"]).y
                ir8 = pair["ir_u8"]  # read_pair refuses pairs of different sizes
                self.y.append(y)
                self.ir8.append(ir8)
                for s in cfg.scales if teacher is not None else ():
                    _, _, ir_reg = simulated_pair(y, ir8, s)
                    t = teacher(_tensor(y, device), _tensor(ir_reg, device))[0].clamp(0, 1)
                    self.target[s].append(t[0, 0].cpu().numpy().astype(np.float16))
        log.info("data: %d MSRS train frames x %d scales%s in %.0f s", len(records), len(cfg.scales),
                 ", teacher outputs" if teacher is not None else " (no teacher: frames only)",
                 time.perf_counter() - start)


def _tensor(a: np.ndarray, device: str) -> torch.Tensor:
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


def train(cfg: ScaleAdaptConfig, out_dir: Path, device: str = "cpu") -> Path:
    """Run the recipe; returns the written scale_student.npz (its sidecar beside it)."""
    teacher_path = Path(cfg.teacher)
    if not teacher_path.is_file():
        raise ScaleAdaptError(f"teacher checkpoint {teacher_path} does not exist: run `sage-ros weights fetch`")
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    teacher = load_student(teacher_path).to(device).eval()
    bank = ScaleBank(cfg, teacher, device)
    student = load_student(teacher_path).to(device).eval()  # eval: BatchNorm keeps the released statistics
    opt = torch.optim.Adam(student.parameters(), lr=cfg.lr)
    rng = np.random.default_rng(cfg.seed)
    rows: list[dict] = []
    start = time.perf_counter()
    for step in range(cfg.steps):
        lr = lr_at(cfg, step)
        for group in opt.param_groups:
            group["lr"] = lr
        scale = float(cfg.scales[rng.integers(len(cfg.scales))])
        loss = torch.zeros((), device=device)
        for i in rng.integers(len(bank.y), size=cfg.batch):
            # No mirroring: the teacher's answer to a mirrored frame is not its mirrored answer.
            y, ir8, target = bank.y[i], bank.ir8[i], bank.target[scale][i].astype(np.float32)
            y_small, ir_cam, _ = simulated_pair(y, ir8, scale)
            ys_t = _tensor(y_small, device)
            out = student(ys_t, _tensor(ir_cam, device))[0]
            final = final_luma(out, _tensor(y, device), ys_t)
            loss = loss + adapt_loss(final, _tensor(target, device), cfg.grad_weight) / cfg.batch
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        rows.append({"step": step + 1, "lr": lr, "scale": scale, "loss_grey": float(loss.detach()) * 255.0})
        if (step + 1) % 20 == 0 or step + 1 == cfg.steps:
            recent = np.mean([r["loss_grey"] for r in rows[-20:]])
            log.info("step %d/%d loss %.3f grey levels (last 20), lr %.2e, %.0f s",
                     step + 1, cfg.steps, recent, lr, time.perf_counter() - start)
    with open(out_dir / CSV_NAME, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["step"])
        writer.writeheader()
        writer.writerows(rows)
    reference = measure_detail_reference(student.eval(), bank, cfg.scales, device)
    first = float(np.mean([r["loss_grey"] for r in rows[:20]])) if rows else None
    last = float(np.mean([r["loss_grey"] for r in rows[-20:]])) if rows else None
    meta = {
        "format": FORMAT,
        "what": "the released SAGE student fine-tuned to fuse below the RGB size (sage_ros.model.scale_student)",
        "teacher_sha256": sha256_of(teacher_path),
        "data": "MSRS train split (splits.csv)",
        "train_frames": len(bank.y),
        "detail_gain": DETAIL_GAIN,
        "detail_gain_reference": round(reference, 4),
        "recipe": {k: v for k, v in asdict(cfg).items() if k not in ("teacher", "data", "extra")},
        "loss_grey_first20": first,
        "loss_grey_last20": last,
        "train_seconds": round(time.perf_counter() - start, 1),
        "license": "MIT (derived from the released SAGE student, github.com/RollingPlain/SAGE)",
    }
    return save_weights(student, out_dir / WEIGHTS_NAME, meta)


def measure_detail_reference(student: torch.nn.Module, bank: ScaleBank, scales: tuple[float, ...],
                             device: str = "cpu") -> float:
    """Mean `pipeline.detail_gain` of the student's output on the train frames at the training scales: the
    fine-detail response the run-time gain is measured against (scale_student.detail_reference)."""
    from sage_ros.pipeline import detail_gain

    gains = []
    with torch.no_grad():
        for y, ir8 in zip(bank.y, bank.ir8, strict=True):
            for scale in scales:
                y_small, ir_cam, _ = simulated_pair(y, ir8, scale)
                out = student(_tensor(y_small, device), _tensor(ir_cam, device))[0].clamp(0, 1)
                gains.append(detail_gain(out[0, 0].cpu().numpy(), y_small))
    return float(np.mean(gains))


def add_detail_reference(weights: Path, cfg: ScaleAdaptConfig, device: str = "cpu") -> float:
    """Measure the reference for existing weights on cfg's train frames and scales; write it to their sidecar."""
    from sage_ros.networks.fast_student import load_fast_student

    student = load_fast_student(weights).to(device)
    bank = ScaleBank(cfg, None, device)
    reference = measure_detail_reference(student, bank, cfg.scales, device)
    sidecar = weights.with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    meta["detail_gain_reference"] = round(reference, 4)
    sidecar.write_text(json.dumps(meta, indent=2) + "\n")
    return reference


def save_weights(student: torch.nn.Module, path: Path, meta: dict) -> Path:
    """Plain arrays with the released keys + `__arch__`/`__meta__` (fast-student layout), and the sidecar."""
    arrays = {k: v.detach().cpu().numpy() for k, v in student.state_dict().items()}
    arrays = {k: (v.astype(np.float32) if v.dtype.kind == "f" else v.astype(np.int64)) for k, v in arrays.items()}
    # Width 32 with three convs in every block is the released topology, so FastStudent loads it as is.
    arrays["__arch__"] = np.array(json.dumps({"width": 32, "full_res_convs": 3, "low_res_convs": 3}))
    arrays["__meta__"] = np.array(json.dumps({"kind": "scale_adapted"}))
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    return path


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `sage-ros train scale` on `p` (defaults: the shipped recipe)."""
    from sage_ros.paths import default_checkpoint

    d = ScaleAdaptConfig()
    p.add_argument("--out", type=Path, default=None, help="run folder (required to train)")
    teacher = default_checkpoint()
    if not teacher.is_file():
        teacher = Path(shared_default("sage_official", "checkpoints.pt") or teacher)
    p.add_argument("--teacher", default=str(teacher), help="released student checkpoint")
    p.add_argument("--data", default=shared_default("datasets", "msrs"), help="MSRS folder with splits.csv")
    p.add_argument("--scales", default=",".join(str(s) for s in d.scales),
                   help="RGB / thermal size ratios per side to train for")
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--batch", type=int, default=d.batch)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--grad-weight", type=float, default=d.grad_weight)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--limit", type=int, default=None, help="only the first N train frames")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--ship", type=Path, default=None, help="copy the weights and sidecar here (sage_ros/data)")
    p.add_argument("--measure-reference", type=Path, default=None, metavar="WEIGHTS",
                   help="no training: measure the detail-gain reference of these weights on the train frames and "
                        "scales, and write it into their sidecar")


def run(args: argparse.Namespace) -> int:
    """`sage-ros train scale`: a run that cannot start is one message on stderr and exit code 2."""
    try:
        return _run(args)
    except ScaleAdaptError as exc:
        print(f"sage-ros train scale: error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    torch.set_num_threads(max(1, args.threads))
    try:
        scales = tuple(float(s) for s in str(args.scales).split(","))
    except ValueError:
        raise ScaleAdaptError(f"--scales {args.scales!r}: comma-separated numbers, e.g. 1.4,1.667,2") from None
    if not args.data:
        raise ScaleAdaptError("--data is empty: point it at the MSRS folder (ir/, vi/, splits.csv)")
    if any(s <= 1.0 for s in scales):
        raise ScaleAdaptError(f"--scales {args.scales}: every ratio must be > 1 (fusion below the RGB size)")
    cfg = ScaleAdaptConfig(teacher=args.teacher, data=args.data, scales=scales, steps=args.steps, batch=args.batch,
                           lr=args.lr, grad_weight=args.grad_weight, seed=args.seed, limit=args.limit)
    if args.measure_reference:
        reference = add_detail_reference(args.measure_reference, cfg, args.device)
        print(json.dumps({"weights": str(args.measure_reference), "detail_gain_reference": round(reference, 4)}))
        return 0
    if args.out is None:
        raise ScaleAdaptError("--out is required to train (a run folder)")
    npz = train(cfg, args.out, args.device)
    if args.ship:
        args.ship.mkdir(parents=True, exist_ok=True)
        for path in (npz, npz.with_suffix(".json")):
            shutil.copy2(path, args.ship / path.name)
    print(json.dumps({"weights": str(npz)}))
    return 0
