"""Bi-level distillation of a SAGE student from the SPA teacher (SAGE_SPEC section 4).

Each iteration takes one batch and makes two first-order updates:
- upper level (teacher): its task loss (intensity, gradients, frozen-segmenter cross-entropy) plus
  feedback from the student (the student-side loss with the detached student as reference, and L_fea);
- lower level (student): 3 L_MSE + 3 L_grad + L_cs/3000 + 0.3 L_fea against the detached teacher.
Both use the other network's output of the same batch, detached, so each network runs forward once.

Runs on one CPU/GPU or under `torchrun` (DDP: gloo on CPU, nccl on CUDA; DistributedSampler).
Checkpoints hold both networks, both optimisers and schedulers, the step and the config; resuming
continues the same epoch permutation at the same batch.
"""

from __future__ import annotations

import csv
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from sage_ros.model.student import SageStudent
from sage_ros.training.config import TrainConfig
from sage_ros.training.datasets import IGNORE_INDEX, PairDataset, records_for
from sage_ros.training.losses import distillation_loss, feature_loss, fused_rgb, teacher_task_loss
from sage_ros.training.mask_cache import mask_path
from sage_ros.training.segmenter import build_segmenter
from sage_ros.training.teacher import SageTeacher

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint_last.pt"
STUDENT_NAME = "student.pt"
ONNX_NAME = "student.onnx"
CSV_NAME = "metrics.csv"
MAX_BAD_STEPS = 20  # consecutive non-finite steps before giving up

CSV_FIELDS = [
    "step",
    "epoch",
    "lr_teacher",
    "lr_student",
    "teacher_loss",
    "student_loss",
    "t_int",
    "t_grad",
    "t_seg",
    "t_feedback",
    "t_fea",
    "s_mse",
    "s_grad",
    "s_cs",
    "s_fea",
    "step_ms",
]


class TrainingError(RuntimeError):
    """A training run that cannot start or continue (with what to change)."""


@dataclass
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(preference: str, local_rank: int = 0) -> torch.device:
    if preference == "auto":
        preference = "cuda" if torch.cuda.is_available() else "cpu"
    if preference.startswith("cuda"):
        if not torch.cuda.is_available():
            raise TrainingError(f"device {preference!r} requested but this torch build sees no CUDA GPU")
        if preference == "cuda":
            preference = f"cuda:{local_rank}"
    return torch.device(preference)


def setup_distributed(preference: str) -> DistEnv:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); otherwise a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistEnv(device=resolve_device(preference))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(preference, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistEnv(rank, world, local_rank, device)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


class CsvLog:
    """Appends one row per step; a resumed run continues the same file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        new = not path.is_file() or path.stat().st_size == 0
        self.handle = path.open("a", newline="")
        self.writer = csv.DictWriter(self.handle, fieldnames=CSV_FIELDS, extrasaction="ignore")
        if new:
            self.writer.writeheader()

    def write(self, row: dict) -> None:
        self.writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


def _tensorboard(log_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional; the CSV log always exists
        return None
    return SummaryWriter(str(log_dir))


@dataclass
class FitResult:
    steps: int
    history: list[dict]
    checkpoint: Path | None
    onnx: Path | None


class Trainer:
    """Builds data, networks, optimisers from a TrainConfig and runs the bi-level loop."""

    def __init__(self, cfg: TrainConfig, env: DistEnv | None = None) -> None:
        self.cfg = cfg
        self.env = env or setup_distributed(cfg.train.device)
        if cfg.train.threads:
            torch.set_num_threads(int(cfg.train.threads))
        if self.env.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed crop sizes: pick the fastest kernels once
        self.out_dir = Path(cfg.output.dir)
        if self.env.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        self.weights = cfg.loss
        self.step = 0
        self._build_data()
        self._build_models()

    # ----------------------------------------------------------------- set-up
    def _build_data(self) -> None:
        d = self.cfg.data
        if not d.root:
            raise TrainingError("data.root is empty: point it at an FMB / MSRS / SAGE-layout dataset")
        records = records_for(d.layout, d.root, d.split)
        if d.limit:
            records = records[: int(d.limit)]
        if d.top_k <= 0:
            raise TrainingError("data.top_k must be >= 1: the teacher takes top-K mask images")
        self.dataset = PairDataset(
            records,
            crop_hw=tuple(d.crop) if d.crop else None,
            flip=d.flip,
            labels=d.labels,
            mask_root=d.mask_cache,
            top_k=d.top_k,
            seed=self.cfg.train.seed,
        )
        if d.mask_cache:
            missing = sum(
                not mask_path(d.mask_cache, m, r.name).is_file() for r in records for m in ("ir", "vis")
            )
            if missing and self.env.is_main:
                log.warning(
                    "mask cache %s lacks %d of %d files: those images use whole-image masks "
                    "(run `sage-ros train masks` first)",
                    d.mask_cache,
                    missing,
                    2 * len(records),
                )
        elif self.env.is_main:
            log.warning("no mask cache configured: every SAM mask is the whole image (no semantic prior)")
        self.sampler = DistributedSampler(
            self.dataset,
            num_replicas=self.env.world_size,
            rank=self.env.rank,
            shuffle=True,
            seed=self.cfg.train.seed,
            drop_last=True,
        )
        self.steps_per_epoch = len(self.sampler) // self.cfg.train.batch_size
        if self.steps_per_epoch == 0:
            raise TrainingError(
                f"{len(self.dataset)} pairs over {self.env.world_size} process(es) do not fill one batch of "
                f"{self.cfg.train.batch_size}: lower train.batch_size or add data"
            )
        t = self.cfg.train
        self.total_steps = int(t.max_steps) if t.max_steps else int(t.epochs) * self.steps_per_epoch

    def _class_count(self) -> int:
        from sage_ros.training.export import class_table_for

        return len(class_table_for(self.cfg.output.classes).names)

    def _build_models(self) -> None:
        torch.manual_seed(self.cfg.train.seed)
        device = self.env.device
        teacher, student = SageTeacher(num_masks=self.cfg.data.top_k).to(device), SageStudent().to(device)
        self.phi = None
        if self.cfg.sam.checkpoint:
            from sage_ros.training.sam import load_phi

            self.phi = load_phi(self.cfg.sam.checkpoint, self.cfg.sam.variant).to(device)
        elif self.env.is_main:
            log.warning("sam.checkpoint not set: the contrastive semantic loss L_cs is disabled")
        self.segmenter = None
        if self.dataset.with_labels and self.weights.teacher_seg:
            seg = self.cfg.segmenter
            self.segmenter = build_segmenter(seg.factory, self._class_count(), seg.weights).to(device)
        if self.env.distributed:
            ids = [device.index] if device.type == "cuda" else None
            teacher = DistributedDataParallel(teacher, device_ids=ids)
            student = DistributedDataParallel(student, device_ids=ids)
        self.teacher, self.student = teacher, student
        t = self.cfg.train
        self.opt_t = torch.optim.Adam(teacher.parameters(), lr=t.teacher_lr)
        self.opt_s = torch.optim.Adam(student.parameters(), lr=t.student_lr)
        horizon = max(self.total_steps, 1)
        self.sched_t = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt_t, horizon, eta_min=t.min_lr)
        self.sched_s = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt_s, horizon, eta_min=t.min_lr)

    # ------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        return {
            "teacher": _unwrap(self.teacher).state_dict(),
            "student": _unwrap(self.student).state_dict(),
            "opt_teacher": self.opt_t.state_dict(),
            "opt_student": self.opt_s.state_dict(),
            "sched_teacher": self.sched_t.state_dict(),
            "sched_student": self.sched_s.state_dict(),
            "step": self.step,
            "config": self.cfg.to_dict(),
            "config_hash": self.cfg.hash(),
        }

    def save_checkpoint(self, path: Path | None = None) -> Path | None:
        """Write the full training state (rank 0 only), atomically."""
        if not self.env.is_main:
            return None
        path = Path(path or self.out_dir / CHECKPOINT_NAME)
        tmp = path.with_suffix(".tmp")
        torch.save(self.state_dict(), tmp)
        os.replace(tmp, path)
        torch.save(_unwrap(self.student).state_dict(), self.out_dir / STUDENT_NAME)
        return path

    def load_checkpoint(self, path: str | Path) -> None:
        path = Path(path)
        if not path.is_file():
            raise TrainingError(f"checkpoint {path} does not exist")
        state = torch.load(path, map_location=self.env.device, weights_only=True)
        if state.get("config_hash") != self.cfg.hash():
            log.warning(
                "resuming %s written with config %s under config %s: settings changed",
                path,
                state.get("config_hash"),
                self.cfg.hash(),
            )
        _unwrap(self.teacher).load_state_dict(state["teacher"])
        _unwrap(self.student).load_state_dict(state["student"])
        self.opt_t.load_state_dict(state["opt_teacher"])
        self.opt_s.load_state_dict(state["opt_student"])
        self.sched_t.load_state_dict(state["sched_teacher"])
        self.sched_s.load_state_dict(state["sched_student"])
        self.step = int(state["step"])
        if self.env.is_main:
            log.info("resumed from %s at step %d", path, self.step)

    # ------------------------------------------------------------------- loop
    def _batches(self, epoch: int, skip: int):
        self.sampler.set_epoch(epoch)
        self.dataset.set_epoch(epoch)
        bs = self.cfg.train.batch_size
        indices = list(self.sampler)[skip * bs :]
        loader = DataLoader(
            self.dataset,
            batch_size=bs,
            sampler=indices,
            drop_last=True,
            num_workers=int(self.cfg.data.workers),
            pin_memory=self.env.device.type == "cuda",
        )
        yield from loader

    def _all_finite(self, *values: torch.Tensor) -> bool:
        ok = torch.tensor(float(all(bool(torch.isfinite(v)) for v in values)), device=self.env.device)
        if self.env.distributed:  # every rank must take the same branch or DDP hangs
            dist.all_reduce(ok, op=dist.ReduceOp.MIN)
        return bool(ok.item() > 0.5)

    def train_step(self, batch: dict) -> dict | None:
        """One teacher update and one student update on `batch`; None when the step was skipped."""
        dev = self.env.device
        y, ir, crcb = (batch[k].to(dev, non_blocking=True) for k in ("y", "ir", "crcb"))
        vis_m, ir_m = batch["vis_masks"].to(dev), batch["ir_masks"].to(dev)
        labels = batch["label"].to(dev) if "label" in batch else None
        w = self.weights
        self.teacher.train()
        self.student.train()
        fused_s, taps_s = self.student(y, ir)
        fused_t, taps_t = self.teacher(y, ir, vis_m, ir_m)
        s_ref, s_taps_ref = fused_s.detach(), [t.detach() for t in taps_s]
        t_ref, t_taps_ref = fused_t.detach(), [t.detach() for t in taps_t]

        # Upper level: the teacher's task plus feedback from the (detached) student.
        logits = None
        if self.segmenter is not None and labels is not None:
            logits = self.segmenter(fused_rgb(fused_t, crcb))
        task, t_parts = teacher_task_loss(fused_t, y, ir, logits, labels, w, IGNORE_INDEX)
        feedback, _ = distillation_loss(fused_t, s_ref, taps_t, s_taps_ref, y, ir, vis_m, ir_m, self.phi, w)
        fea_t = feature_loss(taps_t, s_taps_ref)
        loss_t = task + w.teacher_feedback * feedback + w.teacher_fea * fea_t
        # Lower level: distil the (detached) teacher into the student.
        loss_s, s_parts = distillation_loss(
            fused_s, t_ref, taps_s, t_taps_ref, y, ir, vis_m, ir_m, self.phi, w
        )

        if not self._all_finite(loss_t, loss_s):
            self.opt_t.zero_grad(set_to_none=True)
            self.opt_s.zero_grad(set_to_none=True)
            return None
        self.opt_t.zero_grad(set_to_none=True)
        loss_t.backward()
        self.opt_t.step()
        self.opt_s.zero_grad(set_to_none=True)
        loss_s.backward()
        self.opt_s.step()
        self.sched_t.step()
        self.sched_s.step()
        return {
            "teacher_loss": loss_t.item(),
            "student_loss": loss_s.item(),
            "t_int": t_parts["int"],
            "t_grad": t_parts["grad"],
            "t_seg": t_parts["seg"],
            "t_feedback": feedback.item(),
            "t_fea": fea_t.item(),
            "s_mse": s_parts["mse"],
            "s_grad": s_parts["grad"],
            "s_cs": s_parts["cs"],
            "s_fea": s_parts["fea"],
        }

    def fit(self, resume: str | Path | None = None, export: bool | None = None) -> FitResult:
        """Train to `total_steps` (resuming from a checkpoint path, or 'auto' for the last one here)."""
        if resume == "auto":
            last = self.out_dir / CHECKPOINT_NAME
            resume = last if last.is_file() else None
        if resume is not None:
            self.load_checkpoint(resume)
        main = self.env.is_main
        csv_log = CsvLog(self.out_dir / CSV_NAME) if main else None
        board = _tensorboard(self.out_dir / "tb") if main and self.cfg.output.tensorboard else None
        t = self.cfg.train
        if main:
            log.info(
                "training %d steps (%d per epoch, batch %d x %d process(es)) on %s; output %s",
                self.total_steps,
                self.steps_per_epoch,
                t.batch_size,
                self.env.world_size,
                self.env.device,
                self.out_dir,
            )
        history: list[dict] = []
        bad = 0
        try:
            while self.step < self.total_steps:
                epoch, skip = divmod(self.step, self.steps_per_epoch)
                for batch in self._batches(epoch, skip):
                    start = time.perf_counter()
                    metrics = self.train_step(batch)
                    if self.env.device.type == "cuda":
                        torch.cuda.synchronize(self.env.device)
                    if metrics is None:
                        bad += 1
                        log.warning("step %d: non-finite loss, update skipped (%d in a row)", self.step, bad)
                        if bad >= MAX_BAD_STEPS:
                            raise TrainingError(f"{bad} non-finite steps in a row: lower the learning rates")
                        continue
                    bad = 0
                    self.step += 1
                    metrics.update(
                        step=self.step,
                        epoch=epoch,
                        step_ms=(time.perf_counter() - start) * 1e3,
                        lr_teacher=self.opt_t.param_groups[0]["lr"],
                        lr_student=self.opt_s.param_groups[0]["lr"],
                    )
                    history.append(metrics)
                    if main:
                        csv_log.write(metrics)
                        if board is not None:
                            for key, value in metrics.items():
                                if key not in ("step", "epoch"):
                                    board.add_scalar(key, value, self.step)
                        if self.step % max(t.log_every, 1) == 0 or self.step == 1:
                            log.info(
                                "step %d/%d epoch %d  teacher %.4f  student %.4f (mse %.4f grad %.4f cs %.4f "
                                "fea %.4f)  %.0f ms/step",
                                self.step,
                                self.total_steps,
                                epoch,
                                metrics["teacher_loss"],
                                metrics["student_loss"],
                                metrics["s_mse"],
                                metrics["s_grad"],
                                metrics["s_cs"],
                                metrics["s_fea"],
                                metrics["step_ms"],
                            )
                    if t.checkpoint_every and self.step % t.checkpoint_every == 0:
                        self.save_checkpoint()
                    if self.step >= self.total_steps:
                        break
            checkpoint = self.save_checkpoint()
            self._check_ranks_in_sync()
            onnx = None
            if main and (self.cfg.output.export if export is None else export):
                from sage_ros.training.export import export_trained_student

                onnx = export_trained_student(
                    _unwrap(self.student), self.out_dir / ONNX_NAME, self.cfg, self.step
                )
        finally:
            if csv_log is not None:
                csv_log.close()
            if board is not None:
                board.close()
        return FitResult(self.step, history, checkpoint, onnx)

    def _check_ranks_in_sync(self) -> None:
        """Under DDP every rank must hold the same student; a cheap checksum comparison proves it."""
        if not self.env.distributed:
            return
        total = sum(p.detach().double().sum() for p in _unwrap(self.student).parameters())
        gathered = [
            torch.zeros((), dtype=torch.float64, device=self.env.device) for _ in range(self.env.world_size)
        ]
        dist.all_gather(gathered, total.to(self.env.device))
        values = [float(g) for g in gathered]
        if max(values) - min(values) > 1e-6 * max(1.0, abs(values[0])):
            raise TrainingError(f"student weights differ across ranks: checksums {values}")
        if self.env.is_main:
            log.info(
                "DDP: student weights identical on all %d ranks (checksum %.6f)",
                self.env.world_size,
                values[0],
            )


def teardown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
