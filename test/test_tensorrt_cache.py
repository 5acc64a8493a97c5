"""Engine cache logic with real files: naming, sidecars, stale and corrupt detection, build-once.

TensorRT is not installed here, so the cache gets a stand-in `build_fn` that writes a small plan
file with a marker and a `deserialize_fn` that accepts only such files. That exercises every branch
of the cache; nothing here claims TensorRT ran (the GPU tests are in test_tensorrt_backend.py).
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import pytest

from sage_ros.paths import sha256_of
from sage_ros.tensorrt.engine_cache import (
    EngineCache,
    EngineCacheError,
    EngineSpec,
    MachineInfo,
    corrupt_reasons,
    engine_filename,
    read_sidecar,
    sidecar_path,
    stale_reasons,
)
from sage_ros.tensorrt.shapes import ShapeProfile

MARKER = b"SAGE-TEST-PLAN\n"  # what the stand-in builder writes; not a TensorRT plan
ORIN = MachineInfo("8.6.2", "Orin", "8.7")
PROFILE = ShapeProfile((64, 64), (480, 640), (768, 1024))


class StandInTrt:
    """Counts builds and deserialisations; `fail_deserialize` makes every load fail."""

    def __init__(self) -> None:
        self.builds = 0
        self.loads = 0
        self.fail_deserialize = False

    def build(self, spec: EngineSpec) -> bytes:
        self.builds += 1
        return MARKER + json.dumps({"precision": spec.precision, "build": self.builds}).encode() + b"\0" * 4096

    def deserialize(self, data: bytes):
        self.loads += 1
        if self.fail_deserialize or not data.startswith(MARKER):
            return None  # TensorRT's deserialize_cuda_engine returns None for a plan it cannot read
        return {"plan_bytes": len(data)}


@pytest.fixture()
def onnx_file(tmp_path: Path) -> Path:
    # Only its bytes matter to the cache (checksum); the ONNX checks have their own tests on the real model.
    path = tmp_path / "sage_student.onnx"
    path.write_bytes(b"stand-in onnx bytes for checksum tests " * 50)
    return path


@pytest.fixture()
def trt() -> StandInTrt:
    return StandInTrt()


def make_cache(tmp_path: Path, trt: StandInTrt, machine: MachineInfo = ORIN) -> EngineCache:
    return EngineCache(tmp_path / "engines", machine, build_fn=trt.build, deserialize_fn=trt.deserialize)


def spec_for(onnx_file: Path, precision: str = "fp16", **kw) -> EngineSpec:
    return EngineSpec.from_onnx(onnx_file, precision, kw.pop("profile", PROFILE), **kw)


def test_engine_name_holds_model_checksum_version_gpu_and_precision(onnx_file: Path) -> None:
    spec = spec_for(onnx_file, "int8")
    sha = sha256_of(onnx_file)
    assert engine_filename(spec, ORIN) == f"sage_student-{sha[:12]}-trt8.6.2-sm87-int8.engine"
    dla = spec_for(onnx_file, "fp16", dla_core=1)
    assert engine_filename(dla, MachineInfo("10.3.0", "Orin", "8.7")).endswith("-trt10.3.0-sm87-fp16-dla1.engine")


def test_first_start_builds_and_writes_sidecar_round_trip(tmp_path: Path, onnx_file: Path, trt) -> None:
    cache = make_cache(tmp_path, trt)
    spec = spec_for(onnx_file)
    result = cache.load_or_build(spec)
    assert result.built and trt.builds == 1
    assert result.path == tmp_path / "engines" / engine_filename(spec, ORIN)
    sidecar = read_sidecar(sidecar_path(result.path))
    assert sidecar == result.sidecar
    assert sidecar["tensorrt_version"] == "8.6.2"
    assert sidecar["gpu_name"] == "Orin"
    assert sidecar["compute_capability"] == "8.7"
    assert sidecar["precision"] == "fp16"
    assert sidecar["onnx_sha256"] == sha256_of(onnx_file)
    assert ShapeProfile.from_json(sidecar["shapes"]) == PROFILE
    assert sidecar["engine_size"] == result.path.stat().st_size
    assert sidecar["engine_sha256"] == sha256_of(result.path)
    assert sidecar["build_seconds"] >= 0 and sidecar["built_at"].endswith("+00:00")
    assert stale_reasons(sidecar, spec, ORIN) == []
    assert corrupt_reasons(result.path, sidecar) == []


def test_second_start_loads_without_rebuilding(tmp_path: Path, onnx_file: Path, trt, caplog) -> None:
    spec = spec_for(onnx_file)
    make_cache(tmp_path, trt).load_or_build(spec)
    caplog.clear()
    for _ in range(3):  # three node restarts
        with caplog.at_level(logging.INFO, logger="sage_ros.tensorrt.engine_cache"):
            result = make_cache(tmp_path, trt).load_or_build(spec)
        assert not result.built and result.reasons == []
        assert result.engine == {"plan_bytes": result.path.stat().st_size}
    assert trt.builds == 1
    assert "loaded" in caplog.text and "building" not in caplog.text


STALE_FIELDS = {
    # sidecar field: a value that an engine built elsewhere would carry
    "tensorrt_version": "10.3.0",
    "compute_capability": "7.2",
    "gpu_name": "Xavier",
    "precision": "fp32",
    "onnx_sha256": "0" * 64,
    "shapes": {"min": [480, 640], "opt": [480, 640], "max": [480, 640]},
    "dla_core": 0,
}


@pytest.mark.parametrize("field", sorted(STALE_FIELDS))
def test_stale_field_is_detected_and_rebuilt_once_with_reason(
    tmp_path: Path, onnx_file: Path, trt, caplog, field: str
) -> None:
    spec = spec_for(onnx_file)
    cache = make_cache(tmp_path, trt)
    path = cache.load_or_build(spec).path
    caplog.clear()
    sidecar = read_sidecar(sidecar_path(path))
    sidecar[field] = STALE_FIELDS[field]
    sidecar_path(path).write_text(json.dumps(sidecar))
    reasons = stale_reasons(sidecar, spec, ORIN)
    assert len(reasons) == 1 and reasons[0].startswith(field), reasons

    with caplog.at_level(logging.WARNING, logger="sage_ros.tensorrt.engine_cache"):
        result = make_cache(tmp_path, trt).load_or_build(spec)
    assert result.built and trt.builds == 2
    assert any(field in r for r in result.reasons)
    assert f"building {path.name} because {field}" in caplog.text
    # ... and once only: the rebuilt engine is then reused.
    assert not make_cache(tmp_path, trt).load_or_build(spec).built
    assert trt.builds == 2


def test_tensorrt_upgrade_builds_new_engine_and_says_which_old_one_no_longer_fits(
    tmp_path: Path, onnx_file: Path, trt, caplog
) -> None:
    spec = spec_for(onnx_file)
    old = make_cache(tmp_path, trt).load_or_build(spec).path
    caplog.clear()
    upgraded = MachineInfo("10.3.0", "Orin", "8.7")  # JetPack 6.0 -> 6.1
    with caplog.at_level(logging.WARNING, logger="sage_ros.tensorrt.engine_cache"):
        new = make_cache(tmp_path, trt, upgraded).load_or_build(spec)
    assert new.built and new.path != old and "trt10.3.0" in new.path.name
    assert old.name in caplog.text and "tensorrt_version '8.6.2' != '10.3.0'" in caplog.text


def test_changed_onnx_gets_a_new_engine(tmp_path: Path, onnx_file: Path, trt) -> None:
    first = make_cache(tmp_path, trt).load_or_build(spec_for(onnx_file)).path
    onnx_file.write_bytes(onnx_file.read_bytes() + b"retrained")
    second = make_cache(tmp_path, trt).load_or_build(spec_for(onnx_file))
    assert second.built and second.path != first and trt.builds == 2


@pytest.mark.parametrize("damage", ["truncate", "flip_byte", "empty", "delete_sidecar", "garbage_sidecar"])
def test_corrupt_engine_is_detected_and_rebuilt(tmp_path: Path, onnx_file: Path, trt, caplog, damage) -> None:
    spec = spec_for(onnx_file)
    path = make_cache(tmp_path, trt).load_or_build(spec).path
    caplog.clear()
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flip_byte":  # same size, different content: only the checksum can tell
        path.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "delete_sidecar":
        sidecar_path(path).unlink()
    else:
        sidecar_path(path).write_text("{ not json")
    expected = {
        "truncate": "size", "flip_byte": "sha256", "empty": "empty",
        "delete_sidecar": "no sidecar", "garbage_sidecar": "unreadable",
    }[damage]
    with caplog.at_level(logging.WARNING, logger="sage_ros.tensorrt.engine_cache"):
        result = make_cache(tmp_path, trt).load_or_build(spec)
    assert result.built and trt.builds == 2
    assert expected in " ".join(result.reasons) and expected in caplog.text
    assert corrupt_reasons(result.path, read_sidecar(sidecar_path(result.path))) == []


def test_engine_that_fails_to_deserialise_is_rebuilt(tmp_path: Path, onnx_file: Path, trt) -> None:
    spec = spec_for(onnx_file)
    path = make_cache(tmp_path, trt).load_or_build(spec).path
    # A plan whose sidecar still matches (e.g. written by a TensorRT of the same version string but
    # another build): only deserialisation finds out. Rewrite plan + sidecar consistently.
    path.write_bytes(b"not a plan" * 100)
    sidecar = read_sidecar(sidecar_path(path))
    sidecar.update(engine_size=path.stat().st_size, engine_sha256=sha256_of(path))
    sidecar_path(path).write_text(json.dumps(sidecar))
    result = make_cache(tmp_path, trt).load_or_build(spec)
    assert result.built and "deserialisation failed" in result.reasons[0]


def test_fresh_build_that_does_not_load_stops_instead_of_looping(tmp_path: Path, onnx_file: Path, trt) -> None:
    trt.fail_deserialize = True
    with pytest.raises(EngineCacheError, match="freshly built engine .* does not load"):
        make_cache(tmp_path, trt).load_or_build(spec_for(onnx_file))
    assert trt.builds == 1
    assert not list((tmp_path / "engines").glob("*.json")), "no sidecar may vouch for a plan that does not load"


def test_build_failure_is_reported_with_engine_name(tmp_path: Path, onnx_file: Path) -> None:
    def failing_build(spec):
        raise RuntimeError("out of workspace")

    cache = EngineCache(tmp_path / "engines", ORIN, build_fn=failing_build, deserialize_fn=bytes)
    expected = "building sage_student-.*fp16.engine failed: RuntimeError: out of workspace"
    with pytest.raises(EngineCacheError, match=expected):
        cache.load_or_build(spec_for(onnx_file))
    cache = EngineCache(tmp_path / "engines", ORIN, build_fn=lambda spec: b"", deserialize_fn=bytes)
    with pytest.raises(EngineCacheError, match="returned no engine"):
        cache.load_or_build(spec_for(onnx_file))


def test_force_rebuilds(tmp_path: Path, onnx_file: Path, trt) -> None:
    spec = spec_for(onnx_file)
    make_cache(tmp_path, trt).load_or_build(spec)
    result = make_cache(tmp_path, trt).load_or_build(spec, force=True)
    assert result.built and result.reasons == ["rebuild forced"] and trt.builds == 2


def test_explicit_engine_path(tmp_path: Path, onnx_file: Path, trt) -> None:
    spec = spec_for(onnx_file)
    explicit = tmp_path / "robot" / "fusion.engine"
    built = make_cache(tmp_path, trt).load_or_build(spec, engine_path=explicit)
    assert built.built and explicit.is_file() and sidecar_path(explicit).is_file()
    assert not make_cache(tmp_path, trt).load_or_build(spec, engine_path=explicit).built

    # Without the ONNX the engine is still usable when it matches ...
    no_onnx = replace(spec, onnx_path=None, onnx_sha256=None)
    assert not make_cache(tmp_path, trt).load_or_build(no_onnx, engine_path=explicit).built
    # (its precision and profile are the built ones: nothing could be rebuilt to match a wish)
    other_settings = replace(no_onnx, precision="fp32", profile=ShapeProfile.fixed((480, 640)))
    loaded = make_cache(tmp_path, trt).load_or_build(other_settings, engine_path=explicit)
    assert not loaded.built and loaded.sidecar["precision"] == "fp16"
    # ... and a stale one is an error that says what to do, not a crash or a silent wrong engine.
    other_gpu = MachineInfo("8.6.2", "Xavier", "7.2")
    with pytest.raises(EngineCacheError, match="compute_capability.*no ONNX model was given"):
        make_cache(tmp_path, trt, other_gpu).load_or_build(no_onnx, engine_path=explicit)


def test_explicit_engine_without_sidecar_is_trusted_only_if_it_loads(
    tmp_path: Path, onnx_file: Path, trt, caplog
) -> None:
    spec = spec_for(onnx_file)
    foreign = tmp_path / "from_trtexec.engine"
    foreign.write_bytes(MARKER + b"built elsewhere")
    with caplog.at_level(logging.WARNING, logger="sage_ros.tensorrt.engine_cache"):
        result = make_cache(tmp_path, trt).load_or_build(spec, engine_path=foreign)
    assert not result.built and trt.builds == 0 and "no sidecar" in caplog.text
    foreign.write_bytes(b"garbage")
    result = make_cache(tmp_path, trt).load_or_build(spec, engine_path=foreign)
    assert result.built and "engine without sidecar" in result.reasons[0]


def test_bad_precision_and_missing_onnx_are_clear_errors(tmp_path: Path, onnx_file: Path) -> None:
    with pytest.raises(EngineCacheError, match="precision must be one of fp32, fp16, int8"):
        spec_for(onnx_file, "bf16")
    with pytest.raises(EngineCacheError, match="does not exist: run `sage-ros export`"):
        EngineSpec.from_onnx(tmp_path / "missing.onnx", "fp16", PROFILE)
