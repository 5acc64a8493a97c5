"""sage_ros: thermal + RGB image fusion for ROS 2 with the distilled SAGE student."""

__version__ = "0.1.0"


def install_hint(extra: str) -> str:
    """How to add an optional dependency group. sage_ros is not on PyPI: it installs from its checkout
    (or, on a robot, as a ROS package built with colcon, with the rest from the ROS distribution)."""
    return f"pip install -e '.[{extra}]' from the sage_ros checkout"
