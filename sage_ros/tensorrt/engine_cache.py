"""TensorRT engine cache: one engine per ONNX checksum, TensorRT version, GPU and precision, with a JSON
sidecar, stale and corrupt detection and build-once (naming and behaviour: docs/jetson.md). TensorRT is
reached only through `build_fn` and `deserialize_fn`, so this is tested with real files without a GPU.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from sage_ros.paths import sha256_of, write_atomic
from sage_ros.tensorrt.shapes import ShapeError, ShapeProfile

log = logging.getLogger(__name__)

SIDECAR_FORMAT = 1
PRECISIONS = ("fp32", "fp16", "int8")
ENGINE_SUFFIX = ".engine"


class EngineCacheError(RuntimeError):
    """The cache cannot produce a usable engine (build failed, nothing to build from, ...)."""


@dataclass(frozen=True)
class MachineInfo:
    """What an engine is tied to on the running machine."""

    tensorrt_version: str  # tensorrt.__version__, e.g. "8.6.2" or "10.3.0"
    gpu_name: str  # e.g. "Orin" or "NVIDIA GeForce RTX 3060"
    compute_capability: str  # "major.minor", e.g. "8.7"

    @property
    def sm(self) -> str:
        """Compute capability as it appears in file names: '8.7' -> '87'."""
        return self.compute_capability.replace(".", "")


@dataclass(frozen=True)
class EngineSpec:
    """What an engine is built from and for."""

    model: str  # file-name stem of the ONNX, e.g. "sage_student"
    onnx_path: Path | None  # None only when an explicit engine is loaded without its ONNX
    onnx_sha256: str | None
    precision: str
    profile: ShapeProfile
    dla_core: int | None = None

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise EngineCacheError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")

    @classmethod
    def from_onnx(
        cls, onnx_path: str | Path, precision: str, profile: ShapeProfile, dla_core: int | None = None
    ) -> EngineSpec:
        path = Path(onnx_path)
        if not path.is_file():
            raise EngineCacheError(f"ONNX model {path} does not exist: run `sage-ros export` first")
        return cls(_safe_stem(path.stem), path, sha256_of(path), precision, profile, dla_core)


@dataclass
class CachedEngine:
    """The outcome of `load_or_build`."""

    path: Path
    sidecar: dict
    engine: object  # whatever deserialize_fn returned (an ICudaEngine)
    built: bool  # True when this call built it
    reasons: list[str]  # why it was (re)built; empty when loaded from the cache


def _safe_stem(stem: str) -> str:
    # File names travel between machines and shells: keep them to a portable alphabet.
    return re.sub(r"[^A-Za-z0-9_.]+", "_", stem) or "model"


def engine_filename(spec: EngineSpec, machine: MachineInfo) -> str:
    """`<model>-<onnx sha256[:12]>-trt<version>-sm<cc>-<precision>[-dla<n>].engine`."""
    if not spec.onnx_sha256:
        raise EngineCacheError("an engine's cache name needs the ONNX checksum")
    name = (
        f"{spec.model}-{spec.onnx_sha256[:12]}-trt{machine.tensorrt_version}"
        f"-sm{machine.sm}-{spec.precision}"
    )
    if spec.dla_core is not None:
        name += f"-dla{spec.dla_core}"
    return name + ENGINE_SUFFIX


def sidecar_path(engine_path: str | Path) -> Path:
    return Path(engine_path).with_suffix(".json")


def make_sidecar(engine_path: Path, spec: EngineSpec, machine: MachineInfo, build_seconds: float) -> dict:
    """Describe a freshly written engine file (its size and sha256 make later corruption visible)."""
    return {
        "format": SIDECAR_FORMAT,
        "engine_file": engine_path.name,
        "engine_size": engine_path.stat().st_size,
        "engine_sha256": sha256_of(engine_path),
        "tensorrt_version": machine.tensorrt_version,
        "gpu_name": machine.gpu_name,
        "compute_capability": machine.compute_capability,
        "precision": spec.precision,
        "dla_core": spec.dla_core,
        "shapes": spec.profile.to_json(),
        "model": spec.model,
        "onnx_file": str(spec.onnx_path) if spec.onnx_path else None,
        "onnx_sha256": spec.onnx_sha256,
        "build_seconds": round(float(build_seconds), 3),
        "built_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def read_sidecar(path: str | Path) -> dict:
    """Read a sidecar; raises EngineCacheError when it is missing or not a JSON object."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise EngineCacheError(f"no sidecar {path.name}") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EngineCacheError(f"sidecar {path.name} is unreadable ({exc})") from exc
    if not isinstance(data, dict):
        raise EngineCacheError(f"sidecar {path.name} is not a JSON object")
    return data


def stale_reasons(sidecar: dict, spec: EngineSpec, machine: MachineInfo) -> list[str]:
    """Every field where the engine described by `sidecar` differs from what this run needs.

    Without the ONNX (spec.onnx_sha256 None: an explicit engine deployed alone) nothing could be
    rebuilt, so only what decides whether the plan runs here is checked; its precision and profile
    are then whatever it was built with.
    """
    expected: dict[str, object] = {
        "format": SIDECAR_FORMAT,
        "tensorrt_version": machine.tensorrt_version,
        "compute_capability": machine.compute_capability,
        # TensorRT tunes for the exact GPU model, not only its architecture.
        "gpu_name": machine.gpu_name,
    }
    engine_only = spec.onnx_sha256 is None
    if not engine_only:
        expected.update(precision=spec.precision, dla_core=spec.dla_core, onnx_sha256=spec.onnx_sha256)
    reasons = [
        f"{key} {sidecar.get(key)!r} != {want!r}" for key, want in expected.items() if sidecar.get(key) != want
    ]
    if engine_only:
        return reasons
    try:
        built_profile = ShapeProfile.from_json(sidecar.get("shapes") or {})
    except ShapeError:
        reasons.append(f"shapes {sidecar.get('shapes')!r} unreadable")
    else:
        if built_profile != spec.profile:
            reasons.append(f"shapes {built_profile.to_json()} != {spec.profile.to_json()}")
    return reasons


def corrupt_reasons(engine_path: Path, sidecar: dict) -> list[str]:
    """Size and checksum checks of the engine file against what its sidecar recorded."""
    if not engine_path.is_file():
        return [f"engine file {engine_path.name} is missing"]
    size = engine_path.stat().st_size
    if size == 0:
        return [f"engine file {engine_path.name} is empty"]
    if sidecar.get("engine_size") != size:
        return [f"engine file size {size} != {sidecar.get('engine_size')} recorded (truncated or replaced)"]
    digest = sha256_of(engine_path)
    if sidecar.get("engine_sha256") != digest:
        return [f"engine sha256 {digest[:12]}... != {str(sidecar.get('engine_sha256'))[:12]}... recorded"]
    return []


@contextlib.contextmanager
def _build_lock(engine_path: Path) -> Iterator[None]:
    # Two nodes started together (two cameras) must not build the same engine twice or read a
    # half-written one: an advisory lock beside the engine serialises them.
    lock_path = engine_path.with_name(engine_path.name + ".lock")
    with open(lock_path, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


BuildFn = Callable[[EngineSpec], bytes]
DeserializeFn = Callable[[bytes], object]


class EngineCache:
    """Load-or-build of engines in one folder, for one machine."""

    def __init__(self, engine_dir: str | Path, machine: MachineInfo, build_fn: BuildFn,
                 deserialize_fn: DeserializeFn) -> None:
        self.engine_dir = Path(engine_dir)
        self.machine = machine
        self._build_fn = build_fn
        self._deserialize_fn = deserialize_fn

    def path_for(self, spec: EngineSpec) -> Path:
        return self.engine_dir / engine_filename(spec, self.machine)

    def _inspect(self, spec: EngineSpec, path: Path) -> tuple[dict, list[str]]:
        """The sidecar of the engine at `path` and why it cannot be used for `spec` here (empty: it can)."""
        if not path.is_file():
            return {}, [f"no cached engine {path.name}" + self._other_engines_note(spec, path)]
        try:
            sidecar = read_sidecar(sidecar_path(path))
        except EngineCacheError as exc:
            return {}, [str(exc)]
        return sidecar, stale_reasons(sidecar, spec, self.machine) + corrupt_reasons(path, sidecar)

    def _other_engines_note(self, spec: EngineSpec, engine_path: Path) -> str:
        # After a TensorRT or JetPack upgrade the name changes; say which old engine no longer fits.
        notes = []
        for other in sorted(self.engine_dir.glob(f"{spec.model}-*{ENGINE_SUFFIX}")):
            if other == engine_path:
                continue
            try:
                why = stale_reasons(read_sidecar(sidecar_path(other)), spec, self.machine)
            except EngineCacheError as exc:
                why = [str(exc)]
            notes.append(f"{other.name}: {', '.join(why) or 'matches but has another name'}")
        return f" (other engines here do not fit: {'; '.join(notes)})" if notes else ""

    def _deserialize(self, data: bytes) -> tuple[object, str | None]:
        try:
            engine = self._deserialize_fn(data)
        except Exception as exc:  # TensorRT raises RuntimeError/TypeError subclasses of its own
            return None, f"deserialisation failed ({type(exc).__name__}: {exc})"
        if engine is None:
            return None, "deserialisation failed (TensorRT returned no engine; see its log above)"
        return engine, None

    def load_or_build(
        self, spec: EngineSpec, engine_path: str | Path | None = None, force: bool = False
    ) -> CachedEngine:
        """Return a usable engine for `spec`, building (at most once per call) when needed.

        engine_path: an explicit engine file; default is the cache name in engine_dir. An explicit
        file without a sidecar (e.g. built with trtexec) is trusted if it deserialises.
        """
        explicit = engine_path is not None
        path = Path(engine_path) if explicit else self.path_for(spec)
        path.parent.mkdir(parents=True, exist_ok=True)
        with _build_lock(path):
            sidecar: dict = {}
            if force:
                reasons = ["rebuild forced"]
            elif explicit and path.is_file() and not sidecar_path(path).exists():
                reasons = []
                log.warning("engine %s has no sidecar: cannot check that it was built for TensorRT %s on %s",
                            path, self.machine.tensorrt_version, self.machine.gpu_name)
            else:
                sidecar, reasons = self._inspect(spec, path)
            if not reasons:
                engine, error = self._deserialize(path.read_bytes())
                if error is None:
                    log.info("engine cache: loaded %s (built %s)", path.name, sidecar.get("built_at", "elsewhere"))
                    return CachedEngine(path, sidecar, engine, False, [])
                reasons = [error if sidecar else f"engine without sidecar: {error}"]
            return self._rebuild(spec, path, reasons)

    def _rebuild(self, spec: EngineSpec, path: Path, reasons: list[str]) -> CachedEngine:
        if spec.onnx_path is None:
            raise EngineCacheError(
                f"engine {path} cannot be used ({'; '.join(reasons)}) and no ONNX model was given to "
                "rebuild it from: pass the ONNX model (onnx_path / --model) or a matching engine"
            )
        log.warning("engine cache: building %s because %s", path.name, "; ".join(reasons))
        start = time.monotonic()
        try:
            data = self._build_fn(spec)
        except EngineCacheError:
            raise
        except Exception as exc:
            raise EngineCacheError(f"building {path.name} failed: {type(exc).__name__}: {exc}") from exc
        if not data:
            raise EngineCacheError(f"building {path.name} failed: the builder returned no engine")
        seconds = time.monotonic() - start
        write_atomic(path, bytes(data))
        sidecar = make_sidecar(path, spec, self.machine, seconds)
        write_atomic(sidecar_path(path), (json.dumps(sidecar, indent=2, sort_keys=True) + "\n").encode())
        log.info("engine cache: built %s in %.1f s (%.1f MB)", path.name, seconds, len(data) / 1e6)
        engine, error = self._deserialize(bytes(data))
        if error is not None:
            # A fresh build that does not load is a TensorRT/driver problem: building again would
            # only loop, so stop with the reason (and leave no sidecar that vouches for the file).
            sidecar_path(path).unlink(missing_ok=True)
            raise EngineCacheError(f"freshly built engine {path.name} does not load: {error}")
        return CachedEngine(path, sidecar, engine, True, reasons)
