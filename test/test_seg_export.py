"""Student + segmentation head exported as one two-output model: every CPU backend, same answers."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sage_ros.backends import BackendConfig, BackendError, create_backend  # noqa: E402
from sage_ros.image.imaging import infrared_to_grey, visible_to_ycrcb  # noqa: E402
from sage_ros.model.classes import load_class_table  # noqa: E402
from sage_ros.model.seg_head import (  # noqa: E402
    HeadWeightsError,
    SegHead,
    StudentWithHead,
    default_head_path,
    export_student_with_head,
    load_head,
    save_head,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CHECKPOINT = SHARED / "sage_official" / "checkpoints.pt"
MSRS = SHARED / "datasets" / "msrs"
PAIR = "00828N"  # an eval night pair with people, bikes and cars


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((np.clip(a, 0, 1) - np.clip(b, 0, 1)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(1.0 / mse)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    if not CHECKPOINT.is_file() or not (MSRS / "ir" / f"{PAIR}.png").is_file():
        pytest.skip(f"shared data absent ({CHECKPOINT} or {MSRS}): cannot test the exported model")
    from sage_ros.model.checkpoint import load_student

    tmp = tmp_path_factory.mktemp("seg_export")
    head_path = default_head_path()
    if not head_path.is_file():
        # Without the shipped head, a seeded random one still exercises every op and backend.
        torch.manual_seed(0)
        head = SegHead()
        with torch.no_grad():
            for param in head.parameters():
                param.normal_(0.0, 0.5)  # default init gives one class everywhere: spread the logits
        head_path = save_head(head.eval(), tmp / "random_head.npz")
    onnx_path = export_student_with_head(CHECKPOINT, head_path, tmp / "student_seg.onnx")
    # A 240x320 crop holding objects keeps every backend call well under a second.
    ir = cv2.imread(str(MSRS / "ir" / f"{PAIR}.png"), cv2.IMREAD_GRAYSCALE)[200:440, 160:480]
    vis = cv2.imread(str(MSRS / "vi" / f"{PAIR}.png"), cv2.IMREAD_COLOR)[200:440, 160:480]
    y, ir_f = visible_to_ycrcb(vis).y, infrared_to_grey(ir)
    student = load_student(CHECKPOINT)
    model = StudentWithHead(student, load_head(head_path)).eval()
    with torch.inference_mode():
        yt, it = torch.from_numpy(y)[None, None], torch.from_numpy(ir_f)[None, None]
        fused, ids = model(yt, it)
        alone = student(yt, it)[0]
    return {
        "onnx": onnx_path, "head": head_path, "y": y, "ir": ir_f,
        "fused": fused[0, 0].numpy(), "ids": ids[0].numpy(), "alone": alone[0, 0].numpy(),
    }


def test_fusion_output_is_exactly_the_released_students(exported):
    assert np.array_equal(exported["fused"], exported["alone"])
    assert exported["ids"].dtype == np.uint8 and exported["ids"].shape == exported["y"].shape


def test_export_writes_two_outputs_and_class_metadata(exported):
    meta = json.loads(exported["onnx"].with_suffix(".json").read_text())
    assert meta["outputs"] == ["fused_y", "class_ids"]
    table = load_class_table(exported["onnx"])
    assert table.names[:4] == ("unlabelled", "car", "person", "bike")
    import onnx

    ops = {n.op_type for n in onnx.load(str(exported["onnx"])).graph.node}
    assert {"ArgMax", "Cast"} <= ops and "BatchNormalization" not in ops


@pytest.mark.parametrize("name", ["onnxruntime", "openvino", "torch"])
def test_every_cpu_backend_gives_the_same_ids_and_fused_y(exported, name):
    config = BackendConfig(name=name, onnx_path=exported["onnx"], weights_path=CHECKPOINT, threads=1)
    config.extra["head_path"] = str(exported["head"])
    try:
        backend = create_backend(config)
    except BackendError as exc:
        pytest.skip(f"{name} backend unavailable here: {exc}")
    try:
        assert backend.has_segmentation
        out = backend.infer(exported["y"], exported["ir"])
    finally:
        backend.close()
    assert _psnr(out.fused_y, exported["fused"]) >= 60.0
    assert out.class_ids is not None and out.class_ids.dtype == np.uint8
    assert np.array_equal(out.class_ids, exported["ids"])
    assert len(np.unique(out.class_ids)) >= 2  # a test of ids that are all 0 would prove nothing


def test_odd_sizes_run_and_keep_the_input_size(exported):
    backend = create_backend(BackendConfig(name="onnxruntime", onnx_path=exported["onnx"], threads=1))
    out = backend.infer(exported["y"][:101, :77], exported["ir"][:101, :77])
    assert out.fused_y.shape == (101, 77) and out.class_ids.shape == (101, 77)


def test_bad_head_files_give_clear_errors(tmp_path):
    with pytest.raises(HeadWeightsError, match="do not exist"):
        load_head(tmp_path / "none.npz")
    path = save_head(SegHead(num_classes=4), tmp_path / "h.npz")
    meta = json.loads(path.with_suffix(".json").read_text())
    meta["num_classes"] = 9
    path.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(HeadWeightsError, match="shape"):
        load_head(path)
    path.with_suffix(".json").unlink()
    with pytest.raises(HeadWeightsError, match="metadata"):
        load_head(path)
