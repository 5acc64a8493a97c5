"""Distil the released SAGE student into the cheaper `FastStudent` (issue 12): `sage-ros train fast`.

Recipe, loss and the reasons behind them: docs/model_card.md (fast student). In short: the teacher is the
released student (frozen), run on the student's crop for its output and its five feature taps; the loss is
the SAGE student step without L_cs, 3 L_MSE + 3 L_grad + 0.3 L_fea, with the source terms of L_MSE and
L_grad scaled by `intensity_scale` and `source_scale`, and L_fea through five 1x1 adapters (width -> 32,
discarded after training).
Data: MSRS train frames (random crops and flips) and, with probability `thumbs_prob` per step, a batch of
MSRS train thumbnails. Then, in the same run, `scale_steps` more steps adapt the student to the fusion sizes
the node uses (the scale-adapted student's recipe, `training.scale_adapt`): whole train frames, the thermal
camera simulated at 1/s per side for s in `scales` (1: the frame as it is), BatchNorm statistics frozen,
L1 + L1 of differences against the released student at full size, taken after the pipeline's upsampler.
Step k draws from a generator seeded with (seed, k): a resumed run equals an uninterrupted one.
Outputs in --out: checkpoint_last.pt, metrics.csv, train.log, fast_student.npz and its fusion-only
ONNX + JSON (BatchNorm folded, statistics as trained); `--ship DIR` copies the last three.
"""

from __future__ import annotations

import argparse
import copy
import logging
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sage_ros.image.imaging import infrared_to_grey, visible_to_ycrcb
from sage_ros.networks.checkpoint import load_student
from sage_ros.networks.fast_student import FastArch, FastStudent, save_fast_weights
from sage_ros.networks.student import WIDTH as TEACHER_WIDTH
from sage_ros.paths import sha256_of
from sage_ros.training.datasets import read_pair, records_for, shared_default
from sage_ros.training.loop import StepLoop, TrainingError, add_run_arguments, config_from_args, run_command
from sage_ros.training.losses import feature_loss, gradient_term
from sage_ros.training.scale_adapt import adapt_loss, final_luma, parse_scales, plane_tensor, simulated_pair

log = logging.getLogger(__name__)

NPZ_NAME = "fast_student.npz"
ONNX_NAME = "fast_student.onnx"


@dataclass
class DistillConfig:
    """Everything that defines a run (stored in the checkpoint; a resume with other values warns)."""

    teacher: str = ""
    data: str = ""
    thumbs: str = ""
    thumbs_prob: float = 0.25
    steps: int = 1200
    batch: int = 4
    crop: int = 128
    lr: float = 2e-3
    min_lr: float = 1e-5
    source_scale: float = 0.3  # the gradient source term
    intensity_scale: float = 0.0  # the intensity (MSE) source term
    fea_weight: float = 0.3
    # Scale adaptation after the distillation: steps, peak learning rate (cosine to 2 % of it), frames per step
    # and the RGB / thermal size ratios per side (1: native). Measured: docs/model_card.md (fast student).
    scale_steps: int = 1200
    scale_lr: float = 1e-4
    scale_batch: int = 2
    scales: tuple[float, ...] = (1.0, 1.4, 1.667, 2.0)
    detail_frames: int = 32  # train frames the unsharp gain is calibrated on after training (0: no detail stage)
    # Train frames the softening below the RGB size is calibrated on after that (0: none, -1: every one), with
    # the thermal camera simulated at 1/`reduced_scale` per side (1.667: a 640x512 camera beside 1280x720 RGB).
    # Every train frame: 64 of them left -0.09 and -0.10 within 0.01 % of each other (2.82 / 2.81 %).
    reduced_frames: int = -1
    reduced_scale: float = 1.667
    seed: int = 0
    width: int = 16
    full_res_convs: int = 2
    low_res_convs: int = 3

    @property
    def arch(self) -> FastArch:
        return FastArch(self.width, self.full_res_convs, self.low_res_convs)

    @property
    def total_steps(self) -> int:
        return self.steps + self.scale_steps


def _y_ir_u8(record: object) -> np.ndarray:
    """(2, H, W) uint8: BT.601 visible Y and IR grey, exactly what the run-time pipeline feeds the network."""
    pair = read_pair(record)
    y = visible_to_ycrcb(pair["vis_bgr"]).y
    return np.rint(np.stack([y, infrared_to_grey(pair["ir_u8"])]) * 255.0).astype(np.uint8)


class PairBank:
    """All training pairs in memory as uint8 (Y, IR) stacks: 223 MSRS frames are about 140 MB."""

    def __init__(self, msrs_root: Path, thumbs_root: Path | None, limit: int | None = None) -> None:
        records = records_for("msrs", msrs_root, "train")[:limit]
        self.frames = [_y_ir_u8(r) for r in records]
        self.names = [r.name for r in records]
        self.thumbs: np.ndarray | None = None
        if thumbs_root is not None and Path(thumbs_root).is_dir():
            self.thumbs = np.stack([_y_ir_u8(r) for r in records_for("msrs", thumbs_root, "all")[:limit]])
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
    intensity_scale: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """3 L_MSE + 3 L_grad + fea_weight L_fea with the source terms scaled (see the module docstring)."""
    mse_ref = F.mse_loss(out, ref)
    mse_src = 3.0 * F.mse_loss(out, y) + 2.0 * F.mse_loss(out, ir)
    grad_ref = gradient_term(out, ref, ref)
    grad_src = gradient_term(out, y, ir)
    fea = feature_loss([a(t) for a, t in zip(adapters, taps, strict=True)], ref_taps)
    l_mse = 4.0 * mse_ref + intensity_scale * mse_src
    l_grad = 3.0 * grad_ref + source_scale * 9.0 * grad_src
    total = 3.0 * l_mse + 3.0 * l_grad + fea_weight * fea
    parts = {"mse_ref": mse_ref, "mse_src": mse_src, "grad_ref": grad_ref, "grad_src": grad_src, "fea": fea}
    return total, {k: v.item() for k, v in parts.items()}


class Distiller(StepLoop):
    """Teacher, student, adapters, optimisers and schedules of one run; `fit()` runs to `cfg.total_steps`."""

    csv_fields = ["step", "lr", "loss", "mse_ref", "mse_src", "grad_ref", "grad_src", "fea", "thumbs", "scale",
                  "step_ms"]

    def __init__(self, cfg: DistillConfig, out_dir: Path, device: str = "cpu", bank: PairBank | None = None) -> None:
        super().__init__(cfg, out_dir, device)
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
        # A second optimiser for the scale adaptation: it starts with fresh moments, as the scale-adapted
        # student's run does from the released weights.
        self.scale_opt = torch.optim.Adam(self.student.parameters(), lr=cfg.scale_lr)
        self._scale_targets: dict[float, list[np.ndarray]] | None = None

    @property
    def total_steps(self) -> int:
        return self.cfg.total_steps

    def state(self) -> dict:
        return {"student": self.student.state_dict(), "adapters": self.adapters.state_dict(),
                "opt": self.opt.state_dict(), "sched": self.sched.state_dict(),
                "scale_opt": self.scale_opt.state_dict()}

    def load_state(self, state: dict) -> None:
        self.student.load_state_dict(state["student"])
        self.adapters.load_state_dict(state["adapters"])
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        if "scale_opt" in state:  # absent in checkpoints written before the scale adaptation existed
            self.scale_opt.load_state_dict(state["scale_opt"])
        # A resume with another --steps re-aims the cosine at the new end (the decay stays continuous).
        self.sched.T_max = max(self.cfg.steps, 1)

    def train_step(self) -> dict:
        return self.distill_step() if self.step < self.cfg.steps else self.scale_step()

    def scale_targets(self) -> dict[float, list[np.ndarray]]:
        """The released student's fused Y at full size for every train frame and scale (float16, in memory:
        about 2.4 MB a frame at 640x480 and four scales), computed once when the scale adaptation starts."""
        if self._scale_targets is None:
            targets: dict[float, list[np.ndarray]] = {s: [] for s in self.cfg.scales}
            with torch.no_grad():
                for frame in self.bank.frames:
                    y = frame[0].astype(np.float32) / np.float32(255.0)
                    y_t = plane_tensor(y, self.device)
                    for scale in self.cfg.scales:
                        ir_reg = simulated_pair(y, frame[1], scale)[2]
                        ref = self.teacher(y_t, plane_tensor(ir_reg, self.device))[0].clamp(0, 1)
                        targets[scale].append(ref[0, 0].cpu().numpy().astype(np.float16))
            log.info("scale adaptation: released student's targets for %d frames x %d scales",
                     len(self.bank.frames), len(self.cfg.scales))
            self._scale_targets = targets
        return self._scale_targets

    def scale_step(self) -> dict:
        """One step of the scale adaptation (the module docstring): whole frames, BatchNorm frozen."""
        cfg, device = self.cfg, self.device
        k = self.step - cfg.steps
        lr = cfg.scale_lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * k / max(1, cfg.scale_steps))))
        for group in self.scale_opt.param_groups:
            group["lr"] = lr
        targets = self.scale_targets()
        rng = np.random.default_rng([cfg.seed, self.step])
        scale = float(cfg.scales[int(rng.integers(len(cfg.scales)))])
        self.student.eval()  # the statistics the distillation ended with, as at run time
        loss = torch.zeros((), device=device)
        for i in rng.integers(len(self.bank.frames), size=cfg.scale_batch):
            # No mirroring: the teacher's answer to a mirrored frame is not its mirrored answer.
            frame = self.bank.frames[int(i)]
            y = frame[0].astype(np.float32) / np.float32(255.0)
            y_small, ir_cam, _ = simulated_pair(y, frame[1], scale)
            ys = plane_tensor(y_small, device)
            final = final_luma(self.student(ys, plane_tensor(ir_cam, device))[0], plane_tensor(y, device), ys)
            target = plane_tensor(targets[scale][int(i)].astype(np.float32), device)
            loss = loss + adapt_loss(final, target, 1.0) / cfg.scale_batch
        if not torch.isfinite(loss):
            raise TrainingError(f"step {self.step}: non-finite scale-adaptation loss: lower --scale-lr")
        self.scale_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.scale_opt.step()
        return {"lr": lr, "loss": loss.item(), "scale": scale}

    def distill_step(self) -> dict:
        cfg = self.cfg
        lr = self.opt.param_groups[0]["lr"]
        rng = np.random.default_rng([cfg.seed, self.step])
        use_thumbs = self.bank.thumbs is not None and rng.random() < cfg.thumbs_prob
        x = torch.from_numpy(self.bank.batch(rng, cfg.batch, cfg.crop, use_thumbs)).to(self.device)
        y, ir = x[:, :1], x[:, 1:]
        with torch.no_grad():
            ref, ref_taps = self.teacher(y, ir)
        self.student.train()
        out, taps = self.student(y, ir)
        loss, parts = distill_loss(out, taps, ref, ref_taps, y, ir, self.adapters, cfg.source_scale, cfg.fea_weight,
                                    cfg.intensity_scale)
        if not torch.isfinite(loss):
            raise TrainingError(f"step {self.step}: non-finite loss {loss.item()}: lower --lr")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.sched.step()
        return {**parts, "lr": lr, "loss": loss.item(), "thumbs": int(use_thumbs)}

    def finish(self) -> list[Path]:
        """fast_student.npz and its fusion-only ONNX + JSON sidecar, in the output folder.

        BatchNorm statistics as trained: re-estimating them on 32 whole train frames measured 29.8 dB against
        the teacher where these give 32.9 dB (the shipped run)."""
        student = copy.deepcopy(self.student).cpu().eval()
        detail: dict = {}
        if self.cfg.detail_frames > 0:
            frames = self.bank.frames[:: max(1, len(self.bank.frames) // self.cfg.detail_frames)]
            gain, detail = calibrate_detail_gain(student, self.teacher.cpu().eval(), frames[: self.cfg.detail_frames])
            log.info("detail gain %.4f: spatial frequency %.3f -> %.3f, released %.3f (%d train frames)", gain,
                     detail["sf_before"], detail["sf_after"], detail["sf_released"], detail["frames"])
            if gain > 0.0:
                with_detail = FastStudent(replace(student.arch, detail_gain=gain))
                with_detail.load_state_dict(student.state_dict(), strict=False)  # all but the fixed detail kernel
                student = with_detail.eval()
        reduced: dict = {}
        if self.cfg.reduced_frames != 0:
            count = len(self.bank.frames) if self.cfg.reduced_frames < 0 else self.cfg.reduced_frames
            frames = self.bank.frames[:: max(1, len(self.bank.frames) // count)][:count]
            reduced = calibrate_small_unsharp(student, self.teacher.cpu().eval(), frames, self.cfg.reduced_scale)
            log.info("below the RGB size: unsharp %+.2f, largest fusion-metric difference from the teacher at full "
                     "size %.2f %% -> %.2f %% (%d train frames)", reduced["unsharp"],
                     reduced["largest_difference_pct"]["0"], reduced["largest_difference_pct"]["chosen"],
                     reduced["frames"])
        meta = {
            "detail_calibration": detail,
            "reduced_scale": reduced,
            "steps": self.step,
            "config": asdict(self.cfg),
            "teacher_sha256": sha256_of(Path(self.cfg.teacher)),
            "trained_on": "MSRS train split (splits.csv) + MSRS train thumbnails",
        }
        npz = save_fast_weights(student, self.out_dir / NPZ_NAME, meta)
        onnx_path = export_fast_onnx(npz, self.out_dir / ONNX_NAME)
        return [npz, onnx_path, onnx_path.with_suffix(".json")]


def _spatial_frequency(x: torch.Tensor) -> float:
    """The SF fusion metric (`evaluation.metrics`) of a (1, 1, H, W) image in [0, 1], in grey levels."""
    from sage_ros.evaluation.metrics import spatial_frequency

    return spatial_frequency(x[0, 0].double().numpy() * 255.0)


@torch.no_grad()
def calibrate_detail_gain(student: FastStudent, teacher: nn.Module, frames: list[np.ndarray],
                          max_gain: float = 1.0) -> tuple[float, dict]:
    """The unsharp gain (networks/fast_student.py) at which the student's mean spatial frequency over these whole
    train frames ((2, H, W) uint8 Y, IR) equals the teacher's, by bisection (SF grows with the gain); 0 where the
    student is already as sharp. Outputs clamped to [0, 1] as the pipeline does."""
    from sage_ros.networks.fast_student import DETAIL_SIZE, detail_kernel

    refs, outs = [], []
    for frame in frames:
        x = torch.from_numpy(frame[None].astype(np.float32) / np.float32(255.0))
        y, ir = x[:, :1], x[:, 1:]
        refs.append(teacher(y, ir)[0].clamp(0, 1))
        outs.append(student(y, ir)[0])  # before the clamp: the detail stage runs on the Tanh output
    released = float(np.mean([_spatial_frequency(r) for r in refs]))

    def sf_at(gain: float) -> float:
        kernel = torch.from_numpy(detail_kernel(gain))[None, None]
        pad = (DETAIL_SIZE // 2,) * 4
        return float(np.mean([_spatial_frequency(F.conv2d(F.pad(o, pad, mode="reflect"), kernel).clamp(0, 1))
                              for o in outs]))

    before = sf_at(0.0)
    low, high = 0.0, max_gain
    if before < released:
        for _ in range(20):
            mid = 0.5 * (low + high)
            low, high = (mid, high) if sf_at(mid) < released else (low, mid)
    gain = round(low, 4)
    return gain, {"frames": len(frames), "gain": gain, "sf_released": released, "sf_before": before,
                  "sf_after": sf_at(gain)}


SMALL_UNSHARP_AMOUNTS = tuple(round(-0.01 * k, 2) + 0.0 for k in range(16))  # 0 (as trained) to -0.15


@torch.no_grad()
def calibrate_small_unsharp(student: FastStudent, teacher: nn.Module, frames: list[np.ndarray], scale: float,
                            amounts: tuple[float, ...] = SMALL_UNSHARP_AMOUNTS) -> dict:
    """The `pipeline.unsharp` amount for the student's output below the RGB size, with what it measured.

    The in-graph sharpening (`calibrate_detail_gain`) is chosen at full size; below it, the student's answer
    plus the upsampler's visible detail layer comes out too sharp (the final image's MI falls while SF and AG
    rise). Per amount, the final image (`Student.below_rgb_size`) of each train frame ((2, H, W) uint8 Y, IR;
    the thermal camera simulated at 1/scale per side, `simulated_pair`) is scored with the nine fusion metrics
    against the teacher's full-size fusion of the same inputs; the amount with the smallest largest relative
    difference of the means wins (ties: the gentler one).
    """
    from sage_ros.evaluation.metrics import FusionScorer
    from sage_ros.image.imaging import unit_to_uint8
    from sage_ros.pipeline import Student

    cases = []
    for frame in frames:
        y = frame[0].astype(np.float32) / np.float32(255.0)
        y_small, ir_cam, ir_reg = simulated_pair(y, frame[1], scale)
        reference = teacher(plane_tensor(y, "cpu"), plane_tensor(ir_reg, "cpu"))[0].clamp(0, 1)[0, 0].numpy()
        small = student(plane_tensor(y_small, "cpu"), plane_tensor(ir_cam, "cpu"))[0].clamp(0, 1)[0, 0].numpy()
        scorer = FusionScorer(unit_to_uint8(ir_reg), unit_to_uint8(y))
        cases.append((scorer, scorer.score(unit_to_uint8(reference)), y, y_small, small))
    keys = list(cases[0][1])
    full = {k: float(np.mean([c[1][k] for c in cases])) for k in keys}
    worst: dict[float, float] = {}
    for amount in amounts:
        final = Student(lambda: None, small_unsharp=amount)  # its image math only: no backend is started
        scores = [c[0].score(unit_to_uint8(final.below_rgb_size(c[4], c[2], c[3]))) for c in cases]
        worst[amount] = max(abs(float(np.mean([s[k] for s in scores])) - full[k]) / max(abs(full[k]), 1e-12) * 100
                            for k in keys)
    chosen = min(amounts, key=lambda a: (round(worst[a], 3), abs(a)))
    return {"unsharp": chosen, "scale": scale, "frames": len(cases),
            "largest_difference_pct": {"0": round(worst.get(0.0, float("nan")), 3), "chosen": round(worst[chosen], 3)},
            "per_amount": {f"{a:+.2f}": round(v, 3) for a, v in worst.items()}}


def export_fast_onnx(npz: Path, onnx_path: Path) -> Path:
    """Fusion-only ONNX (input vis_y, ir; output fused_y) of a fast-student .npz, with a JSON sidecar."""
    from sage_ros.networks.export import export_student
    from sage_ros.networks.fast_student import load_fast_student, read_fast_metadata

    arch, meta = read_fast_metadata(npz)
    return export_student(load_fast_student(npz), onnx_path, model="sage_fast_student", arch=asdict(arch),
                          weights_sha256=sha256_of(npz), distillation=meta)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `sage-ros train fast` on `p` (defaults: the shipped recipe)."""
    add_run_arguments(p, DistillConfig)
    p.add_argument("--thumbs", default=shared_default("datasets", "msrs_train_128"), help="MSRS thumbnails")
    p.add_argument("--scales", default=",".join(str(s) for s in DistillConfig.scales),
                   help="RGB / thermal size ratios per side of the scale adaptation (1: native)")


def _make(args: argparse.Namespace) -> Distiller:
    scales = parse_scales(args.scales, native=True)
    return Distiller(config_from_args(DistillConfig, args, scales=scales), args.out, args.device)


def run(args: argparse.Namespace) -> int:
    """`sage-ros train fast` (see `run_command`)."""
    return run_command("fast", args, _make)
