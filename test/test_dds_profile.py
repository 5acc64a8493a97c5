"""The node's Fast DDS profile choice (sage_ros/node/dds_profile.py): pure rules, the real shipped XML."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from sage_ros.node.dds_profile import (
    CHOICE_ENV,
    PROFILE_ENV,
    SEGMENT_BYTES,
    apply_profile,
    choose_profile,
    package_profile_path,
)

PLENTY = 1 << 30


def _profile(tmp_path: Path) -> Path:
    path = tmp_path / "pkg" / "fastdds_large_frames.xml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("<dds/>")
    return path


def test_default_is_the_package_profile(tmp_path: Path) -> None:
    profile = _profile(tmp_path)
    choice = choose_profile({}, cwd=tmp_path, shm_free=PLENTY, package_profile=profile)
    assert choice.path == profile and not choice.problem
    assert "package profile" in choice.reason and f"{CHOICE_ENV}=fastdds" in choice.reason


def test_the_environment_and_other_middlewares_win(tmp_path: Path) -> None:
    profile = _profile(tmp_path)
    for env in ({PROFILE_ENV: "/etc/my.xml"}, {"FASTRTPS_DEFAULT_PROFILES_FILE": "/etc/old.xml"},
                {"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"}, {CHOICE_ENV: "fastdds"}, {CHOICE_ENV: "none"}):
        choice = choose_profile(env, cwd=tmp_path, shm_free=PLENTY, package_profile=profile)
        assert choice.path is None and not choice.problem, (env, choice)
    # Fast DDS on purpose: the package profile applies.
    chosen = choose_profile({"RMW_IMPLEMENTATION": "rmw_fastrtps_cpp"}, cwd=tmp_path, shm_free=PLENTY,
                            package_profile=profile)
    assert chosen.path == profile
    # A profile file in the working directory is loaded by Fast DDS itself: leave it alone.
    (tmp_path / "DEFAULT_FASTDDS_PROFILES.xml").write_text("<dds/>")
    choice = choose_profile({}, cwd=tmp_path, shm_free=PLENTY, package_profile=profile)
    assert choice.path is None and "working directory" in choice.reason


def test_explicit_path_missing_path_and_small_shm(tmp_path: Path) -> None:
    profile = _profile(tmp_path)
    mine = tmp_path / "mine.xml"
    mine.write_text("<dds/>")
    assert choose_profile({CHOICE_ENV: str(mine)}, cwd=tmp_path, shm_free=PLENTY).path == mine.resolve()
    missing = choose_profile({CHOICE_ENV: str(tmp_path / "nope.xml")}, cwd=tmp_path, shm_free=PLENTY)
    assert missing.path is None and missing.problem and "no such file" in missing.reason
    # A container's default 64 MB /dev/shm cannot hold two 32 MB segments.
    small = choose_profile({}, cwd=tmp_path, shm_free=64 * 2**20 - 1, package_profile=profile)
    assert small.path is None and "/dev/shm" in small.reason and "shm-size" in small.reason
    # Unknown free space (no /dev/shm to ask): the profile still applies.
    assert choose_profile({}, cwd=tmp_path, shm_free=None, package_profile=profile).path == profile


def test_apply_sets_the_variable_only_when_a_profile_is_chosen(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    env: dict[str, str] = {CHOICE_ENV: "fastdds"}
    assert apply_profile(env).path is None and PROFILE_ENV not in env
    env = {PROFILE_ENV: "/etc/my.xml"}
    apply_profile(env)
    assert env[PROFILE_ENV] == "/etc/my.xml"


def test_the_shipped_profile_is_found_and_matches_the_segment_size_assumed() -> None:
    path = package_profile_path()
    assert path is not None and path.name == "fastdds_large_frames.xml"
    ns = {"d": "http://www.eprosima.com"}
    root = ET.parse(path).getroot()
    sizes = [int(e.text) for e in root.iterfind(".//d:transport_descriptor/d:segment_size", ns)]
    assert sizes == [SEGMENT_BYTES]
    # UDPv4 stays beside shared memory: subscribers on other hosts (rviz on a laptop) still get the images.
    types = [e.text for e in root.iterfind(".//d:transport_descriptor/d:type", ns)]
    assert types == ["SHM", "UDPv4"]


def test_launch_argument_maps_to_the_node_environment(tmp_path: Path) -> None:
    """launch/sage_fusion.launch.py: dds_profile '' lets the node decide, fastdds keeps Fast DDS defaults,
    a path is passed on, a missing path fails the launch with its name."""
    import importlib.util

    pytest.importorskip("launch_ros", reason="launch_ros not installed (CI installs it from ../shared/ros_src)")
    path = Path(__file__).resolve().parents[1] / "launch" / "sage_fusion.launch.py"
    spec = importlib.util.spec_from_file_location("sage_fusion_launch", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module._dds_env("", None) == {}
    assert module._dds_env("fastdds", None) == {CHOICE_ENV: "fastdds"}
    mine = tmp_path / "mine.xml"
    mine.write_text("<dds/>")
    assert module._dds_env(str(mine), None) == {PROFILE_ENV: str(mine.resolve())}
    with pytest.raises(RuntimeError, match="no such file"):
        module._dds_env(str(tmp_path / "missing.xml"), None)
