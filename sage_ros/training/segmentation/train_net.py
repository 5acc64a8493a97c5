"""Training, calibrating and scoring the segmentation network (sage_ros.networks.seg_net) on CPU.

Everything happens at the network's working resolution (160x120 for 640x480 frames; see data.py), on
whole frames. Augmentation: flips, random zoom (boxes moved with the image), a per-channel gamma and,
optionally, other thermal cameras' looks (NetTrainConfig's appearance fields). Loss: class-weighted
cross-entropy, IGNORE left out. Deterministic for a given seed and thread count (docs/segmentation.md).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from sage_ros.evaluation.boxes import Box
from sage_ros.evaluation.components import IGNORE, F1Scores, components_to_detections, f1_scores
from sage_ros.networks.seg_net import DEFAULT_NUM_CLASSES, SegNet
from sage_ros.training.segmentation import recipe
from sage_ros.training.segmentation.data import FULL_HW, LOW_HW, LowFrame, build_target

log = logging.getLogger(__name__)


@dataclass
class NetTrainConfig:
    inputs: tuple[str, ...] = ("fused", "infrared")
    num_classes: int = DEFAULT_NUM_CLASSES
    # The shipped network's recipe (segmentation/recipe.py); `sage-ros train seg` adds bf16 and the restart.
    widths: tuple[int, ...] = recipe.WIDTHS
    steps: int = recipe.STEPS
    batch: int = recipe.BATCH
    lr: float = recipe.LR
    weight_decay: float = 1e-4
    warmup: int = 50
    # Recorded in sidecars; filled boxes are the only targets built (warm-core targets scored lower).
    target_mode: str = "box"
    band: float = 0.5
    class_weight_cap: float = 5.0
    # Background lines between touching objects of one class (data.build_target) and their loss weight.
    separation: float = recipe.SEPARATION
    separation_weight: float = recipe.SEPARATION_WEIGHT
    # Background lines in gaps of at most this many pixels (1/4 resolution) between facing boxes of one class
    # (data.build_target); the shipped recipe uses them in its last, fine-tuning cycle only.
    gap_lines: float = 0.0
    # Share of each batch drawn from the full-resolution pairs (the run-time domain); the rest from
    # the thumbnails when there are any.
    full_res_share: float = 0.5
    zoom: tuple[float, float] = recipe.ZOOM
    # Appearance augmentation for other cameras (docs/segmentation.md, "Other cameras"): each sample's IR
    # gets, with probability `ir_tone`, the tone curve of another thermal camera (gain/level with clipping or
    # a percentile window as 16-to-8-bit AGCs do, histogram equalisation with probability `ir_equalize`,
    # gamma in `ir_gamma`); with probability `ir_degrade` the blur and noise of a lower-resolution core;
    # with probability `fused_tone` the fused Y an independent milder curve (it inherits the IR's look at
    # run time). All 0: no extra random draws, the recipe before them bit for bit.
    ir_tone: float = 0.0
    ir_gamma: tuple[float, float] = recipe.IR_GAMMA
    ir_equalize: float = recipe.IR_EQUALIZE
    ir_degrade: float = 0.0
    fused_tone: float = 0.0
    seed: int = 0
    # Warm start: weights (.npz) of a network with the same inputs and widths (a second training cycle).
    init: str | None = None
    threads: int = 1
    # "bf16": autocast the forward pass to bfloat16 with channels-last tensors (weights, optimiser and
    # loss stay float32). 1.5-2x faster per step on CPUs with AMX or AVX-512 BF16; emulated (slow) on
    # others. The exported graph is float32 either way.
    precision: str = "fp32"
    log_every: int = 50
    checkpoint_every: int = 250
    extra: dict = field(default_factory=dict)


def _augment(
    frame: LowFrame, config: NetTrainConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(C, h, w) float32 image, (h, w) uint8 target and (h, w) bool separation lines (or None) of one
    augmented frame at LOW_HW."""
    h, w = LOW_HW
    image = np.stack([frame.inputs[k] for k in config.inputs]).astype(np.float32)
    if image.shape[1:] != (h, w):
        image = np.stack([cv2.resize(c, (w, h), interpolation=cv2.INTER_AREA) for c in image])
    boxes = frame.boxes.copy()
    # Zoom about a random centre: s > 1 magnifies (crop), s < 1 shrinks (pad with edge values).
    s = float(np.exp(rng.uniform(np.log(config.zoom[0]), np.log(config.zoom[1]))))
    cx, cy = rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h
    m = np.array([[s, 0, (1 - s) * cx], [0, s, (1 - s) * cy]], np.float32)
    image = np.stack([
        cv2.warpAffine(c, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT) for c in image
    ])
    label = None
    if frame.label is not None:
        label = frame.label if frame.label.shape == (h, w) else cv2.resize(frame.label, (w, h),
                                                                           interpolation=cv2.INTER_NEAREST)
        label = cv2.warpAffine(label, m, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT,
                               borderValue=IGNORE)
    if len(boxes):
        boxes[:, [1, 3]] = (boxes[:, [1, 3]] * w * s + m[0, 2]) / w
        boxes[:, [2, 4]] = (boxes[:, [2, 4]] * h * s + m[1, 2]) / h
    flip = rng.random() < 0.5
    if flip:
        image = image[:, :, ::-1]
        if len(boxes):
            boxes[:, [1, 3]] = 1.0 - boxes[:, [3, 1]]
    gammas = np.exp(rng.uniform(-0.25, 0.25, size=(len(image), 1, 1))).astype(np.float32)
    image = np.clip(image, 0.0, 1.0) ** gammas
    if config.ir_tone > 0 or config.ir_degrade > 0 or config.fused_tone > 0:
        image = _appearance(image, config, rng)
    if label is not None:
        # Pixel labels (MSRS Segmentation_labels, FMB): the label itself, moved with the image.
        return np.ascontiguousarray(image), np.ascontiguousarray(label[:, ::-1] if flip else label), None
    lines = np.zeros((h, w), bool) if config.separation > 0 or config.gap_lines > 0 else None
    target = build_target(boxes, (h, w), config.band, separation=config.separation, lines=lines,
                          gap_lines=config.gap_lines)
    if s < 1:
        # Reflected borders copy objects without their boxes: leave them out of the loss.
        ys, xs = np.arange(h)[:, None] + 0.5, np.arange(w)[None, :] + 0.5
        outside = (xs < m[0, 2]) | (xs > m[0, 2] + s * w) | (ys < m[1, 2]) | (ys > m[1, 2] + s * h)
        target[outside[:, ::-1] if flip else outside] = IGNORE
    return np.ascontiguousarray(image), target, lines


def _tone_curve(plane: np.ndarray, rng: np.random.Generator, strength: float, gamma: tuple[float, float],
                equalize: float) -> np.ndarray:
    """One random camera tone curve on a [0, 1] plane: a linear map (gain/level, or a window between two
    percentiles widened or narrowed as an AGC picks its 8-bit window from 14/16-bit counts), clipped;
    sometimes histogram equalisation; then a gamma. `strength` 1 is the IR's range, less is milder."""
    if rng.random() < 0.5:
        gain = float(np.exp(rng.uniform(-1.0, 1.0) * strength))
        level = float(rng.uniform(-0.3, 0.3) * strength)
        out = (plane - 0.5) * gain + 0.5 + level
    else:
        lo_q, hi_q = rng.uniform(0.0, 20.0 * strength), rng.uniform(100.0 - 20.0 * strength, 100.0)
        lo, hi = np.percentile(plane, [lo_q, hi_q])
        # Margins < 0 clip the tails (a tight window), > 0 leave part of the 8-bit range unused (washed out).
        span = max(float(hi - lo), 1e-3)
        lo = lo - rng.uniform(-0.1, 0.5) * strength * span
        hi = hi + rng.uniform(-0.1, 0.5) * strength * span
        out = (plane - lo) / max(hi - lo, 1e-3)
    out = np.clip(out, 0.0, 1.0)
    if equalize > 0 and rng.random() < equalize:
        u8 = np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8)
        eq = cv2.equalizeHist(u8).astype(np.float32) / 255.0
        alpha = float(rng.uniform(0.5, 1.0))
        out = alpha * eq + (1.0 - alpha) * out
    g = float(np.exp(rng.uniform(np.log(gamma[0]), np.log(gamma[1]))))
    return np.clip(out, 0.0, 1.0) ** g


def _degrade(plane: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Blur and noise of a lower-resolution thermal core, at the network's working resolution: down by
    up to 2.5x and back up, a slight Gaussian blur, pixel noise and column (fixed-pattern) stripes."""
    h, w = plane.shape
    factor = float(rng.uniform(1.0, 2.5))
    if factor > 1.1:
        small = cv2.resize(plane, (max(int(w / factor), 8), max(int(h / factor), 8)), interpolation=cv2.INTER_AREA)
        plane = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    sigma = float(rng.uniform(0.0, 1.0))
    if sigma > 0.2:
        plane = cv2.GaussianBlur(plane, (0, 0), sigma)
    noise = rng.normal(0.0, rng.uniform(0.0, 0.03), size=plane.shape)
    noise += rng.normal(0.0, rng.uniform(0.0, 0.015), size=(1, w))
    return np.clip(plane + noise.astype(np.float32), 0.0, 1.0)


def _appearance(image: np.ndarray, config: NetTrainConfig, rng: np.random.Generator) -> np.ndarray:
    """NetTrainConfig's camera-appearance augmentation on a (C, h, w) image (see its fields)."""
    image = image.copy()
    for c, kind in enumerate(config.inputs):
        if kind == "infrared":
            if config.ir_tone > 0 and rng.random() < config.ir_tone:
                image[c] = _tone_curve(image[c], rng, 1.0, config.ir_gamma, config.ir_equalize)
            if config.ir_degrade > 0 and rng.random() < config.ir_degrade:
                image[c] = _degrade(image[c], rng)
        elif kind == "fused" and config.fused_tone > 0 and rng.random() < config.fused_tone:
            lo, hi = config.ir_gamma
            mild = (float(np.sqrt(lo)), float(np.sqrt(hi)))  # half the IR's range in log-gamma
            image[c] = _tone_curve(image[c], rng, 0.5, mild, config.ir_equalize * 0.5)
    return image.astype(np.float32)


def class_weights(frames: Sequence[LowFrame], config: NetTrainConfig) -> np.ndarray:
    counts = np.zeros(config.num_classes)
    for f in frames:
        t = f.label if f.label is not None else build_target(f.boxes, LOW_HW, config.band, gap_lines=config.gap_lines)
        counts += np.bincount(t[t != IGNORE].ravel(), minlength=config.num_classes)[: config.num_classes]
    counts = np.maximum(counts, 1.0)
    return np.clip(np.sqrt(counts[0] / counts), 1.0, config.class_weight_cap).astype(np.float32)


def _loss(
    logits: torch.Tensor, target: torch.Tensor, class_weight: torch.Tensor, lines: torch.Tensor, line_weight: float
) -> torch.Tensor:
    """Class-weighted cross-entropy over the labelled pixels; separation-line pixels count `line_weight`
    times (a one-pixel gap is a small share of the pixels but decides whether two objects merge)."""
    if line_weight == 1.0 or not bool(lines.any()):
        return F.cross_entropy(logits, target, weight=class_weight, ignore_index=IGNORE)
    per_pixel = F.cross_entropy(logits, target, weight=class_weight, ignore_index=IGNORE, reduction="none")
    valid = target != IGNORE
    pixel_weight = torch.where(lines, torch.tensor(line_weight), torch.tensor(1.0)) * valid
    norm = (class_weight[target.clamp(max=len(class_weight) - 1)] * pixel_weight).sum().clamp(min=1e-6)
    return (per_pixel * pixel_weight).sum() / norm


def train_net(
    frames: Sequence[LowFrame],
    config: NetTrainConfig,
    checkpoint_path: str | Path | None = None,
) -> tuple[SegNet, list[float]]:
    """Train a new SegNet (resuming from `checkpoint_path` when it holds a matching state)."""
    if not frames:
        raise ValueError("no training frames")
    if config.precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be fp32 or bf16, got {config.precision!r}")
    if config.target_mode != "box":
        raise ValueError(f"target mode must be 'box' (filled boxes), got {config.target_mode!r}")
    torch.manual_seed(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    net = SegNet(config.inputs, config.num_classes, config.widths).train()
    bf16 = config.precision == "bf16"
    layout = torch.channels_last if bf16 else torch.contiguous_format
    if config.init:
        from sage_ros.networks.seg_net import SegEnsemble, load_net

        start = load_net(config.init)
        if isinstance(start, SegEnsemble):
            raise ValueError(f"--init {config.init} is an ensemble of {len(start.members)} networks: start from "
                             "one of its members (member_s<seed>.npz in its work dir)")
        if (start.inputs, start.widths, start.num_classes) != (net.inputs, net.widths, net.num_classes):
            raise ValueError(f"--init {config.init}: inputs/widths/classes {start.inputs} {start.widths} "
                             f"{start.num_classes} differ from the configured {net.inputs} {net.widths}")
        net.load_state_dict(start.state_dict())
        net.train()
    net = net.to(memory_format=layout)
    weights = torch.from_numpy(class_weights(frames, config))
    optimiser = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)

    def lr_at(step: int) -> float:
        if step < config.warmup:
            return (step + 1) / config.warmup
        return 0.5 * (1 + math.cos(math.pi * min(step / max(config.steps, 1), 1.0)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lr_at)
    full = [f for f in frames if f.source == "msrs"]
    thumbs = [f for f in frames if f.source != "msrs"]
    rng = np.random.default_rng(config.seed)
    losses: list[float] = []
    start_step = 0
    if checkpoint_path is not None and Path(checkpoint_path).is_file():
        state = torch.load(checkpoint_path, weights_only=False)
        if state.get("config") == asdict(config):
            net.load_state_dict(state["net"])
            optimiser.load_state_dict(state["optimiser"])
            schedule.load_state_dict(state["schedule"])
            rng.bit_generator.state = state["rng"]
            torch.set_rng_state(state["torch_rng"])
            losses, start_step = state["losses"], state["step"]
            log.info("resumed from %s at step %d", checkpoint_path, start_step)
    t0 = time.perf_counter()
    for step in range(start_step, config.steps):
        images, targets, line_maps = [], [], []
        for _ in range(config.batch):
            pool = full if (not thumbs or (full and rng.random() < config.full_res_share)) else thumbs
            image, target, lines = _augment(pool[int(rng.integers(len(pool)))], config, rng)
            images.append(image)
            targets.append(target)
            line_maps.append(lines if lines is not None else np.zeros(target.shape, bool))
        x = torch.from_numpy(np.stack(images)).contiguous(memory_format=layout)
        y = torch.from_numpy(np.stack(targets).astype(np.int64))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = net.forward_low(x)
        loss = _loss(logits.float(), y, weights, torch.from_numpy(np.stack(line_maps)), config.separation_weight)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        losses.append(float(loss.detach()))
        if config.log_every and (step + 1) % config.log_every == 0:
            recent = float(np.mean(losses[-config.log_every:]))
            log.info("seg net %s step %d/%d loss %.4f (%.0f s)", "+".join(config.inputs), step + 1,
                     config.steps, recent, time.perf_counter() - t0)
        if checkpoint_path is not None and config.checkpoint_every and (step + 1) % config.checkpoint_every == 0:
            torch.save({"config": asdict(config), "net": net.state_dict(), "optimiser": optimiser.state_dict(),
                        "schedule": schedule.state_dict(), "rng": rng.bit_generator.state,
                        "torch_rng": torch.get_rng_state(), "losses": losses, "step": step + 1},
                       checkpoint_path)
    return net.to(memory_format=torch.contiguous_format).eval(), losses


# ---------------------------------------------------------------------------------------------
# Prediction and scoring at full resolution (what the exported graph computes)


@torch.inference_mode()
def low_logits(net: SegNet, frames: Sequence[LowFrame]) -> list[torch.Tensor]:
    out = []
    for f in frames:
        x = torch.from_numpy(np.stack([f.inputs[k] for k in net.inputs]))[None]
        out.append(net.eval().forward_low(x)[0])
    return out


def full_ids(logits: torch.Tensor, hw: tuple[int, int]) -> np.ndarray:
    """Low-res logits -> full-size class ids (uint8), as the graph does (bilinear upsampling, then ArgMax)."""
    with torch.inference_mode():
        full = F.interpolate(logits[None], size=hw, mode="bilinear", align_corners=False)[0]
    return _first_argmax(full.numpy())


def _first_argmax(scores: np.ndarray) -> np.ndarray:
    """ArgMax over axis 0 of (C, H, W) as uint8, the first index winning ties (as ONNX ArgMax does).
    A running comparison: torch.argmax over the strided class axis took ~0.1 s per 640x480 frame."""
    ids = np.zeros(scores.shape[1:], np.uint8)
    best = scores[0].copy()
    for cls in range(1, len(scores)):
        better = scores[cls] > best
        ids[better] = cls
        np.maximum(best, scores[cls], out=best)
    return ids


def score_logits(
    logits: Sequence[torch.Tensor],
    frames: Sequence[LowFrame],
    ground_truth: Sequence[Sequence[Box]],
    hw: tuple[int, int] = FULL_HW,
    min_area: int = 6,
) -> dict[str, F1Scores]:
    """Component F1 at IoU 0.5 of the networks' masks by light: 'day', 'night' (where there are such frames)
    and 'all'."""
    dets = [components_to_detections(full_ids(logit, hw), None, (1, 2, 3), min_area=min_area) for logit in logits]
    scores = {}
    for light in ("day", "night", "all"):
        idx = [i for i, frame in enumerate(frames) if light == "all" or frame.light == light]
        if idx:
            scores[light] = f1_scores([dets[i] for i in idx], [ground_truth[i] for i in idx])
    return scores


def calibrate_background(
    net: SegNet,
    frames: Sequence[LowFrame],
    ground_truth: Sequence[Sequence[Box]],
    hw: tuple[int, int] = FULL_HW,
    grid: Sequence[float] = (-1.0, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0),
    class_grid: Sequence[float] = (-0.5, 0.0, 0.5),
) -> dict:
    """Pick logit biases that maximise mean component F1 on the given (TRAINING) frames and fold them into
    the classifier bias (no extra op at run time).

    First the background bias over `grid` (it undoes the prior shift that class weights cause), then one
    pass over the object classes, each shifted by the best of `class_grid` (keeping 0 on ties): the
    classes differ in how often they are over- or under-called (bikes under riders, speckle cars), and a
    single background bias cannot fix both. Returns the biases and the scores seen."""
    logits = low_logits(net, frames)
    bias = torch.zeros(net.num_classes)

    def mean_f1(candidate: torch.Tensor) -> float:
        shifted = [lg + candidate[:, None, None] for lg in logits]
        return score_logits(shifted, frames, ground_truth, hw)["all"].mean_f1

    scores = {}
    for value in grid:
        scores[value] = mean_f1(torch.tensor([value] + [0.0] * (net.num_classes - 1)))
    best = max(scores, key=lambda b: (scores[b], -abs(b)))
    bias[0] = best
    score = scores[best]
    class_scores = {}
    for cls in range(1, net.num_classes):
        tried = {}
        for value in class_grid:
            candidate = bias.clone()
            candidate[cls] += value
            tried[value] = score if value == 0.0 else mean_f1(candidate)
        pick = max(tried, key=lambda v: (tried[v], -abs(v)))
        bias[cls] += pick
        score = tried[pick]
        class_scores[str(cls)] = {str(v): round(f, 4) for v, f in tried.items()}
    net.shift_logits(bias)
    log.info("logit biases %s (training-split mean F1 %.3f; background grid %s)", bias.tolist(), score,
             {b: round(v, 3) for b, v in scores.items()})
    return {"background_bias": best, "class_biases": bias.tolist(), "calibrated_train_mean_f1": score,
            "calibration_mean_f1": {str(b): v for b, v in scores.items()}, "class_calibration_mean_f1": class_scores}


_APPEARANCE_FIELDS = ("ir_tone", "ir_gamma", "ir_equalize", "ir_degrade", "fused_tone")


def config_json(config: NetTrainConfig) -> dict:
    """The configuration as a sidecar records it. Without appearance augmentation its fields are left out,
    so a configuration records what it did before they existed (resuming and the recipe checks compare)."""
    out = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()}
    if config.ir_tone <= 0 and config.ir_degrade <= 0 and config.fused_tone <= 0:
        for key in _APPEARANCE_FIELDS:
            out.pop(key)
    return out
