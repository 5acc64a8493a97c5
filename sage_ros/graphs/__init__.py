"""ONNX graphs built without PyTorch: the student from a checkpoint's arrays (`onnx_builder`), the
segmentation network's probability graph (`seg_graph`), int8 QDQ copies (`quantize`), and the strict
reader of weights stored as plain arrays with a JSON sidecar (`npz_weights`)."""
