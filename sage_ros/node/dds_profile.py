"""Which Fast DDS profile the node's process starts with. No ROS import: decided before rclpy.init.

The node publishes multi-MB images (1280x720 rgb8 is 2.7 MB). Fast DDS's default shared-memory segment
is 512 KB, so every such sample goes out in fragments and waits for acknowledgements; on a 2-core CPU
that costs 20-30 ms per fused image to a same-host subscriber, and a RELIABLE fragment lost under load
is repaired seconds later (docs/speed.md). The package's profile (config/fastdds_large_frames.xml) gives
the process 32 MB segments and keeps UDPv4 for other hosts, so the node uses it unless the environment
already chose a profile or the host cannot hold the segments.

SAGE_ROS_DDS_PROFILE: unset or `large_frames` (default) | `fastdds` (Fast DDS's own defaults) | a path.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path

CHOICE_ENV = "SAGE_ROS_DDS_PROFILE"
PROFILE_ENV = "FASTDDS_DEFAULT_PROFILES_FILE"
# Fast DDS also reads these: a user who set any of them chose a profile already.
USER_PROFILE_ENVS = (PROFILE_ENV, "FASTRTPS_DEFAULT_PROFILES_FILE")
CWD_PROFILE_FILES = ("DEFAULT_FASTDDS_PROFILES.xml", "DEFAULT_FASTRTPS_PROFILES.xml")
PACKAGE_PROFILE = "fastdds_large_frames.xml"
SEGMENT_BYTES = 32 * 1024 * 1024  # the segment_size in the package profile
FASTDDS_DEFAULTS = ("fastdds", "none", "off")  # not "default": that could read as the node's default


@dataclass(frozen=True)
class ProfileChoice:
    path: Path | None  # the profile to set, None = leave the environment as it is
    reason: str  # one line for the start-up log
    problem: bool = False  # the user asked for something that cannot be used: log it as a warning


def package_profile_path(start: Path | None = None) -> Path | None:
    """The package's large-frames profile: next to the checkout, or under an install prefix's share/."""
    here = (start or Path(__file__)).resolve()
    candidates = [here.parents[2] / "config" / PACKAGE_PROFILE]  # source checkout / editable install
    # colcon (install/sage_ros/lib/pythonX.Y/site-packages/sage_ros/node/) and pip (sys.prefix) prefixes.
    candidates += [p / "share" / "sage_ros" / "config" / PACKAGE_PROFILE for p in here.parents]
    candidates.append(Path(sys.prefix) / "share" / "sage_ros" / "config" / PACKAGE_PROFILE)
    return next((c for c in candidates if c.is_file()), None)


def shm_free_bytes(path: str = "/dev/shm") -> int | None:
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def choose_profile(
    environ: Mapping[str, str],
    cwd: Path | None = None,
    shm_free: int | None = -1,
    package_profile: Path | None = None,
) -> ProfileChoice:
    """Decide the process's Fast DDS profile from its environment.

    cwd: where Fast DDS would look for a default profile file (default: the working directory).
    shm_free: free bytes in /dev/shm; -1 (default) measures it, None means unknown (the profile applies).
    package_profile: the package's XML (default: `package_profile_path()`).
    """
    rmw = environ.get("RMW_IMPLEMENTATION", "")
    if rmw and not rmw.startswith("rmw_fastrtps"):
        return ProfileChoice(None, f"RMW_IMPLEMENTATION={rmw}: not Fast DDS, no profile set")
    for name in USER_PROFILE_ENVS:
        if environ.get(name):
            return ProfileChoice(None, f"{name}={environ[name]} (the environment's profile)")
    cwd = cwd or Path.cwd()
    for name in CWD_PROFILE_FILES:
        if (cwd / name).is_file():
            return ProfileChoice(None, f"{cwd / name} (Fast DDS loads it from the working directory)")
    choice = environ.get(CHOICE_ENV, "").strip()
    if choice.lower() in FASTDDS_DEFAULTS:
        return ProfileChoice(None, f"{CHOICE_ENV}={choice}: Fast DDS defaults (512 KB shared-memory segments)")
    if choice and choice != "large_frames":
        path = Path(choice).expanduser()
        if not path.is_file():
            return ProfileChoice(None, f"{CHOICE_ENV}={choice}: no such file (use large_frames, fastdds or a "
                                       "path): Fast DDS defaults", problem=True)
        return ProfileChoice(path.resolve(), f"{CHOICE_ENV}={choice}")
    profile = package_profile if package_profile is not None else package_profile_path()
    if profile is None:
        return ProfileChoice(None, f"{PACKAGE_PROFILE} not found beside the package: Fast DDS defaults")
    free = shm_free_bytes() if shm_free == -1 else shm_free
    if free is not None and free < 2 * SEGMENT_BYTES:
        # A container's 64 MB /dev/shm cannot hold two 32 MB segments: Fast DDS would fail its
        # shared-memory transport. Its defaults (512 KB) still work there.
        return ProfileChoice(None, f"/dev/shm has {free // 2**20} MB free, under 2 x {SEGMENT_BYTES // 2**20} MB "
                                   "segments: Fast DDS defaults (give the container a bigger --shm-size)")
    return ProfileChoice(profile, f"package profile {profile} (32 MB shared-memory segments for multi-MB "
                                  f"images; {CHOICE_ENV}=fastdds keeps Fast DDS defaults)")


def apply_profile(environ: MutableMapping[str, str] | None = None) -> ProfileChoice:
    """Choose and set FASTDDS_DEFAULT_PROFILES_FILE; call before rclpy.init (Fast DDS reads it once)."""
    environ = os.environ if environ is None else environ
    choice = choose_profile(environ)
    if choice.path is not None:
        environ[PROFILE_ENV] = str(choice.path)
    return choice
