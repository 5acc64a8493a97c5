"""Dataset discovery, dataset -> bag writing, and bag reading (both storages, damaged files)."""

from __future__ import annotations

import csv
import os
import sqlite3
from pathlib import Path

import cv2
import numpy as np
import pytest

from sage_ros.bags.dataset_bag import GT_TOPIC, RGB_TOPIC, THERMAL_TOPIC, MakeBagOptions, write_dataset_bag
from sage_ros.bags.messages import deserialize, image_message, stamp_of
from sage_ros.bags.reader import BagReadError, open_bag
from sage_ros.bags.writer import BagWriter
from sage_ros.cli import main as cli_main
from sage_ros.image.encodings import decode_msg
from sage_ros.pairing.datasets import DatasetError, discover

H, W = 40, 56


def _write_dataset(root: Path, names: list[str], dirs=("Ir", "Vis", "Label"), seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    images = {}
    for d in dirs:
        (root / d).mkdir(parents=True, exist_ok=True)
    for name in names:
        ir = rng.integers(0, 256, (H, W), dtype=np.uint8)
        vis = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        label = rng.integers(0, 4, (H, W), dtype=np.uint8)
        cv2.imwrite(str(root / dirs[0] / f"{name}.png"), ir)
        cv2.imwrite(str(root / dirs[1] / f"{name}.png"), vis)
        if len(dirs) > 2:
            cv2.imwrite(str(root / dirs[2] / f"{name}.png"), label)
        images[name] = (ir, vis, label)
    return images


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("sage_layout")
    images = _write_dataset(root, [f"{i:05d}" for i in range(5)])
    return root, images


# ---------------------------------------------------------------- discovery


def test_discover_layouts(tmp_path):
    _write_dataset(tmp_path / "sage", ["a", "b"], dirs=("Ir", "Vis"))
    _write_dataset(tmp_path / "msrs", ["a", "b", "c"], dirs=("ir", "vi", "label"))
    _write_dataset(tmp_path / "fmb" / "test", ["x"], dirs=("Infrared", "Visible", "Label"))
    sage = discover(tmp_path / "sage")
    assert [p.name for p in sage.pairs] == ["a", "b"] and sage.label_dir is None
    msrs = discover(tmp_path / "msrs", limit=2)
    assert [p.name for p in msrs.pairs] == ["a", "b"] and msrs.pairs[0].label_path.name == "a.png"
    fmb = discover(tmp_path / "fmb", split="test")
    assert fmb.layout == "Infrared/ Visible/ Label/"
    with pytest.raises(DatasetError, match="pass --split"):
        discover(tmp_path / "fmb")


def test_discover_split_csv_and_unpaired(tmp_path):
    _write_dataset(tmp_path, ["a", "b", "c"], dirs=("ir", "vi"))
    os.remove(tmp_path / "vi" / "c.png")
    (tmp_path / "splits.csv").write_text("name,split,light\na,train,day\nb,eval,night\nc,eval,day\n")
    ds = discover(tmp_path, split="eval")
    assert [p.name for p in ds.pairs] == ["b"]
    assert ds.only_ir == ("c",)
    with pytest.raises(DatasetError, match="no pairs"):
        discover(tmp_path, split="unlabeled")


# ---------------------------------------------------------------- writing and reading


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_dataset_bag_round_trip(dataset, tmp_path, storage):
    root, images = dataset
    opts = MakeBagOptions(storage=storage, rate_hz=20.0, jitter_ms=3.0, thermal_offset_ms=25.0, seed=1)
    summary = write_dataset_bag(discover(root), tmp_path / "bag", opts)
    assert summary.frames == 5 and not summary.skipped
    source = open_bag(tmp_path / "bag")
    assert not source.recovered and source.storage == storage
    assert source.counts == {THERMAL_TOPIC: 5, RGB_TOPIC: 5, GT_TOPIC: 5}
    msgs = list(source.messages([THERMAL_TOPIC, RGB_TOPIC, GT_TOPIC]))
    assert [m.log_time_ns for m in msgs] == sorted(m.log_time_ns for m in msgs)
    by_topic: dict[str, list] = {}
    for m in msgs:
        by_topic.setdefault(m.topic, []).append(deserialize(m.raw, m.msgtype))
    names = sorted(images)
    streams = zip(by_topic[THERMAL_TOPIC], by_topic[RGB_TOPIC], by_topic[GT_TOPIC], strict=True)
    for i, (th, rgb, gt) in enumerate(streams):
        ir, vis, label = images[names[i]]
        assert th.encoding == "mono8" and np.array_equal(decode_msg(th), ir)
        assert rgb.encoding == "bgr8" and np.array_equal(decode_msg(rgb), vis)
        assert np.array_equal(decode_msg(gt), label) and stamp_of(gt) == stamp_of(rgb)
        # 50 ms frame period, 25 ms thermal offset, +-3 ms jitter on each stream.
        gap_ms = (stamp_of(th) - stamp_of(rgb)) / 1e6
        assert 19.0 <= gap_ms <= 31.0
        nominal = 1_700_000_000 * 10**9 + i * 50_000_000
        assert abs(stamp_of(rgb) - nominal) <= 3_000_000
        assert th.header.frame_id == "thermal_camera" and rgb.header.frame_id == "rgb_camera"
    source.close()


def test_mono16_and_rgb8_encodings(dataset, tmp_path):
    root, images = dataset
    opts = MakeBagOptions(thermal_encoding="mono16", rgb_encoding="rgb8", mono16_offset=500, mono16_gain=40)
    write_dataset_bag(discover(root), tmp_path / "bag", opts)
    source = open_bag(tmp_path / "bag")
    first = {}
    for m in source.messages([THERMAL_TOPIC, RGB_TOPIC]):
        first.setdefault(m.topic, deserialize(m.raw, m.msgtype))
    ir, vis, _ = images[sorted(images)[0]]
    th = decode_msg(first[THERMAL_TOPIC])
    assert th.dtype == np.uint16 and np.array_equal(th, 500 + 40 * ir.astype(np.uint16))
    assert np.array_equal(decode_msg(first[RGB_TOPIC]), vis[..., ::-1])
    source.close()


def test_make_bag_cli(dataset, tmp_path, capsys):
    root, _ = dataset
    assert (
        cli_main(
            ["make-bag", str(root), "--out", str(tmp_path / "b"), "--storage", "sqlite3", "--limit", "2"]
        )
        == 0
    )
    assert "wrote 2 frames" in capsys.readouterr().out
    assert list((tmp_path / "b").glob("*.db3"))
    # An existing output is never overwritten.
    assert cli_main(["make-bag", str(root), "--out", str(tmp_path / "b")]) == 2
    assert "exists" in capsys.readouterr().err
    assert cli_main(["make-bag", str(tmp_path / "nothing"), "--out", str(tmp_path / "c")]) == 2


# ---------------------------------------------------------------- damaged bags


def test_truncated_mcap_is_recovered_by_scanning(tmp_path):
    # rosbags closes an MCAP chunk past 1 MiB: 500 KB frames give several chunks, as real recordings have.
    rng = np.random.default_rng(2)
    frames = [rng.integers(0, 256, (360, 480, 3), dtype=np.uint8) for _ in range(4)]
    with BagWriter(tmp_path / "bag", storage="mcap") as writer:
        for i in range(12):
            writer.write(RGB_TOPIC, 1000 + i, image_message(frames[i % 4], "bgr8", 1000 + i, "rgb"))
    storage = next((tmp_path / "bag").glob("*.mcap"))
    os.truncate(storage, int(storage.stat().st_size * 0.6))
    source = open_bag(tmp_path / "bag")
    assert source.recovered
    assert source.problems[0].kind == "open" and "recovered by scanning" in source.problems[0].detail
    msgs = list(source.messages([RGB_TOPIC]))
    assert 0 < len(msgs) < 12
    assert any(p.kind == "read" and "truncated" in p.detail for p in source.problems)
    for i, m in enumerate(msgs):  # every recovered message is whole and in order
        assert m.log_time_ns == 1000 + i
        assert np.array_equal(decode_msg(deserialize(m.raw, m.msgtype)), frames[i % 4])


def test_truncated_sqlite_keeps_reachable_rows(tmp_path):
    # Large rows (each spans many pages) as with real images; cut the file near its end.
    rng = np.random.default_rng(3)
    with BagWriter(tmp_path / "bag", storage="sqlite3") as writer:
        for i in range(12):
            image = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
            writer.write(RGB_TOPIC, 1000 + i, image_message(image, "bgr8", 1000 + i, "rgb"))
    db3 = next((tmp_path / "bag").glob("*.db3"))
    os.truncate(db3, int(db3.stat().st_size * 0.92))
    source = open_bag(tmp_path / "bag")
    assert source.recovered and RGB_TOPIC in source.topics
    msgs = list(source.messages([RGB_TOPIC]))
    assert 0 < len(msgs) < 12
    assert any(p.kind == "read" for p in source.problems)


def test_not_a_bag_gives_a_clear_error(tmp_path):
    junk = tmp_path / "junk.mcap"
    junk.write_bytes(b"this is not a bag at all" * 10)
    with pytest.raises(BagReadError, match="not a readable bag"):
        open_bag(junk)
    with pytest.raises(BagReadError, match="does not exist"):
        open_bag(tmp_path / "missing")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(BagReadError, match="no .mcap or .db3"):
        open_bag(tmp_path / "empty_dir")


def test_sqlite_row_with_garbage_data_is_still_listed(tmp_path):
    with BagWriter(tmp_path / "bag", storage="sqlite3") as writer:
        for i in range(3):
            writer.write(
                RGB_TOPIC, 10 + i, image_message(np.zeros((4, 6, 3), np.uint8), "bgr8", 10 + i, "rgb")
            )
    db3 = next((tmp_path / "bag").glob("*.db3"))
    with sqlite3.connect(db3) as db:
        db.execute("UPDATE messages SET data = ? WHERE id = 2", (b"\x00\x01garbage",))
    msgs = list(open_bag(tmp_path / "bag").messages([RGB_TOPIC]))
    assert len(msgs) == 3
    with pytest.raises(Exception):  # noqa: B017 - the CDR decoder's own error type; eval-bag counts it
        deserialize(msgs[1].raw, msgs[1].msgtype)


def test_compressed_images_decode_with_their_depth():
    from harness import compressed_image_message

    from sage_ros.bags.messages import COMPRESSED_TYPE, decode_any, serialize

    counts = np.arange(12 * 16, dtype=np.uint16).reshape(12, 16) * 80 + 1000
    msg = compressed_image_message(counts, "png", 5, "thermal")
    back = deserialize(serialize(msg, COMPRESSED_TYPE), COMPRESSED_TYPE)
    image, encoding = decode_any(back, COMPRESSED_TYPE)
    assert encoding == "mono16" and image.dtype == np.uint16 and np.array_equal(image, counts)
    colour = np.random.default_rng(0).integers(0, 256, (12, 16, 3), dtype=np.uint8)
    image, encoding = decode_any(compressed_image_message(colour, "png", 5, "rgb"), COMPRESSED_TYPE)
    assert encoding == "bgr8" and np.array_equal(image, colour)
    # Plain Image messages go through sage_ros.image.encodings unchanged.
    image, encoding = decode_any(image_message(colour, "rgb8", 5, "rgb"), "sensor_msgs/msg/Image")
    assert encoding == "rgb8" and np.array_equal(image, colour)


def test_discover_real_msrs_and_sage_samples(msrs_dir: Path, official_dir: Path):
    root = msrs_dir
    # Counts come from the dataset's own splits.csv (the fetched subset's, or a full copy's).
    with (root / "splits.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    msrs = discover(root, split="eval")
    assert len(msrs.pairs) == sum(r["split"] == "eval" for r in rows) > 0 and msrs.layout == "ir/ vi/"
    assert len(discover(root).pairs) == len(rows)
    sage = discover(official_dir)
    assert [p.name for p in sage.pairs] == [f"{i:05d}" for i in range(6)] and sage.layout == "Ir/ Vis/"
