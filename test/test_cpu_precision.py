"""precision: auto is chosen from the CPU's flags (fake flag sets here), logged with its reason; explicit wins."""

from __future__ import annotations

import logging

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from sage_ros import cpu_features
from sage_ros.backends import BackendConfig, create_backend, resolve_precision
from sage_ros.cpu_features import CpuFeatures, choose_precision, parse_cpuinfo

AVX2_ONLY = "fpu sse sse2 ssse3 sse4_1 sse4_2 avx fma avx2"
AVX512_BF16 = AVX2_ONLY + " avx512f avx512bw avx512_vnni avx512_bf16"  # e.g. AMD Zen 4, no AMX
SAPPHIRE_RAPIDS = AVX512_BF16 + " amx_tile amx_bf16 amx_int8"


def _cpuinfo(flags: str, cores: int = 2, odd_core: str | None = None) -> str:
    blocks = []
    for i in range(cores):
        f = odd_core if (odd_core is not None and i == cores - 1) else flags
        blocks.append(f"processor\t: {i}\nmodel name\t: Test CPU\nflags\t\t: {f}\n")
    return "\n".join(blocks)


def test_parse_cpuinfo_keeps_flags_common_to_all_cores():
    feats = parse_cpuinfo(_cpuinfo(AVX512_BF16, cores=4))
    assert feats.cores == 4 and feats.model_name == "Test CPU"
    assert feats.avx2 and feats.avx512 and feats.vnni and feats.bf16 and not feats.amx
    assert "avx512_bf16" in feats.summary() and "amx_bf16" not in feats.summary()
    # A flag one core lacks is not usable by a thread that may run there.
    mixed = parse_cpuinfo(_cpuinfo(AVX512_BF16, cores=2, odd_core=AVX2_ONLY))
    assert mixed.avx2 and not mixed.bf16
    assert parse_cpuinfo("").flags == frozenset()


@pytest.mark.parametrize(
    ("flags", "backend", "expected"),
    [
        (AVX2_ONLY, "openvino", "fp32"),
        (AVX512_BF16, "openvino", "bf16"),
        (SAPPHIRE_RAPIDS, "openvino", "bf16"),
        ("", "openvino", "fp32"),  # unknown CPU (no /proc/cpuinfo): the safe choice
        (AVX2_ONLY, "onnxruntime", "fp32"),
        (AVX512_BF16, "onnxruntime", "fp32"),  # int8 is faster with VNNI but fails the 40 dB gate
        (SAPPHIRE_RAPIDS, "tensorrt", "fp32"),
        (SAPPHIRE_RAPIDS, "torch", "fp32"),
    ],
)
def test_choice_per_cpu_and_backend(flags: str, backend: str, expected: str):
    precision, reason = choose_precision(backend, parse_cpuinfo(_cpuinfo(flags)))
    assert precision == expected
    assert reason  # always says why
    if expected == "bf16":
        assert "BF16" in reason and "dB" in reason


def _tiny_model(path) -> None:
    # fused_y = tanh(vis_y - ir): enough for a backend to load and run, no shared data needed.
    dims = [1, 1, "height", "width"]
    graph = helper.make_graph(
        [helper.make_node("Sub", ["vis_y", "ir"], ["d"]), helper.make_node("Tanh", ["d"], ["fused_y"])],
        "tiny",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, dims) for n in ("vis_y", "ir")],
        [helper.make_tensor_value_info("fused_y", TensorProto.FLOAT, dims)],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


@pytest.mark.parametrize(("flags", "expected"), [(AVX2_ONLY, "fp32"), (AVX512_BF16, "bf16")])
def test_auto_precision_reaches_the_backend_and_is_logged(monkeypatch, tmp_path, caplog, flags, expected):
    ov = pytest.importorskip("openvino")
    model = tmp_path / "tiny.onnx"
    _tiny_model(model)
    monkeypatch.setattr(cpu_features, "read_cpu_features", lambda *a: parse_cpuinfo(_cpuinfo(flags)))
    with caplog.at_level(logging.INFO, logger="sage_ros.backends"):
        backend = create_backend(BackendConfig(name="openvino", onnx_path=model, precision="auto"))
    try:
        # The choice made from the (faked) CPU flags, stated with its reason ...
        assert backend.precision_note and f"precision auto -> {expected} on openvino" in backend.precision_note
        # ... and what OpenVINO compiled the model to run at: bf16 where it was chosen and this CPU can run it
        # (OpenVINO falls back to f32 on a CPU without BF16 support, whatever the hint).
        host_bf16 = "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        ran = backend._compiled.get_property("INFERENCE_PRECISION_HINT")
        assert ran == (ov.Type.bf16 if expected == "bf16" and host_bf16 else ov.Type.f32), ran
        assert any("precision auto" in r.message for r in caplog.records)
        out = backend.infer(np.full((8, 8), 0.5, np.float32), np.zeros((8, 8), np.float32))
        assert out.fused_y.shape == (8, 8)
    finally:
        backend.close()


def test_explicit_precision_always_wins(monkeypatch):
    monkeypatch.setattr(cpu_features, "read_cpu_features", lambda *a: parse_cpuinfo(_cpuinfo(SAPPHIRE_RAPIDS)))
    assert resolve_precision("openvino", "fp32") == ("fp32", None)
    assert resolve_precision("onnxruntime", "int8") == ("int8", None)
    assert resolve_precision("openvino", "auto")[0] == "bf16"


def test_this_machine_reads_without_error():
    feats = cpu_features.read_cpu_features()
    assert isinstance(feats, CpuFeatures)
    assert feats.summary()


@pytest.mark.parametrize(
    ("flags", "cap", "expected", "summary_says"),
    [
        (SAPPHIRE_RAPIDS, "AVX2", "fp32", "capped at AVX2"),  # an AVX2-only CPU's code paths
        (SAPPHIRE_RAPIDS, "avx512_core_vnni", "fp32", "capped at AVX512_CORE_VNNI"),  # VNNI, no BF16
        (SAPPHIRE_RAPIDS, "AVX512_CORE_BF16", "bf16", "capped at AVX512_CORE_BF16"),  # no AMX, BF16 kept
        (AVX512_BF16, "AVX512_CORE_AMX", "bf16", None),  # a cap above the CPU removes nothing
        (AVX512_BF16, "DEFAULT", "bf16", None),
        (AVX512_BF16, "not-an-isa", "bf16", None),  # oneDNN ignores what it cannot parse; so do we
        (AVX512_BF16, "", "bf16", None),
    ],
)
def test_onednn_isa_cap_is_what_auto_decides_on(tmp_path, flags, cap, expected, summary_says):
    info = tmp_path / "cpuinfo"
    info.write_text(_cpuinfo(flags))
    feats = cpu_features.read_cpu_features(info, environ={"ONEDNN_MAX_CPU_ISA": cap})
    assert choose_precision("openvino", feats)[0] == expected
    if summary_says:
        assert summary_says in feats.summary()
        assert not feats.amx
    else:
        assert feats.flags == parse_cpuinfo(_cpuinfo(flags)).flags and "capped" not in feats.summary()
    if cap.upper() == "AVX2":
        assert feats.avx2 and not feats.avx512 and not feats.vnni and "fma" in feats.flags


def test_openvino_honours_the_isa_cap(tmp_path):
    """The cap the benchmark uses to run an AVX2-only CPU's kernels really reaches OpenVINO's convolutions."""
    pytest.importorskip("openvino")
    import subprocess
    import sys

    w = helper.make_tensor("w", TensorProto.FLOAT, [16, 1, 3, 3], np.ones(144, np.float32).tolist())
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 64, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 64, 64])], [w],
    )
    model = tmp_path / "conv.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(model))
    probe = (
        "import sys, openvino as ov\n"
        "cm = ov.Core().compile_model(sys.argv[1], 'CPU', {'INFERENCE_PRECISION_HINT': 'f32'})\n"
        "print(' '.join(op.get_rt_info()['primitiveType'].astype(str) for op in cm.get_runtime_model().get_ops()"
        " if 'primitiveType' in op.get_rt_info()))\n"
    )
    env = {**__import__("os").environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}
    out = subprocess.run([sys.executable, "-c", probe, str(model)], env=env, capture_output=True, text=True,
                         timeout=120, check=True).stdout
    kernels = out.split()
    assert any("avx2" in k for k in kernels), kernels  # the convolution runs an AVX2 kernel ...
    assert not any("avx512" in k or "amx" in k for k in kernels), kernels  # ... and nothing above it
