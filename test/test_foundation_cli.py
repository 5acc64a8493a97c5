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


def test_the_readme_command_line_lists_exactly_the_flags_that_exist() -> None:
    """Each `sage-ros ...` entry of README's command-line block names every option of that command and no other
    (`[MODEL]` stands for the shared model options; `train` defers to `sage-ros train VERB --help`)."""
    import re
    from pathlib import Path

    from sage_ros.cli import build_parser

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = text.split("## The command line", 1)[1].split("```", 2)[1]
    entries = re.split(r"\n(?=sage-ros )", block.split("\nMODEL (")[0].strip())
    model_flags = set(re.findall(r"--\[?(?:no-\])?[a-z][a-z0-9-]*", block.split("\nMODEL (")[1]))
    model_flags = {f.replace("[no-]", "") for f in model_flags}
    subparsers = build_parser()._subparsers._group_actions[0].choices
    checked = 0
    for entry in entries:
        words = entry.split()
        if words[1] == "train":
            continue
        parser = subparsers[words[1]]
        if words[1] in ("weights", "seg"):
            parser = parser._subparsers._group_actions[0].choices[words[2]]
        listed = {f.replace("[no-]", "") for f in re.findall(r"--(?:\[no-\])?[a-z][a-z0-9-]*", entry)}
        if "[MODEL]" in entry:
            listed |= {f.replace("[no-]", "") for f in model_flags}
        real = {o for a in parser._actions for o in a.option_strings if o.startswith("--")}
        real -= {"--help"} | {o for o in real if o.startswith("--no-") and f"--{o[5:]}" in real}
        listed -= {"--help"}  # "exit status in --help"
        assert listed == real, (words[:3], sorted(listed - real), sorted(real - listed))
        checked += 1
    assert checked >= 8


def test_detector_min_score_flag_reaches_the_pipeline_settings_and_refuses_bad_values(capsys) -> None:
    from sage_ros.cli._common import pipeline_settings
    from sage_ros.node.settings import PARAMS

    parser = build_parser()
    node_default = next(p.default for p in PARAMS if p.name == "segmentation.detector_min_score")
    fuse = ["fuse", "--ir", "i", "--vis", "v", "--out", "o"]
    assert pipeline_settings(parser.parse_args(fuse)).detector_min_score == node_default
    args = parser.parse_args(fuse + ["--detector-min-score", "0.3"])
    assert pipeline_settings(args).detector_min_score == 0.3
    for bad in ("0", "1.5", "high"):
        with pytest.raises(SystemExit):
            parser.parse_args(fuse + ["--detector-min-score", bad])
        assert "--detector-min-score" in capsys.readouterr().err
