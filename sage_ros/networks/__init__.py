"""The PyTorch networks: the SAGE student (keys exactly the released checkpoint's), the fast student, the
segmentation network, checkpoint loading and the PyTorch exporter. Only training and development import
this package; everything a robot runs is torch-free (test/test_layering.py)."""
