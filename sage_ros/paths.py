"""Where sage_ros keeps downloaded weights, sample pairs and exported models."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

HOME_ENV = "SAGE_ROS_HOME"
MIRROR_ENV = "SAGE_ROS_MIRROR"
DATA_MIRROR_ENV = "SAGE_ROS_DATA_MIRROR"  # a folder laid out like the data sets (msrs/, m3fd_samples/)


def cache_dir() -> Path:
    """Root of the user cache: $SAGE_ROS_HOME, else $XDG_CACHE_HOME/sage_ros, else ~/.cache/sage_ros."""
    env = os.environ.get(HOME_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "sage_ros"


def official_dir() -> Path:
    """The released checkpoint and sample pairs, in the same layout as upstream's test data."""
    return cache_dir() / "sage_official"


def default_checkpoint() -> Path:
    return official_dir() / "checkpoints.pt"


def datasets_dir() -> Path:
    """The small real data sets fetched by `sage_ros.evaluation.data_fetch` (msrs/, m3fd_samples/)."""
    return cache_dir() / "datasets"


def models_dir() -> Path:
    """Exported ONNX models (and their metadata) live here unless a path is given."""
    return cache_dir() / "models"


def default_onnx() -> Path:
    return models_dir() / "sage_student.onnx"


def sha256_of(path: Path) -> str:
    """The sha256 of a file (hex): what pinned downloads and every derived model file's provenance record."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_atomic(path: Path, data: bytes | str) -> Path:
    """Write `data` to a temporary name beside `path`, then rename: a reader never sees half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
