"""run_live_demo: sample pairs published live through the node in another process, outputs saved."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy not installed (pip install -e '.[ros]')")

from harness import exported_student, pick_domain_id  # noqa: E402

from sage_ros.cli._live_demo import run_live_demo  # noqa: E402


@pytest.fixture(scope="module")
def small_pairs(official_dir: Path, checkpoint_path: Path, tmp_path_factory):
    folder = tmp_path_factory.mktemp("pairs")
    ir_paths, vis_paths = [], []
    for name in ("00000.png", "00003.png"):
        # Shrink to 160x120 so the CPU fuses each pair in a few tens of ms.
        ir = cv2.resize(cv2.imread(str(official_dir / "Ir" / name), cv2.IMREAD_GRAYSCALE), (160, 120),
                        interpolation=cv2.INTER_AREA)
        vis = cv2.resize(cv2.imread(str(official_dir / "Vis" / name), cv2.IMREAD_COLOR), (160, 120),
                         interpolation=cv2.INTER_AREA)
        (folder / "ir").mkdir(exist_ok=True)
        (folder / "vis").mkdir(exist_ok=True)
        cv2.imwrite(str(folder / "ir" / name), ir)
        cv2.imwrite(str(folder / "vis" / name), vis)
        ir_paths.append(folder / "ir" / name)
        vis_paths.append(folder / "vis" / name)
    onnx = exported_student(checkpoint_path, tmp_path_factory.getbasetemp() / "sage_models")
    return ir_paths, vis_paths, onnx


def test_live_demo_returns_what_the_node_published_identical_to_offline_fusion(small_pairs, tmp_path):
    from sage_ros.backends import BackendConfig, create_backend
    from sage_ros.pipeline import FusionPipeline

    ir_paths, vis_paths, onnx = small_pairs
    stats = run_live_demo(
        ir_paths, vis_paths, onnx, tmp_path / "out", backend="onnxruntime", threads=1,
        domain_id=pick_domain_id(10),
    )
    assert stats["pairs_sent"] == 2 and stats["fused_received"] == 2, stats
    assert stats["node_alive"]
    assert all(ms > 0 for ms in stats["latency_ms"]) and stats["latency_max_ms"] >= stats["latency_p50_ms"]
    assert stats["diagnostics"] is not None and stats["diagnostics"]["outputs"] == "2"
    # mono8 thermal + bgr8 over DDS gives the very pixels of offline fusion of the same files.
    backend = create_backend(BackendConfig(name="onnxruntime", onnx_path=onnx, threads=1))
    pipeline = FusionPipeline(backend)
    for ir_path, vis_path in zip(ir_paths, vis_paths, strict=True):
        live = cv2.imread(str(tmp_path / "out" / ir_path.name), cv2.IMREAD_COLOR)
        offline = pipeline.fuse(cv2.imread(str(ir_path), cv2.IMREAD_GRAYSCALE), cv2.imread(str(vis_path)))
        assert live is not None and live.shape == (120, 160, 3)
        np.testing.assert_array_equal(live[..., ::-1], offline.fused_rgb)
    assert (tmp_path / "out" / "node.log").is_file()


def test_live_demo_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError):
        run_live_demo([], [], tmp_path / "m.onnx", tmp_path)
    with pytest.raises(FileNotFoundError, match="sage-ros export"):
        run_live_demo([tmp_path / "a.png"], [tmp_path / "b.png"], tmp_path / "missing.onnx", tmp_path)
