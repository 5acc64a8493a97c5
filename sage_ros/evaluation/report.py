"""report.json and report.md from an evaluation result."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import numpy as np

from sage_ros.evaluation.baselines import METHODS
from sage_ros.evaluation.metrics import FUSION_METRICS

if TYPE_CHECKING:  # the runner needs rosbags; `compare` uses markdown_table without it
    from sage_ros.evaluation.runner import EvalResult

PERCENTILES = (50, 90, 95, 99)


def latency_summary(values: list[float]) -> dict[str, float] | None:
    """mean, p50/p90/p95/p99 and max in ms (linear-interpolated percentiles, numpy's default)."""
    if not values:
        return None
    arr = np.asarray(values, dtype=np.float64)
    out = {"mean": float(arr.mean())}
    out.update({f"p{p}": float(np.percentile(arr, p)) for p in PERCENTILES})
    out["max"] = float(arr.max())
    return out


def mean_metrics(result: EvalResult) -> dict[str, dict[str, float]]:
    """Per method, the mean of each metric over the pairs that were scored."""
    scored = [p.metrics for p in result.pairs if p.metrics]
    if not scored:
        return {}
    return {
        method: {k: float(np.mean([s[method][k] for s in scored])) for k in FUSION_METRICS}
        for method in METHODS
    }


def build_report(result: EvalResult, model: str | None, files: dict[str, str]) -> dict[str, Any]:
    opts = result.options
    # Per pair: the record's fields that are set, plus the signed thermal - RGB stamp gap.
    pairs = [{**{k: v for k, v in asdict(p).items() if v is not None},
              "stamp_gap_ms": (p.thermal_stamp_ns - p.rgb_stamp_ns) / 1e6} for p in result.pairs]
    gaps = [abs(p["stamp_gap_ms"]) for p in pairs]
    return {
        "tool": "sage-ros eval-bag",
        "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "bag": {
            "path": str(result.bag),
            "storage": result.storage,
            "recovered_by_scan": result.recovered,
            "topics": result.topics,
        },
        "model": model,
        "backend": result.backend,
        "settings": {
            **{k: v for k, v in asdict(opts).items() if k not in ("thermal", "output_bag")},
            "thermal_normalisation": opts.thermal.mode,
            "thermal_normalisation_detail": describe_thermal(opts.thermal),
            "thermal_normalisation_reason": result.thermal_reason,
        },
        "metric_definitions": "sage_ros.evaluation.metrics (SAGE_SPEC section 7): F = Y of the fused RGB, "
        "A = infrared grey, B = visible Y; two-source metrics are sums over A and B",
        "methods": list(METHODS),
        "mean": mean_metrics(result),
        "segmentation": result.segmentation if result.segmentation else {"note": _segmentation_note(result)},
        "masks_vs_boxes": result.boxes if result.boxes else {"note": _boxes_note(result)},
        "pairing": {
            "inputs": ["thermal", "rgb"],
            "sync": dict(result.sync_stats),
            "evaluated_pairs": len(result.pairs),
            "stamp_gap_ms": {"mean": float(np.mean(gaps)) if gaps else None, "max": max(gaps, default=None)},
            "ground_truth_frames": result.gt_frames,
        },
        "latency_ms": {
            "pipeline": latency_summary([p.pipeline_ms for p in result.pairs]),
            "inference": latency_summary([p.inference_ms for p in result.pairs]),
        },
        "problems": {
            "total": int(sum(result.problem_counts.values())),
            "counts": dict(sorted(result.problem_counts.items())),
            "details": result.problem_details,
        },
        "wall_s": result.wall_s,
        "files": files,
        "pairs": pairs,
    }


def _segmentation_note(result: EvalResult) -> str:
    if not result.gt_frames:
        return "no ground-truth topic in the bag: mIoU not computed"
    if not result.has_segmentation:
        return "ground truth present but segmentation is off: mIoU not computed"
    return "no pair had a matching ground-truth label"


def _boxes_note(result: EvalResult) -> str:
    if not result.boxes_topic:
        return f"no boxes topic ({result.options.boxes_topic}) in the bag: masks not scored against boxes"
    return "boxes present but segmentation is off: masks not scored"


def _pct(value: float) -> str:
    return "-" if value is None or value != value else f"{100 * value:.1f}"


def _boxes_markdown(boxes: dict[str, Any]) -> list[str]:
    lines = ["## Masks vs boxes", ""]
    if "scores" not in boxes:
        return lines + [boxes["note"] + ".", ""]
    lines += [
        f"Mask components (8-connected, >= {boxes['min_area']} px) matched one-to-one to the human boxes on "
        f"`{boxes['topic']}` at IoU >= {boxes['iou_threshold']}, as `sage-ros seg eval` scores them. "
        f"Pairs scored: {boxes['pairs_scored']}; pairs without a boxes message: {boxes['pairs_without_boxes']}.",
        "",
    ]
    for group, sc in boxes["scores"].items():
        lines += [
            f"**{group}** ({sc['images']} pairs): mean F1 {_pct(sc['mean_f1'])}; components per image "
            f"{sc['components_per_image']:.2f} vs boxes per image {sc['boxes_per_image']:.2f}; "
            f"false components per object-free frame {_fmt(sc['false_components_per_empty_frame'], 2)} "
            f"({sc['empty_frames']} object-free frame(s)).",
            "",
            "| class | boxes | components | matched | precision | recall | F1 |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, c in sc["classes"].items():
            lines.append(
                f"| {name} | {c['boxes']} | {c['predicted']} | {c['tp']} | {_pct(c['precision'])} | "
                f"{_pct(c['recall'])} | {_pct(c['f1'])} |"
            )
        lines.append("")
    return lines


def describe_thermal(cfg: Any) -> str:
    """The thermal window in words: what a reader needs to compare these metrics with others."""
    if cfg.mode == "fixed":
        return f"fixed window [{cfg.fixed_min:g}, {cfg.fixed_max:g}]"
    window = f"percentile {cfg.low_percentile:g}-{cfg.high_percentile:g}"
    if cfg.ema_alpha >= 1.0:
        return f"{window}, per frame"
    return f"{window}, smoothed across frames (ema_alpha {cfg.ema_alpha:g}, as the node)"


SSIM_NOTE = (
    "SSIM is the textbook SSIM of Wang et al. 2004 (11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03), "
    "summed over IR and visible (2 at best); papers that use the IVIF_ZOO / VIFB implementation report a "
    "different variant, so their SSIM numbers are not comparable with these."
)


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown_table(means: dict[str, dict[str, float]]) -> str:
    """Method x metric means, the best of each metric in bold (eval-bag's report and `compare`'s table)."""
    lines = ["| method | " + " | ".join(FUSION_METRICS) + " |", "|---" * (len(FUSION_METRICS) + 1) + "|"]
    best = {k: max(v[k] for v in means.values()) for k in FUSION_METRICS}
    for method, values in means.items():
        cells = [f"**{values[k]:.3f}**" if np.isclose(values[k], best[k]) else f"{values[k]:.3f}"
                 for k in FUSION_METRICS]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def render_markdown(report: dict[str, Any], plots: dict[str, str]) -> str:
    """A human-readable report; plot paths are relative to the report's folder."""
    lines = [
        "# sage-ros eval-bag report",
        "",
        f"- bag: `{report['bag']['path']}` ({report['bag']['storage']}"
        + (", recovered by scanning" if report["bag"]["recovered_by_scan"] else "")
        + ")",
        f"- model: `{report['model']}`; backend: {report['backend']}",
        f"- pairs evaluated: {report['pairing']['evaluated_pairs']}; problems: {report['problems']['total']}",
        f"- thermal normalisation (mono16 / 32FC1 thermal; mono8 is used as is): "
        f"{report['settings']['thermal_normalisation_detail']} ({report['settings']['thermal_normalisation_reason']})",
        "",
    ]
    mean = report["mean"]
    if mean:
        lines += ["## Mean fusion metrics (higher is better for all)", "", markdown_table(mean).rstrip("\n")]
        lines += [
            "",
            "Baselines use the same pairs: `average` = (IR + VIS Y)/2, `max` = per-pixel maximum, "
            "`visible` = VIS Y alone. Metric definitions: `sage_ros/evaluation/metrics.py`.",
            "",
            SSIM_NOTE,
            "",
        ]
    seg = report["segmentation"]
    lines += ["## Segmentation", ""]
    if "miou" in seg:
        lines.append(
            f"mIoU {100 * seg['miou']:.2f} over {seg['pairs']} pairs "
            f"(pixel accuracy {100 * seg['pixel_accuracy']:.2f})."
        )
        lines += ["", "| class | IoU |", "|---|---|"] + [
            f"| {c} | {100 * v:.2f} |" for c, v in seg["iou"].items()
        ]
    else:
        lines.append(seg["note"] + ".")
    lines.append("")
    lines += _boxes_markdown(report["masks_vs_boxes"])
    pairing = report["pairing"]
    sync = pairing["sync"]
    lines += [
        "## Pairing (the node's ApproximateTimeSync)",
        "",
        f"slop {report['settings']['slop_s']} s, queue {report['settings']['queue_size']}, "
        f"thermal offset {report['settings']['thermal_offset_ms']} ms.",
        "",
        "| | thermal | rgb |",
        "|---|---|---|",
    ]
    for key in ("received", "duplicate", "evicted", "flushed", "rejected"):
        if key in sync:
            lines.append(f"| {key} | {sync[key][0]} | {sync[key][1]} |")
    gap = pairing["stamp_gap_ms"]
    lines += [
        "",
        f"Pairs emitted: {sync.get('pairs', 0)}; evaluated: {pairing['evaluated_pairs']}; "
        f"|stamp gap| mean {_fmt(gap['mean'], 2)} ms, max {_fmt(gap['max'], 2)} ms.",
        "",
        "## Latency (ms)",
        "",
        "| | mean | p50 | p90 | p95 | p99 | max |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, summary in report["latency_ms"].items():
        if summary:
            cells = [_fmt(summary[k], 1) for k in ("mean", "p50", "p90", "p95", "p99", "max")]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "`pipeline` = colour conversion + inference + colour back; `inference` = backend call only.",
        "",
    ]
    problems = report["problems"]
    lines += ["## Problems", ""]
    if problems["total"]:
        lines += ["| kind | count |", "|---|---|"] + [f"| {k} | {v} |" for k, v in problems["counts"].items()]
        lines.append("")
        lines += [f"- {d['kind']}: {d['detail']}" for d in problems["details"][:20]]
    else:
        lines.append("None.")
    lines.append("")
    if plots:
        lines += ["## Plots", ""] + [f"![{name}]({rel})" for name, rel in plots.items()] + [""]
    pairs = report["pairs"]
    if pairs and "metrics" in pairs[0]:
        cols = ("EN", "MI", "VIF", "Qabf", "SSIM")
        lines += ["## Per pair (SAGE)", "", "| # | pair | stamp (s) | gap (ms) | " + " | ".join(cols) + " | ms |"]
        lines.append("|---" * (len(cols) + 5) + "|")
        for p in pairs:
            sage = p["metrics"]["SAGE"]
            lines.append(
                f"| {p['index']} | {p.get('name', '-')} | {p['rgb_stamp_ns'] / 1e9:.3f} | {p['stamp_gap_ms']:.1f} | "
                + " | ".join(_fmt(sage[c]) for c in cols)
                + f" | {p['pipeline_ms']:.0f} |"
            )
        lines.append("")
    return "\n".join(lines)
