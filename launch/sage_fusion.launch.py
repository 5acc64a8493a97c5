"""Launch the sage_fusion node (and optionally rviz2 showing fused, overlay, thermal and RGB images).

    ros2 launch sage_ros sage_fusion.launch.py \
        thermal_topic:=/boson/image_raw rgb_topic:=/camera/color/image_raw \
        rgb_info_topic:=/camera/color/camera_info backend:=auto rviz:=true

The params file holds every parameter (see config/sage_fusion.yaml); `backend` and `model_path`
given here override it when not empty. The node is a lifecycle node that configures and activates
itself (`autostart`); set autostart to false in the params file to drive it with `ros2 lifecycle`.
`rviz:=true` on a machine without rviz2 starts the node alone and says why (instead of failing the
launch after the node started, which left the node running without its launch).
The node starts with the package's Fast DDS profile for multi-MB frames (config/fastdds_large_frames.xml:
32 MB shared-memory segments, UDPv4 kept for other hosts) unless the environment sets a profile or
/dev/shm is too small (sage_ros/node/dds_profile.py): the fused image and overlay reach same-host
subscribers without fragments. `dds_profile:=fastdds` keeps Fast DDS's defaults, a path picks a profile.
Give the camera driver the same profile: the inputs gain as much (docs/speed.md).
"""

import os

from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription

ARGUMENTS = [
    ("params_file", None, "YAML parameters file for the node (default: the package's config/sage_fusion.yaml)"),
    ("namespace", "", "namespace for the node and its relative topics"),
    ("thermal_topic", "thermal/image_raw", "thermal image input (mono8, mono16, 16UC1, 32FC1)"),
    ("rgb_topic", "rgb/image_raw", "RGB image input (rgb8, bgr8, rgba8, bgra8, mono8, yuv422)"),
    ("rgb_info_topic", "rgb/camera_info", "RGB camera_info, re-stamped on fused/camera_info"),
    ("fused_topic", "fused/image_raw", "fused rgb8 output"),
    ("backend", "", "override the params file: auto | tensorrt | openvino | onnxruntime | torch"),
    ("model_path", "", "override the params file: exported ONNX model"),
    ("precision", "", "override the params file: auto | fp32 | bf16 (openvino) | fp16 | int8 (tensorrt)"),
    ("engine_path", "", "override the params file: an explicit TensorRT engine file"),
    ("engine_dir", "", "override the params file: TensorRT engine cache folder"),
    ("use_sim_time", "false", "use /clock (bag replay)"),
    ("rviz", "false", "start rviz2 with the sage_fusion view"),
    ("log_level", "info", "node log level"),
    ("dds_profile", "", "Fast DDS profile for the node: '' = the environment's if it sets one, else the package's "
                        "config/fastdds_large_frames.xml; large_frames = that file; fastdds = Fast DDS defaults; "
                        "or a path to an XML profile"),
]


def _nodes(context, *args, **kwargs):
    def arg(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    overrides = {"use_sim_time": arg("use_sim_time").lower() in ("true", "1", "yes")}
    for name in ("backend", "model_path", "precision", "engine_path", "engine_dir"):
        if arg(name):
            overrides[name] = arg(name)
    fusion = Node(
        additional_env=_dds_env(arg("dds_profile"), context),
        package="sage_ros",
        executable="fusion_node",
        name="sage_fusion",
        namespace=arg("namespace"),
        parameters=[arg("params_file"), overrides],
        remappings=[
            ("thermal/image_raw", arg("thermal_topic")),
            ("rgb/image_raw", arg("rgb_topic")),
            ("rgb/camera_info", arg("rgb_info_topic")),
            ("fused/image_raw", arg("fused_topic")),
        ],
        arguments=["--ros-args", "--log-level", arg("log_level")],
        output="screen",
        emulate_tty=True,
    )
    if arg("rviz").lower() not in ("true", "1", "yes"):
        return [fusion]
    missing = _rviz2_missing()
    if missing:
        # Asking launch to start a package it cannot find makes the whole launch fail after the fusion
        # node has started, leaving the node behind; skip rviz2 instead and say why.
        return [fusion, LogInfo(msg=f"rviz:=true but rviz2 is not available ({missing}): starting the fusion "
                                    "node without it (install ros-<distro>-rviz2 to get the view)")]
    rviz = Node(
        package="rviz2",
        executable="rviz2",
        name="sage_fusion_rviz",
        namespace=arg("namespace"),
        arguments=["-d", PathJoinSubstitution([FindPackageShare("sage_ros"), "rviz", "sage_fusion.rviz"])],
        parameters=[{"use_sim_time": ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool)}],
    )
    return [fusion, rviz]


def _dds_env(choice: str, context) -> dict[str, str]:
    """The node's Fast DDS profile environment from the dds_profile argument ({} = the node decides)."""
    if not choice:
        return {}
    if choice == "fastdds":
        return {"SAGE_ROS_DDS_PROFILE": "fastdds"}
    if choice == "large_frames":
        share = FindPackageShare("sage_ros").perform(context)
        choice = os.path.join(share, "config", "fastdds_large_frames.xml")
    if not os.path.isfile(choice):
        # A profile Fast DDS cannot read is ignored with only a warning in its own log: say it here.
        raise RuntimeError(f"dds_profile:={choice}: no such file (use large_frames, fastdds, a path or nothing)")
    return {"FASTDDS_DEFAULT_PROFILES_FILE": os.path.abspath(choice)}


def _rviz2_missing() -> str:
    """Why rviz2 cannot be started here ('' when it can): looked up as launch_ros does, in the ament index."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_prefix
    except ImportError:
        return "ament_index_python is not importable"
    try:
        prefix = get_package_prefix("rviz2")
    except PackageNotFoundError:
        return "package 'rviz2' not found in AMENT_PREFIX_PATH"
    executable = os.path.join(prefix, "lib", "rviz2", "rviz2")
    if not os.access(executable, os.X_OK):
        return f"{executable} is not an executable"
    return ""


def generate_launch_description() -> LaunchDescription:
    default_params = PathJoinSubstitution([FindPackageShare("sage_ros"), "config", "sage_fusion.yaml"])
    declared = [
        DeclareLaunchArgument(name, default_value=default_params if default is None else default, description=doc)
        for name, default, doc in ARGUMENTS
    ]
    return LaunchDescription([*declared, OpaqueFunction(function=_nodes)])
