"""What the trainers share: errors, device choice, metrics.csv, atomic checkpoints, and `StepLoop`, the seeded,
resumable single-process loop of `sage-ros train fast` and `sage-ros train scale` with their command line."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import logging
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from sage_ros.training.datasets import shared_default

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint_last.pt"
CSV_NAME = "metrics.csv"


class TrainingError(RuntimeError):
    """A training run that cannot start or continue (with what to change)."""


def resolve_device(preference: str, local_rank: int = 0) -> torch.device:
    if preference == "auto":
        preference = "cuda" if torch.cuda.is_available() else "cpu"
    if preference.startswith("cuda"):
        if not torch.cuda.is_available():
            raise TrainingError(f"device {preference!r} requested but this torch build sees no CUDA GPU")
        if preference == "cuda":
            preference = f"cuda:{local_rank}"
    return torch.device(preference)


def atomic_save(state: dict, path: Path) -> Path:
    """torch.save through a temporary file: a crash never leaves a half-written checkpoint to resume from."""
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


class CsvLog:
    """Appends one row per step; a resumed run continues the same file."""

    def __init__(self, path: Path, fields: list[str]) -> None:
        new = not path.is_file() or path.stat().st_size == 0
        self.handle = path.open("a", newline="")
        self.writer = csv.DictWriter(self.handle, fieldnames=fields, extrasaction="ignore")
        if new:
            self.writer.writeheader()

    def write(self, row: dict) -> None:
        self.writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


def summary(row: dict) -> str:
    """A metrics row as one log line."""
    return "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items())


class StepLoop:
    """`total_steps` (`cfg.steps` unless overridden) updates of a student of the released one (`train fast`,
    `train scale`), resumable.

    Subclasses build their networks after `__init__`, and give `train_step()` (one update, its metrics row),
    `state()` / `load_state()` (the checkpoint besides step and config; it must hold every random state, so
    that a resumed run draws what an uninterrupted one draws) and `finish()` (the output files).
    """

    csv_fields: list[str] = []

    def __init__(self, cfg: object, out_dir: Path, device: str) -> None:
        if not cfg.data:
            raise TrainingError("--data is empty: point it at the MSRS folder (ir/, vi/, splits.csv)")
        self.cfg, self.out_dir = cfg, Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.device = resolve_device(device)
        if not Path(cfg.teacher).is_file():
            raise TrainingError(f"teacher checkpoint {cfg.teacher} does not exist: run `sage-ros weights fetch`")
        self.step = 0
        self._stop_requested = False

    @property
    def total_steps(self) -> int:
        """Where `fit()` ends (a run of several phases overrides it)."""
        return int(self.cfg.steps)

    def state(self) -> dict:
        raise NotImplementedError

    def load_state(self, state: dict) -> None:
        raise NotImplementedError

    def train_step(self) -> dict:
        raise NotImplementedError

    def finish(self) -> list[Path]:
        raise NotImplementedError

    def request_stop(self, *_args: object) -> None:
        """Finish the current step, write the checkpoint and return from fit() (SIGTERM/SIGINT handler)."""
        self._stop_requested = True

    def save_checkpoint(self) -> Path:
        state = {**self.state(), "step": self.step, "config": dataclasses.asdict(self.cfg)}
        return atomic_save(state, self.out_dir / CHECKPOINT_NAME)

    def load_checkpoint(self, path: Path) -> None:
        state = torch.load(path, map_location=self.device, weights_only=True)
        changed = sorted(k for k, v in dataclasses.asdict(self.cfg).items() if state["config"].get(k) != v)
        if changed:
            log.warning("resuming %s under changed settings: %s", path, ", ".join(changed))
        self.load_state(state)
        self.step = int(state["step"])
        log.info("resumed from %s at step %d", path, self.step)

    def fit(self, resume: bool = True, checkpoint_every: int = 100, log_every: int = 20) -> list[dict]:
        last = self.out_dir / CHECKPOINT_NAME
        if resume and last.is_file():
            self.load_checkpoint(last)
        history: list[dict] = []
        csv_log = CsvLog(self.out_dir / CSV_NAME, self.csv_fields)
        try:
            while self.step < self.total_steps and not self._stop_requested:
                start = time.perf_counter()
                row = self.train_step()
                self.step += 1
                row.update(step=self.step, step_ms=(time.perf_counter() - start) * 1e3)
                history.append(row)
                csv_log.write(row)
                if self.step % log_every == 0 or self.step == 1:
                    log.info("step %d/%d  %s", self.step, self.total_steps, summary(row))
                if checkpoint_every and self.step % checkpoint_every == 0:
                    self.save_checkpoint()
        finally:
            csv_log.close()
        self.save_checkpoint()
        return history


def add_run_arguments(p: argparse.ArgumentParser, cfg_type: type) -> None:
    """The options of a StepLoop command: one per number in `cfg_type` (default: the shipped recipe), the
    teacher, data and run options. Fields that are not numbers are the caller's to add."""
    from sage_ros.paths import default_checkpoint

    p.add_argument("--out", type=Path, required=True, help="run folder (checkpoint, metrics.csv, outputs)")
    teacher = default_checkpoint()
    if not teacher.is_file():
        teacher = Path(shared_default("sage_official", "checkpoints.pt") or teacher)
    p.add_argument("--teacher", default=str(teacher), help="released student checkpoint")
    p.add_argument("--data", default=shared_default("datasets", "msrs"), help="MSRS folder with splits.csv")
    for f in dataclasses.fields(cfg_type):
        if isinstance(f.default, int | float):
            p.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default,
                           help="recipe: %(default)s")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--checkpoint-every", type=int, default=25)
    p.add_argument("--log-every", type=int, default=20)
    p.add_argument("--no-resume", action="store_true", help="start over even if a checkpoint exists")
    p.add_argument("--ship", type=Path, default=None, help="copy the outputs here at the end (sage_ros/data)")


def config_from_args(cfg_type: type, args: argparse.Namespace, **values: object) -> object:
    """cfg_type from the options named like its fields, `values` overriding."""
    names = [f.name for f in dataclasses.fields(cfg_type) if hasattr(args, f.name)]
    return cfg_type(**{**{n: getattr(args, n) for n in names}, **values})


def run_command(name: str, args: argparse.Namespace, make: Callable[[argparse.Namespace], StepLoop]) -> int:
    """`sage-ros train NAME`: log to --out/train.log, train (kill -TERM or Ctrl-C stops after the current step
    with a checkpoint: the same command resumes; exit 3), write the outputs and copy them to --ship.
    A run that cannot start is one message on stderr and exit code 2."""
    args.out.mkdir(parents=True, exist_ok=True)
    log_file = logging.FileHandler(args.out / "train.log")
    log_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logging.getLogger().addHandler(log_file)
    try:
        torch.set_num_threads(max(1, args.threads))
        loop = make(args)
        signal.signal(signal.SIGTERM, loop.request_stop)
        signal.signal(signal.SIGINT, loop.request_stop)
        loop.fit(resume=not args.no_resume, checkpoint_every=args.checkpoint_every, log_every=args.log_every)
        if loop.step < loop.total_steps:
            log.info("stopped at step %d of %d with a checkpoint; run the same command again to resume",
                     loop.step, loop.total_steps)
            return 3
        outputs = loop.finish()
        if args.ship:
            args.ship.mkdir(parents=True, exist_ok=True)
            for path in outputs:
                log.info("shipped %s", shutil.copy2(path, args.ship / path.name))
        print(json.dumps({"outputs": [str(p) for p in outputs], "steps": loop.step}))
        return 0
    except TrainingError as exc:
        print(f"sage-ros train {name}: error: {exc}", file=sys.stderr)
        return 2
    finally:
        logging.getLogger().removeHandler(log_file)
        log_file.close()
