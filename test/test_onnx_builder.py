"""The torch-free ONNX builder: same model as the PyTorch export, and a loader that refuses unsafe files."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest

from sage_ros.graphs.onnx_builder import CheckpointError, build_student_onnx, read_checkpoint_arrays

ort = pytest.importorskip("onnxruntime")
cv2 = pytest.importorskip("cv2")


def _io(model: onnx.ModelProto) -> list[tuple[str, int, list]]:
    return [
        (v.name, v.type.tensor_type.elem_type, [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim])
        for v in [*model.graph.input, *model.graph.output]
    ]


def _pairs(official: Path):
    for ir_path in sorted((official / "Ir").glob("*.png")):
        ir = cv2.imread(str(ir_path), cv2.IMREAD_GRAYSCALE)[None, None] / np.float32(255)
        vis = cv2.imread(str(official / "Vis" / ir_path.name))
        y = cv2.cvtColor(vis, cv2.COLOR_BGR2YCrCb)[None, None, :, :, 0] / np.float32(255)
        yield ir_path.name, y, ir


def _grey(fused: np.ndarray) -> np.ndarray:
    return np.round(np.clip(fused, 0, 1) * 255)


def test_the_built_graph_fuses_as_pytorch_on_the_sample_pairs(checkpoint_path: Path, tmp_path: Path):
    """The one builder's graph of the released checkpoint against the PyTorch student itself, on the six pairs."""
    torch = pytest.importorskip("torch", reason="the reference is the PyTorch network")
    from sage_ros.model.model_files import export_checkpoint
    from sage_ros.networks.checkpoint import load_student
    from sage_ros.tensorrt.onnx_checks import check_onnx_for_tensorrt

    path = export_checkpoint(checkpoint_path, tmp_path / "student.onnx")
    model = onnx.load(path)
    assert _io(model) == [("vis_y", 1, [1, 1, "height", "width"]), ("ir", 1, [1, 1, "height", "width"]),
                          ("fused_y", 1, [1, 1, "height", "width"])]
    assert not [n for n in model.graph.node if n.op_type == "BatchNormalization"]
    report = check_onnx_for_tensorrt(model)  # the robot's TensorRT route takes this model
    assert report.ok and not report.warnings, report.summary()
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["outputs"] == ["fused_y"] and len(meta["checkpoint_sha256"]) == 64
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    student = load_student(checkpoint_path).eval()
    n = 0
    for name, y, ir in _pairs(checkpoint_path.parent):
        (built,) = session.run(None, {"vis_y": y, "ir": ir})
        with torch.inference_mode():
            reference = student(torch.from_numpy(y), torch.from_numpy(ir))[0].numpy()
        diff = np.abs(_grey(built) - _grey(reference)).max()
        assert diff <= 1, f"{name}: fused images differ by {diff} grey levels"
        n += 1
    assert n == 6


def test_shallower_narrower_students_build_too(tmp_path: Path):
    """The fast student's blocks (other depth and width) are read off its state dict: same outputs as PyTorch."""
    torch = pytest.importorskip("torch")
    from sage_ros.networks.export import export_student
    from sage_ros.networks.fast_student import FastArch, FastStudent

    torch.manual_seed(0)
    student = FastStudent(FastArch(width=8, full_res_convs=1, low_res_convs=2)).eval()
    for module in student.modules():  # non-trivial BatchNorm statistics, so folding is exercised
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    path = export_student(student, tmp_path / "fast.onnx", model="test")
    y, ir = np.random.default_rng(0).random((2, 1, 1, 37, 50), dtype=np.float32)
    (built,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"vis_y": y, "ir": ir})
    with torch.inference_mode():
        reference = student(torch.from_numpy(y), torch.from_numpy(ir))[0].numpy()
    assert built.shape == (1, 1, 37, 50) and np.abs(built - reference).max() < 1e-4
    assert json.loads(path.with_suffix(".json").read_text())["model"] == "test"


def test_builder_does_not_need_torch(checkpoint_path: Path, tmp_path: Path):
    """In a process where `import torch` fails, the model is still built."""
    out = tmp_path / "model.onnx"
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from pathlib import Path\n"
        "import sage_ros.model.model_files as mf\n"
        f"p = mf.export_checkpoint(Path({str(checkpoint_path)!r}), Path({str(out)!r}))\n"
        "print(p)\n"
        "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert [o.name for o in onnx.load(out).graph.output] == ["fused_y"]


def _zip_checkpoint(path: Path, payload: bytes, extra: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", payload)
        archive.writestr("archive/byteorder", b"little")
        for name, data in (extra or {}).items():
            archive.writestr(f"archive/{name}", data)
    return path


class _RunsCode:
    """Unpickling this would call os.system: the loader must refuse it before anything runs."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_holding_a_callable_is_refused(tmp_path: Path):
    marker = tmp_path / "code_ran"
    bad = _zip_checkpoint(tmp_path / "evil.pt", pickle.dumps({"module1.0.weight": _RunsCode(marker)}, protocol=2))
    with pytest.raises(CheckpointError, match=r"refers to (posix|os|nt)\.system.*refused"):
        read_checkpoint_arrays(bad)
    assert not marker.exists()
    # A plain function reference (no call) is refused too: only tensors and containers are accepted.
    func = _zip_checkpoint(tmp_path / "func.pt", pickle.dumps({"w": print}, protocol=2))
    with pytest.raises(CheckpointError, match=r"(__builtin__|builtins)\.print.*only tensors and plain containers"):
        read_checkpoint_arrays(func)


def test_truncated_and_foreign_files_give_clear_errors(checkpoint_path: Path, tmp_path: Path):
    data = checkpoint_path.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        build_student_onnx(truncated)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        build_student_onnx(empty)
    with pytest.raises(CheckpointError, match="does not exist"):
        build_student_onnx(tmp_path / "missing.pt")
    # A well-formed file that is not the student (a plain dict of other tensors).
    other = _zip_checkpoint(tmp_path / "other.pt", pickle.dumps({"a": [1, 2]}, protocol=2))
    with pytest.raises(CheckpointError, match="not tensors"):
        build_student_onnx(other)


def test_reader_matches_torch_load(checkpoint_path: Path):
    torch = pytest.importorskip("torch")
    ours = read_checkpoint_arrays(checkpoint_path)
    theirs = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    assert set(ours) == set(theirs)
    for key, tensor in theirs.items():
        np.testing.assert_array_equal(ours[key], tensor.numpy(), err_msg=key)


def test_weights_fetch_without_torch_builds_the_model_and_says_where_files_came_from(official_dir: Path, tmp_path):
    """`sage-ros weights fetch` in a process where `import torch` fails: checked files, then a model."""
    dest = tmp_path / "cache"
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from sage_ros.cli import main\n"
        f"sys.exit(main(['weights', 'fetch', '--mirror', {str(official_dir)!r}, '--dest', {str(dest)!r}]))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "checkpoints.pt  sha256 ecfde477ca4c... verified  (mirror " in out
    assert "torch-free builder" in out
    meta = json.loads((dest / "sage_student.json").read_text())
    assert meta["checkpoint_sha256"].startswith("ecfde477")
    model = onnx.load(dest / "sage_student.onnx")
    assert [i.name for i in model.graph.input] == ["vis_y", "ir"]
    # The student graph is fusion-only: class ids come from the segmentation graph, after fusion.
    assert [o.name for o in model.graph.output] == ["fused_y"] and meta["outputs"] == ["fused_y"]
    assert f"ONNX model: {dest / 'sage_student.onnx'}" in out
