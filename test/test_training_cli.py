"""`sage-ros train`: one training command over the four trainers, each with its own options."""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from sage_ros.cli import build_parser, main

REPO = Path(__file__).resolve().parents[1]
TRAINERS = ["student", "fast", "scale", "seg"]


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def test_train_lists_exactly_the_four_trainers(capsys: pytest.CaptureFixture[str]) -> None:
    train = _subcommands(build_parser())["train"]
    assert list(_subcommands(train)) == TRAINERS
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert all(f"    {verb} " in out for verb in TRAINERS)
    assert main(["train"]) == 2  # no trainer: the help, and a usage error code


@pytest.mark.parametrize("verb", TRAINERS)
def test_each_trainer_has_its_own_help(verb: str, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch")
    with pytest.raises(SystemExit) as exit_info:
        main(["train", verb, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: sage-ros train {verb} ")
    expected = {"student": "tiny-sam", "fast": "--thumbs-prob", "scale": "--scales", "seg": "--finetune-lr"}
    assert expected[verb] in out


def test_student_actions_keep_their_options(capsys: pytest.CaptureFixture[str]) -> None:
    for action, option in (("fit", "--resume"), ("masks", "--no-progress"), ("export", "checkpoint"),
                           ("tiny-sam", "--img-size")):
        with pytest.raises(SystemExit):
            main(["train", "student", action, "--help"])
        out = capsys.readouterr().out
        assert out.startswith(f"usage: sage-ros train student {action} ") and option in out
    assert main(["train", "student"]) == 2
    assert "train student {fit,masks,export,tiny-sam}" in capsys.readouterr().err


def test_listing_the_trainers_imports_no_torch() -> None:
    code = (
        "import contextlib, io, sys\n"
        "from sage_ros.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    main(['train', '--help'])\n"
        "assert 'torch' not in sys.modules, 'sage-ros train --help imported torch'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_the_old_entry_points_are_gone(capsys: pytest.CaptureFixture[str]) -> None:
    assert importlib.util.find_spec("sage_ros.training.__main__") is None  # torchrun: -m sage_ros train student
    for old in (["seg", "train", "--out", "x.npz"], ["seg", "experiment"], ["seg", "export"], ["train", "fit"]):
        with pytest.raises(SystemExit) as exit_info:
            build_parser().parse_args(old)
        assert exit_info.value.code == 2
        assert "invalid choice" in capsys.readouterr().err


def test_a_trainer_that_cannot_start_says_why_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    try:
        rc = main(["train", "scale", "--out", str(tmp_path), "--data", str(tmp_path), "--scales", "1.0",
                   "--threads", "1"])
        assert rc == 2 and "sage-ros train scale: error:" in capsys.readouterr().err
        rc = main(["train", "fast", "--out", str(tmp_path / "fast"), "--data", "", "--threads", "1"])
        err = capsys.readouterr().err
        assert rc == 2 and "sage-ros train fast: error: --data is empty" in err
        assert (tmp_path / "fast" / "train.log").is_file()
    finally:
        torch.set_num_threads(threads)


def test_a_trainer_without_torch_says_what_to_install() -> None:
    code = (
        "import sys\n"
        "sys.modules['torch'] = None  # a robot install: no training extra\n"
        "from sage_ros.cli import main\n"
        "main(['train', 'fast', '--out', 'x'])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 1
    assert "sage-ros train fast: needs the Python package 'torch'" in proc.stderr and ".[training]" in proc.stderr
