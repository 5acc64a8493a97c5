"""Messages a new user meets on the CLI's first steps: each one names the real problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from sage_ros.cli import main


def test_fuse_with_a_file_for_a_folder(tmp_path: Path, capsys) -> None:
    image = tmp_path / "00000.png"
    image.write_bytes(b"not really")
    (tmp_path / "vis").mkdir()
    # Nothing could be fused: a setup error, exit status 2 (1 is kept for "some pairs failed").
    assert main(["fuse", "--ir", str(image), "--vis", str(tmp_path / "vis"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "is a file" in err and "folder" in err and "does not exist" not in err


def test_weights_fetch_from_a_missing_mirror(tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAGE_ROS_HOME", str(tmp_path / "home"))
    missing = tmp_path / "no_mirror"
    assert main(["weights", "fetch", "--mirror", str(missing), "--no-export"]) == 1
    err = capsys.readouterr().err
    assert f"mirror folder {missing} (from --mirror) does not exist" in err
    assert err.count("\n") == 1, "one line, not one per missing file"
    monkeypatch.setenv("SAGE_ROS_MIRROR", str(missing))
    assert main(["weights", "fetch", "--no-export"]) == 1
    assert "$SAGE_ROS_MIRROR" in capsys.readouterr().err


def test_install_hints_name_the_checkout_route() -> None:
    from sage_ros import install_hint

    assert install_hint("ros") == "pip install -e '.[ros]' from the sage_ros checkout"
