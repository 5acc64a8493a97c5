"""Download (or copy from a mirror) a small real data set, sha256-checked: for tests, examples and quick checks.

What is fetched (into `sage_ros.paths.datasets_dir()`, in the layout of the full data sets):
- `msrs/`: 11 MSRS test-split pairs (640x480; day and night; the eval, train and unlabeled splits of the
  project's split file), `ir/NAME.png` + `vi/NAME.png`, with the human detection boxes drawn on each modality,
  `boxes/{fusion,infrared,visible}/NAME.txt` (YOLO `class cx cy w h`, classes in `boxes/classes.txt`), and
  `splits.csv` (`name,split,light`) listing exactly these pairs, written from `MSRS_PAIRS` below.
- `m3fd_samples/boxes/0000N.txt`: M3FD's human boxes for the six released SAGE sample pairs.

Sources, pinned by commit: MSRS images from ycc568/my-seafusion (`datasets/test_imgs/{ir,vi}/`; MIT repo),
MSRS boxes from Lele-3/MSRS-detection-label (`{fusion,infrared,visible}/test/`). The M3FD box files were
converted from ganlumomo/voc2coco's `outputs/m3fd-*.json` (no byte-identical upstream file): they come from
a mirror only. A mirror (`mirror=` or $SAGE_ROS_DATA_MIRROR) is a folder in the data sets' own layout
(`msrs/ir/NAME.png`, ..., `m3fd_samples/boxes/NAME.txt`), e.g. a full copy of the data sets; only the files
listed here are taken from it, and each must match its pinned sha256. Torch-free, no ROS.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from sage_ros.model.weights import FetchError, _install_checked, is_valid
from sage_ros.paths import DATA_MIRROR_ENV, datasets_dir

log = logging.getLogger(__name__)

MSRS_IMAGES_REPO, MSRS_IMAGES_COMMIT = "ycc568/my-seafusion", "cff58e5"
MSRS_BOXES_REPO, MSRS_BOXES_COMMIT = "Lele-3/MSRS-detection-label", "cb6ffc0a3ee64f979d79a6a0ebf666761decb16a"
M3FD_BOXES_SOURCE = ("ganlumomo/voc2coco @ 20239ca, outputs/m3fd-*.json (M3FD's VOC boxes), converted to "
                     "YOLO text: People -> person, Car/Bus/Truck -> car, Motorcycle -> bicycle")
GROUPS = ("msrs", "m3fd_samples")
SPLITS_HEADER = "name,split,light"


class MirrorOnlyError(FetchError):
    """A file with no byte-identical upstream download: only a mirror folder can supply it."""


@dataclass(frozen=True)
class DataFile:
    local: str  # path inside the data folder, and inside a mirror folder
    sha256: str
    url: str | None = None  # pinned upstream download; None: from a mirror only
    source: str = ""  # where a mirror-only file comes from

    @property
    def group(self) -> str:
        return self.local.split("/", 1)[0]


@dataclass(frozen=True)
class MsrsPair:
    name: str
    split: str  # as in the project's MSRS split file: eval, train or unlabeled
    light: str  # day or night
    ir_sha256: str
    vis_sha256: str
    boxes: tuple[str, str, str] | None = None  # sha256 of the fusion, infrared, visible box files


BOX_MODALITIES = ("fusion", "infrared", "visible")


def _pair(name: str, split: str, light: str, ir: str, vis: str,
          boxes: tuple[str, str, str] | None = None) -> MsrsPair:
    return MsrsPair(name, split, light, ir, vis, boxes)


MSRS_PAIRS = (
    _pair("00012N", "eval", "night",
          "b75147ddedc97ba67458dccc957f9d95c2029d7c3dc6016e1c5eb0bb125dc9b9",
          "255346180b20323bbdb5b10252ddc9d3c4e6a85eb0d85fcf4ebff6fe731cf812",
          boxes=("74008d61c3231755ad90369d2790e465f4714f81b003bea40046d34f883a4c06",
                 "78c78b420b64f361ef9800ea5f3b54d475fe44b63d7d3c13c1cf040f766d2195",
                 "3db205757f1e63253f70dd36a84127003698e5448e3d70c22351eaa84ac54844")),
    _pair("00024N", "eval", "night",
          "9c009f34272120e2109a372b2475e4a298eca864ab69a5717b9d4fb7dff528ae",
          "a652a87c37f74749f7f30124c7daeeb030d5a697145d4377e3be74f74c36a3ad",
          boxes=("ad7cf9a2c7ccb60e8e76a7bf1df4a25dec194bbbd8d0927a259c5b324803c9e6",
                 "0c8148537a4f0b57bc42c72695fc643f0278bbc8690e4da2f01deffd3d69974b",
                 "b9fc0ae1bfa835e61b95d27d708ae26c7660be7ffbe7a20d4a34dd72a4d1553a")),
    _pair("00828N", "eval", "night",
          "7479a84f15b0a537b38474f57a283139d50f1d18f10fa24fe278968f5e4ca4bd",
          "ae3079d5f2464d9b202279bf6fbe695ac99573f3927a6ff4fa918dbd229d82c2",
          boxes=("d5145485462e04058ebdeb499667d253d317f649d8008e2824358a25b84b8303",
                 "1da2818581fe37305b638edaf326f56d88df60adc8308e75a9baf9dd3697260e",
                 "3dd65770f0d93e60ad0a4b702d57410e4e2462846d17d642d8b42d83a68c0e39")),
    _pair("00055D", "eval", "day",
          "de21431298c4d33c81a63cb301811526f1135371a84725466b1a119c4635e25c",
          "f2b4cf78ee308f66212b9d4140b6a6629c8664cf1e2e1f84afe974cbcad619c1",
          boxes=("b9f1ac83a18451f16748935c8f6bcbd2e5e760cd0bb1d4df42ecaa2a81ee45b0",
                 "85d3899d6b4fea11fd88298d33e30c10e12743150c157c2221ba965e8564bf0d",
                 "1abd7b1c07f5a84048dd3323ab9ada808ac79f9488771dcbaaf0a90e8d8d922e")),
    _pair("00218D", "eval", "day",
          "2e3268b78938f308863ff47c8277d00a54e82046343dc9dd9a3d29d7bd5aca85",
          "f8130b1cb31de464f2ff34256a463118bd304d0c9afacb2fb643dfef86652d00",
          boxes=("e0f502317a5623724a4a27ab1771b440a153ca09cb55ff0f47e95cd574675794",
                 "c6259310efaf007f329429a1bb17a6391a3f1eb2bff99eae1826546b6881b7f7",
                 "e4742f9d007753394298e98801803c7c7748933ce060c2d23eac81ca6cbc1269")),
    _pair("01574D", "eval", "day",  # an empty fusion box file: an object-free frame
          "88c4ef010c9dbdb186da9246a31725abd8fbb0eb7fa396527832bdcfd8b833a7",
          "7e0361203268d37d9d2bf98020b9ccc0c1f0603feaf7bd69705dc1ee9e13808c",
          boxes=("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                 "530645ce705a7c528eb608481ad89b3c21e6add4cf2e46488e523dd7890a3b19",
                 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")),
    _pair("00004N", "train", "night",
          "3fd52464e22ea4603499a6f180dec541c05f307429bf6ed49e08924de0e6e92f",
          "9bc9a99133615116486af34fc3f6f1eebea1019da652e04ed2f4c8863412ccb7",
          boxes=("994f1935f6713faf87ddea577f5776a529e29efbf3d1211dde6595af9aeeb384",
                 "4ba645948c5319f00c71fae15e0f41be8e5e41cbb423d5982616e6feb2251b71",
                 "fcf906dc8261e77e16656be32523dbefd1c5df615a2f6677f6bce9389674a858")),
    _pair("00008N", "train", "night",
          "bd515087705a8eb27a43d379cb937495faa68741336bdb79e5ae74f1c57c4d9f",
          "5cafc1840aded6cf506356bc5def4b21d0480b04c160f1e4285193cefba4e551",
          boxes=("4091b82a2678f0e472b39a490e8ff25b8dc46d7d780a503fa39f831c229ac138",
                 "11b0b028b079102b4b491ae7fea7461152cf49b9328b0dce4e4d60b706e50cad",
                 "c5aabda697d60160b7fdaa1cf337ab6921eb4b4f558fe75947ba7b814f7a1c3c")),
    _pair("00016N", "train", "night",
          "ce5999aa3795f05e11d3fa1cfcbeb5d7877dab028ca080b85c94d052f5a7920e",
          "b55965e5bc43a699d64d16c6711a32a91ff8e6a0505ae11938bc1c6613d54ab0",
          boxes=("0012b921f99440c0b37c8ca2a077c40a82a9d764564a5e3abe66827d307aff59",
                 "1da35b142ab23c1ae318e728997d2680cc8bc584ea0566e449f6c6a7c12e298c",
                 "09679d45565ef103738e99cf5a30425f306daa39537be7c6d90979625c8de4c0")),
    _pair("00174D", "train", "day",
          "1d58c9f93f9713aaaffe17ca5ee9f10de3ab32dd50eacce35d7e15b2546271f9",
          "a6c2a639465a33d4184660936995cb51296a1ebf5abef928aa1beecec01f1ad5",
          boxes=("411e006acecf240929544c3510bd5da0ebede993d840754fc713316f221e1f13",
                 "75fba4d273357b79aca723f62c8321a78b02f4b1bbab8b0a5642daa868827e80",
                 "5114ef1d7af7ed50a4714ba344796230bbe4339089f98c9a627e3409adf628f0")),
    _pair("00633D", "unlabeled", "day",  # no box files: a pair without boxes
          "b30717ca1126df06236008519489ffe486270e8b2e084d6bc6476908d8125645",
          "12aaba133a9acd49840d69298ea745bc0b7f63ec2402484136a14957be552147"),
)
CLASSES_SHA256 = "d5224b1d8f8fc8d8900890a7513a0504492179bd513b5e0d0dbb3fa2ee33f9a6"  # 0 person, 1 bicycle, 2 car
M3FD_BOXES = (  # the six released sample pairs 00000..00005 (M3FD detection images of the same names)
    "40dc704f38a3e7fc239835efd778dc8af68c5054143a12158128c8869b8371ec",
    "f17c7157994fc0a4f10203e0513cb6e4d38eb191c0d57c6527e275155488a030",
    "ebc89c0a9eaada946a50654e08a482076bc00b414d825a8ef73d16d4b0fa1be5",
    "60e915d11e8c9a9a112ecb448db39db3ad3cb25d8f51ece4b627724bdb5ea812",
    "fba6eb68cf7d6e2953706232166b17c5adc80a56fab5f17384f57e1ffdc21b1b",
    "a7a6a229a82b77a8b43e32e1680ece4b5b3dd7491341e041e43b9cf817670850",
)


def _images_url(path: str) -> str:
    # github.com/<repo>/raw/<commit>/<path> resolves an abbreviated commit (the data set notes give 7 digits).
    return f"https://github.com/{MSRS_IMAGES_REPO}/raw/{MSRS_IMAGES_COMMIT}/{path}"


def _boxes_url(path: str) -> str:
    return f"https://raw.githubusercontent.com/{MSRS_BOXES_REPO}/{MSRS_BOXES_COMMIT}/{path}"


def _manifest() -> list[DataFile]:
    files = []
    for pair in MSRS_PAIRS:
        files.append(DataFile(f"msrs/ir/{pair.name}.png", pair.ir_sha256,
                              _images_url(f"datasets/test_imgs/ir/{pair.name}.png")))
        files.append(DataFile(f"msrs/vi/{pair.name}.png", pair.vis_sha256,
                              _images_url(f"datasets/test_imgs/vi/{pair.name}.png")))
        if pair.boxes is not None:
            for modality, digest in zip(BOX_MODALITIES, pair.boxes, strict=True):
                files.append(DataFile(f"msrs/boxes/{modality}/{pair.name}.txt", digest,
                                      _boxes_url(f"{modality}/test/{pair.name}.txt")))
    files.append(DataFile("msrs/boxes/classes.txt", CLASSES_SHA256, _boxes_url("classes.txt")))
    for i, digest in enumerate(M3FD_BOXES):
        files.append(DataFile(f"m3fd_samples/boxes/{i:05d}.txt", digest, None, M3FD_BOXES_SOURCE))
    files.append(DataFile("m3fd_samples/boxes/classes.txt", CLASSES_SHA256, None, M3FD_BOXES_SOURCE))
    return files


MANIFEST = _manifest()


def splits_csv_text() -> str:
    """The `splits.csv` of the fetched MSRS pairs: the same columns and values as the full data set's."""
    return "".join(f"{row}\n" for row in [SPLITS_HEADER, *(f"{p.name},{p.split},{p.light}" for p in MSRS_PAIRS)])


def _download(item: DataFile, dest: Path, timeout: float) -> str:
    try:
        with urllib.request.urlopen(item.url, timeout=timeout) as response:
            _install_checked(lambda out: shutil.copyfileobj(response, out), item, dest, item.url)
    except FetchError:
        raise
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise FetchError(f"could not download {item.url}: {exc}. Offline? Set ${DATA_MIRROR_ENV} to a folder "
                         "holding the same files (the data sets' layout: msrs/ir/NAME.png, ...)") from exc
    return item.url


def _copy(item: DataFile, mirror: Path, dest: Path) -> str:
    source = mirror / item.local
    if not source.is_file():
        raise FetchError(f"mirror {mirror} has no {item.local}")
    with open(source, "rb") as src:
        _install_checked(lambda out: shutil.copyfileobj(src, out), item, dest, str(source))
    return f"mirror {source}"


def _write_splits(path: Path) -> None:
    text = splits_csv_text()
    if path.is_file() and path.read_text() == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="splits.", suffix=".part", dir=path.parent)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def fetch_data(
    groups: Iterable[str] = GROUPS,
    dest_dir: Path | None = None,
    mirror: Path | None = None,
    timeout: float = 60.0,
    progress: Callable[[DataFile, str], None] | None = None,
) -> Path:
    """Make sure the files of `groups` ("msrs", "m3fd_samples") are in `dest_dir`, each sha256-verified.

    Files already present with the right sha256 are kept; others come from the mirror (`mirror`, else
    $SAGE_ROS_DATA_MIRROR) when one is given, else from their pinned upstream URL. Raises FetchError (a
    MirrorOnlyError for a file only a mirror can supply). Returns `dest_dir` (default `datasets_dir()`).
    """
    groups = tuple(groups)
    unknown = sorted(set(groups) - set(GROUPS))
    if unknown:
        raise ValueError(f"unknown data groups {unknown}: choose from {list(GROUPS)}")
    dest_dir = Path(dest_dir) if dest_dir else datasets_dir()
    if mirror is None and os.environ.get(DATA_MIRROR_ENV):
        mirror = Path(os.environ[DATA_MIRROR_ENV])
    if mirror is not None and not Path(mirror).is_dir():
        raise FetchError(f"data mirror folder {mirror} does not exist or is not a folder")
    for item in (f for f in MANIFEST if f.group in groups):
        dest = dest_dir / item.local
        if is_valid(dest, item.sha256):
            source = f"already in {dest_dir}"
        elif mirror is not None:
            source = _copy(item, Path(mirror), dest)
        elif item.url is None:
            raise MirrorOnlyError(f"{item.local} has no upstream download (it was derived from {item.source}): "
                                  f"set ${DATA_MIRROR_ENV} to a folder holding it")
        else:
            source = _download(item, dest, timeout)
        log.debug("%s: %s", item.local, source)
        if progress is not None:
            progress(item, source)
    if "msrs" in groups:
        _write_splits(dest_dir / "msrs" / "splits.csv")
    return dest_dir
