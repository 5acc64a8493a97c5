"""Bad inputs give one clear error and never a crash: weights, images, folders, downloads."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from sage_ros.cli import main as cli_main

torch = pytest.importorskip("torch", reason="checkpoint loading needs PyTorch")

from sage_ros.model.weights import CHECKPOINT, FetchError, fetch  # noqa: E402
from sage_ros.networks.checkpoint import WeightsError, load_student  # noqa: E402


def test_missing_weights_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match=r"nope\.pt does not exist.*weights fetch"):
        load_student(tmp_path / "nope.pt")


def test_empty_weights(tmp_path: Path) -> None:
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(WeightsError, match="empty"):
        load_student(empty)


def test_truncated_weights(checkpoint_path: Path, tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(checkpoint_path.read_bytes()[:200_000])
    with pytest.raises(WeightsError, match=r"truncated\.pt could not be read"):
        load_student(truncated)


def test_foreign_state_dict_lists_what_was_expected(tmp_path: Path) -> None:
    foreign = tmp_path / "resnet.pt"
    torch.save({"conv1.weight": torch.zeros(3, 3, 3, 3), "fc.bias": torch.zeros(10)}, foreign)
    with pytest.raises(WeightsError, match=r"not a SAGE student checkpoint.*module1\.0\.weight"):
        load_student(foreign)


def test_wrong_shapes_are_reported(checkpoint_path: Path, tmp_path: Path) -> None:
    state = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    state["final_decoder.0.weight"] = torch.zeros(1, 16, 3, 3)
    bad = tmp_path / "shapes.pt"
    torch.save(state, bad)
    with pytest.raises(WeightsError, match="wrong shape.*final_decoder"):
        load_student(bad)


class _Evil:
    def __reduce__(self):
        return (print, ("code ran",))


def test_pickled_code_is_refused(tmp_path: Path) -> None:
    evil = tmp_path / "evil.pt"
    torch.save({"x": _Evil()}, evil)
    with pytest.raises(WeightsError, match="not a plain state dict|could not be read"):
        load_student(evil)


def test_fuse_reports_bad_pairs_and_fuses_the_rest(official_dir, checkpoint_path, student_onnx, tmp_path, capsys):
    ir_dir, vis_dir, out = tmp_path / "ir", tmp_path / "vis", tmp_path / "out"
    ir_dir.mkdir()
    vis_dir.mkdir()
    ir = cv2.imread(str(official_dir / "Ir/00000.png"))[:96, :128]
    vis = cv2.imread(str(official_dir / "Vis/00000.png"))[:96, :128]
    cv2.imwrite(str(ir_dir / "good.png"), ir)
    cv2.imwrite(str(vis_dir / "good.png"), vis)
    cv2.imwrite(str(ir_dir / "sizes.png"), ir)
    cv2.imwrite(str(vis_dir / "sizes.png"), vis[:80])
    (ir_dir / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    cv2.imwrite(str(vis_dir / "broken.png"), vis)
    cv2.imwrite(str(ir_dir / "lonely.png"), ir)
    code = cli_main(["fuse", "--ir", str(ir_dir), "--vis", str(vis_dir), "--out", str(out),
                     "--backend", "onnxruntime", "--model", str(student_onnx)])
    err = capsys.readouterr().err
    assert code == 1
    assert (out / "good.png").is_file()
    assert not (out / "sizes.png").exists() and not (out / "broken.png").exists()
    assert "sizes: infrared 128x96 and visible 128x80 differ in size" in err
    assert "broken.png: not a readable image" in err
    assert "unpaired: lonely" in err


def test_fuse_missing_folder_is_an_error_not_a_traceback(tmp_path, capsys) -> None:
    # A setup error (nothing could be fused) is exit status 2, apart from 1 (some pairs failed).
    assert cli_main(["fuse", "--ir", str(tmp_path / "x"), "--vis", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_mirror_fetch_verifies_and_rejects_corrupt_files(official_dir: Path, tmp_path: Path) -> None:
    dest = fetch(tmp_path / "cache", mirror=official_dir)
    assert (dest / "checkpoints.pt").read_bytes() == (official_dir / "checkpoints.pt").read_bytes()
    assert len(list((dest / "Vis").glob("*.png"))) == 6
    corrupt_mirror = tmp_path / "corrupt"
    corrupt_mirror.mkdir()
    (corrupt_mirror / "checkpoints.pt").write_bytes((official_dir / "checkpoints.pt").read_bytes()[:-10] + b"x" * 10)
    with pytest.raises(FetchError, match="does not match the pinned"):
        fetch(tmp_path / "other", mirror=corrupt_mirror, include_samples=False)
    assert not (tmp_path / "other" / "checkpoints.pt").exists()


def test_url_download_uses_upstream_layout(official_dir: Path, tmp_path: Path, monkeypatch) -> None:
    # A file:// server in upstream's layout exercises the real urllib download path offline.
    monkeypatch.delenv("SAGE_ROS_MIRROR", raising=False)  # `make test` sets it for developers
    upstream = tmp_path / "upstream"
    (upstream / "checkpoints").mkdir(parents=True)
    shutil.copy(official_dir / "checkpoints.pt", upstream / CHECKPOINT.upstream)
    dest = fetch(tmp_path / "dl", base_url=upstream.as_uri(), include_samples=False)
    assert (dest / "checkpoints.pt").is_file()
    with pytest.raises(FetchError, match="could not download"):
        fetch(tmp_path / "dl2", base_url=(tmp_path / "missing").as_uri(), include_samples=False)


def test_export_produces_folded_dynamic_graph(student_onnx: Path, checkpoint_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(student_onnx))
    ops = {n.op_type for n in model.graph.node}
    assert "BatchNormalization" not in ops
    for tensor in model.graph.input:
        dims = tensor.type.tensor_type.shape.dim
        assert [d.dim_param for d in dims[2:]] == ["height", "width"]
    # Odd sizes work (upsampling targets the skip tensor's size) and match torch.
    from sage_ros.backends import BackendConfig, create_backend

    rng = np.random.default_rng(1)
    y, ir = rng.random((2, 97, 131), dtype=np.float32)
    ort = create_backend(BackendConfig(name="onnxruntime", onnx_path=student_onnx)).infer(y, ir).fused_y
    ref = create_backend(BackendConfig(name="torch", weights_path=checkpoint_path)).infer(y, ir).fused_y
    assert ort.shape == (97, 131)
    assert np.abs(ort - ref).max() < 1e-4


def test_backend_errors_are_clear(tmp_path: Path, student_onnx: Path, checkpoint_path: Path, caplog) -> None:
    from sage_ros.backends import BackendConfig, BackendError, create_backend

    with pytest.raises(BackendError, match="unknown backend"):
        create_backend(BackendConfig(name="cuda-magic"))
    with pytest.raises(BackendError, match="does not exist: run `sage-ros export`"):
        create_backend(BackendConfig(name="onnxruntime", onnx_path=tmp_path / "none.onnx"))
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    with pytest.raises(BackendError, match="could not load"):
        create_backend(BackendConfig(name="onnxruntime", onnx_path=garbage))
    backend = create_backend(BackendConfig(name="onnxruntime", onnx_path=student_onnx))
    with pytest.raises(BackendError, match="one size"):
        backend.infer(np.zeros((4, 4), np.float32), np.zeros((4, 5), np.float32))
    # auto: with a corrupt model every ONNX backend fails, and torch takes over with a log line.
    with caplog.at_level("WARNING"):
        auto = create_backend(BackendConfig(name="auto", onnx_path=garbage, weights_path=checkpoint_path))
    assert auto.name == "torch"
    assert "failed to start" in caplog.text


def test_default_model_is_fusion_only_and_is_exported_once(checkpoint_path: Path, tmp_path: Path):
    import json

    import onnx

    from sage_ros.model.model_files import ensure_onnx

    onnx_path = ensure_onnx(tmp_path / "model.onnx", checkpoint_path)
    meta = json.loads(onnx_path.with_suffix(".json").read_text())
    assert meta["outputs"] == ["fused_y"]
    assert [o.name for o in onnx.load(str(onnx_path), load_external_data=False).graph.output] == ["fused_y"]
    stamp = onnx_path.stat().st_mtime_ns
    assert ensure_onnx(onnx_path, checkpoint_path).stat().st_mtime_ns == stamp  # current: not redone
    # An export from before (student + segmentation in one graph) is stale: rebuilt fusion-only.
    onnx_path.with_suffix(".json").write_text(json.dumps(meta | {"outputs": ["fused_y", "class_ids"]}))
    ensure_onnx(onnx_path, checkpoint_path)
    assert onnx_path.stat().st_mtime_ns != stamp
    assert json.loads(onnx_path.with_suffix(".json").read_text())["outputs"] == ["fused_y"]
