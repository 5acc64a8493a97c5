"""The segmentation network: its graph (class probabilities at a quarter size), the same probabilities and
class ids in every CPU runtime as in PyTorch, a short training run, fuse --masks."""

from __future__ import annotations

import csv
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from sage_ros.image.imaging import infrared_to_grey, visible_to_ycrcb  # noqa: E402
from sage_ros.networks.seg_net import (  # noqa: E402
    SegNet,
    SegNetError,
    default_net_path,
    export_net,
    load_net,
    read_metadata,
    save_net,
)
from sage_ros.pipeline.segmentation import (  # noqa: E402
    Segmenter,
    ids_from_probabilities,
    resize_plane,
    working_size,
)

CLASSES = [{"id": i, "name": n, "color": [0, 0, 0]} for i, n in enumerate(["unlabelled", "car", "person", "bike"])]


def _pairs_with_people_and_cars(msrs: Path) -> list[str]:
    """An eval night pair and an eval day pair whose boxes hold people and cars, from the data's own files."""
    with (msrs / "splits.csv").open(newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["split"] == "eval"]
    chosen = []
    for light in ("night", "day"):
        for row in rows:
            box_file = msrs / "boxes" / "fusion" / f"{row['name']}.txt"
            lines = box_file.read_text().splitlines() if box_file.is_file() else []
            if row["light"] == light and {"0", "2"} <= {line.split()[0] for line in lines if line.strip()}:
                chosen.append(row["name"])  # YOLO class ids: 0 person, 2 car
                break
    assert len(chosen) == 2, f"no eval night and day pairs with people and cars in {msrs}"
    return chosen


def _net_weights(tmp: Path) -> Path:
    """The shipped network; without it a seeded random one still exercises every op and backend."""
    from sage_ros.graphs.seg_graph import weights_present

    if weights_present(default_net_path()):
        return default_net_path()
    torch.manual_seed(0)
    net = SegNet()
    with torch.no_grad():
        # Default init gives one class almost everywhere: spread the logits, then centre each class's
        # logit on a textured input so that several classes win somewhere.
        net.classifier.weight.normal_(0.0, 3.0)
        x = torch.rand(1, len(net.inputs), 120, 160)
        net.classifier.bias -= net.eval()(x).mean(dim=(0, 2, 3))
    return save_net(net.eval(), tmp / "random_net.npz", CLASSES)


@pytest.fixture(scope="module")
def net_files(tmp_path_factory, checkpoint_path: Path, msrs_dir: Path):
    """The network's graph, the released student's fusion graph, and real crops with PyTorch's class probabilities
    for them, computed as the segmentation stage makes them: visible Y and IR resized to the working size, the
    released student's fusion at a quarter of it, the network on that grid."""
    pairs = _pairs_with_people_and_cars(msrs_dir)
    from sage_ros.image.tone_range import ToneRange, into_tone_range
    from sage_ros.model.model_files import export_checkpoint
    from sage_ros.networks.checkpoint import load_student
    from sage_ros.pipeline.fusion import resize_area

    tmp = tmp_path_factory.mktemp("seg_net")
    weights = _net_weights(tmp)
    net = load_net(weights)
    seg_onnx = export_net(net, tmp / "seg.onnx", read_metadata(weights))
    model = export_checkpoint(checkpoint_path, tmp / "student.onnx")
    # A 240x320 crop of each pair keeps every runtime call short.
    crops = []
    student = load_student(checkpoint_path)
    tone = read_metadata(weights).get("input_tone") or {}
    for pair in pairs:
        ir = cv2.imread(str(msrs_dir / "ir" / f"{pair}.png"), cv2.IMREAD_GRAYSCALE)[200:440, 160:480]
        vis = cv2.imread(str(msrs_dir / "vi" / f"{pair}.png"), cv2.IMREAD_COLOR)[200:440, 160:480]
        y, ir_f = visible_to_ycrcb(vis).y, infrared_to_grey(ir)
        hw = working_size(y.shape)
        low = (hw[0] // 4, hw[1] // 4)
        working = {"visible": resize_plane(y, hw), "infrared": resize_plane(ir_f, hw)}
        for kind, name in (("visible", "vis_y"), ("infrared", "ir")):  # the training frames' tone range, if given
            if name in tone:
                working[kind] = into_tone_range(working[kind], ToneRange.from_json(tone[name]))
        with torch.inference_mode():
            quarter = {k: torch.from_numpy(resize_area(v, low))[None, None] for k, v in working.items()}
            quarter["fused"] = torch.clamp(student(quarter["visible"], quarter["infrared"])[0], 0, 1)
            image = torch.cat([quarter[k] for k in net.inputs], dim=1)
            probs = torch.softmax(net.forward_low(image), dim=1)[0].numpy()
        crops.append({"y": y, "ir": ir_f, "probs": probs})
    return {"model": model, "seg": seg_onnx, "crops": crops, "net": net, "weights": weights, "pairs": pairs,
            "msrs": msrs_dir, "checkpoint": checkpoint_path}


def test_standalone_graph_follows_the_contract(net_files):
    seg = onnx.load(str(net_files["seg"]))
    names = [i.name for i in seg.graph.input]
    assert names[0] == "fused_y" and set(names) <= {"fused_y", "ir", "vis_y"}
    assert [o.name for o in seg.graph.output] == ["probs"]
    assert seg.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert max(o.version for o in seg.opset_import if o.domain in ("", "ai.onnx")) == 17
    ops = {n.op_type for n in seg.graph.node}
    assert {"AveragePool", "Softmax", "Resize"} <= ops and not ops & {"BatchNormalization", "ArgMax"}
    meta = json.loads(net_files["seg"].with_suffix(".json").read_text())
    assert meta["outputs"] == ["probs"] and meta["inputs"] == names
    assert meta["classes"][2]["name"] == "person" and len(meta["sha256"]) == 64


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_every_cpu_runtime_gives_the_torch_class_probabilities(net_files, runtime):
    # Skipped only where the runtime is not installed: a graph that fails to load is a failure.
    if importlib.util.find_spec(runtime) is None:
        pytest.skip(f"{runtime} is not installed")
    segmenter = Segmenter(net_files["seg"], net_files["model"], runtime=runtime, threads=1, min_confidence=0.0,
                          min_object_confidence=0.0)
    try:
        outs = [(segmenter.probabilities(c["y"], c["ir"]), segmenter(c["y"], c["ir"])) for c in net_files["crops"]]
    finally:
        segmenter.close()
    assert segmenter.runtime.startswith(runtime)
    for (probs, ids), crop in zip(outs, net_files["crops"], strict=True):
        assert probs.shape == crop["probs"].shape and np.abs(probs - crop["probs"]).max() < 1e-4
        want = ids_from_probabilities(crop["probs"], crop["y"].shape)
        assert ids.dtype == np.uint8 and ids.shape == crop["y"].shape
        # Only a float rounding at a near-tie may flip a pixel.
        assert np.mean(ids == want) > 0.9999
    assert len(np.unique(np.concatenate([c["probs"].argmax(0).ravel() for c in net_files["crops"]]))) >= 2


def test_odd_sizes_keep_the_input_size(net_files):
    segmenter = Segmenter(net_files["seg"], net_files["model"], runtime="onnxruntime", threads=1)
    crop = net_files["crops"][0]
    ids = segmenter(crop["y"][:101, :77], crop["ir"][:101, :77])
    assert ids.shape == (101, 77) and ids.dtype == np.uint8


def test_bad_weights_files_give_clear_errors(tmp_path):
    with pytest.raises(SegNetError, match="do not exist"):
        load_net(tmp_path / "none.npz")
    path = save_net(SegNet(), tmp_path / "n.npz", CLASSES)
    meta = json.loads(path.with_suffix(".json").read_text())
    meta["widths"] = [8, 8, 8, 8]
    path.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(SegNetError, match="shape"):
        load_net(path)
    path.with_suffix(".json").unlink()
    with pytest.raises(SegNetError, match="metadata"):
        load_net(path)


def test_a_short_training_run_lowers_the_loss(warm_people_frames):
    from sage_ros.training.segmentation.train_net import NetTrainConfig, train_net

    frames = warm_people_frames(8, seed=0)
    config = NetTrainConfig(steps=40, batch=4, widths=(8, 8, 16, 16), lr=1e-2, log_every=0, threads=1)
    net, losses = train_net(frames, config)
    assert np.mean(losses[-8:]) < 0.7 * np.mean(losses[:4])
    # Same seed, same thread count: the same weights bit for bit (what makes the shipped file rebuildable).
    again, _ = train_net(frames, NetTrainConfig(**{**config.__dict__, "steps": 5}))
    once_more, _ = train_net(frames, NetTrainConfig(**{**config.__dict__, "steps": 5}))
    for a, b in zip(again.state_dict().values(), once_more.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(net.classifier.weight, again.classifier.weight)
    # bf16 autocast (the shipped recipe on AMX / AVX-512 BF16 CPUs): the loss falls as well, and the
    # network comes back float32 in the standard layout, so export and .npz saving see plain tensors.
    fast, fast_losses = train_net(frames, NetTrainConfig(**{**config.__dict__, "precision": "bf16"}))
    assert np.mean(fast_losses[-8:]) < 0.7 * np.mean(fast_losses[:4])
    assert all(p.dtype == torch.float32 and p.is_contiguous() for p in fast.parameters())
    with pytest.raises(ValueError, match="precision"):
        train_net(frames, NetTrainConfig(**{**config.__dict__, "precision": "fp16"}))


def test_the_two_cycle_recipe_equals_its_two_commands(tmp_path, warm_people_frames, box_split):
    """`seg train` runs the shipped recipe (a first cycle, then a warm restart) in one call; the result must
    be the weights the two documented commands give (first cycle saved, second started with --init)."""
    from dataclasses import replace

    from sage_ros.training.segmentation.train_net import NetTrainConfig
    from sage_ros.training.segmentation.train_recipe import Restart, fit, fit_cycles

    frames = warm_people_frames(4, seed=1)
    calib = box_split(frames)
    config = NetTrainConfig(steps=6, batch=2, widths=(8, 8, 8, 8), log_every=0, threads=1, checkpoint_every=0)
    one_call, info = fit_cycles(config, [Restart(4, 1e-3)], frames, calib, tmp_path / "one", CLASSES)
    assert len(info["training_cycles"]) == 2 and info["train_config"]["steps"] == 4

    first, first_info = fit(config, frames, calib, tmp_path / "two")
    save_net(first, tmp_path / "cycle1.npz", CLASSES, first_info)
    two_commands, _ = fit(replace(config, steps=4, lr=1e-3, init=str(tmp_path / "cycle1.npz")), frames, calib,
                          tmp_path / "two")
    for a, b in zip(one_call.state_dict().values(), two_commands.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(one_call.classifier.weight, first.classifier.weight)


def test_three_cycles_equal_their_commands_and_resume_at_a_cycle_boundary(tmp_path, warm_people_frames, box_split,
                                                                          monkeypatch):
    """The recipe's fine-tuning cycle (gap lines) is `seg train --init cycle2.npz --gap-lines G` after the two
    cycles; a work dir that already holds cycle 2 of this recipe trains only the third cycle, to the same bits."""
    from dataclasses import replace

    from sage_ros.training.segmentation import train_recipe
    from sage_ros.training.segmentation.train_net import NetTrainConfig
    from sage_ros.training.segmentation.train_recipe import Restart, fit, fit_cycles

    frames = warm_people_frames(4, seed=3)
    calib = box_split(frames)
    config = NetTrainConfig(steps=6, batch=2, widths=(8, 8, 8, 8), log_every=0, threads=1, checkpoint_every=0)
    restarts = [Restart(4, 1e-3), Restart(3, 5e-4, gap_lines=1.5)]
    one_call, info = fit_cycles(config, restarts, frames, calib, tmp_path / "one", CLASSES)
    cycles = info["training_cycles"]
    assert [(c["steps"], c["gap_lines"]) for c in cycles] == [(6, 0.0), (4, 0.0), (3, 1.5)]
    assert all("weights_sha256" in c for c in cycles[:2]) and info["train_config"]["gap_lines"] == 1.5

    first, first_info = fit(config, frames, calib, tmp_path / "cmds")
    save_net(first, tmp_path / "c1.npz", CLASSES, first_info)
    second, second_info = fit(replace(config, steps=4, lr=1e-3, init=str(tmp_path / "c1.npz")), frames, calib,
                              tmp_path / "cmds")
    save_net(second, tmp_path / "c2.npz", CLASSES, second_info)
    third, _ = fit(replace(config, steps=3, lr=5e-4, init=str(tmp_path / "c2.npz"), gap_lines=1.5), frames, calib,
                   tmp_path / "cmds")
    for a, b in zip(one_call.state_dict().values(), third.state_dict().values(), strict=True):
        assert torch.equal(a, b)

    # Resume: cycle2.npz of this recipe is reused (fit runs once, for the third cycle), same result.
    resume = tmp_path / "resume"
    resume.mkdir()
    for suffix in (".npz", ".json"):
        (resume / f"cycle2{suffix}").write_bytes((tmp_path / "one" / f"cycle2{suffix}").read_bytes())
    calls = []
    real_fit = train_recipe.fit

    def counting_fit(cfg, *args, **kwargs):
        calls.append(cfg.steps)
        return real_fit(cfg, *args, **kwargs)

    monkeypatch.setattr(train_recipe, "fit", counting_fit)
    resumed, resumed_info = fit_cycles(config, restarts, frames, calib, resume, CLASSES)
    assert calls == [3]
    assert [c["steps"] for c in resumed_info["training_cycles"]] == [6, 4, 3]
    for a, b in zip(one_call.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    # A cycle 2 of another recipe is not reused.
    calls.clear()
    fit_cycles(config, [Restart(5, 1e-3), restarts[1]], frames, calib, resume, CLASSES)
    assert calls == [6, 5, 3]


def test_seg_train_defaults_are_the_shipped_networks_recipe():
    """The documented rebuild is `train seg --seed 0 1 2 3 4`: every other setting must come from the
    defaults, so the defaults must equal what the shipped sidecar records for the ensemble and for every
    training cycle of each member."""
    from dataclasses import asdict, replace

    from sage_ros.cli import build_parser
    from sage_ros.cli.seg import _config
    from sage_ros.training.segmentation.recipe import SHIPPED_SEEDS
    from sage_ros.training.segmentation.train_net import config_json
    from sage_ros.training.segmentation.train_recipe import recipe_restarts

    meta = read_metadata(default_net_path())
    args = build_parser().parse_args(["train", "seg", "--out", "x.npz"])
    ensemble = meta["ensemble"]
    assert tuple(ensemble["seeds"]) == SHIPPED_SEEDS and meta["members"] == len(SHIPPED_SEEDS)
    restarts = recipe_restarts(args.restart_steps, args.restart_lr, args.finetune_steps, args.finetune_lr,
                               args.finetune_gap_lines)
    assert ensemble["restarts"] == [asdict(r) for r in restarts] and len(restarts) == 2
    expected = config_json(replace(_config(args, tuple(meta["input_kinds"])), num_classes=meta["num_classes"]))
    expected.pop("seed")
    assert meta["train_config"] == expected
    for member in ensemble["members"]:
        first, *later = member["training_cycles"]
        assert (first["steps"], first["lr"], first["seed"], first.get("gap_lines", 0.0)) == (
            args.steps, args.lr, member["seed"], args.gap_lines)
        assert [(c["steps"], c["lr"], c["seed"], c.get("gap_lines", 0.0)) for c in later] == [
            (r.steps, r.lr, member["seed"], r.gap_lines) for r in restarts]


def test_fuse_masks_writes_one_mask_per_pair(net_files, tmp_path):
    ir_dir, vis_dir = tmp_path / "ir", tmp_path / "vi"
    ir_dir.mkdir()
    vis_dir.mkdir()
    pairs, msrs = net_files["pairs"], net_files["msrs"]
    for pair in pairs:
        # Half-size copies keep the run short; names and formats as a user's folder would have them.
        ir = cv2.imread(str(msrs / "ir" / f"{pair}.png"), cv2.IMREAD_GRAYSCALE)
        vis = cv2.imread(str(msrs / "vi" / f"{pair}.png"), cv2.IMREAD_COLOR)
        cv2.imwrite(str(ir_dir / f"{pair}.png"), cv2.resize(ir, (320, 240), interpolation=cv2.INTER_AREA))
        cv2.imwrite(str(vis_dir / f"{pair}.png"), cv2.resize(vis, (320, 240), interpolation=cv2.INTER_AREA))
    cmd = [sys.executable, "-m", "sage_ros", "fuse", "--ir", str(ir_dir), "--vis", str(vis_dir),
           "--out", str(tmp_path / "fused"), "--masks", str(tmp_path / "masks"), "--overlays",
           str(tmp_path / "overlays"), "--model", str(net_files["model"]), "--backend", "onnxruntime",
           "--threads", "1"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    masks = sorted((tmp_path / "masks").glob("*.png"))
    assert [m.stem for m in masks] == sorted(pairs)
    for m in masks:
        ids = cv2.imread(str(m), cv2.IMREAD_UNCHANGED)
        assert ids.dtype == np.uint8 and ids.shape == (240, 320) and ids.max() <= 3
        overlay = cv2.imread(str(tmp_path / "overlays" / m.name), cv2.IMREAD_COLOR)
        assert overlay.shape == (240, 320, 3)


def test_pixel_labels_train_without_boxes():
    """FMB/MSRS pixel labels: the label itself is the target (moved with the image), any class count."""
    from sage_ros.training.segmentation.data import LowFrame
    from sage_ros.training.segmentation.train_net import NetTrainConfig, _augment, train_net

    rng = np.random.default_rng(1)
    label = np.zeros((120, 160), np.uint8)
    label[40:80, 20:60] = 4
    label[0:10, :] = 255  # unknown
    image = {"fused": rng.random((120, 160), dtype=np.float32)}
    frame = LowFrame("x", "day", "msrs", image, np.zeros((0, 5), np.float32), label)
    config = NetTrainConfig(inputs=("fused",), num_classes=5, steps=3, batch=2, widths=(8, 8, 8, 8),
                            log_every=0, zoom=(1.0, 1.0))
    _, target, _ = _augment(frame, config, np.random.default_rng(0))
    assert set(np.unique(target)) == {0, 4, 255} and (target == 4).sum() == (label == 4).sum()
    _, losses = train_net([frame], config)
    assert len(losses) == 3 and all(np.isfinite(losses))


def _appearance_frame():
    from sage_ros.training.segmentation.data import LOW_HW, LowFrame

    rng = np.random.default_rng(1)
    h, w = LOW_HW
    inputs = {"fused": rng.random((h, w), np.float32), "infrared": rng.random((h, w), np.float32) * 0.5}
    return LowFrame("f", "day", "msrs", inputs, np.array([[2, 0.2, 0.3, 0.35, 0.8]], np.float32))


def test_appearance_augmentation_changes_the_image_only_and_stays_in_range():
    """`train seg --ir-tone/--ir-degrade/--fused-tone`: other cameras' looks on the IR and the fused Y."""
    from sage_ros.training.segmentation.train_net import NetTrainConfig, _augment

    frame = _appearance_frame()
    plain = _augment(frame, NetTrainConfig(), np.random.default_rng(7))
    config = NetTrainConfig(ir_tone=1.0, ir_equalize=1.0, ir_degrade=1.0, fused_tone=1.0)
    changed = _augment(frame, config, np.random.default_rng(7))
    assert changed[0].shape == plain[0].shape and changed[0].dtype == np.float32
    assert 0.0 <= changed[0].min() and changed[0].max() <= 1.0
    assert not np.allclose(changed[0][1], plain[0][1])  # the IR got another camera's look
    assert not np.allclose(changed[0][0], plain[0][0])  # and the fused Y its own milder curve
    np.testing.assert_array_equal(changed[1], plain[1])  # the same zoom and flip: the same target


def test_without_appearance_the_recipe_is_unchanged():
    from sage_ros.training.segmentation.train_net import NetTrainConfig, _augment, config_json

    frame = _appearance_frame()
    a = _augment(frame, NetTrainConfig(), np.random.default_rng(3))
    b = _augment(frame, NetTrainConfig(ir_gamma=(0.5, 2.0), ir_equalize=0.9), np.random.default_rng(3))
    np.testing.assert_array_equal(a[0], b[0])  # no extra random draws while the shares are 0
    recorded = config_json(NetTrainConfig())
    assert "ir_tone" not in recorded and "fused_tone" not in recorded  # sidecars record what they did before
    assert config_json(NetTrainConfig(ir_tone=0.8))["ir_tone"] == 0.8


def test_train_seg_takes_the_appearance_options():
    """The appearance augmentation is reached from the one training command, e.g. a fine-tuning cycle from a
    member's weights (--init) with the measured settings."""
    from sage_ros.cli import build_parser
    from sage_ros.cli.seg import _config
    from sage_ros.training.segmentation.train_net import NetTrainConfig

    argv = ["train", "seg", "--out", "x.npz", "--init", "m.npz", "--ir-tone", "0.8", "--fused-tone", "0.5",
            "--ir-degrade", "0.3", "--ir-gamma", "0.5", "2", "--ir-equalize", "0.1", "--zoom", "0.5", "2"]
    config = _config(build_parser().parse_args(argv), ("fused", "infrared"))
    assert (config.ir_tone, config.fused_tone, config.ir_degrade, config.ir_equalize) == (0.8, 0.5, 0.3, 0.1)
    assert config.ir_gamma == (0.5, 2.0) and config.zoom == (0.5, 2.0)
    # Without them: the library's defaults, i.e. the shipped recipe's augmentation.
    plain = _config(build_parser().parse_args(["train", "seg", "--out", "x.npz"]), ("fused", "infrared"))
    defaults = NetTrainConfig()
    assert (plain.zoom, plain.ir_tone, plain.ir_gamma, plain.ir_equalize, plain.ir_degrade, plain.fused_tone) == (
        defaults.zoom, defaults.ir_tone, defaults.ir_gamma, defaults.ir_equalize, defaults.ir_degrade,
        defaults.fused_tone)
