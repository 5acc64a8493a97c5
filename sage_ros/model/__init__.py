"""PyTorch definitions of the SAGE networks used at run time (the student) and for export.

Importing this package imports torch: the ROS node and the ONNX/OpenVINO/TensorRT backends never do.
"""
