"""Shared fixtures: the real released weights and data from ../shared, skipped when absent."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from sage_ros.node.harness import pick_domain_id, restrict_dds_to_host

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
OFFICIAL = SHARED / "sage_official"
MSRS = SHARED / "datasets" / "msrs"
# Test-only placeholder for `composition_interfaces` (not on PyPI; launch_ros imports it at import time
# but only composable nodes use it). Put on the path only when the real package is absent.
ROS_PLACEHOLDERS = Path(__file__).resolve().parent / "ros_placeholders"

# Every DDS participant of the test session (in-process probes and every child process, which inherit
# this environment) discovers on this host only, on a domain derived from this run's pid.
restrict_dds_to_host(pick_domain_id(3))
if importlib.util.find_spec("composition_interfaces") is None:
    sys.path.append(str(ROS_PLACEHOLDERS))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (os.environ.get("PYTHONPATH", ""), str(ROS_PLACEHOLDERS)) if p
    )


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent: these tests need the shared data folder beside the repository")
    return path


@pytest.fixture(scope="session")
def official_dir() -> Path:
    """The released checkpoint, six sample pairs and upstream's fused outputs."""
    return _need(OFFICIAL)


@pytest.fixture(scope="session")
def checkpoint_path(official_dir: Path) -> Path:
    return _need(official_dir / "checkpoints.pt")


@pytest.fixture(scope="session")
def msrs_dir() -> Path:
    return _need(MSRS)


@pytest.fixture(scope="session")
def student_onnx(checkpoint_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The released student exported to ONNX once per test session."""
    pytest.importorskip("torch", reason="exporting the student needs PyTorch")
    from sage_ros.model.model_files import export_checkpoint

    return export_checkpoint(checkpoint_path, tmp_path_factory.mktemp("model") / "sage_student.onnx")


@pytest.fixture(scope="session")
def warm_people_frames():
    """A factory of synthetic training frames for the segmentation network: (count, seed) -> frames."""
    return _warm_people_frames


def _warm_people_frames(count: int, seed: int) -> list:
    """Warm upright rectangles (people) on a noisy background at 160x120, boxes in normalised units."""
    from sage_ros.training.segmentation.net_data import LowFrame

    rng = np.random.default_rng(seed)
    frames = []
    for i in range(count):
        ir = rng.normal(0.3, 0.03, (120, 160)).astype(np.float32)
        x0, y0 = int(rng.integers(10, 130)), int(rng.integers(10, 70))
        ir[y0:y0 + 30, x0:x0 + 12] = 0.9
        box = np.array([[2, x0 / 160, y0 / 120, (x0 + 12) / 160, (y0 + 30) / 120]], np.float32)
        frames.append(LowFrame(str(i), "day", "msrs", {"fused": ir, "infrared": ir, "visible": ir}, box))
    return frames


@pytest.fixture(scope="session")
def box_split():
    """frames -> SplitData whose boxes are the frames' own, in pixels of a 640x480 image (calibration)."""
    from sage_ros.training.segmentation.boxes import Box
    from sage_ros.training.segmentation.net_experiment import SplitData

    def split(frames: list) -> SplitData:
        boxes = [[Box(int(b[0]), int(b[1] * 640), int(b[2] * 480), int(b[3] * 640), int(b[4] * 480)) for b in f.boxes]
                 for f in frames]
        return SplitData(frames, boxes)

    return split
