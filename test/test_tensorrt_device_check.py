"""scripts/device_check.sh runs end to end on the CPU (tiny size): rows, PSNR vs fp32, JSON output.

The GPU numbers come from running the same script on a CUDA machine; this only proves the script
works and reports honest comparisons (fp32 variants agree with fp32 eager).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_device_check_script_on_cpu(tmp_path: Path, checkpoint_path: Path) -> None:
    pytest.importorskip("torch")
    env = dict(os.environ, PYTHON=sys.executable, OUT=str(tmp_path), DEVICE_CHECK_TIMEOUT_S="170")
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "device_check.sh"), "--device", "cpu", "--sizes", "64x48",
         "--runs", "1", "--warmup", "0", "--no-compile", "--threads", "1",
         "--weights", str(checkpoint_path)],
        capture_output=True, text=True, timeout=180, env=env,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "64x48" in proc.stdout and "torch fp32 eager" in proc.stdout
    results = json.loads((tmp_path / "device_check.json").read_text())
    rows = {row["variant"]: row for row in results["sizes"]["64x48"]}
    # Every speed-up is against the fp32 eager baseline's own time, from the times the same JSON reports.
    base_ms = rows["torch fp32 eager"]["ms"]
    assert base_ms > 0 and len(rows) > 1
    for variant, row in rows.items():
        assert row["ms"] > 0 and row["speedup"] == pytest.approx(base_ms / row["ms"], rel=1e-6), variant
    assert rows["torch fp32 channels_last"]["psnr_db"] > 60
    if "onnxruntime CPU fp32" in rows:  # absent only without onnx/onnxruntime
        assert rows["onnxruntime CPU fp32"]["psnr_db"] > 60
    assert "torch fp16 eager" not in rows, "fp16 is a CUDA variant unless --fp16-on-cpu"
    # The default model (the student's fusion graph) is exported by the same function as `sage-ros export`
    # and passes the static TensorRT checks (on a GPU machine it is also built: the "default model" rows).
    default = results["default_model"]
    assert default["exported"] and default["trt_checks_ok"], default
    assert default["outputs"] == ["fused_y"]
    if results["environment"]["tensorrt"] is None:
        assert any("tensorrt: not installed" in note for note in results["notes"])
