"""Cost of the segmentation stage against the student alone, per CPU backend, at 640x480 and 1280x720.

    python benchmarks/segmentation_cost.py [--runs 7] [--threads 2]

For each backend (ONNX Runtime fp32, OpenVINO fp32, OpenVINO bf16 where the CPU has it) one pipeline is
built by `build_pipeline` at `rgb` resolution; per size and round the student's call and the segmentation
stage (working-scale resize, the released student at a quarter of it, the graph, probabilities back to the
frame size, abstention, and the COCO object detector on the visible Y and the IR with its boxes painted in) are
timed in turn on the same frame, and the detector alone beside them; the median of each is printed with the
stage's cost, with and without the detector, as a ratio of the student's. The pair is a sample pair resized to
the size (content matters little to the cost). Ratios, not absolute times, are what compare across machines:
the CPU flags are printed with the table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sage_ros.cpu_features import read_cpu_features  # noqa: E402
from sage_ros.image.imaging import visible_to_ycrcb  # noqa: E402
from sage_ros.model.weights import fetch, sample_pairs  # noqa: E402
from sage_ros.pipeline import PipelineSettings, build_pipeline  # noqa: E402

SIZES = ((480, 640), (720, 1280))


def variants() -> list[tuple[str, str, str]]:
    rows = [("onnxruntime fp32", "onnxruntime", "fp32"), ("openvino fp32", "openvino", "fp32")]
    if read_cpu_features().bf16:
        rows.append(("openvino bf16", "openvino", "bf16"))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    print(f"CPU: {read_cpu_features().summary()}")
    ir_path, vis_path = sample_pairs(fetch())[0]
    ir0, vis0 = cv2.imread(str(ir_path), cv2.IMREAD_GRAYSCALE), cv2.imread(str(vis_path))
    print("| backend | size | student ms | stage ms | of it: detector ms | stage / student | stage without the "
          "detector / student |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for label, backend, precision in variants():
        pipeline = build_pipeline(PipelineSettings(model="sage", backend=backend, precision=precision,
                                                   threads=args.threads, resolution="rgb"))
        for h, w in SIZES:
            ir = cv2.resize(ir0, (w, h), interpolation=cv2.INTER_AREA)
            vis = cv2.resize(vis0, (w, h), interpolation=cv2.INTER_AREA)
            result = pipeline.fuse(ir, vis, classes=True)  # warm-up: starts both sessions at this size
            ir_f, vis_y = ir.astype(np.float32) / 255.0, visible_to_ycrcb(vis).y
            detector = pipeline.segmenter.detector
            if detector is None:
                print("the object detector is not fetched (`sage-ros weights fetch`): the stage is the network alone")
            student, seg, det = [], [], []
            for _ in range(args.runs):
                result = pipeline.fuse(ir, vis, classes=False)
                student.append(result.inference_ms)
                start = time.perf_counter()
                pipeline.segmenter(vis_y, ir_f)
                seg.append((time.perf_counter() - start) * 1000.0)
                # The detector as the stage runs it: on the working-size planes the stage makes once per frame.
                planes = pipeline.segmenter.working_planes(vis_y, ir_f)
                start = time.perf_counter()
                if detector is not None:
                    detector(*planes, out_hw=vis_y.shape)
                det.append((time.perf_counter() - start) * 1000.0)
            s_ms, g_ms, d_ms = statistics.median(student), statistics.median(seg), statistics.median(det)
            print(f"| {label} | {w}x{h} | {s_ms:.0f} | {g_ms:.0f} | {d_ms:.0f} | {g_ms / s_ms:.2f} | "
                  f"{(g_ms - d_ms) / s_ms:.2f} |", flush=True)
        pipeline.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
