"""PLACEHOLDER for the ROS package composition_interfaces (tests only; see ../README.md)."""

PLACEHOLDER = True
