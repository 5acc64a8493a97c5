"""PNG plots of an evaluation: metric bars per method, latency histogram, best/worst contact sheet."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from sage_ros.evaluation.baselines import METHODS
from sage_ros.evaluation.metrics import FUSION_METRICS
from sage_ros.evaluation.runner import EvalResult

_COLOURS = {"SAGE": "#d62728", "average": "#7f7f7f", "max": "#1f77b4", "visible": "#2ca02c"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, never a display
    import matplotlib.pyplot as plt

    return plt


def metric_bars(mean: dict[str, dict[str, float]], path: Path) -> Path:
    """One small panel per metric, one bar per method (each panel on its own scale)."""
    plt = _pyplot()
    fig, axes = plt.subplots(3, 3, figsize=(10, 7.5))
    methods = [m for m in METHODS if m in mean]
    for ax, metric in zip(axes.ravel(), FUSION_METRICS, strict=True):
        values = [mean[m][metric] for m in methods]
        ax.bar(methods, values, color=[_COLOURS.get(m, "#999999") for m in methods])
        ax.set_title(metric)
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
        for x, v in enumerate(values):
            ax.annotate(f"{v:.2f}", (x, v), ha="center", va="bottom", fontsize=7)
    fig.suptitle("Mean fusion metrics: SAGE vs baselines (higher is better)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def latency_histogram(pipeline_ms: list[float], inference_ms: list[float], path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    bins = max(5, min(40, len(pipeline_ms) // 2))
    ax.hist(pipeline_ms, bins=bins, alpha=0.7, label="pipeline (pre + inference + post)")
    ax.hist(inference_ms, bins=bins, alpha=0.7, label="inference only")
    for p, style in ((50, "--"), (99, ":")):
        v = float(np.percentile(pipeline_ms, p))
        ax.axvline(v, color="k", linestyle=style, linewidth=1)
        ax.annotate(f"p{p} {v:.0f} ms", (v, ax.get_ylim()[1] * 0.9), rotation=90, fontsize=8, ha="right")
    ax.set_xlabel("ms per pair")
    ax.set_ylabel("pairs")
    ax.legend(fontsize=8)
    ax.set_title("Per-pair latency")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _labelled(image: np.ndarray, text: str) -> np.ndarray:
    out = image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    out = out.copy()
    cv2.rectangle(out, (0, 0), (out.shape[1], 18), (0, 0, 0), -1)
    cv2.putText(out, text, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def contact_sheet(result: EvalResult, metric: str, path: Path, count: int = 3) -> Path | None:
    """Rows of IR | visible | fused (| class overlay, for a model with class ids) for the `count` best
    and worst pairs by SAGE's `metric`; each row names its pair (the dataset file name the bag carries
    on /dataset/pair_names, else the RGB stamp in seconds)."""
    scored = [p for p in result.pairs if p.metrics and p.index in result.thumbnails]
    if not scored:
        return None
    scored.sort(key=lambda p: p.metrics["SAGE"][metric])
    worst = scored[:count]
    best = scored[::-1][:count]
    chosen: list[tuple[str, Any]] = [("best", p) for p in best]
    chosen += [("worst", p) for p in worst if p not in best]
    rows = []
    for tag, p in chosen:
        thumbs = result.thumbnails[p.index]
        value = p.metrics["SAGE"][metric]
        titles = [p.name or f"t={p.rgb_stamp_ns / 1e9:.3f}s", f"{tag} {metric} {value:.3f}", "SAGE fused", "classes"]
        cells = [_labelled(image, text) for image, text in zip(thumbs, titles, strict=False)]
        height = min(c.shape[0] for c in cells)
        rows.append(np.hstack([c[:height] for c in cells]))
    width = max(r.shape[1] for r in rows)
    sheet = np.vstack([np.pad(r, ((0, 2), (0, width - r.shape[1]), (0, 0))) for r in rows])
    cv2.imwrite(str(path), sheet, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    return path


def write_plots(
    result: EvalResult, mean: dict[str, dict[str, float]], out_dir: Path, rank_metric: str
) -> dict[str, Path]:
    """Every plot the data allows; returns name -> path."""
    plots: dict[str, Path] = {}
    if mean:
        plots["metrics"] = metric_bars(mean, out_dir / "metrics.png")
    if result.pairs:
        plots["latency"] = latency_histogram(
            [p.pipeline_ms for p in result.pairs],
            [p.inference_ms for p in result.pairs],
            out_dir / "latency.png",
        )
    sheet = contact_sheet(result, rank_metric, out_dir / "contact_sheet.png")
    if sheet is not None:
        plots["contact_sheet"] = sheet
    return plots
