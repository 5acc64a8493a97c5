"""The SAGE networks and their files.

The PyTorch definitions (`student`, `fast_student`, `seg_net`, `seg_head`, `checkpoint`, `export`, `compose`)
import torch; the file-level modules (`weights`, `model_files`, `model_variants`, `quantize`, `classes`,
`onnx_builder`, `refiner`) do not, and the ROS node and the ONNX/OpenVINO/TensorRT backends use only those.
This package's __init__ imports nothing, so `import sage_ros.model.weights` stays torch-free.
"""
