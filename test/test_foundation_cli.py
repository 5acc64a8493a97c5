"""The command line: every subcommand listed, and commands whose extra is missing say what to install."""

from __future__ import annotations

import sys

import pytest

from sage_ros.cli import build_parser, main


def test_help_lists_the_commands(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("weights", "export", "fuse", "demo", "make-bag", "eval-bag", "train", "build-engine"):
        assert command in out


def test_missing_extra_keeps_the_cli_working(monkeypatch, capsys) -> None:
    # Simulate a robot without the eval extra: importing rosbags fails.
    for name in [m for m in sys.modules if m.startswith("rosbags.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "rosbags", None)
    for name in [m for m in sys.modules if m.startswith(("sage_ros.cli.make_bag", "sage_ros.cli.eval_bag",
                                                         "sage_ros.bags", "sage_ros.evaluation"))]:
        monkeypatch.delitem(sys.modules, name)
    build_parser()  # must not raise
    assert main(["make-bag", "some/folder", "--out", "x"]) == 1
    err = capsys.readouterr().err
    assert "needs the Python package 'rosbags'" in err and "pip install -e '.[eval]'" in err
