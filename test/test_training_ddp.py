"""DDP through torchrun: two CPU processes (gloo) train a few steps and end with identical students."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
import yaml

TIMEOUT_S = 150


def test_two_process_gloo_run(tmp_path: Path, official_dir: Path) -> None:
    pytest.importorskip("torch")
    pairs = tmp_path / "pairs"
    for sub in ("Ir", "Vis"):
        (pairs / sub).mkdir(parents=True)
    for i in range(4):
        for sub, flag in (("Ir", cv2.IMREAD_GRAYSCALE), ("Vis", cv2.IMREAD_COLOR)):
            image = cv2.imread(str(official_dir / sub / f"{i:05d}.png"), flag)
            cv2.imwrite(str(pairs / sub / f"{i:05d}.png"), image[352:400, 480:544])
    config = {
        "data": {"layout": "sage", "root": str(pairs), "crop": [32, 48], "workers": 0},
        "train": {"max_steps": 2, "batch_size": 1, "device": "cpu", "threads": 1, "log_every": 1},
        "output": {"dir": str(tmp_path / "run"), "classes": "msrs", "export": False},
    }
    cfg_path = tmp_path / "ddp.yaml"
    cfg_path.write_text(yaml.safe_dump(config))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "sage_ros",
        "train",
        "student",
        "fit",
        "--config",
        str(cfg_path),
    ]
    # A session of its own, so a timeout kills torchrun and both workers, nothing else.
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        log, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        log, _ = proc.communicate()
        pytest.fail(f"torchrun did not finish in {TIMEOUT_S} s:\n{log[-4000:]}")
    assert proc.returncode == 0, log[-4000:]
    assert "batch 1 x 2 process(es)" in log
    assert "student weights identical on all 2 ranks" in log
    rows = (tmp_path / "run" / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 2  # one log (rank 0), one row per step
    assert (tmp_path / "run" / "checkpoint_last.pt").is_file()
