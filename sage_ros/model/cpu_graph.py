"""A small ONNX graph run on the CPU (OpenVINO or ONNX Runtime) beside whatever backend runs the student.

Used by the stages that run at the RGB size after a fusion below it: the refiner (`refiner.py`) and the
full-size segmentation (`seg_stage.py`). Torch-free. Beside TensorRT or torch they still run on the CPU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


class CpuGraph:
    """run(feeds) -> list of outputs, on OpenVINO (`auto` prefers it) or ONNX Runtime.

    model: an .onnx path or serialized ModelProto bytes. precision: fp32 or bf16 (OpenVINO only; ONNX
    Runtime runs fp32). `runtime` after construction says which one runs it, e.g. "openvino (bf16)".
    Raises `error(...)` with an install hint when neither runtime is importable.
    """

    def __init__(self, model: Path | bytes, runtime: str = "auto", threads: int = 0, precision: str = "fp32",
                 error: type[Exception] = RuntimeError, what: str = "this stage") -> None:
        self.runtime = runtime
        if runtime in ("auto", "openvino"):
            try:
                import openvino as ov

                core = ov.Core()
                config: dict = {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
                                "PERFORMANCE_HINT": "LATENCY"}
                if threads:
                    config["INFERENCE_NUM_THREADS"] = int(threads)
                read = core.read_model(model=model, weights=b"") if isinstance(model, bytes) else \
                    core.read_model(str(model))
                compiled = core.compile_model(read, "CPU", config)
                request = compiled.create_infer_request()
                outputs = list(compiled.outputs)
                self._run = lambda feeds: [request.infer(feeds)[o] for o in outputs]
                self.runtime = f"openvino ({config['INFERENCE_PRECISION_HINT']})"
                return
            except ImportError:
                if runtime == "openvino":
                    raise error(f"{what} with runtime openvino: openvino is not installed") from None
        try:
            import onnxruntime as ort
        except ImportError:
            raise error(f"{what} needs OpenVINO or ONNX Runtime (pip install openvino)") from None
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        source = model if isinstance(model, bytes) else str(model)
        session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        self._run = lambda feeds: session.run(None, feeds)
        self.runtime = "onnxruntime (fp32)"

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self._run(feeds)


def runtime_beside(backend) -> tuple[str, str]:
    """(runtime, precision) for a CPU stage beside `backend`: its own runtime and precision where it is a CPU
    one (OpenVINO, ONNX Runtime), else `auto` and fp32 (beside TensorRT or torch)."""
    name = getattr(backend, "name", "")
    runtime = name if name in ("openvino", "onnxruntime") else "auto"
    precision = getattr(backend, "precision", "fp32") if name == "openvino" else "fp32"
    return runtime, precision
