"""The node's name and topic names (relative: a namespace or `-r` remapping moves them)."""

from __future__ import annotations

NODE_NAME = "sage_fusion"
TOPICS = {
    "thermal": "thermal/image_raw",
    "rgb": "rgb/image_raw",
    "rgb_info": "rgb/camera_info",
    "fused": "fused/image_raw",
    "fused_info": "fused/camera_info",
    "mask": "segmentation/mask",
    "overlay": "segmentation/overlay",
}
