"""The runtimes' thread pools (student and segmentation) start in the thread that first fuses, so in the node
they inherit the inference worker's lower priority instead of the executor thread's (a live-path defect:
the segmentation stage and the refiner used to create their pools at configure, at normal priority)."""

from __future__ import annotations

import os
import threading

import cv2
import numpy as np
import pytest

from sage_ros.model.model_files import ensure_onnx
from sage_ros.model.weights import sample_pairs
from sage_ros.node.worker import INFERENCE_NICE, lower_thread_priority
from sage_ros.pipeline import PipelineSettings, build_pipeline


def _thread_nices() -> dict[int, int]:
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as handle:
                out[int(tid)] = int(handle.read().rsplit(")", 1)[1].split()[16])
        except FileNotFoundError:  # a thread that ended meanwhile
            continue
    return out


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc to read per-thread nice values")
def test_runtime_pools_start_at_the_priority_of_the_thread_that_first_fuses(official_dir, checkpoint_path):
    ensure_onnx(None, checkpoint_path)
    pipeline = build_pipeline(PipelineSettings(backend="onnxruntime", precision="fp32", threads=2, resolution="rgb"))
    ir_path, vis_path = sample_pairs(official_dir)[0]
    ir = cv2.resize(cv2.imread(str(ir_path), cv2.IMREAD_GRAYSCALE), (160, 128))
    vis = cv2.resize(cv2.imread(str(vis_path)), (160, 128))
    base = os.getpriority(os.PRIO_PROCESS, 0)
    before = set(_thread_nices())  # building the pipeline started no runtime: nothing to inherit yet
    seen: dict[str, object] = {}

    def worker() -> None:
        seen["lowered"] = lower_thread_priority()
        seen["tid"] = threading.get_native_id()
        seen["ids"] = pipeline.fuse(ir, vis, classes=True).class_ids  # starts the student and the segmenter
        seen["nices"] = _thread_nices()  # while this thread's runtimes are alive

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(120)
    try:
        assert seen.get("lowered") is True and isinstance(seen.get("ids"), np.ndarray)
        started = {tid: nice for tid, nice in seen["nices"].items() if tid not in before}
        # The worker itself plus the pools ONNX Runtime made for the student and the segmentation graph.
        assert len(started) >= 2, started
        assert set(started.values()) == {min(19, base + INFERENCE_NICE)}, (base, started)
        assert _thread_nices()[threading.get_native_id()] == base  # the calling thread was left alone
    finally:
        pipeline.close()
