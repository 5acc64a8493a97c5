"""sage-ros eval-bag end to end: round trip on the official pairs, bad bags, segmentation ground truth.

Uses the released student exported to ONNX and the six sample pairs, fetched like `sage-ros weights fetch`
does (the `official_dir` fixture; skipped only when they cannot be fetched).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from sage_ros.bags.messages import deserialize, image_message, stamp_of
from sage_ros.bags.reader import open_bag
from sage_ros.bags.writer import BagWriter
from sage_ros.cli import main as cli_main
from sage_ros.evaluation.metrics import FUSION_METRICS
from sage_ros.image.encodings import decode_msg
from sage_ros.paths import official_dir

# Where the `official_dir` fixture fetches the released files (the models cache). Every test here reaches
# it through the `models` fixture, so the files are there before `_crops` reads them. (test_node_faults_evalbag
# imports this name.)
OFFICIAL = official_dir()
NAMES = [f"{i:05d}" for i in range(6)]
T0 = 1_700_000_000 * 10**9


@pytest.fixture(scope="module")
def models(tmp_path_factory, checkpoint_path: Path):
    """The released student exported to a fusion graph (class ids come from the segmentation stage after it)."""
    assert checkpoint_path == OFFICIAL / "checkpoints.pt"  # what `_crops` and the tests below read
    from sage_ros.model.model_files import export_checkpoint

    folder = tmp_path_factory.mktemp("models")
    return {"plain": export_checkpoint(checkpoint_path, folder / "student.onnx")}


def _pipeline(onnx: Path):
    from sage_ros.backends import BackendConfig, create_backend
    from sage_ros.pipeline import FusionPipeline

    return FusionPipeline(create_backend(BackendConfig(name="onnxruntime", onnx_path=onnx)))


def _crops(size=(96, 128), count=6):
    """Real content at small size: the centre of each official pair."""
    h, w = size
    out = []
    for name in NAMES[:count]:
        ir = cv2.imread(str(OFFICIAL / "Ir" / f"{name}.png"), cv2.IMREAD_GRAYSCALE)
        vis = cv2.imread(str(OFFICIAL / "Vis" / f"{name}.png"))
        y, x = (ir.shape[0] - h) // 2, (ir.shape[1] - w) // 2
        out.append((ir[y : y + h, x : x + w].copy(), vis[y : y + h, x : x + w].copy()))
    return out


def _eval(bag: Path, out: Path, model: Path, *extra: str) -> int:
    args = ["eval-bag", str(bag), "--out", str(out), "--model", str(model), "--backend", "onnxruntime"]
    return cli_main([*args, *extra])


# ---------------------------------------------------------------- round trip on the six official pairs


@pytest.fixture(scope="module")
def fuse_reference(models, tmp_path_factory):
    """`sage-ros fuse` on the six pairs: the images eval-bag must reproduce exactly."""
    out = tmp_path_factory.mktemp("fuse_out")
    code = cli_main(
        [
            "fuse",
            "--ir",
            str(OFFICIAL / "Ir"),
            "--vis",
            str(OFFICIAL / "Vis"),
            "--out",
            str(out),
            "--model",
            str(models["plain"]),
            "--backend",
            "onnxruntime",
        ]
    )
    assert code == 0
    return {n: cv2.cvtColor(cv2.imread(str(out / f"{n}.png")), cv2.COLOR_BGR2RGB) for n in NAMES}


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_round_trip_matches_sage_ros_fuse(models, fuse_reference, tmp_path, storage, capsys):
    bag = tmp_path / "in_bag"
    assert (
        cli_main(
            [
                "make-bag",
                str(OFFICIAL),
                "--out",
                str(bag),
                "--storage",
                storage,
                "--jitter-ms",
                "5",
                "--thermal-offset-ms",
                "20",
                "--rgb-encoding",
                "rgb8" if storage == "sqlite3" else "bgr8",
            ]
        )
        == 0
    )
    out = tmp_path / "eval"
    # Metrics cost ~4 s of CPU per 1024x768 pair: they are checked on small crops below, and
    # test_metrics checks the reference outputs at full size.
    assert _eval(bag, out, models["plain"], "--no-metrics") == 0
    printed = capsys.readouterr().out
    for name in ("report.json", "report.md", "latency.png", "fused_bag"):
        assert str(out / name) in printed
    report = json.loads((out / "report.json").read_text())
    assert report["pairing"]["evaluated_pairs"] == 6 and report["problems"]["total"] == 0
    assert report["pairing"]["sync"]["pairs"] == 6 and report["pairing"]["sync"]["unpaired"] == 0

    source = open_bag(out / "fused_bag")
    assert source.storage == storage
    fused = [deserialize(m.raw, m.msgtype) for m in source.messages(["/fused/image_raw"])]
    rgb = [deserialize(m.raw, m.msgtype) for m in source.messages(["/rgb/image_raw"])]
    assert len(fused) == 6 and len(rgb) == 6
    for name, f_msg, rgb_msg in zip(NAMES, fused, rgb, strict=True):
        assert f_msg.encoding == "rgb8"
        assert stamp_of(f_msg) == stamp_of(rgb_msg) and f_msg.header.frame_id == rgb_msg.header.frame_id
        assert np.array_equal(decode_msg(f_msg), fuse_reference[name]), name
    # Inputs are carried over byte for byte.
    original = {
        m.log_time_ns: m.raw for m in open_bag(bag).messages(["/thermal/image_raw", "/rgb/image_raw"])
    }
    copied = {m.log_time_ns: m.raw for m in source.messages(["/thermal/image_raw", "/rgb/image_raw"])}
    assert copied == original
    source.close()


# ---------------------------------------------------------------- bad bags


def _raw_image_msg(image: np.ndarray, encoding: str, stamp: int, frame: str):
    return image_message(image, encoding, stamp, frame)


def test_bad_messages_are_counted_and_good_pairs_evaluated(models, tmp_path, capsys):
    crops = _crops()
    bag = tmp_path / "bad_bag"
    with BagWriter(bag, storage="mcap") as w:
        for i, (ir, vis) in enumerate(crops):
            t = T0 + i * 100_000_000
            thermal = _raw_image_msg(ir, "mono8", t + 10_000_000, "thermal")
            if i == 1:
                thermal.encoding = "bayer_rggb8"  # not a thermal encoding anyone decodes
            if i == 2:
                thermal = _raw_image_msg(ir[:80], "mono8", t + 10_000_000, "thermal")  # 128x80 vs 128x96
            if i == 5:
                thermal = _raw_image_msg(
                    1000 + 50 * ir.astype(np.uint16), "mono16", t + 10_000_000, "thermal"
                )
            w.write("/thermal/image_raw", t + 10_000_000, thermal)
            if i == 3:
                w.write_raw("/rgb/image_raw", t, b"\x00\x01\x00\x00garbage", "sensor_msgs/msg/Image")
            else:
                w.write("/rgb/image_raw", t, _raw_image_msg(vis, "bgr8", t, "rgb"))
    out = tmp_path / "eval"
    assert _eval(bag, out, models["plain"]) == 1  # evaluated, with problems
    assert "problems (3): decode: 1, deserialize: 1, size-mismatch: 1" in capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    details = " ".join(d["detail"] for d in report["problems"]["details"])
    assert "unsupported image encoding 'bayer_rggb8'" in details
    assert "thermal 128x80 and RGB 128x96 differ in size" in details
    assert report["pairing"]["evaluated_pairs"] == 3  # frames 0, 4 and 5 (mono16 through the normaliser)
    assert report["problems"]["counts"] == {"decode": 1, "deserialize": 1, "size-mismatch": 1}
    # The thermal frame whose RGB partner was unreadable is never paired: flushed at the end.
    assert report["pairing"]["sync"]["flushed"] == [1, 0]
    assert report["pairing"]["sync"]["pairs"] == 5
    md = (out / "report.md").read_text()
    assert "| size-mismatch | 1 |" in md
    fused = list(open_bag(out / "fused_bag").messages(["/fused/image_raw"]))
    assert len(fused) == 3
    # Metrics and baselines on the evaluated pairs, in the report and its plots.
    assert set(report["mean"]) == {"SAGE", "average", "max", "visible"}
    assert set(report["mean"]["SAGE"]) == set(FUSION_METRICS)
    assert all(set(p["metrics"]) == set(report["mean"]) for p in report["pairs"])
    # What SAGE adds over the plain average on the edge and information-fidelity metrics.
    assert report["mean"]["SAGE"]["Qabf"] > report["mean"]["average"]["Qabf"]
    assert report["mean"]["SAGE"]["VIF"] > report["mean"]["average"]["VIF"]
    for plot in ("metrics.png", "latency.png", "contact_sheet.png"):
        assert (out / plot).stat().st_size > 1000
    assert "| SAGE |" in md and "![contact_sheet](contact_sheet.png)" in md


def test_missing_topic_is_a_clear_error(models, tmp_path, capsys):
    bag = tmp_path / "bag"
    ir, vis = _crops(count=1)[0]
    with BagWriter(bag, storage="sqlite3") as w:
        w.write("/thermal/image_raw", T0, _raw_image_msg(ir, "mono8", T0, "thermal"))
        w.write("/rgb/image_raw", T0, _raw_image_msg(vis, "bgr8", T0, "rgb"))
    assert _eval(bag, tmp_path / "eval", models["plain"], "--rgb-topic", "/camera/color/image_raw") == 2
    err = capsys.readouterr().err
    assert "/camera/color/image_raw not in the bag" in err and "/rgb/image_raw (sensor_msgs/msg/Image)" in err


def test_truncated_bag_still_evaluates_complete_pairs(models, tmp_path):
    # 240x320 frames: the MCAP holds several chunks, so a cut loses only the tail.
    crops = _crops(size=(240, 320), count=6) * 2
    bag = tmp_path / "bag"
    with BagWriter(bag, storage="mcap") as w:
        for i, (ir, vis) in enumerate(crops):
            t = T0 + i * 100_000_000
            w.write("/thermal/image_raw", t, _raw_image_msg(ir, "mono8", t, "thermal"))
            w.write("/rgb/image_raw", t, _raw_image_msg(vis, "bgr8", t, "rgb"))
    storage = next(bag.glob("*.mcap"))
    os.truncate(storage, int(storage.stat().st_size * 0.7))
    out = tmp_path / "eval"
    assert _eval(bag, out, models["plain"], "--no-output-bag") == 1
    report = json.loads((out / "report.json").read_text())
    assert report["bag"]["recovered_by_scan"] is True
    assert report["problems"]["counts"]["bag-open"] == 1 and report["problems"]["counts"]["bag-read"] == 1
    assert 2 <= report["pairing"]["evaluated_pairs"] < 12
    assert all("metrics" in p for p in report["pairs"])


# ---------------------------------------------------------------- segmentation ground truth


def test_miou_against_ground_truth(models, tmp_path):
    """Ground truth made from the pipeline's own class ids, so that every IoU is known by construction:
    pair 0's truth is its prediction, pair 1's too but with a band marked 255 (not scored), and pair 2's
    is every id shifted by one (all wrong). The pipeline is the one eval-bag builds for the same options:
    the fusion-only student, then the shipped segmentation network on the fused image."""
    from sage_ros.pipeline import PipelineSettings, build_pipeline

    crops = _crops(count=3)
    pipeline = build_pipeline(PipelineSettings(model=str(models["plain"]), backend="onnxruntime"))
    try:
        preds = [pipeline.fuse(ir, vis).class_ids for ir, vis in crops]
        names = pipeline.segmenter.class_table.names
    finally:
        pipeline.close()
    assert len(names) == 4
    band = preds[1].copy()
    band[:, :32] = 255
    labels = [preds[0], band, ((preds[2].astype(np.int64) + 1) % 4).astype(np.uint8)]
    bag = tmp_path / "bag"
    with BagWriter(bag, storage="mcap") as w:
        for i, ((ir, vis), label) in enumerate(zip(crops, labels, strict=True)):
            t = T0 + i * 100_000_000
            w.write(
                "/thermal/image_raw", t + 5_000_000, _raw_image_msg(ir, "mono8", t + 5_000_000, "thermal")
            )
            w.write("/rgb/image_raw", t, _raw_image_msg(vis, "bgr8", t, "rgb"))
            w.write("/segmentation/ground_truth", t, _raw_image_msg(label, "mono8", t, "rgb"))
    out = tmp_path / "eval"
    assert _eval(bag, out, models["plain"], "--no-metrics") == 0
    report = json.loads((out / "report.json").read_text())
    seg = report["segmentation"]
    # By hand: class c is hit at its pixels in pair 0 and in pair 1 outside the band; pair 2 adds a false
    # positive at every pixel predicted c and a miss at every pixel predicted c - 1 (whose truth is c).
    iou = {}
    for c in range(4):
        tp = int((preds[0] == c).sum() + (preds[1][:, 32:] == c).sum())
        fp = int((preds[2] == c).sum())
        fn = int((preds[2] == (c - 1) % 4).sum())
        if tp + fp + fn:
            iou[names[c]] = tp / (tp + fp + fn)
    assert seg["pairs"] == 3
    assert seg["iou"] == pytest.approx(iou)
    assert seg["miou"] == pytest.approx(sum(iou.values()) / len(iou))
    assert 0 < seg["miou"] < 1  # neither all right nor all wrong: the three pairs were all scored
    output = open_bag(out / "fused_bag")
    assert {"/segmentation/mask", "/segmentation/overlay", "/segmentation/ground_truth"} <= set(output.topics)
    masks = [decode_msg(deserialize(m.raw, m.msgtype)) for m in output.messages(["/segmentation/mask"])]
    assert len(masks) == 3 and all(np.array_equal(m, p) for m, p in zip(masks, preds, strict=True))


# ---------------------------------------------------------------- synchronisation is exercised for real


def test_thermal_offset_pairs_the_right_frames(models, tmp_path):
    """A thermal stream stamped 80 ms late at 10 Hz pairs with the NEXT RGB frame unless offset back."""
    root = tmp_path / "ds"
    (root / "Ir").mkdir(parents=True)
    (root / "Vis").mkdir()
    for i, (ir, vis) in enumerate(_crops(size=(48, 64))):
        cv2.imwrite(str(root / "Ir" / f"{i}.png"), ir)
        cv2.imwrite(str(root / "Vis" / f"{i}.png"), vis)
    bag = tmp_path / "bag"
    make = ["make-bag", str(root), "--out", str(bag), "--thermal-offset-ms", "80", "--jitter-ms", "2"]
    assert cli_main(make) == 0
    gaps = {}
    for label, extra in (("raw", []), ("offset", ["--thermal-offset-ms", "-80"])):
        out = tmp_path / label
        _eval(bag, out, models["plain"], "--no-metrics", "--no-output-bag", *extra)
        report = json.loads((out / "report.json").read_text())
        gaps[label] = [p["stamp_gap_ms"] for p in report["pairs"]]
    # Without the offset: thermal frame i (t + 80 ms) meets RGB frame i + 1 (t + 100 ms), 20 ms apart.
    assert all(-25 < g < -15 for g in gaps["raw"])
    # With it: every thermal frame meets its own RGB frame, 80 +- 4 ms apart in raw stamps.
    assert len(gaps["offset"]) == 6 and all(75 < g < 85 for g in gaps["offset"])


# ---------------------------------------------------------------- compressed image topics


def test_compressed_image_topics(models, tmp_path):
    """image_transport 'compressed' recordings: PNG is lossless, so the fused output matches exactly."""
    from harness import compressed_image_message

    from sage_ros.bags.messages import COMPRESSED_TYPE

    crops = _crops(count=3)
    bag = tmp_path / "bag"
    with BagWriter(bag, storage="mcap") as w:
        for i, (ir, vis) in enumerate(crops):
            t = T0 + i * 100_000_000
            thermal = compressed_image_message(ir, "png", t, "thermal")
            w.write("/thermal/image_raw", t, thermal, COMPRESSED_TYPE)
            rgb = compressed_image_message(vis, "png", t, "rgb")
            if i == 2:
                rgb.data = rgb.data[:40].copy()  # a cut-off PNG
            w.write("/rgb/image_raw", t, rgb, COMPRESSED_TYPE)
    out = tmp_path / "eval"
    assert _eval(bag, out, models["plain"], "--no-metrics") == 1
    report = json.loads((out / "report.json").read_text())
    assert report["pairing"]["evaluated_pairs"] == 2
    assert report["problems"]["counts"] == {"decode": 1}
    assert "could not be decoded" in report["problems"]["details"][0]["detail"]
    pipeline = _pipeline(models["plain"])
    output = open_bag(out / "fused_bag")
    fused = [deserialize(m.raw, m.msgtype) for m in output.messages(["/fused/image_raw"])]
    for (ir, vis), msg in zip(crops[:2], fused, strict=True):
        assert np.array_equal(decode_msg(msg), pipeline.fuse(ir, vis).fused_rgb)
