"""Seed ensembles of the segmentation network: the graph averages the members' logits, every CPU runtime
gives PyTorch's class probabilities, the weights round-trip, and `fit_ensemble` trains members that are the same
bits as single-seed runs and reuses them when it is run again."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from sage_ros.networks.seg_net import (  # noqa: E402
    SegEnsemble,
    SegNet,
    SegNetError,
    export_net,
    load_net,
    read_metadata,
    save_net,
)

CLASSES = [{"id": i, "name": n, "color": [0, 0, 0]} for i, n in enumerate(["unlabelled", "car", "person", "bike"])]
WIDTHS = (8, 8, 16, 16)


def _members(count: int) -> list[SegNet]:
    nets = []
    for seed in range(count):
        torch.manual_seed(seed)
        net = SegNet(widths=WIDTHS)
        with torch.no_grad():
            net.classifier.weight.normal_(0.0, 3.0)  # spread the logits so that several classes win
        nets.append(net.eval())
    return nets


def test_forward_is_the_mean_of_the_members_logits():
    members = _members(3)
    ensemble = SegEnsemble(members).eval()
    x = torch.rand(2, 2, 96, 128)
    with torch.inference_mode():
        low = torch.nn.functional.avg_pool2d(x, 4)
        expected = sum(m.forward_low(low) for m in members) / 3
        assert torch.allclose(ensemble.forward_low(low), expected, atol=1e-6)
        assert ensemble(x).shape == (2, 4, 96, 128)
        before = ensemble.forward_low(low)
        ensemble.shift_logits(torch.tensor([1.0, 0.0, -0.5, 0.25]))
        shifted = ensemble.forward_low(low) - before
    assert torch.allclose(shifted.mean(dim=(0, 2, 3)), torch.tensor([1.0, 0.0, -0.5, 0.25]), atol=1e-5)


def test_members_must_share_the_architecture():
    with pytest.raises(ValueError, match="share"):
        SegEnsemble([SegNet(widths=WIDTHS), SegNet(widths=(8, 8, 8, 8))])
    with pytest.raises(ValueError, match="share"):
        SegEnsemble([SegNet(widths=WIDTHS), SegNet(inputs=("fused",), widths=WIDTHS)])
    with pytest.raises(ValueError, match="at least one"):
        SegEnsemble([])


def test_weights_round_trip_and_bad_member_counts_are_refused(tmp_path):
    ensemble = SegEnsemble(_members(2))
    path = save_net(ensemble, tmp_path / "ens.npz", CLASSES)
    meta = read_metadata(path)
    # Stored as its members: one plain network state per file, listed in the one sidecar.
    assert meta["members"] == 2 and meta["member_files"] == ["ens.m0.npz", "ens.m1.npz"]
    assert not path.exists() and all((tmp_path / n).is_file() for n in meta["member_files"])
    again = load_net(path)
    assert isinstance(again, SegEnsemble) and len(again.members) == 2
    for a, b in zip(ensemble.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    single = save_net(SegNet(widths=WIDTHS), tmp_path / "one.npz", CLASSES)
    assert isinstance(load_net(single), SegNet)
    meta = json.loads(path.with_suffix(".json").read_text())
    for bad, message in ((3, "2 member files for 3 members"), (0, "members"), ("2", "members")):
        path.with_suffix(".json").write_text(json.dumps(meta | {"members": bad}))
        with pytest.raises(SegNetError, match=message):
            load_net(path)
    path.with_suffix(".json").write_text(json.dumps(meta))
    (tmp_path / "ens.m1.npz").unlink()
    with pytest.raises(SegNetError, match="ens.m1.npz do not exist"):
        load_net(path)


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_exported_ensemble_gives_torch_class_probabilities(tmp_path, runtime):
    """The graph's `probs` (1, C, H/4, W/4) are the softmax of the members' mean logits at a quarter size."""
    ensemble = SegEnsemble(_members(3)).eval()
    graph = export_net(ensemble, tmp_path / "ens.onnx")
    assert json.loads(graph.with_suffix(".json").read_text())["outputs"] == ["probs"]
    rng = np.random.default_rng(0)
    fused, ir = (rng.random((1, 1, 120, 160), dtype=np.float32) for _ in range(2))
    with torch.inference_mode():
        low = torch.nn.functional.avg_pool2d(torch.from_numpy(np.concatenate([fused, ir], 1)), 4)
        expected = torch.softmax(ensemble.forward_low(low), dim=1).numpy()
    if runtime == "onnxruntime":
        ort = pytest.importorskip("onnxruntime")
        got = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"]).run(
            None, {"fused_y": fused, "ir": ir})[0]
    else:
        ov = pytest.importorskip("openvino")
        compiled = ov.Core().compile_model(str(graph), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        got = compiled({"fused_y": fused, "ir": ir})[compiled.output(0)]
    assert got.dtype == np.float32 and got.shape == expected.shape == (1, 4, 30, 40)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)
    assert np.abs(got - expected).max() < 1e-4
    assert len(np.unique(expected.argmax(1))) >= 2  # several classes win somewhere: the test can tell them apart


def test_init_from_an_ensemble_is_refused(tmp_path, warm_people_frames):
    from sage_ros.training.segmentation.train_net import NetTrainConfig, train_net

    path = save_net(SegEnsemble(_members(2)), tmp_path / "ens.npz", CLASSES)
    with pytest.raises(ValueError, match="ensemble of 2"):
        train_net(warm_people_frames(2, seed=0), NetTrainConfig(widths=WIDTHS, init=str(path)))


def test_fit_ensemble_members_are_single_seed_runs_and_are_reused(tmp_path, warm_people_frames, box_split,
                                                                  monkeypatch):
    """`seg train --seed 0 1` trains what `seg train --seed 0` and `--seed 1` train, averages them, and run
    again finds its members and trains nothing: the command resumes and members may be trained apart."""
    from sage_ros.training.segmentation import train_recipe
    from sage_ros.training.segmentation.train_net import NetTrainConfig
    from sage_ros.training.segmentation.train_recipe import (
        Restart,
        fit_cycles,
        fit_ensemble,
        frame_counts,
        member_path,
        trained_by,
    )

    frames = warm_people_frames(4, seed=2)
    calib = box_split(frames)
    config = NetTrainConfig(steps=6, batch=2, widths=WIDTHS, log_every=0, threads=1, checkpoint_every=0)
    restarts = [Restart(4, 1e-3)]
    ensemble, info = fit_ensemble(config, [0, 1], restarts, frames, calib, tmp_path / "ens", CLASSES)
    assert isinstance(ensemble, SegEnsemble) and len(ensemble.members) == 2
    assert [m["seed"] for m in info["ensemble"]["members"]] == [0, 1] and "seed" not in info["train_config"]
    assert "class_biases" in info and info["parameters"] == 2 * sum(
        p.numel() for p in ensemble.members[0].parameters())

    alone, alone_info = fit_cycles(replace(config, seed=1), restarts, frames, calib, tmp_path / "alone", CLASSES)
    member = load_net(member_path(tmp_path / "ens", 1))
    for a, b in zip(alone.state_dict().values(), member.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    meta = read_metadata(member_path(tmp_path / "ens", 1))
    assert trained_by(meta, replace(config, seed=1), restarts)
    assert not trained_by(meta, replace(config, seed=1), [Restart(5, 1e-3)])
    assert not trained_by(meta, replace(config, seed=1), [Restart(4, 1e-3, gap_lines=1.5)])
    assert not trained_by(meta, replace(config, seed=1), [Restart(4, 1e-3), Restart(2, 1e-3)])
    assert not trained_by(meta, replace(config, seed=0), restarts)
    assert not trained_by(meta, replace(config, seed=1, lr=1e-2), restarts)
    assert trained_by(meta, replace(config, seed=1), restarts, frame_counts(frames))
    assert not trained_by(meta, replace(config, seed=1), restarts, frame_counts(frames[:3]))

    def no_training(*args, **kwargs):
        raise AssertionError("a member trained by this recipe was trained again")

    monkeypatch.setattr(train_recipe, "fit_cycles", no_training)
    again, _ = fit_ensemble(config, [0, 1], restarts, frames, calib, tmp_path / "ens", CLASSES)
    for a, b in zip(ensemble.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_shipped_graph_is_built_from_the_weights_once_and_again_when_they_change(tmp_path):
    """What `weights fetch` / `export` use: the graph of the packaged weights, kept in the models cache."""
    from sage_ros.graphs.seg_graph import weights_sha256
    from sage_ros.model.model_files import ensure_seg_graph

    weights = save_net(SegEnsemble(_members(2)), tmp_path / "w" / "net.npz", CLASSES)
    out = tmp_path / "models" / "net.onnx"
    built = ensure_seg_graph(weights, out)
    assert built == out and json.loads(out.with_suffix(".json").read_text())["weights_sha256"] == weights_sha256(
        weights)
    stamp = out.stat().st_mtime_ns
    assert ensure_seg_graph(weights, out) == out and out.stat().st_mtime_ns == stamp  # current: not rebuilt
    save_net(SegEnsemble(_members(3)[1:]), weights, CLASSES)  # other weights under the same name
    ensure_seg_graph(weights, out)
    assert json.loads(out.with_suffix(".json").read_text())["weights_sha256"] == weights_sha256(weights)
    assert sorted(p.name for p in out.parent.iterdir()) == ["net.json", "net.onnx"]  # no leftovers
