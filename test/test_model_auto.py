"""`model: auto` (the default): the released student where a GPU, AMX, or AVX-512 BF16 on enough cores runs it
fast enough, the fast student on other CPUs only once it passes the quality gate; decided from the machine
(flags, usable cores), logged with the reason, and never over an explicit choice."""

from __future__ import annotations

import logging

import pytest

from sage_ros.cpu_features import CpuFeatures, parse_cpuinfo, usable_cores
from sage_ros.model.model_variants import FAST_GATE_DB, RELEASED_BF16_MIN_CORES, choose_variant
from sage_ros.pipeline import PipelineSettings, build_pipeline
from sage_ros.pipeline import builder as builder_module


def _cpu(name: str, flags: str, cores: int) -> CpuFeatures:
    return parse_cpuinfo("".join(f"processor : {i}\nmodel name : {name}\nflags : {flags}\n\n" for i in range(cores)))


BF16_FLAGS = "avx2 fma avx512f avx512_vnni avx512_bf16"
AVX2 = _cpu("Fake AVX2 CPU", "sse4_2 avx avx2 fma", 4)
AVX512_BF16 = _cpu("Fake Xeon", BF16_FLAGS, RELEASED_BF16_MIN_CORES)
SMALL_BF16 = _cpu("Fake EPYC", BF16_FLAGS, RELEASED_BF16_MIN_CORES - 1)
AMX = _cpu("Fake Sapphire Rapids", "avx2 fma avx512f amx_tile amx_bf16 amx_int8", 2)
NO_GPU = "the tensorrt module is not importable"
GOOD = {"psnr_db_mean": FAST_GATE_DB[0] + 1.0, "psnr_db_min": FAST_GATE_DB[1] + 1.0, "metrics_within_3pct": True}


@pytest.mark.parametrize(
    "features, gpu_problem, quality, variant, reason",
    [
        (AVX2, NO_GPU, GOOD, "fast", "no GPU or bf16 CPU"),
        (AVX512_BF16, NO_GPU, GOOD, "sage", "bf16"),
        # Too few CPUs for the released student at 10 Hz, even in bf16: the fast one, gate permitting.
        (SMALL_BF16, NO_GPU, GOOD, "fast", f"AVX-512 BF16 on {RELEASED_BF16_MIN_CORES - 1} usable CPUs"),
        (SMALL_BF16, NO_GPU, GOOD | {"metrics_within_3pct": False}, "sage", "below the gate"),
        (SMALL_BF16, NO_GPU, None, "sage", "not recorded"),
        (AMX, NO_GPU, GOOD, "sage", "AMX"),  # AMX: the released student on any number of cores
        (CpuFeatures(AVX512_BF16.flags), NO_GPU, GOOD, "sage", "bf16"),  # cores unknown: as before
        (AVX2, None, GOOD, "sage", "TensorRT and a CUDA device"),  # a GPU wins over any CPU
        (AVX2, NO_GPU, None, "sage", "not recorded"),
        (AVX2, NO_GPU, {}, "sage", "not recorded"),  # a model card without the measurement
        (AVX2, NO_GPU, GOOD | {"psnr_db_mean": FAST_GATE_DB[0] - 0.1}, "sage", "below the gate"),
        (AVX2, NO_GPU, GOOD | {"psnr_db_min": FAST_GATE_DB[1] - 0.1}, "sage", "below the gate"),
        (AVX2, NO_GPU, GOOD | {"metrics_within_3pct": False}, "sage", "below the gate"),
    ],
)
def test_auto_chooses_from_the_machine_and_says_why(features, gpu_problem, quality, variant, reason):
    chosen, why = choose_variant(features, gpu_problem, quality)
    assert chosen == variant and reason in why and why.startswith(f"model auto -> {variant}")


def _machine(monkeypatch, features, quality):
    monkeypatch.setattr("sage_ros.cpu_features.read_cpu_features", lambda *a, **k: features)
    monkeypatch.setattr("sage_ros.model.model_variants.fast_quality", lambda: quality)
    monkeypatch.setattr("sage_ros.backends.tensorrt_problem", lambda: NO_GPU)


def test_the_pipeline_runs_what_auto_chose_and_logs_the_reason(monkeypatch, checkpoint_path, caplog):
    from sage_ros.model.model_variants import fast_onnx

    _machine(monkeypatch, AVX2, GOOD)
    with caplog.at_level(logging.INFO, logger=builder_module.__name__):
        pipeline = build_pipeline(PipelineSettings(backend="onnxruntime", segmentation=False))
    assert pipeline.notes[0].startswith("model auto -> fast") and pipeline.notes[0] in caplog.text
    assert str(fast_onnx()) in pipeline.notes[1]
    pipeline.close()
    _machine(monkeypatch, AVX512_BF16, GOOD)
    pipeline = build_pipeline(PipelineSettings(backend="onnxruntime", segmentation=False))
    assert pipeline.notes[0].startswith("model auto -> sage: the CPU runs it in bf16")
    assert "fast_student" not in pipeline.notes[1]
    pipeline.close()


@pytest.mark.parametrize("explicit", ["sage", "fast"])
def test_an_explicit_model_always_wins(monkeypatch, checkpoint_path, explicit):
    _machine(monkeypatch, AVX2 if explicit == "sage" else AMX, GOOD)
    pipeline = build_pipeline(PipelineSettings(model=explicit, weights=checkpoint_path, backend="onnxruntime",
                                               segmentation=False))
    assert not any(note.startswith("model auto") for note in pipeline.notes)
    assert ("fast_student" in pipeline.notes[0]) == (explicit == "fast")
    pipeline.close()


def test_given_weights_mean_the_released_student(monkeypatch, checkpoint_path):
    """`--weights X.pt` with `auto` (e.g. the torch backend on a user's checkpoint) runs that checkpoint."""
    _machine(monkeypatch, AVX2, GOOD)
    pipeline = build_pipeline(PipelineSettings(weights=checkpoint_path, backend="onnxruntime", segmentation=False))
    assert pipeline.notes[0] == f"model auto -> sage: weights {checkpoint_path.name} given"
    assert "fast_student" not in pipeline.notes[1]
    pipeline.close()


def test_usable_cores_are_the_fewest_the_machine_allows(tmp_path):
    """Listed CPUs, the affinity mask and a container's cgroup quota: the smallest wins; no quota, no limit."""
    import os

    affinity = len(os.sched_getaffinity(0))
    quota = tmp_path / "cpu.max"
    quota.write_text("max 100000\n")
    assert usable_cores(64, quota) == affinity
    assert usable_cores(1, quota) == 1
    quota.write_text("150000 100000\n")  # docker --cpus=1.5: two CPUs' worth of threads at most
    assert usable_cores(64, quota) == min(2, affinity)
    assert usable_cores(0, tmp_path / "absent") == affinity
