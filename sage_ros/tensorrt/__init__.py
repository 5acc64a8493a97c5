"""TensorRT deployment of the student: ONNX checks, engine building and caching, the pycuda runtime.

Only `builder.build_engine` and `runtime` touch TensorRT or pycuda, and they import them inside
functions, so everything else here imports and is tested on machines without a GPU.
"""
