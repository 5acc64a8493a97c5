"""PLACEHOLDER service types: importable so that launch_ros imports; any use raises."""

from __future__ import annotations


class _Placeholder:
    """Stands for a generated ROS service type that this test environment does not have."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise RuntimeError(
            "composition_interfaces is a test placeholder (test/ros_placeholders): composable nodes "
            "need the real package from a ROS distribution"
        )


class LoadNode(_Placeholder):
    Request = _Placeholder
    Response = _Placeholder


class UnloadNode(_Placeholder):
    Request = _Placeholder
    Response = _Placeholder


class ListNodes(_Placeholder):
    Request = _Placeholder
    Response = _Placeholder
