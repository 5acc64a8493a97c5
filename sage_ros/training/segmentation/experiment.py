"""SAGE's downstream claim, measured: one head architecture trained on fused vs visible vs infrared.

Every head gets the same pseudo-masks, crops, steps and seed; only the input image differs. Scores
on the MSRS eval split: box AP50 per class and mean (connected components vs human boxes), day and
night separately, plus mIoU against the pseudo-masks.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from sage_ros.model.classes import class_table
from sage_ros.model.seg_head import SegHead, save_head
from sage_ros.training.segmentation.boxes import BOX_SOURCES, IGNORE
from sage_ros.training.segmentation.data import INPUT_KINDS, SegSample
from sage_ros.training.segmentation.evaluate import SegScores, components_to_detections, score_images
from sage_ros.training.segmentation.train import (
    HeadTrainConfig,
    calibrate_background,
    predict,
    train_head,
    training_info,
)

log = logging.getLogger(__name__)

LIGHTS = ("day", "night", "all")


def evaluate_head(
    head: SegHead,
    samples: Sequence[SegSample],
    input_kind: str,
    gt_sources: Sequence[str] = BOX_SOURCES,
    min_area: int = 6,
) -> dict[str, dict[str, SegScores]]:
    """Scores per light ('day', 'night', 'all') and per human-box source."""
    num_classes = head.num_classes
    per_image = []
    for sample in samples:
        ids, probs = predict(head, sample.inputs[input_kind])
        dets = components_to_detections(ids, probs, range(1, num_classes), min_area=min_area)
        per_image.append((sample, ids, dets))
    results: dict[str, dict[str, SegScores]] = {}
    for light in LIGHTS:
        chosen = [p for p in per_image if light == "all" or p[0].light == light]
        results[light] = {
            src: score_images(
                [p[2] for p in chosen],
                [p[0].boxes.get(src, []) for p in chosen],
                [p[1] for p in chosen],
                [p[0].mask for p in chosen],
                num_classes,
            )
            for src in gt_sources
        }
    return results


def score_pseudo_masks(
    samples: Sequence[SegSample], gt_sources: Sequence[str] = BOX_SOURCES, min_area: int = 6
) -> dict[str, dict[str, SegScores]]:
    """The pseudo-masks themselves scored as if predicted (IGNORE read as background): the ceiling a
    head trained on them can reach under this box-based evaluation."""
    results: dict[str, dict[str, SegScores]] = {}
    masks = [np.where(s.mask == IGNORE, 0, s.mask) for s in samples]
    for light in LIGHTS:
        chosen = [(s, m) for s, m in zip(samples, masks, strict=True) if light == "all" or s.light == light]
        dets = [components_to_detections(m, None, range(1, 4), min_area=min_area) for _, m in chosen]
        results[light] = {
            src: score_images(dets, [s.boxes.get(src, []) for s, _ in chosen], None, None, 4)
            for src in gt_sources
        }
    return results


def _fmt(value: float) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}"


def markdown_table(results: dict[str, dict[str, dict[str, SegScores]]], gt_source: str) -> str:
    """Rows: input x light; columns: AP50 per class, mean AP50, mIoU (percent)."""
    table = class_table("msrs")
    first = next(iter(results.values()))["all"][gt_source]
    classes = sorted(first.ap50)
    header = ["input", "light"] + [f"AP50 {table.name(c)}" for c in classes] + ["mean AP50", "mIoU (pseudo)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for kind, per_light in results.items():
        for light in LIGHTS:
            s = per_light[light][gt_source]
            row = [kind, f"{light} ({s.images})"] + [_fmt(s.ap50[c]) for c in classes]
            lines.append("| " + " | ".join(row + [_fmt(s.mean_ap50), _fmt(s.miou)]) + " |")
    gt_counts = ", ".join(f"{table.name(c)} {first.n_gt[c]}" for c in classes)
    lines.append("")
    lines.append(f"Human boxes ({gt_source} annotations) on the eval split: {gt_counts}.")
    return "\n".join(lines)


def scores_to_json(results: dict) -> dict:
    return {
        kind: {light: {src: asdict(s) for src, s in per_src.items()} for light, per_src in per_light.items()}
        for kind, per_light in results.items()
    }


def run_experiment(
    train_samples: Sequence[SegSample],
    eval_samples: Sequence[SegSample],
    base_config: HeadTrainConfig,
    out_dir: str | Path,
    kinds: Sequence[str] = INPUT_KINDS,
    extra_info: dict | None = None,
    box_source: str | None = "infrared",
) -> dict:
    """Train one head per input kind, save each as out_dir/seg_head_<kind>.npz, score all, write tables."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {}
    for kind in kinds:
        config = HeadTrainConfig(**{**asdict(base_config), "input_kind": kind})
        head, losses = train_head(train_samples, config)
        calibration = calibrate_background(head, train_samples, kind, box_source)
        info = training_info(config, train_samples, losses) | calibration | (extra_info or {})
        save_head(head, out_dir / f"seg_head_{kind}.npz", info=info)
        results[kind] = evaluate_head(head, eval_samples, kind)
        log.info("%s: mean AP50 (all, fusion boxes) %s", kind, _fmt(results[kind]["all"]["fusion"].mean_ap50))
    (out_dir / "experiment.json").write_text(json.dumps(scores_to_json(results), indent=2) + "\n")
    report = "\n\n".join(f"### Scored against {src} boxes\n\n{markdown_table(results, src)}" for src in BOX_SOURCES)
    (out_dir / "experiment.md").write_text(report + "\n")
    return results
