"""The reference points every report shows next to SAGE, and the grey images the metrics score."""

from __future__ import annotations

import cv2
import numpy as np

from sage_ros.evaluation.metrics import FusionScorer

#: report order; "SAGE" is the model under test
METHODS = ("SAGE", "average", "max", "visible")
BASELINES = {
    # Plain average of the two sources: what any fusion method must beat to be worth running.
    "average": lambda ir, vis_y: (ir.astype(np.float64) + vis_y) / 2.0,
    # Per-pixel maximum: keeps every bright (hot) target, a common naive choice for thermal.
    "max": lambda ir, vis_y: np.maximum(ir, vis_y).astype(np.float64),
    # The visible image alone: what the robot has without a thermal camera.
    "visible": lambda ir, vis_y: vis_y.astype(np.float64),
}


def luminance_of_rgb(rgb: np.ndarray) -> np.ndarray:
    """Y of YCrCb (BT.601) of an RGB uint8 image: how fused colour images are scored."""
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2YCrCb)[..., 0]


def luminance_of_bgr(bgr: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2YCrCb)[..., 0]


def score_methods(
    ir_u8: np.ndarray, vis_y_u8: np.ndarray, fused_y_u8: np.ndarray
) -> dict[str, dict[str, float]]:
    """Metrics of SAGE's fused luminance and of each baseline built from the same sources."""
    scorer = FusionScorer(ir_u8, vis_y_u8)  # source-only terms computed once for all four
    scores = {"SAGE": scorer.score(fused_y_u8)}
    for name, make in BASELINES.items():
        scores[name] = scorer.score(make(ir_u8, vis_y_u8))
    return scores
