"""Bag replay evaluation: pair, fuse, score against baselines, and report (json, markdown, plots).

`runner` needs rosbags (the `eval` extra) and is imported on first use of its names, so that
`sage_ros.evaluation.metrics` imports without it.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["EvalOptions", "EvalResult", "evaluate_bag"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("sage_ros.evaluation.runner"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
