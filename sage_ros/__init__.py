"""sage_ros: thermal + RGB image fusion for ROS 2 with the distilled SAGE student."""

__version__ = "0.1.0"
