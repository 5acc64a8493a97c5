"""What the CPU can do fast (from /proc/cpuinfo), and the precision `auto` picks for a CPU backend.

The choice rule (issue: pick the fastest variant whose quality gate is met):
- OpenVINO + bf16 where the CPU has AMX-BF16 or AVX-512 BF16: measured on a 2-core AVX-512 BF16/VNNI
  CPU (no AMX) at 640x480, in one run: openvino fp32 231 ms, bf16 116 ms, 54 dB PSNR against fp32
  (gate: >= 40 dB). Without those instructions OpenVINO emulates bf16: no gain, so fp32.
- int8 (ONNX Runtime QDQ) is never picked by `auto`: it was faster where VNNI exists (120 ms vs 235 ms)
  but measured 39-42 dB against fp32 on the sample pairs, under the 40 dB gate on some of them.
- GPU backends (TensorRT, torch on CUDA) keep fp32 under `auto`; fp16/int8 are explicit choices there.
An explicit precision always wins. No ROS or runtime import here.

`ONEDNN_MAX_CPU_ISA` (oneDNN's instruction-set cap, honoured by OpenVINO's CPU plugin: measured here, its
convolutions switch from brgconv_avx512 to brgconv_avx2 kernels under AVX2) hides the flags above the cap:
a CPU capped below AVX-512 BF16 runs bf16 emulated, so `auto` must decide on what the runtime may use.
The same cap lets a benchmark run an AVX2-only CPU's code paths on an AVX-512 machine.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
# Flags that matter for inference speed, in the order they are printed.
INTERESTING = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
BF16_GATE_DB = 40.0
# Measured PSNR against fp32 (dB) on the six sample pairs: what the gate is checked against.
MEASURED_DB = {"openvino-bf16": 54.0, "onnxruntime-int8": 39.0}
ISA_CAP_ENV = "ONEDNN_MAX_CPU_ISA"
# The oneDNN level each flag needs, and the level each cap value allows (oneDNN's names, in its order:
# SSE41 < AVX < AVX2 < AVX2_VNNI < AVX512_CORE < _VNNI < _BF16 < _AMX). Flags not listed are kept.
_FLAG_LEVEL = {"avx2": 2, "fma": 2, "avx_vnni": 3, "avx512f": 4, "avx512_vnni": 5, "avx512_bf16": 6,
               "amx_tile": 7, "amx_bf16": 7, "amx_int8": 7}
_CAP_LEVEL = {"SSE41": 0, "AVX": 1, "AVX2": 2, "AVX2_VNNI": 3, "AVX2_VNNI_2": 3, "AVX512_CORE": 4,
              "AVX512_CORE_VNNI": 5, "AVX512_CORE_BF16": 6, "AVX512_CORE_FP16": 6, "AVX10_1_512": 6,
              "AVX10_2_512": 6, "AVX512_CORE_AMX": 7, "AVX512_CORE_AMX_FP16": 7, "AVX10_1_512_AMX": 7,
              "AVX10_1_512_AMX_FP16": 7, "AVX10_2_512_AMX_2": 7}


@dataclass(frozen=True)
class CpuFeatures:
    flags: frozenset[str]
    model_name: str = ""
    cores: int = 0
    isa_cap: str = ""  # the ONEDNN_MAX_CPU_ISA value that removed flags, if any

    def has(self, flag: str) -> bool:
        return flag in self.flags

    @property
    def avx2(self) -> bool:
        return self.has("avx2")

    @property
    def avx512(self) -> bool:
        return self.has("avx512f")

    @property
    def vnni(self) -> bool:
        return self.has("avx512_vnni") or self.has("avx_vnni")

    @property
    def bf16(self) -> bool:
        """Native bf16 arithmetic: AVX-512 BF16 or AMX-BF16."""
        return self.has("avx512_bf16") or self.has("amx_bf16")

    @property
    def amx(self) -> bool:
        return self.has("amx_tile") and (self.has("amx_bf16") or self.has("amx_int8"))

    def summary(self) -> str:
        present = [f for f in INTERESTING if f in self.flags]
        name = f"{self.model_name}, " if self.model_name else ""
        cap = f" (capped at {self.isa_cap} by {ISA_CAP_ENV})" if self.isa_cap else ""
        return f"{name}{self.cores or '?'} cores, flags: {' '.join(present) or 'none of ' + '/'.join(INTERESTING)}{cap}"


def apply_isa_cap(features: CpuFeatures, cap: str | None) -> CpuFeatures:
    """The features a oneDNN runtime may use under `cap` (an ONEDNN_MAX_CPU_ISA value).

    Unset, empty, DEFAULT, ALL or a name this table does not know leave the features as they are (oneDNN
    itself ignores a value it cannot parse)."""
    level = _CAP_LEVEL.get((cap or "").strip().upper())
    if level is None:
        return features
    kept = frozenset(f for f in features.flags if _FLAG_LEVEL.get(f, -1) <= level)
    if kept == features.flags:
        return features
    return CpuFeatures(kept, features.model_name, features.cores, cap.strip().upper())


def parse_cpuinfo(text: str) -> CpuFeatures:
    """Flags present on every processor listed (a feature missing on one core is treated as absent)."""
    flag_sets: list[set[str]] = []
    model = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("flags", "features"):  # x86 says flags, ARM says Features
            flag_sets.append(set(value.split()))
        elif key == "model name" and not model:
            model = value.strip()
    flags = frozenset(set.intersection(*flag_sets)) if flag_sets else frozenset()
    return CpuFeatures(flags, model, len(flag_sets))


def usable_cores(listed: int, cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """The logical CPUs this process may run on: the ones listed, fewer where its affinity mask or a cgroup
    CPU quota (a container's `--cpus`) allows fewer. A property of how the machine is set up, never of its
    load. 0 where nothing is known."""
    counts = [listed] if listed > 0 else []
    if hasattr(os, "sched_getaffinity"):
        counts.append(len(os.sched_getaffinity(0)))
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota != "max" and int(period) > 0:
            counts.append(max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return min(counts) if counts else 0


def read_cpu_features(path: Path = CPUINFO, environ: Mapping[str, str] | None = None) -> CpuFeatures:
    """This machine's CPU features as the runtimes may use them (after any ONEDNN_MAX_CPU_ISA cap, with the
    cores this process may use); an empty flag set where /proc/cpuinfo cannot be read (not Linux)."""
    environ = os.environ if environ is None else environ
    try:
        features = parse_cpuinfo(Path(path).read_text(errors="replace"))
    except OSError:
        features = CpuFeatures(frozenset(), "", os.cpu_count() or 0)
    features = replace(features, cores=usable_cores(features.cores))
    return apply_isa_cap(features, environ.get(ISA_CAP_ENV))


def choose_precision(backend: str, features: CpuFeatures) -> tuple[str, str]:
    """(precision, reason) that `precision: auto` means for `backend` on a CPU with `features`."""
    if backend == "openvino":
        if features.bf16:
            which = "AMX-BF16" if features.has("amx_bf16") else "AVX-512 BF16"
            return "bf16", (
                f"CPU has {which}: OpenVINO bf16 measured ~2x faster than fp32 at "
                f"{MEASURED_DB['openvino-bf16']:.0f} dB PSNR against fp32 (gate {BF16_GATE_DB:.0f} dB)"
            )
        return "fp32", "CPU has neither AVX-512 BF16 nor AMX-BF16: bf16 would be emulated, no faster than fp32"
    if backend == "onnxruntime":
        why = "int8 not chosen: measured 39-42 dB against fp32, under the 40 dB gate on some pairs"
        if not features.vnni:
            why = "int8 not chosen: no VNNI (no speed-up) and under the 40 dB gate"
        return "fp32", why
    if backend in ("tensorrt", "torch"):
        return "fp32", f"{backend}: auto keeps fp32 (ask for fp16/int8 explicitly after checking quality)"
    return "fp32", f"{backend}: fp32"
