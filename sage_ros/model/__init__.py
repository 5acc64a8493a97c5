"""The SAGE networks and their files.

The PyTorch definitions (`student`, `fast_student`, `seg_net`, `checkpoint`, `export`) import torch; the
file-level modules (`weights`, `model_files`, `model_variants`, `scale_student`, `quantize`, `classes`,
`onnx_builder`, `seg_graph`, `npz_weights`) do not, and the ROS node and the ONNX/OpenVINO/TensorRT
backends use only those. This package's __init__ imports nothing, so `import sage_ros.model.weights` stays
torch-free.
"""
