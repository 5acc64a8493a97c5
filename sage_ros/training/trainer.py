"""Bi-level distillation of a SAGE student from the SPA teacher (SAGE_SPEC section 4; docs/training.md).

Batches alternate as upstream's: even global steps update the student against the detached teacher, odd ones
the teacher (its task loss plus feedback from the detached student). Learning rates follow a closed-form
cosine of (step, total steps), so a resume that extends `--steps` continues on the new horizon. One CPU/GPU or
`torchrun` (DDP: gloo on CPU, nccl on CUDA); a resume continues the same epoch permutation at the same batch.
"""

from __future__ import annotations

import logging
import math
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

from sage_ros.networks.student import SageStudent
from sage_ros.training.config import TrainConfig
from sage_ros.training.datasets import IGNORE_INDEX, PairDataset, records_for
from sage_ros.training.loop import (
    CHECKPOINT_NAME,
    CSV_NAME,
    CsvLog,
    TrainingError,
    atomic_save,
    resolve_device,
    summary,
)
from sage_ros.training.losses import feature_loss, fused_rgb, student_side_loss, teacher_task_loss
from sage_ros.training.segmenter import build_segmenter, label_lookup, segmenter_inputs
from sage_ros.training.teacher import SageTeacher

log = logging.getLogger(__name__)

STUDENT_NAME = "student.pt"
ONNX_NAME = "student.onnx"
MAX_BAD_STEPS = 20  # consecutive non-finite steps before giving up

CSV_FIELDS = ["step", "epoch", "lr_teacher", "lr_student", "teacher_loss", "student_loss", "t_int", "t_grad", "t_seg",
              "t_feedback", "t_fea", "s_mse", "s_grad", "s_cs", "s_fea", "step_ms", "update"]


def cosine_lr(step: int, horizon: int, base: float, minimum: float) -> float:
    """Learning rate after `step` of `horizon` steps: cosine from `base` to `minimum`, then flat.

    The same curve as torch's CosineAnnealingLR (eta_min = minimum, T_max = horizon) in closed form,
    which never swings back up past the horizon and can be recomputed for a new horizon on resume.
    """
    t = min(max(step, 0), max(horizon, 1)) / max(horizon, 1)
    return minimum + (base - minimum) * 0.5 * (1.0 + math.cos(math.pi * t))


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
        self.dataset = PairDataset(records, tuple(d.crop) if d.crop else None, d.flip, d.labels, d.mask_cache,
                                   d.top_k, self.cfg.train.seed)
        if d.mask_cache:
            self._ensure_mask_cache(records)
        elif self.env.is_main:
            log.warning("no mask cache configured: every SAM mask is the whole image (no semantic prior)")
        self.sampler = DistributedSampler(self.dataset, self.env.world_size, self.env.rank, shuffle=True,
                                          seed=self.cfg.train.seed, drop_last=True)
        self.steps_per_epoch = len(self.sampler) // self.cfg.train.batch_size
        if self.steps_per_epoch == 0:
            raise TrainingError(
                f"{len(self.dataset)} pairs over {self.env.world_size} process(es) do not fill one batch of "
                f"{self.cfg.train.batch_size}: lower train.batch_size or add data"
            )
        t = self.cfg.train
        self.total_steps = int(t.max_steps) if t.max_steps else int(t.epochs) * self.steps_per_epoch

    def _ensure_mask_cache(self, records: list) -> None:
        """A configured mask cache must be complete: single-process runs with a SAM checkpoint build what is
        missing (as `sage-ros train student masks`); otherwise training stops with what to run."""
        from sage_ros.training.sam import build_cache_for_config, missing_mask_files

        d = self.cfg.data
        missing = missing_mask_files(records, d.mask_cache)
        if not missing:
            return
        ckpt = self.cfg.sam.checkpoint
        if not ckpt or not Path(ckpt).is_file():
            raise TrainingError(
                f"mask cache {d.mask_cache} lacks {missing} of {2 * len(records)} files and no SAM checkpoint "
                f"is available to build them (sam.checkpoint: {ckpt!r}). Run `sage-ros train student masks "
                "--config ...` with a SAM checkpoint first, or set data.mask_cache: null to train with whole-image "
                "masks (no semantic prior)"
            )
        if self.env.distributed:
            # Hours of SAM on one rank would outlast the process group's timeout on the others.
            raise TrainingError(
                f"mask cache {d.mask_cache} lacks {missing} of {2 * len(records)} files: build it before a "
                "multi-process run, in one process: `sage-ros train student masks --config ... --device cuda`"
            )
        if self.env.is_main:
            log.warning("mask cache %s lacks %d of %d files: building them now with %s", d.mask_cache, missing,
                        2 * len(records), ckpt)
            report = build_cache_for_config(self.cfg, records, device=str(self.env.device), progress=True)
            log.info("mask cache: %d written, %d with no mask kept", report.written, report.empty)

    def _build_models(self) -> None:
        torch.manual_seed(self.cfg.train.seed)
        device = self.env.device
        teacher = SageTeacher(num_masks=self.cfg.data.top_k).to(device)
        student = SageStudent().to(device)
        self.phi = None
        if self.cfg.sam.checkpoint:
            from sage_ros.training.sam import load_phi

            self.phi = load_phi(self.cfg.sam.checkpoint).to(device)
        elif self.env.is_main:
            log.warning("sam.checkpoint not set: the contrastive semantic loss L_cs is disabled")
        self._build_segmenter()
        if self.env.distributed:
            ids = [device.index] if device.type == "cuda" else None
            teacher = DistributedDataParallel(teacher, device_ids=ids)
            student = DistributedDataParallel(student, device_ids=ids)
        self.teacher, self.student = teacher, student
        t = self.cfg.train
        self.opt_t = torch.optim.Adam(teacher.parameters(), lr=t.teacher_lr)
        self.opt_s = torch.optim.Adam(student.parameters(), lr=t.student_lr)
        self._set_lr(0)

    def _build_segmenter(self) -> None:
        """The frozen task segmenter (labelled data only)."""
        self.segmenter, self.label_table, self.seg_inputs = None, None, ("rgb",)
        if not (self.dataset.with_labels and self.weights.teacher_seg):
            return
        from sage_ros.training.export import class_table_for

        seg, dataset_names = self.cfg.segmenter, class_table_for(self.cfg.output.classes).names
        if seg.factory != "project" and seg.weights is None and self.env.is_main:
            log.warning("segmenter.weights is not set: %s must return a TRAINED module by itself, or the "
                        "teacher's segmentation loss teaches nothing", seg.factory)
        module = build_segmenter(seg.factory, len(dataset_names), seg.weights)
        self.seg_inputs = segmenter_inputs(module)
        names = getattr(module, "class_names", None)
        if names:
            table = label_lookup(dataset_names, names, IGNORE_INDEX)
            mapped = {n: names[int(table[i])] for i, n in enumerate(dataset_names)}
            if all(int(table[i]) == 0 for i in range(len(dataset_names))):
                raise TrainingError(
                    f"the segmenter's classes {list(names)} share no name with the dataset's {list(dataset_names)}: "
                    "its loss would teach nothing; configure a segmenter trained on your classes"
                )
            if self.env.is_main:
                log.info("dataset labels -> segmenter classes: %s", mapped)
            self.label_table = table.to(self.env.device)
        self.segmenter = module.to(self.env.device)

    def _set_lr(self, step: int) -> None:
        """Both networks' learning rates for the update after `step` steps (closed-form cosine)."""
        t = self.cfg.train
        for opt, base in ((self.opt_t, t.teacher_lr), (self.opt_s, t.student_lr)):
            lr = cosine_lr(step, self.total_steps, base, t.min_lr)
            for group in opt.param_groups:
                group["lr"] = lr

    # ------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        return {
            "teacher": _unwrap(self.teacher).state_dict(),
            "student": _unwrap(self.student).state_dict(),
            "opt_teacher": self.opt_t.state_dict(),
            "opt_student": self.opt_s.state_dict(),
            "schedule": {"horizon": self.total_steps},
            "step": self.step,
            "config": self.cfg.to_dict(),
            "config_hash": self.cfg.hash(),
        }

    def save_checkpoint(self, path: Path | None = None) -> Path | None:
        """Write the full training state (rank 0 only), atomically."""
        if not self.env.is_main:
            return None
        path = atomic_save(self.state_dict(), Path(path or self.out_dir / CHECKPOINT_NAME))
        torch.save(_unwrap(self.student).state_dict(), self.out_dir / STUDENT_NAME)
        return path

    def load_checkpoint(self, path: str | Path) -> None:
        path = Path(path)
        if not path.is_file():
            raise TrainingError(f"checkpoint {path} does not exist")
        state = torch.load(path, map_location=self.env.device, weights_only=True)
        if state["config_hash"] != self.cfg.hash() and self.env.is_main:
            old = state["config"]
            changed = [f"{section}.{k}: {old.get(section, {}).get(k)!r} -> {v!r}"
                       for section, values in self.cfg.result_settings().items()
                       for k, v in values.items() if old.get(section, {}).get(k) != v]
            log.warning("resuming %s under changed settings: %s", path, ", ".join(changed) or "?")
        _unwrap(self.teacher).load_state_dict(state["teacher"])
        _unwrap(self.student).load_state_dict(state["student"])
        self.opt_t.load_state_dict(state["opt_teacher"])
        self.opt_s.load_state_dict(state["opt_student"])
        self.step = int(state["step"])
        self._set_lr(self.step)  # the optimiser state carried the old lr; the schedule decides
        if self.env.is_main:
            log.info("resumed from %s at step %d", path, self.step)
            if state["schedule"]["horizon"] != self.total_steps:
                log.warning("schedule horizon %d -> %d steps: from step %d the learning rates follow the %d-step "
                            "cosine to min_lr (no restart)", state["schedule"]["horizon"], self.total_steps,
                            self.step, self.total_steps)

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

    def _segment(self, fused_t: torch.Tensor, crcb: torch.Tensor, y: torch.Tensor, ir: torch.Tensor):
        makers = {
            "rgb": lambda: fused_rgb(fused_t, crcb),
            # The runtime pipeline clamps the fused Y to [0, 1]: the project networks were trained on that.
            "fused_y": lambda: fused_t.clamp(0.0, 1.0),
            "vis_y": lambda: y,
            "ir": lambda: ir,
        }
        return self.segmenter(*(makers[k]() for k in self.seg_inputs))

    def train_step(self, batch: dict) -> dict | None:
        """One update on `batch`: the student on even global steps, the teacher on odd ones (upstream's order;
        the parity runs on across epochs, so resume stays exact); None when the step was skipped."""
        dev = self.env.device
        y, ir, crcb = (batch[k].to(dev, non_blocking=True) for k in ("y", "ir", "crcb"))
        vis_m, ir_m = batch["vis_masks"].to(dev), batch["ir_masks"].to(dev)
        w = self.weights
        teacher_turn = self.step % 2 == 1
        self._set_lr(self.step)
        # Both in training mode, as upstream: the network that only serves as reference this step
        # runs without gradients, its BatchNorm (student) on batch statistics.
        self.teacher.train()
        self.student.train()
        with torch.set_grad_enabled(teacher_turn):
            fused_t, taps_t = (self.teacher if teacher_turn else _unwrap(self.teacher))(y, ir, vis_m, ir_m)
        with torch.set_grad_enabled(not teacher_turn):
            fused_s, taps_s = (_unwrap(self.student) if teacher_turn else self.student)(y, ir)
        if teacher_turn:
            # Upper level: the teacher's task plus feedback from the (detached) student. The feedback's
            # student-side loss holds no L_fea: the teacher's only L_fea weight is teacher_fea (0.01).
            labels, logits = batch.get("label"), None
            if self.segmenter is not None and labels is not None:
                labels = labels.to(dev)
                if self.label_table is not None:
                    labels = self.label_table[labels.long().clamp(0, self.label_table.numel() - 1)]
                logits = self._segment(fused_t, crcb, y, ir)
            task, parts = teacher_task_loss(fused_t, y, ir, logits, labels, w, IGNORE_INDEX)
            feedback, _ = student_side_loss(fused_t, fused_s.detach(), y, ir, vis_m, ir_m, self.phi, w)
            fea = feature_loss(taps_t, [t.detach() for t in taps_s])
            loss, opt = task + w.teacher_feedback * feedback + w.teacher_fea * fea, self.opt_t
            metrics = {"update": "teacher", "t_int": parts["int"], "t_grad": parts["grad"], "t_seg": parts["seg"],
                       "t_feedback": feedback.item(), "t_fea": fea.item()}
        else:
            # Lower level: distil the (detached) teacher into the student.
            side, parts = student_side_loss(fused_s, fused_t.detach(), y, ir, vis_m, ir_m, self.phi, w)
            fea = feature_loss(taps_s, [t.detach() for t in taps_t])
            loss, opt = side + w.student_fea * fea, self.opt_s
            metrics = {"update": "student", "s_mse": parts["mse"], "s_grad": parts["grad"], "s_cs": parts["cs"],
                       "s_fea": fea.item()}
        opt.zero_grad(set_to_none=True)
        if not self._all_finite(loss):
            return None
        loss.backward()
        opt.step()
        metrics["teacher_loss" if teacher_turn else "student_loss"] = loss.item()
        return metrics

    def fit(self, resume: str | Path | None = None, export: bool | None = None, stop_at: int | None = None,
            ) -> FitResult:
        """Train to `total_steps` (resuming from a checkpoint path, or 'auto' for the last one here).

        stop_at: end this call after that many steps in all (with a checkpoint, without an export),
        the schedule still planned for `total_steps`: a time-sliced job that a later `resume` continues
        exactly as if it had never stopped.
        """
        if resume == "auto":
            last = self.out_dir / CHECKPOINT_NAME
            resume = last if last.is_file() else None
        if resume is not None:
            self.load_checkpoint(resume)
        main = self.env.is_main
        csv_log = CsvLog(self.out_dir / CSV_NAME, CSV_FIELDS) if main else None
        t = self.cfg.train
        if main:
            log.info("training %d steps (%d per epoch, batch %d x %d process(es)) on %s; output %s", self.total_steps,
                     self.steps_per_epoch, t.batch_size, self.env.world_size, self.env.device, self.out_dir)
        history: list[dict] = []
        bad = 0
        try:
            end = self.total_steps if stop_at is None else min(int(stop_at), self.total_steps)
            while self.step < end:
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
                    self._set_lr(self.step)  # lr_* columns: the rates after this step, as before
                    metrics.update(step=self.step, epoch=epoch, step_ms=(time.perf_counter() - start) * 1e3,
                                   lr_teacher=self.opt_t.param_groups[0]["lr"],
                                   lr_student=self.opt_s.param_groups[0]["lr"])
                    history.append(metrics)
                    if main:
                        csv_log.write(metrics)
                        if self.step % max(t.log_every, 1) == 0 or self.step == 1:
                            log.info("step %d/%d epoch %d  %s", self.step, self.total_steps, epoch, summary(metrics))
                    if t.checkpoint_every and self.step % t.checkpoint_every == 0:
                        self.save_checkpoint()
                    if self.step >= end:
                        break
            checkpoint = self.save_checkpoint()
            self._check_ranks_in_sync()
            onnx = None
            finished = self.step >= self.total_steps
            if main and finished and (self.cfg.output.export if export is None else export):
                from sage_ros.training.export import export_trained_student

                onnx = export_trained_student(_unwrap(self.student), self.out_dir / ONNX_NAME, self.cfg, self.step)
        finally:
            if csv_log is not None:
                csv_log.close()
        return FitResult(self.step, history, checkpoint, onnx)

    def _check_ranks_in_sync(self) -> None:
        """Under DDP every rank must hold the same student; a cheap checksum comparison proves it."""
        if not self.env.distributed:
            return
        total = sum(p.detach().double().sum() for p in _unwrap(self.student).parameters())
        gathered = [torch.zeros((), dtype=torch.float64, device=self.env.device) for _ in range(self.env.world_size)]
        dist.all_gather(gathered, total.to(self.env.device))
        values = [float(g) for g in gathered]
        if max(values) - min(values) > 1e-6 * max(1.0, abs(values[0])):
            raise TrainingError(f"student weights differ across ranks: checksums {values}")
        if self.env.is_main:
            log.info("DDP: student weights identical on all %d ranks (checksum %.6f)", self.env.world_size, values[0])


def teardown_distributed(barrier: bool = False) -> None:
    """Leave the process group. barrier (the normal end of a run, not the error path where a dead peer would
    leave it waiting): wait for every rank first, or a rank that finishes first can tear the gloo group down
    under its peer (seen in CI as a C++ abort after a complete run)."""
    if dist.is_available() and dist.is_initialized():
        if barrier:
            dist.barrier()
        dist.destroy_process_group()
