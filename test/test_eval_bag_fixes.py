"""eval-bag details a new user meets: a missing bag leaves nothing behind, --slop agrees with the node,
the thermal normalisation is stated (per frame for dataset bags), the SSIM variant is named, the output
mask topic is the node's. Real bags, the released student."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from sage_ros.cli import build_parser
from sage_ros.cli import main as cli_main

pytest.importorskip("rosbags", reason="bags need rosbags (pip install -e '.[eval]')")
from sage_ros.bags.messages import image_message  # noqa: E402
from sage_ros.bags.writer import BagWriter  # noqa: E402

T0 = 1_700_000_000 * 10**9


@pytest.fixture(scope="module")
def model(checkpoint_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from harness import exported_student

    return exported_student(checkpoint_path, tmp_path_factory.getbasetemp() / "sage_models")


def _dataset_bag(official: Path, path: Path, frames: list[int], with_gt: bool = True) -> None:
    """mono16 thermal (14-bit counts, different scenes per frame) + bgr8 + optional labels."""
    with BagWriter(path, storage="mcap") as writer:
        for k, i in enumerate(frames):
            name = f"{i:05d}"
            ir = cv2.imread(str(official / "Ir" / f"{name}.png"), cv2.IMREAD_GRAYSCALE)[100:196, 100:228]
            vis = cv2.imread(str(official / "Vis" / f"{name}.png"))[100:196, 100:228]
            # Scenes at very different temperatures: what a dataset of unrelated frames looks like.
            counts = (1000 + 3000 * i + 40 * ir.astype(np.uint16)).astype(np.uint16)
            t = T0 + k * 100_000_000
            writer.write("/thermal/image_raw", t, image_message(counts, "mono16", t, "thermal"))
            writer.write("/rgb/image_raw", t, image_message(vis, "bgr8", t, "rgb"))
            if with_gt:
                label = np.zeros(ir.shape, np.uint8)
                writer.write("/segmentation/ground_truth", t, image_message(label, "mono8", t, "rgb"))


def _eval(bag: Path, out: Path, model: Path, *extra: str) -> int:
    return cli_main(["eval-bag", str(bag), "--out", str(out), "--model", str(model), "--backend", "onnxruntime",
                     "--threads", "1", "--no-output-bag", *extra])


def test_missing_bag_leaves_no_output_folder(tmp_path: Path, capsys) -> None:
    out = tmp_path / "eval" / "run1"
    assert cli_main(["eval-bag", str(tmp_path / "no_such_bag"), "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not out.exists() and not out.parent.exists()


def test_slop_default_is_the_nodes() -> None:
    from sage_ros.node.settings import PARAMS

    node_slop = next(p.default for p in PARAMS if p.name == "sync.slop")
    parser = build_parser()
    args = parser.parse_args(["eval-bag", "b", "--out", "o"])
    assert args.slop == node_slop
    sub = next(a for a in parser._subparsers._group_actions[0].choices.items() if a[0] == "eval-bag")[1]
    assert f"default {node_slop}" in sub.format_help().replace("\n", " ")


def test_demo_help_names_four_columns() -> None:
    parser = build_parser()
    demo = parser._subparsers._group_actions[0].choices["demo"]
    text = " ".join(demo.format_help().split())
    assert "IR | visible | fused | class overlay" in text


def test_dataset_bag_is_normalised_per_frame_and_says_so(model: Path, official_dir: Path, tmp_path: Path) -> None:
    """Frame 3 of a dataset bag scores exactly as frame 3 alone: no window carried across scenes."""
    _dataset_bag(official_dir, tmp_path / "many", [0, 1, 2, 3])
    _dataset_bag(official_dir, tmp_path / "one", [3])
    assert _eval(tmp_path / "many", tmp_path / "eval_many", model) == 0
    assert _eval(tmp_path / "one", tmp_path / "eval_one", model) == 0
    many = json.loads((tmp_path / "eval_many" / "report.json").read_text())
    one = json.loads((tmp_path / "eval_one" / "report.json").read_text())
    assert many["settings"]["thermal_normalisation_detail"].endswith("per frame")
    assert "ground_truth" in many["settings"]["thermal_normalisation_reason"]
    last = many["pairs"][-1]["metrics"]["SAGE"]
    alone = one["pairs"][0]["metrics"]["SAGE"]
    for key, value in alone.items():
        assert last[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
    md = (tmp_path / "eval_many" / "report.md").read_text()
    assert "thermal normalisation" in md and "per frame" in md
    assert "IVIF_ZOO" in md and "not comparable" in md
    # The node's smoothed window, asked for explicitly, is stated as such and does carry across frames.
    assert _eval(tmp_path / "many", tmp_path / "eval_smooth", model, "--thermal-mode", "percentile") == 0
    smooth = json.loads((tmp_path / "eval_smooth" / "report.json").read_text())
    assert "smoothed across frames" in smooth["settings"]["thermal_normalisation_detail"]
    assert smooth["pairs"][-1]["metrics"]["SAGE"]["EN"] != pytest.approx(alone["EN"], rel=1e-6)


def test_camera_stream_keeps_the_nodes_smoothing(model: Path, official_dir: Path, tmp_path: Path) -> None:
    _dataset_bag(official_dir, tmp_path / "stream", [0, 0, 0], with_gt=False)
    assert _eval(tmp_path / "stream", tmp_path / "eval", model, "--no-metrics") == 0
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert "smoothed across frames" in report["settings"]["thermal_normalisation_detail"]
    assert "camera stream" in report["settings"]["thermal_normalisation_reason"]
