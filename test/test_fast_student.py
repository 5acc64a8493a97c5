"""The fast student (issue 12): cost, export and backend agreement, selection by name, distillation, node.

Everything runs on the files shipped in sage_ros/data (fast_student.npz/.onnx), fed real MSRS pairs from the
`msrs_dir` fixture; the distillation test also distils from the released checkpoint (`checkpoint_path`).
"""

from __future__ import annotations

import argparse
import copy
import csv
import dataclasses
import importlib.util
import json
import os
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the fast student's reference is its PyTorch module")

from sage_ros.backends import BackendConfig, create_backend  # noqa: E402
from sage_ros.model.model_variants import fast_onnx, fast_weights  # noqa: E402
from sage_ros.networks.fast_student import (  # noqa: E402
    SHIPPED_ARCH,
    FastStudent,
    FastWeightsError,
    cost_table,
    load_fast_student,
    read_fast_metadata,
)
from sage_ros.networks.student import SageStudent  # noqa: E402
from sage_ros.paths import sha256_of  # noqa: E402

PAIR = "00828N"  # an MSRS eval pair (night) of the fetched subset


def _pair(msrs: Path, h: int = 120, w: int = 160) -> tuple[np.ndarray, np.ndarray]:
    """(vis_y, ir) as (1,1,H,W) float32: a crop of the real MSRS pair PAIR."""
    ir = cv2.imread(str(msrs / "ir" / f"{PAIR}.png"), cv2.IMREAD_GRAYSCALE)[200 : 200 + h, 160 : 160 + w]
    vis = cv2.imread(str(msrs / "vi" / f"{PAIR}.png"), cv2.IMREAD_COLOR)[200 : 200 + h, 160 : 160 + w]
    y = cv2.cvtColor(vis, cv2.COLOR_BGR2YCrCb)[..., 0]
    return (y[None, None] / 255.0).astype(np.float32), (ir[None, None] / 255.0).astype(np.float32)


def test_fast_student_costs_at_most_30_percent_of_the_released_macs():
    # 320x240 has exactly a quarter of 640x480's conv outputs at every level (both sides divide by 4).
    rows = cost_table({"released": SageStudent(), "fast": FastStudent(SHIPPED_ARCH)}, 240, 320)
    assert rows[0]["params"] == 135_617  # SAGE_SPEC section 2
    assert 4 * rows[0]["gmac"] == pytest.approx(20.0, abs=0.05)
    assert rows[1]["mac_ratio"] <= 0.30, rows


def test_shipped_fast_student_exports_and_matches_torch_on_every_cpu_backend(msrs_dir, tmp_path):
    from sage_ros.training.distill_student import export_fast_onnx

    npz, shipped = fast_weights(), fast_onnx()
    meta = json.loads(shipped.with_suffix(".json").read_text())
    assert meta["weights_sha256"] == sha256_of(npz), "the shipped ONNX was not exported from the shipped weights"
    arch, meta = read_fast_metadata(npz)
    # The trained topology, plus the unsharp gain calibrated on train frames after training.
    assert dataclasses.replace(arch, detail_gain=0.0) == SHIPPED_ARCH
    assert arch.detail_gain == meta["detail_calibration"]["gain"]
    # And the softening below the RGB size calibrated after that: the same in both files, and what the
    # builder gives the fast student on every backend.
    from sage_ros.model.model_variants import small_unsharp_of
    from sage_ros.pipeline import PipelineSettings, build_pipeline

    amount = meta["reduced_scale"]["unsharp"]
    assert amount < 0 and small_unsharp_of(npz) == small_unsharp_of(shipped) == amount
    for name in ("onnxruntime", "torch"):
        pipeline = build_pipeline(PipelineSettings(model="fast", backend=name, threads=1, segmentation=False))
        assert pipeline.student.small_unsharp == amount and not pipeline.student.started
        pipeline.close()
    model = load_fast_student(npz)
    y, ir = _pair(msrs_dir)
    with torch.inference_mode():
        expected = model(torch.from_numpy(y), torch.from_numpy(ir))[0][0, 0].numpy()
    fresh = export_fast_onnx(npz, tmp_path / "fast.onnx")
    backends = ["onnxruntime", "torch"] + (["openvino"] if importlib.util.find_spec("openvino") else [])
    for name in backends:
        for graph in (shipped, fresh):
            backend = create_backend(BackendConfig(name=name, onnx_path=graph, weights_path=npz, threads=1))
            got = backend.infer(y[0, 0], ir[0, 0]).fused_y
            backend.close()
            assert got.shape == expected.shape
            assert np.abs(got - expected).max() < 1e-4, (name, graph.name, np.abs(got - expected).max())
    if "openvino" not in backends:
        pytest.skip("openvino not installed: checked onnxruntime and torch only")


def test_the_detail_stage_is_the_same_in_torch_and_in_the_graph(tmp_path):
    """A fast student with an unsharp gain: its fixed kernel keeps flat areas flat (it sums to 1), torch and the
    torch-free graph agree (reflected borders included), and without a gain the stage is not there at all."""
    import onnxruntime as ort

    from sage_ros.networks.export import export_student
    from sage_ros.networks.fast_student import DETAIL_SIZE, detail_kernel

    kernel = detail_kernel(0.25)
    assert kernel.shape == (DETAIL_SIZE, DETAIL_SIZE) and kernel.sum() == pytest.approx(1.0, abs=1e-6)
    assert kernel[3, 3] > 1.0 and (np.delete(kernel.ravel(), 24) < 0).all()
    assert "detail.weight" not in FastStudent(SHIPPED_ARCH).state_dict()
    torch.manual_seed(0)
    model = FastStudent(dataclasses.replace(SHIPPED_ARCH, detail_gain=0.25)).eval()
    plain = FastStudent(SHIPPED_ARCH).eval()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if k != "detail.weight"})
    y, ir = torch.rand(1, 1, 37, 52), torch.rand(1, 1, 37, 52)
    with torch.inference_mode():
        sharp, soft = model(y, ir)[0], plain(y, ir)[0]
    assert 0.0 < float((sharp - soft).abs().max())
    graph = export_student(model, tmp_path / "detail.onnx")
    got = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"]).run(
        None, {"vis_y": y.numpy(), "ir": ir.numpy()})[0]
    assert np.abs(got - sharp.numpy()).max() < 1e-5


def test_the_detail_gain_matches_the_teachers_spatial_frequency():
    """On frames where the 'student' is a blurred copy of the 'teacher', the calibrated gain gives the student's
    outputs the teacher's mean spatial frequency; a student already as sharp gets no gain."""
    from sage_ros.training.distill_student import _spatial_frequency, calibrate_detail_gain

    class Blur(torch.nn.Module):
        def __init__(self, sigma: float) -> None:
            super().__init__()
            self.sigma = sigma

        def forward(self, y, ir):
            if not self.sigma:
                return y, ()
            blurred = cv2.GaussianBlur(y[0, 0].numpy(), (0, 0), self.sigma, borderType=cv2.BORDER_REFLECT)
            return torch.from_numpy(blurred)[None, None], ()

    rng = np.random.default_rng(0)
    frames = [cv2.GaussianBlur(rng.integers(0, 256, (2, 60, 80), dtype=np.uint8).transpose(1, 2, 0), (0, 0), 1.5)
              .transpose(2, 0, 1).copy() for _ in range(3)]
    gain, info = calibrate_detail_gain(Blur(0.7), Blur(0.0), frames)
    assert gain > 0.05 and info["sf_before"] < 0.95 * info["sf_released"]
    assert info["sf_after"] == pytest.approx(info["sf_released"], rel=0.01)
    assert calibrate_detail_gain(Blur(0.0), Blur(0.7), frames)[0] == 0.0
    assert _spatial_frequency(torch.zeros(1, 1, 5, 5)) == 0.0


def test_fast_weights_that_do_not_fit_are_refused_with_a_clear_error(tmp_path):
    bad = tmp_path / "bad.npz"
    with np.load(fast_weights()) as data:
        arrays = {k: data[k] for k in data.files if k != "module5.0.weight"}
    np.savez(bad, **arrays)
    with pytest.raises(FastWeightsError, match="module5.0.weight"):
        load_fast_student(bad)
    with pytest.raises(FastWeightsError, match="do not exist"):
        load_fast_student(tmp_path / "missing.npz")


def test_model_fast_runs_the_shipped_fusion_graph_unchanged(msrs_dir, tmp_path, monkeypatch):
    from sage_ros.cli._common import add_pipeline_arguments, pipeline_settings
    from sage_ros.pipeline import build_pipeline
    from sage_ros.pipeline.builder import student_config

    monkeypatch.setenv("SAGE_ROS_HOME", str(tmp_path / "home"))
    parser = argparse.ArgumentParser()
    add_pipeline_arguments(parser)
    settings = pipeline_settings(parser.parse_args(["--model", "fast", "--backend", "onnxruntime", "--threads", "1"]),
                                 segmentation=False)
    config = student_config(settings)
    assert config.onnx_path == fast_onnx() and config.weights_path == fast_weights()  # nothing composed or copied
    pipeline = build_pipeline(settings)
    y, ir = _pair(msrs_dir)
    try:
        out = pipeline.student.backend.infer(y[0, 0], ir[0, 0])
    finally:
        pipeline.close()
    assert pipeline.reduced is None and pipeline.segmenter is None  # the fast student runs at every size
    fusion_only = create_backend(BackendConfig(name="onnxruntime", onnx_path=fast_onnx(), threads=1))
    alone = fusion_only.infer(y[0, 0], ir[0, 0]).fused_y
    fusion_only.close()
    assert np.array_equal(out.fused_y, alone)
    assert not (tmp_path / "home" / "models").exists() or not any((tmp_path / "home" / "models").iterdir())


def test_a_file_named_like_a_variant_stays_a_file(tmp_path, monkeypatch):
    from sage_ros.pipeline import PipelineSettings
    from sage_ros.pipeline.builder import student_config

    monkeypatch.chdir(tmp_path)
    (tmp_path / "fast").write_bytes(b"")
    assert student_config(PipelineSettings(model="fast", backend="onnxruntime")).onnx_path == Path("fast")


def test_node_settings_select_the_fast_student(tmp_path, monkeypatch):
    from sage_ros.node.settings import PARAMS, NodeSettings

    monkeypatch.setenv("SAGE_ROS_HOME", str(tmp_path))
    values = {p.name: p.default for p in PARAMS}
    values["registration.homography"] = []
    from sage_ros.pipeline.builder import student_config

    fast = NodeSettings(dict(values, **{"model.variant": "fast", "backend": "onnxruntime"}))
    assert fast.pipeline.model == "fast"
    config = student_config(fast.pipeline)
    assert config.onnx_path == fast_onnx() and config.weights_path == fast_weights()
    assert NodeSettings(values).pipeline.model == "auto"
    # model_path wins over the variant
    with_path = NodeSettings(dict(values, **{"model.variant": "fast", "model_path": "/x/m.onnx"}))
    assert with_path.pipeline.model == "/x/m.onnx"
    with pytest.raises(ValueError, match="model.variant"):
        NodeSettings(dict(values, **{"model.variant": "tiny"}))


# ------------------------------------------------------------------------------------------ training


def _thumbnails(msrs: Path, dest: Path) -> Path:
    """The train pairs that `msrs`/splits.csv lists, each whole frame squashed to 128x128 in `dest`/{ir,vi}: the
    layout and make of msrs_train_128 (MSRS train frames as thumbnails), so the thumbnail batches run too."""
    with open(msrs / "splits.csv") as handle:
        names = [r["name"] for r in csv.DictReader(handle) if r["split"] == "train"]
    assert names, f"no train pair in {msrs / 'splits.csv'}"
    for sub, flag in (("ir", cv2.IMREAD_GRAYSCALE), ("vi", cv2.IMREAD_COLOR)):
        (dest / sub).mkdir(parents=True)
        for name in names:
            image = cv2.imread(str(msrs / sub / f"{name}.png"), flag)
            cv2.imwrite(str(dest / sub / f"{name}.png"), cv2.resize(image, (128, 128), interpolation=cv2.INTER_AREA))
    return dest


def test_short_distillation_lowers_the_loss_and_resumes_exactly(checkpoint_path, msrs_dir, tmp_path):
    from sage_ros.training.distill_student import DistillConfig, Distiller, PairBank, distill_loss

    torch.set_num_threads(1)
    bank = PairBank(msrs_dir, _thumbnails(msrs_dir, tmp_path / "thumbs"), limit=4)
    assert bank.thumbs is not None and len(bank.frames) > 1, bank.names
    # 4 distillation steps, then 4 of scale adaptation (whole frames at two of the ratios).
    cfg = DistillConfig(teacher=str(checkpoint_path), data=str(msrs_dir), steps=4, batch=2, crop=64, thumbs_prob=0.25,
                        scale_steps=4, scales=(1.0, 2.0), reduced_frames=2)

    straight = Distiller(cfg, tmp_path / "a", bank=bank)
    probe = torch.from_numpy(bank.batch(np.random.default_rng(123), 4, 64, False))

    def probe_loss(d: Distiller) -> float:
        student = copy.deepcopy(d.student).train()  # batch statistics; leaves the real running stats alone
        y, ir = probe[:, :1], probe[:, 1:]
        with torch.no_grad():
            ref, ref_taps = d.teacher(y, ir)
            out, taps = student(y, ir)
            return distill_loss(out, taps, ref, ref_taps, y, ir, d.adapters, cfg.source_scale, cfg.fea_weight,
                                cfg.intensity_scale)[0].item()

    before = probe_loss(straight)
    straight.fit(resume=False, checkpoint_every=4, log_every=100)
    assert probe_loss(straight) < 0.8 * before

    # Stop after step 5, inside the scale adaptation (as SIGTERM does), then resume in a new Distiller: same
    # weights as straight through (the scale optimiser's moments are in the checkpoint).
    first = Distiller(cfg, tmp_path / "b", bank=bank)
    step = first.train_step

    def stop_after_five() -> dict:
        row = step()
        if first.step == 4:
            first.request_stop()
        return row

    first.train_step = stop_after_five
    first.fit(resume=False, checkpoint_every=4, log_every=100)
    assert first.step == 5
    assert first.scale_opt.state, "the scale adaptation has not stepped"
    second = Distiller(cfg, tmp_path / "b", bank=bank)
    second.fit(resume=True, checkpoint_every=4, log_every=100)
    assert second.step == 8
    for key, value in straight.student.state_dict().items():
        assert torch.equal(value, second.student.state_dict()[key]), key
    with (tmp_path / "b" / "metrics.csv").open() as handle:
        assert [int(r["step"]) for r in csv.DictReader(handle)] == list(range(1, 9))
    npz, onnx_path, sidecar = second.finish()
    arch = load_fast_student(npz).arch
    assert dataclasses.replace(arch, detail_gain=0.0) == cfg.arch and onnx_path.is_file() and sidecar.is_file()
    calibration = read_fast_metadata(npz)[1]["detail_calibration"]
    assert calibration["frames"] == len(bank.frames) and arch.detail_gain == calibration["gain"] >= 0.0
    # The softening below the RGB size: the amount with the smallest largest metric difference, in both files.
    from sage_ros.model.model_variants import small_unsharp_of
    from sage_ros.training.distill_student import SMALL_UNSHARP_AMOUNTS

    reduced = read_fast_metadata(npz)[1]["reduced_scale"]
    assert reduced["frames"] == 2 and reduced["scale"] == cfg.reduced_scale
    per_amount = reduced["per_amount"]
    assert len(per_amount) == len(SMALL_UNSHARP_AMOUNTS) and all(np.isfinite(v) for v in per_amount.values())
    chosen = per_amount[f"{reduced['unsharp']:+.2f}"]
    assert chosen == min(per_amount.values()) == reduced["largest_difference_pct"]["chosen"]
    assert small_unsharp_of(npz) == small_unsharp_of(onnx_path) == reduced["unsharp"]


def test_small_unsharp_of_files_without_it_is_zero(tmp_path):
    from sage_ros.model.model_variants import small_unsharp_of

    assert small_unsharp_of(None) == small_unsharp_of(tmp_path / "missing.onnx") == 0.0
    model = tmp_path / "user.onnx"
    model.write_bytes(b"not read here")
    assert small_unsharp_of(model) == 0.0  # no sidecar
    model.with_suffix(".json").write_text("{broken")
    assert small_unsharp_of(model) == 0.0
    model.with_suffix(".json").write_text(json.dumps({"distillation": {"reduced_scale": {"unsharp": -0.07}}}))
    assert small_unsharp_of(model) == -0.07
    np.savez(tmp_path / "w.npz", a=np.zeros(2), __meta__=np.array(json.dumps({"reduced_scale": {"unsharp": -0.05}})))
    assert small_unsharp_of(tmp_path / "w.npz") == -0.05
    np.savez(tmp_path / "old.npz", a=np.zeros(2))
    assert small_unsharp_of(tmp_path / "old.npz") == 0.0


# ---------------------------------------------------------------------------------------------- node


def test_node_runs_the_fast_student(msrs_dir, tmp_path, monkeypatch):
    pytest.importorskip("rclpy", reason="rclpy not installed (pip install -e '.[ros]')")
    from harness import NodeProcess, Probe, pick_domain_id

    from sage_ros.pipeline import PipelineSettings, build_pipeline

    monkeypatch.setenv("SAGE_ROS_HOME", str(tmp_path / "home"))  # the node child inherits it
    model = fast_onnx()
    ir = np.ascontiguousarray(cv2.imread(str(msrs_dir / "ir" / f"{PAIR}.png"), cv2.IMREAD_GRAYSCALE)[200:440, 160:480])
    vis = np.ascontiguousarray(cv2.imread(str(msrs_dir / "vi" / f"{PAIR}.png"), cv2.IMREAD_COLOR)[200:440, 160:480])
    pipeline = build_pipeline(PipelineSettings(model="fast", backend="onnxruntime", threads=1, segmentation=False))
    expected = pipeline.fuse(ir, vis)
    pipeline.close()

    domain = pick_domain_id(salt=12)
    params = {"model.variant": "fast", "backend": "onnxruntime", "threads": 1, "qos.reliability": "reliable"}
    with NodeProcess(params, domain, tmp_path / "node.log") as proc, Probe(domain) as probe:
        assert probe.wait_for_node(60.0), proc.log_text()
        for _ in range(3):  # a first pair can be lost while discovery settles: resend
            stamp = time.time_ns()
            probe.publish_array("thermal/image_raw", ir, "mono8", stamp, "thermal")
            probe.publish_array("rgb/image_raw", vis, "bgr8", stamp, "rgb_optical")
            if probe.wait_until(lambda: probe.messages("fused/image_raw"), 20.0):
                break
        assert probe.messages("fused/image_raw"), proc.log_text()
        _, fused = probe.messages("fused/image_raw")[0]
        assert str(model) in proc.log_text()
    got = np.frombuffer(bytes(fused.data), np.uint8).reshape(fused.height, fused.step)[:, : 3 * fused.width]
    assert np.array_equal(got.reshape(fused.height, fused.width, 3), expected.fused_rgb)
    assert os.environ["SAGE_ROS_HOME"] == str(tmp_path / "home")


def test_distillation_refuses_a_gpu_it_does_not_have(checkpoint_path, msrs_dir, tmp_path):
    from sage_ros.training.distill_student import DistillConfig, Distiller
    from sage_ros.training.loop import TrainingError

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present: nothing to refuse")
    with pytest.raises(TrainingError, match="no CUDA GPU"):
        Distiller(DistillConfig(teacher=str(checkpoint_path), data=str(msrs_dir)), tmp_path, device="cuda")


@pytest.mark.parametrize("scales, message", [("1,0.5", "every ratio must be >= 1"), ("1,two", "comma-separated")])
def test_train_fast_refuses_bad_scales(tmp_path, scales, message):
    import argparse

    from sage_ros.training.distill_student import _make, add_arguments
    from sage_ros.training.loop import TrainingError

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--out", str(tmp_path), "--data", str(tmp_path), "--scales", scales])
    with pytest.raises(TrainingError, match=message):
        _make(args)


def test_the_shape_sweep_times_the_shipped_shape_first_and_counts_each_shapes_work():
    """`benchmarks/fast_student.py --shapes`: the shipped shape is the baseline (x1.00, listed first, even when not
    asked for), every asked shape gets its own graph (its multiply-adds, not the shipped one's)."""
    pytest.importorskip("openvino", reason="the sweep times OpenVINO graphs")
    spec = importlib.util.spec_from_file_location(
        "fast_student_bench", Path(__file__).resolve().parents[1] / "benchmarks" / "fast_student.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = bench.shape_speed(["8/2/3", "16/1/3"], "64x48", threads=1, runs=1, warmup=0)
    shipped = f"{SHIPPED_ARCH.width}/{SHIPPED_ARCH.full_res_convs}/{SHIPPED_ARCH.low_res_convs}"
    assert [r["shape"] for r in rows] == [shipped, "8/2/3", "16/1/3"]
    assert rows[0]["speedup"] == 1.0
    expected = {r["shape"]: FastStudent(dataclasses.replace(SHIPPED_ARCH, width=int(r["shape"].split("/")[0]),
                                                            full_res_convs=int(r["shape"].split("/")[1]),
                                                            low_res_convs=int(r["shape"].split("/")[2])))
                for r in rows}
    from sage_ros.networks.fast_student import conv_macs

    for row in rows:
        # The sweep's graphs carry the 7x7 unsharp mask (49 MAC per pixel), as a trained student does.
        assert row["gmac"] * 1e9 == pytest.approx(conv_macs(expected[row["shape"]], 48, 64) + 49 * 48 * 64)
        assert row["ms"] > 0
