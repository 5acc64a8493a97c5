"""Bag replay evaluation: pair, fuse, score against baselines, and report (json, markdown, plots)."""

from sage_ros.evaluation.runner import EvalOptions, EvalResult, evaluate_bag

__all__ = ["EvalOptions", "EvalResult", "evaluate_bag"]
