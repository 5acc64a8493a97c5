"""Download (or copy from a mirror) the released SAGE student and sample pairs, sha256-checked.

Files come from one pinned upstream commit (MIT licence); nothing is trusted until its sha256
matches the manifest below. A mirror folder (`--mirror DIR` or $SAGE_ROS_MIRROR) may hold the files
either in the cache layout (`checkpoints.pt`, `Ir/`, `Vis/`, `reference/`) or in upstream's layout.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from sage_ros.paths import MIRROR_ENV, official_dir, sha256_of

log = logging.getLogger(__name__)

UPSTREAM_REPO = "RollingPlain/SAGE_IVIF"
UPSTREAM_COMMIT = "377fdbef6b8b6ccbd1139358ad66bb41ea084dc1"
BASE_URL_ENV = "SAGE_ROS_BASE_URL"
DEFAULT_BASE_URL = f"https://github.com/{UPSTREAM_REPO}/raw/{UPSTREAM_COMMIT}"


@dataclass(frozen=True)
class RemoteFile:
    local: str  # path inside the cache folder
    upstream: str  # path inside the upstream repository at UPSTREAM_COMMIT
    sha256: str


def _sample(kind: str, upstream_dir: str, index: int, digest: str) -> RemoteFile:
    name = f"{index:05d}.png"
    return RemoteFile(f"{kind}/{name}", f"{upstream_dir}/{name}", digest)


CHECKPOINT = RemoteFile(
    "checkpoints.pt",
    "checkpoints/checkpoints.pt",
    "ecfde477ca4cd65401f207d5dc91ce6c475a49891d768dbdb7a66366255ee836",
)
_IR = [
    "edd8d28815ecf6d3a8a11109b945e166430ce9344eed89370d8ee5a8020c6d17",
    "dec73f630a428c4fbc97f66e222e30c6f77b5f7bb4552ba78d907f94722da728",
    "866d5251cc7eeed4a9f9a4f89b996f09da1012b54e6c8650f081002e324517b2",
    "3aac0de81fc1533615e38a7f6b3e199c7943054a2dc38afdf312fcf2fd1dffa0",
    "3960ec02e2e64cad5b6d35b7e45382199b0a9eab46e7be6e1d0c8d31e2233701",
    "6e1d5475468213275bee8622c6562a0b8c15072721237c87b794ffb22c8386b2",
]
_VIS = [
    "2e9c72eecb2b845194ce30fbbccb7c497e13cf022c7b98170a215c9099457e13",
    "8e166fbfc9847ce2706c77a62eb536d7cc814d8beb574db28923b2c9a0dbb981",
    "98a48662f5d47948689c7eb133c599ddb045810fcf34765655166529d2565e5d",
    "a29f3d6cf809b5589a042e39c70e1eb896326a4d11aec19584a36c80863e74e5",
    "24b0982e0a0babc578c7433d4940b1bd93fa60cd92b395fd76d27fe1b9c3c8c1",
    "44832601ef0898fecaca1a58fc6fe47484a2aa2088bc084cd43790bb5225644a",
]
_REF = [
    "33d6a52110ed78b1ce64241bc3ff560110eaf77f9d4d97556a767210b3a51d0f",
    "30e55b3e5a24c17af4386baf84ec6c5edaa3098006d656d5c2d9041735aee602",
    "bea9bbf0d097497d12f963725ad7ff2f8c5f17a9a0962433375222ef04c7b0d7",
    "3deddd3f198d1ac5e2b5e9f9854be393da2d4979f9a5795010171c1d72c4070f",
    "0608d9f5849dde93187c3dd01ca943c0619717a1180cfe7dd3db4d2582973122",
    "de36b137a8b10f52124f5647230bef03c7c67fb5ae52603f94734e4572f88d24",
]
SAMPLES = (
    [_sample("Ir", "data/test/Ir", i, d) for i, d in enumerate(_IR)]
    + [_sample("Vis", "data/test/Vis", i, d) for i, d in enumerate(_VIS)]
    + [_sample("reference", "result/test", i, d) for i, d in enumerate(_REF)]
)
MANIFEST = [CHECKPOINT, *SAMPLES]


class FetchError(RuntimeError):
    """A file that could not be obtained or whose checksum does not match."""


def is_valid(path: Path, expected_sha256: str) -> bool:
    return path.is_file() and sha256_of(path) == expected_sha256


def _install_checked(source_fill, item: RemoteFile, dest: Path, origin: str) -> None:
    """Write via a temp file in the destination folder, verify, then rename atomically."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            source_fill(handle)
        actual = sha256_of(tmp)
        if actual != item.sha256:
            raise FetchError(
                f"{item.local} from {origin}: sha256 {actual[:16]}... does not match the pinned "
                f"{item.sha256[:16]}... (corrupt or different file); nothing was installed"
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _from_mirror(item: RemoteFile, mirror: Path, dest: Path) -> str:
    for candidate in (mirror / item.local, mirror / item.upstream):
        if candidate.is_file():
            with open(candidate, "rb") as src:
                _install_checked(lambda out, src=src: shutil.copyfileobj(src, out), item, dest, str(candidate))
            return f"mirror {candidate}"
    raise FetchError(f"mirror {mirror} has neither {item.local} nor {item.upstream}")


def _from_url(item: RemoteFile, base_url: str, dest: Path, timeout: float) -> str:
    url = f"{base_url.rstrip('/')}/{item.upstream}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            _install_checked(lambda out: shutil.copyfileobj(response, out), item, dest, url)
        return url
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        if isinstance(exc, FetchError):
            raise
        raise FetchError(
            f"could not download {url}: {exc}. Offline? Use --mirror DIR (or ${MIRROR_ENV}) "
            "with a folder holding the same files"
        ) from exc


def fetch(
    dest_dir: Path | None = None,
    mirror: Path | None = None,
    base_url: str | None = None,
    include_samples: bool = True,
    timeout: float = 60.0,
    progress=None,
) -> Path:
    """Make sure the checkpoint (and sample pairs) are in `dest_dir`, checksum-verified.

    Files already present with the right sha256 are kept; wrong ones are replaced. Returns dest_dir.
    """
    dest_dir = Path(dest_dir) if dest_dir else official_dir()
    mirror_env = os.environ.get(MIRROR_ENV)
    if mirror is None and mirror_env:
        mirror = Path(mirror_env)
    if mirror is not None and not Path(mirror).is_dir():
        # One clear line instead of "has neither X nor Y" for every file.
        origin = "--mirror" if not mirror_env or Path(mirror_env) != Path(mirror) else f"${MIRROR_ENV}"
        raise FetchError(f"mirror folder {mirror} (from {origin}) does not exist or is not a folder")
    base_url = base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
    items = MANIFEST if include_samples else [CHECKPOINT]
    for item in items:
        dest = dest_dir / item.local
        if is_valid(dest, item.sha256):
            log.debug("%s already present and verified", dest)
            source = f"already present in {dest_dir}"
        elif mirror is not None:
            source = _from_mirror(item, Path(mirror), dest)
        else:
            source = _from_url(item, base_url, dest, timeout)
        if progress is not None:
            # progress(item, source): where the file came from; its sha256 matched the pinned one.
            progress(item, source)
    return dest_dir


def sample_pairs(official: Path | None = None) -> list[tuple[Path, Path]]:
    """(IR, visible) paths of the six sample pairs in the cache."""
    root = Path(official) if official else official_dir()
    return [(root / f"Ir/{i:05d}.png", root / f"Vis/{i:05d}.png") for i in range(len(_IR))]
