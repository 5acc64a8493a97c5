"""Distil the released SAGE student into the cheaper `FastStudent` (issue 12).

One command, seeded, resumable, CPU or GPU:

    nice -n 5 sage-ros train fast --out runs/fast --threads 2   # the shipped recipe
    sage-ros train fast --out runs/fast --device cuda --batch 32 --steps 3000

The defaults are the recipe of the shipped `sage_ros/data/fast_student.npz` (600 steps of batch 4, 128 px
crops, seed 0: 42 min on 2 threads of a loaded 2-core CPU).

The teacher is the released student (frozen, `checkpoints.pt`), run on the same crop as the student:
it supplies both the reference output and the five feature taps. The loss keeps the structure of the
SAGE student step (SAGE_SPEC section 4) and drops only what needs SAM:

    3 L_MSE + 3 L_grad + 0.3 L_fea
    L_MSE  = 4 MSE(S, T) + s (3 MSE(S, y) + 2 MSE(S, ir))
    L_grad = 3 G(S; T, T) + s 9 G(S; y, ir)
    L_fea  = sum over taps of (1 - cos(A_i(x_i^S), x_i^T)), A_i a 1x1 conv (width -> 32, training only)

- L_cs (the contrastive semantic "triplet") is left out: it needs the SAM ViT-B encoder and SAM masks,
  which exist neither here nor on most users' machines, and it was weighted 1/3000 upstream.
- The source terms are scaled by s = `--source-scale` (default 0.05): upstream they balance a large SPA
  teacher against the sources, but here the reference already IS the result of that balance; at full
  weight the optimum would move to (3 y + 2 ir + 4 T) / 9, a flatter image than the released student's.
  A small s keeps a pull toward the sources' intensities and strongest edges, which a smaller network
  tends to blur.
- The adapters A_i map the fast student's `width` channels to the teacher's 32 (FitNets-style), because
  the cosine of L_fea needs equal shapes; they are discarded after training.

Data: the MSRS train split (splits.csv `train`, full 640x480 frames, random crops + flips) and, with
probability `--thumbs-prob` per step, a batch of the 1083 MSRS train thumbnails (whole frames squashed
to 128x128: more scenes at a coarser scale). Every random choice of step k comes from a generator seeded
with (seed, k), so a resumed run draws the same batches as an uninterrupted one.

Outputs in --out: checkpoint_last.pt (full state, written atomically every --checkpoint-every steps),
metrics.csv, train.log (when run from `sage-ros train fast`), and at the end fast_student.npz (plain float32 arrays)
plus fast_student.onnx/.json (fusion-only, BatchNorm folded; statistics as trained or re-estimated on
32 whole train frames, whichever matches the teacher better on other train frames: `final_statistics`).
`--ship DIR` copies the three into DIR (the package's sage_ros/data).
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import logging
import os
import shutil
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sage_ros.image.imaging import infrared_to_grey, visible_to_ycrcb
from sage_ros.networks.checkpoint import load_student
from sage_ros.networks.fast_student import FastArch, FastStudent, save_fast_weights
from sage_ros.networks.student import WIDTH as TEACHER_WIDTH
from sage_ros.training.datasets import msrs_records, read_pair, shared_default
from sage_ros.training.losses import feature_loss, gradient_term

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint_last.pt"
CSV_NAME = "metrics.csv"
NPZ_NAME = "fast_student.npz"
ONNX_NAME = "fast_student.onnx"
CSV_FIELDS = ["step", "lr", "loss", "mse_ref", "mse_src", "grad_ref", "grad_src", "fea", "thumbs", "step_ms"]


class DistillError(RuntimeError):
    """A distillation run that cannot start or continue, with what to change."""


@dataclass
class DistillConfig:
    """Everything that defines a run (stored in the checkpoint; a resume with other values warns)."""

    teacher: str = ""
    data: str = ""
    thumbs: str = ""
    thumbs_prob: float = 0.25
    steps: int = 600
    batch: int = 4
    crop: int = 128
    lr: float = 2e-3
    min_lr: float = 1e-5
    source_scale: float = 0.05
    fea_weight: float = 0.3
    seed: int = 0
    width: int = 16
    full_res_convs: int = 2
    low_res_convs: int = 3

    @property
    def arch(self) -> FastArch:
        return FastArch(self.width, self.full_res_convs, self.low_res_convs)


# ------------------------------------------------------------------------------------------- data


def _y_ir_u8(vis_bgr: np.ndarray, ir: np.ndarray) -> np.ndarray:
    """(2, H, W) uint8: BT.601 visible Y and IR grey, exactly what the run-time pipeline feeds the network."""
    y = visible_to_ycrcb(vis_bgr).y
    return np.rint(np.stack([y, infrared_to_grey(ir)]) * 255.0).astype(np.uint8)


class PairBank:
    """All training pairs in memory as uint8 (Y, IR) stacks: 223 MSRS frames are about 140 MB."""

    def __init__(self, msrs_root: Path, thumbs_root: Path | None, limit: int | None = None) -> None:
        records = msrs_records(msrs_root, "train")[:limit]
        self.frames = [_y_ir_u8(**_pair_arrays(r)) for r in records]
        self.names = [r.name for r in records]
        self.thumbs: np.ndarray | None = None
        if thumbs_root is not None and Path(thumbs_root).is_dir():
            recs = msrs_records(thumbs_root, "all")[:limit]
            self.thumbs = np.stack([_y_ir_u8(**_pair_arrays(r)) for r in recs])
        thumbs = 0 if self.thumbs is None else len(self.thumbs)
        log.info("data: %d MSRS train frames, %d thumbnails", len(self.frames), thumbs)

    def batch(self, rng: np.random.Generator, size: int, crop: int, use_thumbs: bool) -> np.ndarray:
        """(N, 2, h, w) float32 in [0, 1]: random crops (or whole thumbnails) with random flips."""
        out = []
        for _ in range(size):
            if use_thumbs:
                sample = self.thumbs[int(rng.integers(len(self.thumbs)))]
            else:
                frame = self.frames[int(rng.integers(len(self.frames)))]
                h, w = frame.shape[1:]
                top, left = int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))
                sample = frame[:, top : top + crop, left : left + crop]
            if rng.random() < 0.5:
                sample = sample[:, :, ::-1]
            out.append(sample)
        return np.stack(out).astype(np.float32) / np.float32(255.0)


def _pair_arrays(record) -> dict[str, np.ndarray]:
    pair = read_pair(record)
    return {"vis_bgr": pair["vis_bgr"], "ir": pair["ir_u8"]}


# ------------------------------------------------------------------------------------------- loss


def distill_loss(
    out: torch.Tensor,
    taps: tuple[torch.Tensor, ...],
    ref: torch.Tensor,
    ref_taps: tuple[torch.Tensor, ...],
    y: torch.Tensor,
    ir: torch.Tensor,
    adapters: nn.ModuleList,
    source_scale: float,
    fea_weight: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """3 L_MSE + 3 L_grad + fea_weight L_fea with the source terms scaled (see the module docstring)."""
    mse_ref = F.mse_loss(out, ref)
    mse_src = 3.0 * F.mse_loss(out, y) + 2.0 * F.mse_loss(out, ir)
    grad_ref = gradient_term(out, ref, ref)
    grad_src = gradient_term(out, y, ir)
    fea = feature_loss([a(t) for a, t in zip(adapters, taps, strict=True)], ref_taps)
    l_mse = 4.0 * mse_ref + source_scale * mse_src
    l_grad = 3.0 * grad_ref + source_scale * 9.0 * grad_src
    total = 3.0 * l_mse + 3.0 * l_grad + fea_weight * fea
    parts = {
        "mse_ref": mse_ref.item(),
        "mse_src": mse_src.item(),
        "grad_ref": grad_ref.item(),
        "grad_src": grad_src.item(),
        "fea": fea.item(),
    }
    return total, parts


# ------------------------------------------------------------------------------ BatchNorm statistics

BN_FRAMES = 32


def recalibrate_batchnorm(student: FastStudent, bank: PairBank, frames: int = BN_FRAMES, seed: int = 0) -> int:
    """Replace the BatchNorm running statistics by their plain average over `frames` whole train frames.

    During training they are an exponential average of the last few batches: small crops, a quarter of
    them squashed thumbnails. Deployment runs whole 640x480 frames, so the statistics the folded graph
    bakes in are re-estimated on exactly that (forward passes only; the weights do not change).
    """
    rng = np.random.default_rng([seed, 1_000_003])
    picks = rng.permutation(len(bank.frames))[:frames]
    norms = [m for m in student.modules() if isinstance(m, nn.BatchNorm2d)]
    saved = [m.momentum for m in norms]
    device = next(student.parameters()).device
    try:
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration passes
        student.train()
        with torch.no_grad():
            for i in picks:
                x = torch.from_numpy(bank.frames[int(i)][None].astype(np.float32) / np.float32(255.0)).to(device)
                student(x[:, :1], x[:, 1:])
    finally:
        for m, momentum in zip(norms, saved, strict=True):
            m.momentum = momentum
        student.eval()
    return len(picks)


def teacher_psnr(student: FastStudent, teacher: nn.Module, bank: PairBank, frames: int = 6, seed: int = 0) -> float:
    """Mean PSNR (dB, outputs clamped to [0, 1]) of the student against the teacher on whole train frames
    drawn apart from the BatchNorm calibration frames."""
    rng = np.random.default_rng([seed, 2_000_003])
    picks = rng.permutation(len(bank.frames))[:frames]
    student.eval()
    values = []
    with torch.no_grad():
        for i in picks:
            x = torch.from_numpy(bank.frames[int(i)][None].astype(np.float32) / np.float32(255.0))
            ref = teacher(x[:, :1], x[:, 1:])[0].clamp(0, 1)
            out = student(x[:, :1], x[:, 1:])[0].clamp(0, 1)
            values.append(float(10 * torch.log10(1.0 / F.mse_loss(out, ref).clamp_min(1e-12))))
    return float(np.mean(values))


def final_statistics(student: FastStudent, teacher: nn.Module, bank: PairBank, seed: int) -> tuple[FastStudent, dict]:
    """The deployable copy: BatchNorm statistics as trained (running averages of the training batches) or
    re-estimated on whole frames (`recalibrate_batchnorm`), whichever matches the teacher better on whole
    train frames. Returns the chosen model (CPU, eval mode) and what was measured."""
    trained = copy.deepcopy(student).cpu().eval()
    recalibrated = copy.deepcopy(trained)
    frames = recalibrate_batchnorm(recalibrated, bank, seed=seed)
    teacher = teacher.cpu().eval()
    scores = {"trained": teacher_psnr(trained, teacher, bank, seed=seed),
              "recalibrated": teacher_psnr(recalibrated, teacher, bank, seed=seed)}
    choice = max(scores, key=scores.get)
    log.info("BatchNorm statistics: teacher PSNR %.2f dB as trained, %.2f dB re-estimated on %d frames: %s",
             scores["trained"], scores["recalibrated"], frames, choice)
    info = {"batchnorm": choice, "batchnorm_frames": frames, "teacher_psnr_db_train_frames": scores}
    return (recalibrated if choice == "recalibrated" else trained), info


# ---------------------------------------------------------------------------------------- trainer


class Distiller:
    """Holds teacher, student, adapters, optimiser and schedule; `fit()` runs to `cfg.steps`."""

    def __init__(self, cfg: DistillConfig, out_dir: Path, device: str = "cpu", bank: PairBank | None = None) -> None:
        self.cfg = cfg
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise DistillError(f"device {device!r} requested but this torch build sees no CUDA GPU")
        self.device = torch.device(device)
        if not Path(cfg.teacher).is_file():
            raise DistillError(f"teacher checkpoint {cfg.teacher} does not exist (sage-ros weights fetch)")
        self.bank = bank or PairBank(Path(cfg.data), Path(cfg.thumbs) if cfg.thumbs else None)
        if cfg.thumbs_prob > 0 and self.bank.thumbs is None:
            log.warning("no thumbnails found at %r: every batch is a full-resolution crop", cfg.thumbs)
        torch.manual_seed(cfg.seed)
        self.teacher = load_student(cfg.teacher).to(self.device).eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.student = FastStudent(cfg.arch).to(self.device)
        self.adapters = nn.ModuleList(
            nn.Conv2d(cfg.width, TEACHER_WIDTH, 1, bias=False) for _ in range(5)
        ).to(self.device)
        params = list(self.student.parameters()) + list(self.adapters.parameters())
        self.opt = torch.optim.Adam(params, lr=cfg.lr)
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, max(cfg.steps, 1), eta_min=cfg.min_lr)
        self.step = 0
        self._stop_requested = False

    def request_stop(self, *_args: object) -> None:
        """Finish the current step, write the checkpoint and return from fit() (SIGTERM/SIGINT handler)."""
        self._stop_requested = True

    # ---- checkpoints
    def save_checkpoint(self) -> Path:
        path = self.out_dir / CHECKPOINT_NAME
        state = {
            "student": self.student.state_dict(),
            "adapters": self.adapters.state_dict(),
            "opt": self.opt.state_dict(),
            "sched": self.sched.state_dict(),
            "step": self.step,
            "config": asdict(self.cfg),
        }
        tmp = path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)
        return path

    def load_checkpoint(self, path: Path) -> None:
        state = torch.load(path, map_location=self.device, weights_only=True)
        if state.get("config") != asdict(self.cfg):
            changed = {k for k, v in asdict(self.cfg).items() if state.get("config", {}).get(k) != v}
            log.warning("resuming %s under changed settings: %s", path, ", ".join(sorted(changed)))
        self.student.load_state_dict(state["student"])
        self.adapters.load_state_dict(state["adapters"])
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        # A resume with another --steps re-aims the cosine at the new end (the decay stays continuous).
        self.sched.T_max = max(self.cfg.steps, 1)
        self.step = int(state["step"])
        log.info("resumed from %s at step %d", path, self.step)

    # ---- loop
    def train_step(self) -> dict:
        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed, self.step])
        use_thumbs = self.bank.thumbs is not None and rng.random() < cfg.thumbs_prob
        x = torch.from_numpy(self.bank.batch(rng, cfg.batch, cfg.crop, use_thumbs)).to(self.device)
        y, ir = x[:, :1], x[:, 1:]
        with torch.no_grad():
            ref, ref_taps = self.teacher(y, ir)
        self.student.train()
        out, taps = self.student(y, ir)
        loss, parts = distill_loss(out, taps, ref, ref_taps, y, ir, self.adapters, cfg.source_scale, cfg.fea_weight)
        if not torch.isfinite(loss):
            raise DistillError(f"step {self.step}: non-finite loss {loss.item()}: lower --lr")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.sched.step()
        parts.update(loss=loss.item(), thumbs=int(use_thumbs))
        return parts

    def fit(self, resume: bool = True, checkpoint_every: int = 100, log_every: int = 20) -> list[dict]:
        last = self.out_dir / CHECKPOINT_NAME
        if resume and last.is_file():
            self.load_checkpoint(last)
        csv_path = self.out_dir / CSV_NAME
        new = not csv_path.is_file() or csv_path.stat().st_size == 0
        history = []
        with csv_path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
            if new:
                writer.writeheader()
            while self.step < self.cfg.steps and not self._stop_requested:
                start = time.perf_counter()
                lr = self.opt.param_groups[0]["lr"]
                row = self.train_step()
                self.step += 1
                row.update(step=self.step, lr=lr, step_ms=(time.perf_counter() - start) * 1e3)
                history.append(row)
                writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
                handle.flush()
                if self.step % log_every == 0 or self.step == 1:
                    log.info(
                        "step %d/%d loss %.4f (mse_ref %.5f grad_ref %.4f fea %.4f) lr %.2e %.0f ms",
                        self.step, self.cfg.steps, row["loss"], row["mse_ref"], row["grad_ref"], row["fea"], lr,
                        row["step_ms"],
                    )
                if checkpoint_every and self.step % checkpoint_every == 0:
                    self.save_checkpoint()
        self.save_checkpoint()
        return history

    def finish(self, provenance: dict | None = None) -> tuple[Path, Path]:
        """Write fast_student.npz and its fusion-only ONNX export into the output folder."""
        from sage_ros.paths import sha256_of

        meta = {
            "steps": self.step,
            "config": asdict(self.cfg),
            "teacher_sha256": sha256_of(Path(self.cfg.teacher)),
            "trained_on": "MSRS train split (splits.csv) + MSRS train thumbnails",
        }
        meta.update(provenance or {})
        final, info = final_statistics(self.student, self.teacher, self.bank, self.cfg.seed)
        self.teacher.to(self.device)
        meta.update(info)
        npz = save_fast_weights(final, self.out_dir / NPZ_NAME, meta)
        onnx_path = export_fast_onnx(npz, self.out_dir / ONNX_NAME)
        return npz, onnx_path


def export_fast_onnx(npz: Path, onnx_path: Path) -> Path:
    """Fusion-only ONNX (input vis_y, ir; output fused_y) of a fast-student .npz, with a JSON sidecar."""
    from sage_ros.networks.export import export_student
    from sage_ros.networks.fast_student import load_fast_student, read_fast_metadata
    from sage_ros.paths import sha256_of

    arch, meta = read_fast_metadata(npz)
    path = export_student(
        load_fast_student(npz),
        onnx_path,
        model="sage_fast_student",
        arch=asdict(arch),
        weights_sha256=sha256_of(npz),
        distillation=meta,
    )
    return path


def export_checkpoint(checkpoint: Path, out_dir: Path) -> tuple[Path, Path]:
    """fast_student.npz + .onnx from a run's checkpoint (also mid-run, to evaluate it)."""
    from sage_ros.paths import sha256_of

    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    cfg = DistillConfig(**state["config"])
    student = FastStudent(cfg.arch)
    student.load_state_dict(state["student"])
    meta = {
        "steps": int(state["step"]),
        "config": asdict(cfg),
        "teacher_sha256": sha256_of(Path(cfg.teacher)) if Path(cfg.teacher).is_file() else None,
        "trained_on": "MSRS train split (splits.csv) + MSRS train thumbnails",
    }
    student, info = final_statistics(student, load_student(cfg.teacher), PairBank(Path(cfg.data), None), cfg.seed)
    meta.update(info)
    npz = save_fast_weights(student, Path(out_dir) / NPZ_NAME, meta)
    return npz, export_fast_onnx(npz, Path(out_dir) / ONNX_NAME)


def ship(out_dir: Path, data_dir: Path) -> list[Path]:
    """Copy the run's npz, ONNX and sidecar into the package data folder."""
    data_dir.mkdir(parents=True, exist_ok=True)
    copied = []
    for name in (NPZ_NAME, ONNX_NAME, Path(ONNX_NAME).with_suffix(".json").name):
        src = out_dir / name
        if not src.is_file():
            raise DistillError(f"{src} is missing: finish the run first")
        copied.append(Path(shutil.copy2(src, data_dir / name)))
    return copied


# ------------------------------------------------------------------------------------------- CLI


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `sage-ros train fast` on `p` (defaults: the shipped recipe)."""
    from sage_ros.paths import default_checkpoint

    d = DistillConfig()
    p.add_argument("--out", type=Path, required=True, help="run folder (checkpoint, metrics.csv, outputs)")
    teacher = default_checkpoint()
    if not teacher.is_file():
        teacher = Path(shared_default("sage_official", "checkpoints.pt") or teacher)
    p.add_argument("--teacher", default=str(teacher), help="released student checkpoint")
    p.add_argument("--data", default=shared_default("datasets", "msrs"), help="MSRS folder with splits.csv")
    p.add_argument("--thumbs", default=shared_default("datasets", "msrs_train_128"), help="MSRS thumbnails")
    p.add_argument("--thumbs-prob", type=float, default=d.thumbs_prob, help="share of thumbnail batches")
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--batch", type=int, default=d.batch)
    p.add_argument("--crop", type=int, default=d.crop, help="square crop side on the full frames")
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--min-lr", type=float, default=d.min_lr)
    p.add_argument("--source-scale", type=float, default=d.source_scale, help="weight of the source terms")
    p.add_argument("--fea-weight", type=float, default=d.fea_weight)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--width", type=int, default=d.width)
    p.add_argument("--full-res-convs", type=int, default=d.full_res_convs)
    p.add_argument("--low-res-convs", type=int, default=d.low_res_convs)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--checkpoint-every", type=int, default=25)
    p.add_argument("--log-every", type=int, default=20)
    p.add_argument("--no-resume", action="store_true", help="start over even if a checkpoint exists")
    p.add_argument("--ship", type=Path, default=None, help="copy the outputs here at the end (sage_ros/data)")
    p.add_argument("--export-only", action="store_true",
                   help="only write fast_student.npz/.onnx from --out's current checkpoint (no training)")


def run(args: argparse.Namespace) -> int:
    """`sage-ros train fast`: a run that cannot start is one message on stderr and exit code 2."""
    args.out.mkdir(parents=True, exist_ok=True)
    log_file = logging.FileHandler(args.out / "train.log")
    log_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logging.getLogger().addHandler(log_file)
    try:
        return _run(args)
    except DistillError as exc:
        print(f"sage-ros train fast: error: {exc}", file=sys.stderr)
        return 2
    finally:
        logging.getLogger().removeHandler(log_file)
        log_file.close()


def _run(args: argparse.Namespace) -> int:
    torch.set_num_threads(max(1, args.threads))
    if args.export_only:
        last = args.out / CHECKPOINT_NAME
        if not last.is_file():
            raise DistillError(f"{last} does not exist: nothing to export")
        npz, onnx_path = export_checkpoint(last, args.out)
        if args.ship:
            ship(args.out, args.ship)
        print(json.dumps({"npz": str(npz), "onnx": str(onnx_path)}))
        return 0
    cfg = DistillConfig(
        teacher=args.teacher, data=args.data, thumbs=args.thumbs, thumbs_prob=args.thumbs_prob, steps=args.steps,
        batch=args.batch, crop=args.crop, lr=args.lr, min_lr=args.min_lr, source_scale=args.source_scale,
        fea_weight=args.fea_weight, seed=args.seed, width=args.width,
        full_res_convs=args.full_res_convs,
        low_res_convs=args.low_res_convs,
    )
    if not cfg.data:
        raise DistillError("--data is empty: point it at the MSRS folder (ir/, vi/, splits.csv)")
    distiller = Distiller(cfg, args.out, args.device)
    # kill -TERM <pid> (or Ctrl-C) stops after the current step with a checkpoint: rerun the command to resume.
    signal.signal(signal.SIGTERM, distiller.request_stop)
    signal.signal(signal.SIGINT, distiller.request_stop)
    start = time.time()
    distiller.fit(resume=not args.no_resume, checkpoint_every=args.checkpoint_every, log_every=args.log_every)
    if distiller.step < cfg.steps:
        log.info("stopped at step %d of %d with a checkpoint; run the same command again to resume",
                 distiller.step, cfg.steps)
        return 3
    npz, onnx_path = distiller.finish()
    log.info("done in %.0f s: %s, %s", time.time() - start, npz, onnx_path)
    if args.ship:
        for path in ship(args.out, args.ship):
            log.info("shipped %s", path)
    print(json.dumps({"npz": str(npz), "onnx": str(onnx_path), "steps": distiller.step}))
    return 0
