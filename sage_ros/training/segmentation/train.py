"""Training the segmentation head on one input kind (fused, visible or infrared) of cached samples.

Crops at native scale (the run-time head sees full frames at native scale, so objects keep their
size) of 240x320 by default: a quarter of a 640x480 frame per crop, cheap enough for a few minutes of
single-thread CPU training. Crops are centred on a labelled object most of the time because objects
cover ~2% of MSRS pixels. Cross-entropy with IGNORE pixels left out and inverse-sqrt-frequency class
weights.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from sage_ros.model.seg_head import DEFAULT_NUM_CLASSES, SegHead
from sage_ros.training.segmentation.boxes import IGNORE
from sage_ros.training.segmentation.data import INPUT_KINDS, SegSample

log = logging.getLogger(__name__)


@dataclass
class HeadTrainConfig:
    input_kind: str = "fused"
    num_classes: int = DEFAULT_NUM_CLASSES
    steps: int = 600
    batch: int = 8
    crop_hw: tuple[int, int] = (240, 320)
    lr: float = 3e-3
    weight_decay: float = 1e-4
    # Measured on MSRS (400 steps): object crops 0.7 with a weight cap of 20 painted every warm or
    # bright spot as an object; 0.5 with a cap of 3 never predicted a person. Between the two, and
    # the background bias is then calibrated on the training split (calibrate_background).
    object_crop_prob: float = 0.6
    class_weight_cap: float = 10.0
    seed: int = 0
    threads: int = 1
    device: str = "cpu"
    log_every: int = 50


def class_weights(samples: Sequence[SegSample], num_classes: int, cap: float = 10.0) -> np.ndarray:
    """(1 / frequency)^0.5 relative to background, capped: rare classes count more, not wildly more."""
    counts = np.zeros(num_classes, dtype=np.float64)
    for s in samples:
        valid = s.mask[s.mask != IGNORE]
        counts += np.bincount(valid.ravel(), minlength=num_classes)[:num_classes]
    counts = np.maximum(counts, 1.0)
    weights = np.sqrt(counts[0] / counts)
    return np.clip(weights, 1.0, cap).astype(np.float32)


def _crop_origin(
    sample: SegSample, crop_hw: tuple[int, int], rng: np.random.Generator, object_prob: float
) -> tuple[int, int]:
    h, w = sample.mask.shape
    ch, cw = min(crop_hw[0], h), min(crop_hw[1], w)
    if rng.random() < object_prob:
        ys, xs = np.nonzero((sample.mask > 0) & (sample.mask != IGNORE))
        if len(ys):
            k = int(rng.integers(len(ys)))
            # The object anywhere in the crop, not always at its centre.
            top = int(ys[k]) - int(rng.integers(ch))
            left = int(xs[k]) - int(rng.integers(cw))
            return int(np.clip(top, 0, h - ch)), int(np.clip(left, 0, w - cw))
    return int(rng.integers(h - ch + 1)), int(rng.integers(w - cw + 1))


def make_batch(
    samples: Sequence[SegSample], config: HeadTrainConfig, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of random crops with horizontal flips: images (B, 1, h, w), targets (B, h, w) int64."""
    images, targets = [], []
    for _ in range(config.batch):
        sample = samples[int(rng.integers(len(samples)))]
        top, left = _crop_origin(sample, config.crop_hw, rng, config.object_crop_prob)
        ch = min(config.crop_hw[0], sample.mask.shape[0])
        cw = min(config.crop_hw[1], sample.mask.shape[1])
        window = (slice(top, top + ch), slice(left, left + cw))
        image = sample.inputs[config.input_kind][window]
        target = sample.mask[window]
        if rng.random() < 0.5:
            image, target = image[:, ::-1], target[:, ::-1]
        images.append(np.ascontiguousarray(image))
        targets.append(np.ascontiguousarray(target))
    sizes = {i.shape for i in images}
    if len(sizes) != 1:
        raise ValueError(f"samples of different sizes in one batch {sizes}: use a crop no larger than all")
    return (
        torch.from_numpy(np.stack(images)[:, None].astype(np.float32)),
        torch.from_numpy(np.stack(targets).astype(np.int64)),
    )


def train_head(
    samples: Sequence[SegSample],
    config: HeadTrainConfig,
    head: SegHead | None = None,
    on_log: Callable[[int, float], None] | None = None,
) -> tuple[SegHead, list[float]]:
    """Train (a new or given) head; returns it in eval mode and the loss of every step."""
    if config.input_kind not in INPUT_KINDS:
        raise ValueError(f"input kind must be one of {INPUT_KINDS}, not {config.input_kind!r}")
    if not samples:
        raise ValueError("no training samples")
    torch.manual_seed(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    device = torch.device(config.device)
    head = (head or SegHead(num_classes=config.num_classes)).to(device).train()
    weights = torch.from_numpy(class_weights(samples, config.num_classes, config.class_weight_cap)).to(device)
    optimiser = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: 0.5 * (1 + math.cos(math.pi * min(step / max(config.steps, 1), 1.0)))
    )
    rng = np.random.default_rng(config.seed)
    losses: list[float] = []
    start = time.perf_counter()
    for step in range(config.steps):
        images, targets = make_batch(samples, config, rng)
        images, targets = images.to(device), targets.to(device)
        logits = head(images)
        loss = F.cross_entropy(logits, targets, weight=weights, ignore_index=IGNORE)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        losses.append(float(loss.detach()))
        if config.log_every and (step + 1) % config.log_every == 0:
            recent = float(np.mean(losses[-config.log_every:]))
            log.info(
                "%s head step %d/%d loss %.4f (%.0f s)",
                config.input_kind, step + 1, config.steps, recent, time.perf_counter() - start,
            )
            if on_log is not None:
                on_log(step + 1, recent)
    return head.eval(), losses


def training_info(config: HeadTrainConfig, samples: Sequence[SegSample], losses: list[float]) -> dict:
    """What goes into the head's metadata sidecar: how it was trained, so it can be rebuilt."""
    tail = max(len(losses) // 10, 1)
    return {
        "trained_on": config.input_kind,
        "train_pairs": len(samples),
        "train_config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()},
        "final_loss": float(np.mean(losses[-tail:])) if losses else None,
    }


@torch.inference_mode()
def predict(head: SegHead, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Full-frame prediction: (HxW uint8 class ids, (C, H, W) float32 softmax probabilities)."""
    device = next(head.parameters()).device
    logits = head.eval()(torch.from_numpy(np.ascontiguousarray(image, np.float32))[None, None].to(device))
    probs = torch.softmax(logits, dim=1)[0]
    return probs.argmax(0).to(torch.uint8).cpu().numpy(), probs.cpu().numpy()


def calibrate_background(
    head: SegHead,
    samples: Sequence[SegSample],
    input_kind: str,
    box_source: str | None,
    grid: Sequence[float] = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0),
    min_area: int = 6,
) -> dict:
    """Undo the prior shift of class weights and object-centred crops: add the background logit bias
    from `grid` that maximises mean AP50 on the TRAINING samples (their `box_source` boxes), or mean
    IoU of the object classes when there are no boxes. Changes the classifier bias in place, so the
    exported graph needs nothing extra. Returns the bias and the training-split score of each.
    """
    from sage_ros.training.segmentation.evaluate import components_to_detections, score_images

    classes = range(1, head.num_classes)
    logits = []
    with torch.inference_mode():
        for sample in samples:
            image = torch.from_numpy(np.ascontiguousarray(sample.inputs[input_kind]))[None, None]
            logits.append(head.eval()(image)[0])
    scores = {}
    for bias in grid:
        predictions, detections = [], []
        for logit in logits:
            shifted = logit.clone()
            shifted[0] += bias
            probs = torch.softmax(shifted, 0)
            ids = probs.argmax(0).to(torch.uint8).numpy()
            predictions.append(ids)
            detections.append(components_to_detections(ids, probs.numpy(), classes, min_area=min_area))
        gts = [s.boxes.get(box_source, []) if box_source else [] for s in samples]
        result = score_images(detections, gts, predictions, [s.mask for s in samples], head.num_classes)
        objects_iou = float(np.nanmean([result.iou[c] for c in classes]))
        scores[bias] = result.mean_ap50 if box_source and not math.isnan(result.mean_ap50) else objects_iou
    best = max(scores, key=lambda b: (scores[b], -abs(b)))
    with torch.no_grad():
        head.classifier.bias[0] += best
    log.info("background bias %+.1f (training-split scores %s)", best,
             {b: round(v, 3) for b, v in scores.items()})
    return {"background_bias": best, "calibration_scores": {str(b): v for b, v in scores.items()}}
