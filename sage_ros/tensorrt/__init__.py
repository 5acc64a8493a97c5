"""TensorRT deployment of the student: ONNX checks, engine building and caching, the pycuda runtime.

Only `builder.build_engine`, `calibrator.make_entropy_calibrator` and `runtime.TrtRunner` touch
TensorRT or pycuda, and they import them inside the function, so everything else here (cache naming,
sidecars, stale/corrupt detection, profile parsing, build planning, ONNX checks, calibration data)
imports and is tested on machines without a GPU.
"""
