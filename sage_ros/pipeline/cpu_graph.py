"""A graph on a CPU runtime beside any student backend: OpenVINO (`auto` prefers it) or ONNX Runtime.

The segmentation network, the student that makes its fused input and the object detector run this way
(docs/segmentation.md, docs/jetson.md). Torch-free.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


class SegmentationError(RuntimeError):
    """A segmentation graph that is missing, broken, or cannot run here."""


class CpuGraph:
    """run(feeds) -> list of outputs, on OpenVINO (`auto` prefers it) or ONNX Runtime, on the CPU.

    precision: fp32 or bf16 (OpenVINO only). `runtime` after construction says which one runs it.
    """

    def __init__(self, model: Path, runtime: str = "auto", threads: int = 0, precision: str = "fp32") -> None:
        if runtime in ("auto", "openvino"):
            try:
                import openvino as ov
            except ImportError:
                if runtime == "openvino":
                    raise SegmentationError("segmentation with runtime openvino: openvino is not installed") from None
            else:
                config: dict = {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
                                "PERFORMANCE_HINT": "LATENCY"}
                if threads:
                    config["INFERENCE_NUM_THREADS"] = int(threads)
                core = ov.Core()
                compiled = core.compile_model(core.read_model(str(model)), "CPU", config)
                request, outputs = compiled.create_infer_request(), list(compiled.outputs)
                self.input_names = [i.any_name for i in compiled.inputs]
                # One inference, then each output of it (not one inference per output).
                self._run = lambda feeds: (lambda result: [result[o] for o in outputs])(request.infer(feeds))
                self.runtime = f"openvino ({config['INFERENCE_PRECISION_HINT']})"
                return
        try:
            import onnxruntime as ort
        except ImportError:
            raise SegmentationError("segmentation needs OpenVINO or ONNX Runtime (pip install openvino)") from None
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        self._run = lambda feeds: session.run(None, feeds)
        self.input_names = [i.name for i in session.get_inputs()]
        self.runtime = "onnxruntime (fp32)"

    @property
    def input_name(self) -> str:
        return self.input_names[0]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self._run(feeds)
