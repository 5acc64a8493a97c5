"""Launch file and rviz config: consistent with the node; the description builds with the real launch_ros."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch" / "sage_fusion.launch.py"
RVIZ = REPO / "rviz" / "sage_fusion.rviz"


def _launch_arguments() -> dict[str, object]:
    tree = ast.parse(LAUNCH.read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "ARGUMENTS":
            return {name: default for name, default, _ in ast.literal_eval(node.value)}
    raise AssertionError("ARGUMENTS not found in the launch file")


def test_launch_arguments_cover_the_issue():
    args = _launch_arguments()
    for required in ("params_file", "namespace", "thermal_topic", "rgb_topic", "rgb_info_topic", "backend",
                     "use_sim_time", "rviz"):
        assert required in args, required
    from sage_ros.node.topics import TOPICS

    # Default remap targets are the node's own relative topic names: no remap unless asked.
    assert args["thermal_topic"] == TOPICS["thermal"] and args["rgb_topic"] == TOPICS["rgb"]
    assert args["rgb_info_topic"] == TOPICS["rgb_info"] and args["fused_topic"] == TOPICS["fused"]
    text = LAUNCH.read_text()
    assert 'executable="fusion_node"' in text and 'name="sage_fusion"' in text
    assert '"config", "sage_fusion.yaml"' in text and '"rviz", "sage_fusion.rviz"' in text


@pytest.mark.skipif(importlib.util.find_spec("launch_ros") is None,
                    reason="launch_ros is not installed (not on PyPI: `make test` installs it from ../shared/ros_src)")
def test_launch_description_builds():
    spec = importlib.util.spec_from_file_location("sage_fusion_launch", LAUNCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    assert len(description.entities) == len(_launch_arguments()) + 1


def test_rviz_config_shows_fused_overlay_thermal_and_rgb():
    config = yaml.safe_load(RVIZ.read_text())
    displays = config["Visualization Manager"]["Displays"]
    topics = {d["Topic"]["Value"] for d in displays if d["Class"] == "rviz_default_plugins/Image"}
    assert topics == {"/fused/image_raw", "/segmentation/overlay", "/thermal/image_raw", "/rgb/image_raw"}
    # Best effort in rviz matches the node's RELIABLE outputs and the drivers' publishers alike.
    assert {d["Topic"]["Reliability Policy"] for d in displays} == {"Best Effort"}
