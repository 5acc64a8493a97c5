"""Build planning per TensorRT version, profile parsing, the runtime's pure parts, and the CLI."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from sage_ros.tensorrt.builder import BuildError, parse_trt_version, plan_build, version_problem
from sage_ros.tensorrt.runtime import device_index, profile_problem
from sage_ros.tensorrt.shapes import DEFAULT_PROFILE, ShapeError, ShapeProfile, parse_hw, profile_from_args


def test_parse_trt_version_and_supported_range() -> None:
    assert parse_trt_version("8.6.2") == (8, 6, 2)
    assert parse_trt_version("10.3.0.26") == (10, 3, 0)
    assert parse_trt_version("11") == (11, 0, 0)
    with pytest.raises(ValueError):
        parse_trt_version("unknown")
    assert version_problem("8.6.1") is None and version_problem("10.13.0.35") is None
    for old_or_new in ("8.5.2.2", "7.1.3", "11.4.0"):
        assert "not supported: sage_ros runs TensorRT 8.6 to 10.x" in version_problem(old_or_new)


def test_trt86_uses_explicit_batch_trt10_does_not() -> None:
    plan = plan_build("8.6.2", "fp32")
    assert plan.network_flags == ("EXPLICIT_BATCH",) and plan.builder_flags == ()
    assert plan.clear_flags == ("TF32",), "fp32 must not silently run TF32 convolutions"
    plan = plan_build("10.3.0", "fp16")
    assert plan.network_flags == () and plan.builder_flags == ("FP16",) and plan.clear_flags == ()


def test_int8_is_explicit_quantisation_from_a_qdq_graph() -> None:
    with pytest.raises(BuildError, match="QuantizeLinear/DequantizeLinear"):
        plan_build("10.3.0", "int8")
    for version in ("8.6.2", "10.3.0"):
        assert plan_build(version, "int8", onnx_has_qdq=True).builder_flags == ("INT8",)


def test_dla_needs_reduced_precision_and_gets_gpu_fallback() -> None:
    with pytest.raises(BuildError, match="DLA runs FP16 or INT8"):
        plan_build("8.6.2", "fp32", dla_core=0)
    assert plan_build("8.6.2", "fp16", dla_core=1).builder_flags == ("FP16", "GPU_FALLBACK")


def test_device_index() -> None:
    assert device_index("cuda:1") == 1 and device_index("cuda") == 0 and device_index(None) == 0


def test_shapes_parse_and_profiles() -> None:
    assert parse_hw("480x640") == (480, 640) and parse_hw(" 768X1024 ") == (768, 1024)
    for bad in ("640", "480x", "axb", "2x640"):
        with pytest.raises(ShapeError):
            parse_hw(bad)
    assert profile_from_args(None, None, None) == DEFAULT_PROFILE
    assert profile_from_args(None, "512x640", None) == ShapeProfile.fixed((512, 640))
    two = profile_from_args("240x320", None, "768x1024")
    assert two == ShapeProfile((240, 320), (768, 1024), (768, 1024))
    three = profile_from_args("240x320", "480x640", "768x1024")
    assert three.opt == (480, 640) and three.contains((600, 800)) and not three.contains((800, 1100))
    with pytest.raises(ShapeError, match="min <= opt <= max"):
        profile_from_args("480x640", "240x320", "768x1024")
    assert ShapeProfile.from_json(three.to_json()) == three
    assert three.input_shapes()["ir"] == ((1, 1, 240, 320), (1, 1, 480, 640), (1, 1, 768, 1024))


def test_profile_problem_message() -> None:
    profile = ShapeProfile((64, 64), (480, 640), (768, 1024))
    assert profile_problem((480, 640), profile) is None
    assert profile_problem((1080, 1920), None) is None  # unknown profile: let TensorRT decide
    msg = profile_problem((1080, 1920), profile)
    assert "1080x1920" in msg and "--max" in msg


def _cli(*argv: str) -> argparse.Namespace:
    from sage_ros.cli import build_parser

    return build_parser().parse_args(["build-engine", *argv])


def test_cli_parses_options() -> None:
    args = _cli("m.onnx", "--precision", "int8", "--min", "240x320", "--opt", "480x640",
                "--max", "768x1024", "--engine-dir", "engines", "--dla-core", "0")
    assert args.precision == "int8" and args.dla_core == 0
    assert (args.min_hw, args.opt_hw, args.max_hw) == ("240x320", "480x640", "768x1024")
    assert args.engine_dir == Path("engines")


def test_cli_check_only_on_real_student(student_onnx: Path, capsys) -> None:
    pytest.importorskip("onnx")
    args = _cli(str(student_onnx), "--check-only")
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "opset 17" in out and "Conv x18" in out and "ERROR" not in out


def test_cli_reports_missing_tensorrt_clearly(student_onnx: Path, capsys) -> None:
    pytest.importorskip("onnx")
    try:
        import pycuda  # noqa: F401
        import tensorrt  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("TensorRT and pycuda are installed here: the GPU tests cover the build")
    args = _cli(str(student_onnx), "--precision", "fp16", "--max", "768x1024")
    assert args.func(args) == 1
    err = capsys.readouterr().err
    assert "tensorrt" in err and "pycuda" in err and "docs/jetson.md" in err


def test_cli_input_errors(tmp_path: Path, capsys) -> None:
    args = _cli(str(tmp_path / "missing.onnx"))
    assert args.func(args) == 1 and "does not exist" in capsys.readouterr().err
    model = tmp_path / "not_onnx.onnx"
    model.write_bytes(b"\x00garbage")
    args = _cli(str(model), "--min", "2x2")
    assert args.func(args) == 2 and "too small" in capsys.readouterr().err
    args = _cli(str(model), "--dla-core", "0", "--precision", "fp32")
    assert args.func(args) == 2 and "DLA" in capsys.readouterr().err
    pytest.importorskip("onnx")
    args = _cli(str(model), "--check-only")
    assert args.func(args) == 1 and "could not be read as ONNX" in capsys.readouterr().out


def test_cli_resolves_a_bare_model_name_against_the_cache(student_onnx: Path, tmp_path: Path, capsys,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """`sage-ros build-engine sage_student.onnx` as the docs write it, after `sage-ros export`."""
    pytest.importorskip("onnx")
    import shutil

    home = tmp_path / "home"
    (home / "models").mkdir(parents=True)
    shutil.copy2(student_onnx, home / "models" / "sage_student.onnx")
    work = tmp_path / "elsewhere"
    work.mkdir()
    monkeypatch.setenv("SAGE_ROS_HOME", str(home))
    monkeypatch.chdir(work)
    args = _cli("sage_student.onnx", "--check-only")
    assert args.func(args) == 0
    assert str(home / "models" / "sage_student.onnx") in capsys.readouterr().out
    args = _cli("other.onnx", "--check-only")
    assert args.func(args) == 1
    err = capsys.readouterr().err
    assert "does not exist" in err and str(home / "models") in err
