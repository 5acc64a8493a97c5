"""The small real data set's fetch (test/data_fetch.py): pinned, sha256-checked, mirror or download."""

from __future__ import annotations

import csv
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import data_fetch
import pytest
from data_fetch import MANIFEST, MSRS_PAIRS, FetchError, MirrorOnlyError, fetch_data

from sage_ros.pairing.datasets import discover
from sage_ros.paths import DATA_MIRROR_ENV


def _mirror_of(msrs_dir: Path, root: Path) -> Path:
    """A mirror folder in the data sets' layout, holding the fetched MSRS files."""
    shutil.copytree(msrs_dir, root / "msrs")
    return root


def test_fetched_msrs_pairs_match_their_split_file(msrs_dir: Path) -> None:
    with (msrs_dir / "splits.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["name"] for r in rows] == [p.name for p in MSRS_PAIRS]
    assert {(r["split"], r["light"]) for r in rows} >= {("eval", "day"), ("eval", "night"), ("train", "day"),
                                                        ("train", "night")}
    assert [p.name for p in discover(msrs_dir).pairs] == sorted(r["name"] for r in rows)
    boxed = {p.stem for p in (msrs_dir / "boxes" / "fusion").glob("*.txt")}
    for modality in ("infrared", "visible"):
        assert {p.stem for p in (msrs_dir / "boxes" / modality).glob("*.txt")} == boxed
    assert boxed < {r["name"] for r in rows}  # some pairs have no box file at all
    assert (msrs_dir / "boxes" / "classes.txt").read_text().split() == ["0", "person", "1", "bicycle", "2", "car"]


def test_mirror_copy_verifies_and_rejects_corrupt_files(msrs_dir: Path, tmp_path: Path) -> None:
    mirror = _mirror_of(msrs_dir, tmp_path / "mirror")
    dest = fetch_data(["msrs"], tmp_path / "dest", mirror=mirror)
    for item in (f for f in MANIFEST if f.group == "msrs"):
        assert (dest / item.local).read_bytes() == (mirror / item.local).read_bytes(), item.local
    victim = next(f for f in MANIFEST if f.local.endswith(".png"))
    (mirror / victim.local).chmod(0o644)
    (mirror / victim.local).write_bytes(b"not the pinned image")
    with pytest.raises(FetchError, match="does not match the pinned"):
        fetch_data(["msrs"], tmp_path / "other", mirror=mirror)
    assert not (tmp_path / "other" / victim.local).exists()
    (mirror / victim.local).unlink()
    with pytest.raises(FetchError, match=f"has no {victim.local}"):
        fetch_data(["msrs"], tmp_path / "other", mirror=mirror)
    # Files already in place and verified are kept: the broken mirror is not even read for them.
    assert fetch_data(["msrs"], dest, mirror=mirror) == dest


def test_download_uses_the_documented_upstream_paths(msrs_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """A file:// copy of the two upstream repositories, in their layout, serves the real urllib download."""
    monkeypatch.delenv(DATA_MIRROR_ENV, raising=False)
    web = tmp_path / "web"
    images = web / "github.com" / data_fetch.MSRS_IMAGES_REPO / "raw" / data_fetch.MSRS_IMAGES_COMMIT
    boxes = web / "raw.githubusercontent.com" / data_fetch.MSRS_BOXES_REPO / data_fetch.MSRS_BOXES_COMMIT
    for pair in MSRS_PAIRS:
        for local, upstream in (("ir", "ir"), ("vi", "vi")):
            (images / "datasets/test_imgs" / upstream).mkdir(parents=True, exist_ok=True)
            shutil.copy(msrs_dir / local / f"{pair.name}.png", images / "datasets/test_imgs" / upstream)
        for modality in ("fusion", "infrared", "visible") if pair.boxes else ():
            (boxes / modality / "test").mkdir(parents=True, exist_ok=True)
            shutil.copy(msrs_dir / "boxes" / modality / f"{pair.name}.txt", boxes / modality / "test")
    shutil.copy(msrs_dir / "boxes" / "classes.txt", boxes / "classes.txt")
    real_urlopen = urllib.request.urlopen
    asked = []

    def urlopen(url: str, timeout: float):
        asked.append(url)
        assert url.startswith("https://"), url
        return real_urlopen(web.as_uri() + "/" + url.removeprefix("https://"), timeout=timeout)

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    dest = fetch_data(["msrs"], tmp_path / "dest")
    assert len(asked) == sum(f.group == "msrs" for f in MANIFEST)
    assert sorted(p.name for p in (dest / "msrs" / "ir").iterdir()) == sorted(f"{p.name}.png" for p in MSRS_PAIRS)
    # Offline: a FetchError that keeps the network error as its cause and names the mirror variable.
    def offline(url: str, timeout: float):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(FetchError, match=DATA_MIRROR_ENV) as info:
        fetch_data(["msrs"], tmp_path / "offline")
    assert isinstance(info.value.__cause__, urllib.error.URLError)


def test_derived_files_come_from_a_mirror_only(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv(DATA_MIRROR_ENV, raising=False)
    assert all(f.url is None for f in MANIFEST if f.group == "m3fd_samples")
    with pytest.raises(MirrorOnlyError, match=DATA_MIRROR_ENV):
        fetch_data(["m3fd_samples"], tmp_path / "dest")
    with pytest.raises(FetchError, match="does not exist"):
        fetch_data(["m3fd_samples"], tmp_path / "dest", mirror=tmp_path / "missing")
    with pytest.raises(ValueError, match="unknown data groups"):
        fetch_data(["msrs_full"], tmp_path / "dest")


def test_m3fd_boxes_name_the_six_sample_pairs(m3fd_boxes_dir: Path, official_dir: Path) -> None:
    names = sorted(p.stem for p in m3fd_boxes_dir.glob("0*.txt"))
    assert names == sorted(p.stem for p in (official_dir / "Ir").glob("*.png"))
    for name in names:
        for line in (m3fd_boxes_dir / f"{name}.txt").read_text().splitlines():
            cls, *box = line.split()
            assert cls in {"0", "1", "2"} and all(0.0 <= float(v) <= 1.0 for v in box), (name, line)
