"""Shared fixtures: the real released weights and data from ../shared, skipped when absent."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
OFFICIAL = SHARED / "sage_official"
MSRS = SHARED / "datasets" / "msrs"


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
    from sage_ros.model_files import export_checkpoint

    return export_checkpoint(checkpoint_path, tmp_path_factory.mktemp("model") / "sage_student.onnx")
