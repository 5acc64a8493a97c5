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
    pytest.importorskip("openvino")
    model = tmp_path / "tiny.onnx"
    _tiny_model(model)
    monkeypatch.setattr(cpu_features, "read_cpu_features", lambda *a: parse_cpuinfo(_cpuinfo(flags)))
    with caplog.at_level(logging.INFO, logger="sage_ros.backends"):
        backend = create_backend(BackendConfig(name="openvino", onnx_path=model, precision="auto"))
    try:
        assert backend.description.endswith(f"CPU {expected})")
        assert backend.precision_note and f"precision auto -> {expected} on openvino" in backend.precision_note
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
