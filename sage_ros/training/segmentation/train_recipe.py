"""`sage-ros train seg`'s recipe: a training run with its calibration (`fit`), the recipe's cycles
(`fit_cycles`), the seed ensemble (`fit_ensemble`), resuming from the files a run leaves, and saving.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from sage_ros.graphs.seg_graph import graph_from_weights
from sage_ros.model.classes import class_table
from sage_ros.networks.seg_net import SegEnsemble, SegNet, count_macs, load_net, read_metadata, save_net
from sage_ros.paths import sha256_of
from sage_ros.training.segmentation.data import FULL_HW, LowFrame, SplitData
from sage_ros.training.segmentation.train_net import NetTrainConfig, calibrate_background, config_json, train_net

log = logging.getLogger(__name__)


def fit(
    config: NetTrainConfig, frames: Sequence[LowFrame], calib: SplitData, work_dir: Path | None = None,
    tag: str = "",
) -> tuple[SegNet, dict]:
    """Train, then calibrate the background bias on the TRAINING split; returns the net and its info.

    `tag` names the resume checkpoint apart from other runs of the same inputs and seed in `work_dir`."""
    start = time.perf_counter()
    ckpt = None
    if work_dir is not None:
        work_dir.mkdir(parents=True, exist_ok=True)
        ckpt = work_dir / f"resume_{'+'.join(config.inputs)}_s{config.seed}{tag}.pt"
    net, losses = train_net(frames, config, ckpt)
    # Box-trained networks get their background bias from the train boxes; pixel labels need none.
    has_boxes = any(len(b) for b in calib.boxes)
    calibration = calibrate_background(net, calib.frames, calib.boxes, FULL_HW) if has_boxes else {}
    tail = max(len(losses) // 10, 1)
    info = {
        "input_kinds": list(config.inputs),
        "train_config": config_json(config),
        "train_frames": frame_counts(frames),
        "first_loss": losses[0] if losses else None,
        "final_loss": float(np.mean(losses[-tail:])) if losses else None,
        "train_seconds": round(time.perf_counter() - start, 1),
        "macs_640x480": count_macs(net),
        "parameters": int(sum(p.numel() for p in net.parameters())),
    } | calibration
    return net, info


@dataclass(frozen=True)
class Restart:
    """A training cycle after the first: `steps` at peak `lr`, warm-started from the previous cycle's
    calibrated weights, with gap lines of `gap_lines` pixels in its targets (0: none)."""

    steps: int
    lr: float
    gap_lines: float = 0.0


def recipe_restarts(restart_steps: int, restart_lr: float, finetune_steps: int = 0, finetune_lr: float = 0.0,
                    finetune_gap_lines: float = 0.0) -> list[Restart]:
    """The cycles after the first that the shipped recipe runs (the warm restart, then the fine-tuning
    cycle); a cycle of 0 steps is left out."""
    cycles = [Restart(restart_steps, restart_lr), Restart(finetune_steps, finetune_lr, finetune_gap_lines)]
    kept = []
    for cycle in cycles:
        if cycle.steps <= 0:
            break  # a later cycle starts from the one before: none after a skipped cycle
        kept.append(cycle)
    return kept


def fit_cycles(
    config: NetTrainConfig, restarts: Sequence[Restart], frames: Sequence[LowFrame], calib: SplitData,
    work_dir: Path, classes: list[dict] | None = None,
) -> tuple[SegNet, dict]:
    """The shipped recipe in one call: `fit(config)`, then each restart from the calibrated weights of the
    cycle before (a new cosine cycle), calibrated again.

    Cycle k's weights go through `work_dir/cycle<k>.npz` and cycle k+1 starts from that file exactly as
    `train seg --init cycle<k>.npz --steps S --lr LR` would (the same bits, tested). A `cycle<k>.npz` already
    there whose sidecar records the same cycles, seed and data is used instead of training them again, so
    the command resumes at a cycle boundary."""
    classes = classes or class_table("msrs").to_json()
    counts = frame_counts(frames)
    total = len(restarts) + 1
    net, info, done, reused = None, None, 0, False
    for k in range(total - 1, 0, -1):  # the longest prefix of the recipe already on disk
        path = work_dir / f"cycle{k}.npz"
        if path.is_file() and trained_by(read_metadata(path), config, restarts[: k - 1], counts):
            log.info("cycles 1-%d: using %s (trained by this recipe)", k, path)
            net, info, done, reused = load_net(path), read_metadata(path), k, True
            break
    if net is None:
        net, info = fit(config, frames, calib, work_dir)
        done = 1
    summaries = list(info.get("training_cycles") or [_cycle_summary(config, info)])
    seconds = float(info.get("train_seconds") or 0.0)
    first_loss = info.get("first_loss")
    for k in range(done, total):
        previous = work_dir / f"cycle{k}.npz"
        if not (reused and k == done):
            # Cycle 1's sidecar is a one-cycle network's; later ones list their cycles (what resuming checks).
            save_net(net, previous, classes, info if k == 1 else info | {"training_cycles": summaries})
        summaries[-1] = summaries[-1] | {"weights_sha256": sha256_of(previous)}
        restart = restarts[k - 1]
        cycle_config = replace(config, steps=restart.steps, lr=restart.lr, init=str(previous),
                               gap_lines=restart.gap_lines)
        net, info = fit(cycle_config, frames, calib, work_dir, tag=f"_cycle{k + 1}")
        seconds += info["train_seconds"]
        summaries.append(_cycle_summary(cycle_config, info))
    if total == 1:
        return net, info
    return net, info | {"train_seconds": round(seconds, 1), "first_loss": first_loss, "training_cycles": summaries}


def member_path(work_dir: Path, seed: int) -> Path:
    """Where `fit_ensemble` keeps (and looks for) the member of one seed."""
    return work_dir / f"member_s{seed}.npz"


def frame_counts(frames: Sequence[LowFrame]) -> dict[str, int]:
    """How many full-resolution pairs and thumbnails a network was trained on (recorded in its sidecar)."""
    return {"msrs_full_resolution": sum(f.source == "msrs" for f in frames),
            "msrs_train_thumbnails": sum(f.source != "msrs" for f in frames)}


def trained_by(meta: dict, config: NetTrainConfig, restarts: Sequence[Restart],
               frames: dict[str, int] | None = None) -> bool:
    """True when a network's sidecar records exactly `fit_cycles(config, restarts)` (and, when `frames` is
    given, on that many training frames: `frame_counts`).

    What `train seg --seed S --out X` writes qualifies, so members trained one by one (e.g. in parallel
    processes) and copied to `member_path` are used as they are instead of being trained again."""
    recorded = dict(meta.get("train_config") or {})
    recorded.setdefault("gap_lines", 0.0)  # sidecars written before gap lines existed had none
    cycles = meta.get("training_cycles")
    if restarts:
        if not cycles or len(cycles) != len(restarts) + 1:
            return False
        for restart, cycle in zip(restarts, cycles[1:], strict=True):
            if (cycle.get("steps"), cycle.get("lr"), cycle.get("seed"), cycle.get("gap_lines", 0.0)) != (
                    restart.steps, restart.lr, config.seed, restart.gap_lines):
                return False
        # The recorded configuration is the last cycle's: the first differs in steps, lr, init and gap lines.
        recorded |= {"steps": cycles[0].get("steps"), "lr": cycles[0].get("lr"), "init": None,
                     "gap_lines": cycles[0].get("gap_lines", 0.0)}
    elif cycles:
        return False
    if frames is not None and meta.get("train_frames") != frames:
        return False
    return recorded == config_json(config)


def fit_ensemble(
    config: NetTrainConfig, seeds: Sequence[int], restarts: Sequence[Restart],
    frames: Sequence[LowFrame], calib: SplitData, work_dir: Path, classes: list[dict] | None = None,
) -> tuple[SegEnsemble, dict]:
    """`fit_cycles` once per seed, then the members' logits averaged and calibrated again on the
    TRAINING split (the members' own biases were chosen for each alone).

    Each member is saved as `member_path(work_dir, seed)` before the next one starts, and a member file
    already there that `trained_by` this recipe and seed is reused: the command resumes after an
    interruption, and a member is the same bits as `train seg --seed S` writes (tested)."""
    classes = classes or class_table("msrs").to_json()
    work_dir.mkdir(parents=True, exist_ok=True)
    counts = frame_counts(frames)
    members, summaries = [], []
    for seed in seeds:
        member_config = replace(config, seed=seed)
        path = member_path(work_dir, seed)
        if path.is_file() and trained_by(read_metadata(path), member_config, restarts, counts):
            log.info("ensemble member seed %d: using %s (trained by this recipe)", seed, path)
            net = load_net(path)
        else:
            if path.is_file():
                log.warning("%s was trained by another recipe or on other data: training seed %d again", path, seed)
            net, info = fit_cycles(member_config, restarts, frames, calib, work_dir / f"member_s{seed}_work",
                                   classes)
            save_trained(net, info, path, export=False, classes=classes)
        meta = read_metadata(path)
        members.append(net)
        summaries.append({"seed": seed, "file": path.name, "weights_sha256": sha256_of(path),
                          "train_seconds": meta.get("train_seconds"),
                          "train_mean_f1": meta.get("calibrated_train_mean_f1"),
                          "training_cycles": meta.get("training_cycles")})
    ensemble = SegEnsemble(members)
    calibration = calibrate_background(ensemble, calib.frames, calib.boxes, FULL_HW)
    recipe_config = config_json(config)
    recipe_config.pop("seed")
    info = {
        "input_kinds": list(config.inputs),
        "train_config": recipe_config,
        "ensemble": {"seeds": list(seeds), "restarts": [asdict(r) for r in restarts], "members": summaries},
        "train_frames": counts,
        "train_seconds": round(sum(m["train_seconds"] or 0.0 for m in summaries), 1),
        "macs_640x480": count_macs(ensemble),
        "parameters": int(sum(p.numel() for p in ensemble.parameters())),
    } | calibration
    return ensemble, info


def _cycle_summary(config: NetTrainConfig, info: dict) -> dict:
    return {"steps": config.steps, "lr": config.lr, "seed": config.seed, "gap_lines": config.gap_lines,
            "train_seconds": info.get("train_seconds"),
            "final_loss": info.get("final_loss"), "class_biases": info.get("class_biases"),
            "train_mean_f1": info.get("calibrated_train_mean_f1")}


def save_trained(
    net: SegNet | SegEnsemble, info: dict, out_npz: Path, export: bool = True, classes: list[dict] | None = None
) -> Path:
    """Weights (.npz, or member files for an ensemble) + sidecar; with `export`, the standalone ONNX graph
    built from those files next to them, sharing the sidecar."""
    classes = classes or class_table("msrs").to_json()
    save_net(net, out_npz, classes, info)
    if export:
        graph_from_weights(out_npz, out_npz.with_suffix(".onnx"))
    return out_npz
