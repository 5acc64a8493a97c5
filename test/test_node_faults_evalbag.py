"""Injected faults for `sage-ros eval-bag` (the real CLI in a child process, real bags, real model).

- the results go to a full disk (a small tmpfs when this runs as root and may mount, else a file size
  limit, RLIMIT_FSIZE, on the child): a clear error, exit status 3, no traceback, and nothing left
  behind that looks complete (no output bag, no report);
- the input bag is cut in the middle of an MCAP chunk: exit status 1, the report says the bag was
  recovered by scanning and counts the read problem, and exactly the pairs that were readable are
  reported (each with its metrics) and written to the output bag.
"""

from __future__ import annotations

import json
import os
import resource
import struct
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

pytest.importorskip("rosbags", reason="rosbags not installed (pip install -e '.[eval]')")

from test_eval_bag import T0, _raw_image_msg  # noqa: E402

from sage_ros.bags.reader import open_bag  # noqa: E402
from sage_ros.bags.writer import BagWriter  # noqa: E402
from sage_ros.model.weights import sample_pairs  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PAIRS = 12  # written to the bag: the released sample pairs, repeated


@pytest.fixture(scope="module")
def model(tmp_path_factory, checkpoint_path: Path):
    from harness import exported_student

    return exported_student(checkpoint_path, tmp_path_factory.getbasetemp() / "sage_models")


def _centre_crops(official: Path, count: int, size: tuple[int, int]) -> list:
    """`count` (IR, RGB) centre crops of the released sample pairs, cycling through them."""
    h, w = size
    crops = []
    for ir_path, vis_path in sample_pairs(official):
        ir, vis = cv2.imread(str(ir_path), cv2.IMREAD_GRAYSCALE), cv2.imread(str(vis_path))
        y, x = (ir.shape[0] - h) // 2, (ir.shape[1] - w) // 2
        crops.append((ir[y : y + h, x : x + w].copy(), vis[y : y + h, x : x + w].copy()))
    return [crops[i % len(crops)] for i in range(count)]


@pytest.fixture(scope="module")
def bag(tmp_path_factory, official_dir: Path):
    """PAIRS pairs of 240x320 frames in MCAP: several chunks (about 3.7 MB)."""
    folder = tmp_path_factory.mktemp("bag") / "bag"
    crops = _centre_crops(official_dir, PAIRS, (240, 320))
    with BagWriter(folder, storage="mcap") as w:
        for i, (ir, vis) in enumerate(crops):
            t = T0 + i * 100_000_000
            w.write("/thermal/image_raw", t, _raw_image_msg(ir, "mono8", t, "thermal"))
            w.write("/rgb/image_raw", t, _raw_image_msg(vis, "bgr8", t, "rgb"))
    return folder


def _eval(bag: Path, out: Path, model: Path, *extra: str, fsize: int | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "sage_ros", "eval-bag", str(bag), "--out", str(out), "--model", str(model),
           "--backend", "onnxruntime", "--threads", "1", *extra]

    def limit() -> None:  # in the child: files may not grow past `fsize` bytes (EFBIG; Python ignores SIGXFSZ)
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600,
                          preexec_fn=limit if fsize is not None else None)


def _small_disk(path: Path, size: str) -> bool:
    """Mount a tmpfs of `size` at path (root only); False when this machine does not allow it."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def _unmount(path: Path) -> None:
    subprocess.run(["umount", str(path)], capture_output=True)


@pytest.mark.parametrize("what", ["output_bag", "report"])
def test_full_disk_is_a_clear_error_and_leaves_nothing_that_looks_complete(model, bag, tmp_path, what):
    disk = tmp_path / "disk"
    # Full while writing the output bag (1 MiB), or with --no-output-bag while writing plots and report.
    size, extra = ("1m", ()) if what == "output_bag" else ("48k", ("--no-output-bag",))
    mounted = _small_disk(disk, size)
    try:
        out = disk / "out"
        res = _eval(bag, out, model, *extra, fsize=None if mounted else {"1m": 1 << 20, "48k": 48 << 10}[size])
    finally:
        if mounted:
            listing = sorted(p.name for p in (disk / "out").iterdir()) if (disk / "out").is_dir() else []
            _unmount(disk)
    if not mounted:
        listing = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    assert res.returncode == 3, (res.returncode, res.stderr[-3000:])
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    assert "error: writing the results under" in res.stderr and "the evaluation is incomplete" in res.stderr
    assert ("No space left on device" if mounted else "File too large") in res.stderr, res.stderr[-2000:]
    # Nothing that could pass for a finished evaluation: no report, no output bag (plots may remain).
    assert "report.json" not in listing and "report.md" not in listing and "fused_bag" not in listing, listing
    assert not [n for n in listing if n.endswith(".tmp")], listing


def _chunk_spans(mcap: Path) -> list[tuple[int, int]]:
    """(offset, length) of every Chunk record (opcode 0x06) of an MCAP file."""
    data = mcap.read_bytes()
    pos, spans = 8, []  # after the magic
    while pos + 9 <= len(data):
        opcode, length = data[pos], struct.unpack_from("<Q", data, pos + 1)[0]
        if opcode == 0x06:
            spans.append((pos, 9 + length))
        if opcode == 0x02:  # footer
            break
        pos += 9 + length
    return spans


def test_bag_truncated_mid_chunk_reports_exactly_what_was_readable(model, bag, tmp_path):
    cut = tmp_path / "cut"
    cut.mkdir()
    for f in bag.iterdir():
        (cut / f.name).write_bytes(f.read_bytes())
    storage = next(cut.glob("*.mcap"))
    spans = _chunk_spans(storage)
    assert len(spans) >= 3, spans  # the bag must have chunks to cut inside
    offset, length = spans[len(spans) // 2]
    os.truncate(storage, offset + length // 2)  # in the middle of a chunk: its messages are lost
    out = tmp_path / "eval"
    res = _eval(cut, out, model)
    assert res.returncode == 1, (res.returncode, res.stderr[-3000:])
    assert "Traceback" not in res.stderr and "problems" in res.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["bag"]["recovered_by_scan"] is True
    assert report["problems"]["counts"].get("bag-read", 0) >= 1, report["problems"]
    evaluated = report["pairing"]["evaluated_pairs"]
    assert 1 <= evaluated < PAIRS
    assert len(report["pairs"]) == evaluated and all("metrics" in p for p in report["pairs"])
    # The output bag holds one fused image per reported pair: nothing more, nothing less.
    source = open_bag(out / "fused_bag")
    try:
        assert not source.recovered and not source.problems, source.problems  # the output bag is whole
        fused = sum(1 for _ in source.messages(["/fused/image_raw"]))
    finally:
        source.close()
    assert fused == evaluated
