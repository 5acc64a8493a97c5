"""ament_python package setup for sage_ros (also a plain pip-installable Python package)."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "sage_ros"

# Optional groups so that a robot installs only what it runs.
ROS_FROM_PYPI = [
    "ros-rclpy[fastrtps]",
    "ros-sensor-msgs",
    "ros-std-msgs",
    "ros-diagnostic-msgs",
]
EXTRAS = {
    "ros": ROS_FROM_PYPI,
    "openvino": ["openvino>=2024.0"],
    "torch": ["torch>=2.1", "onnx>=1.15", "onnxscript"],
    "training": [
        "torch>=2.1",
        "torchvision",
        "onnx>=1.15",
        "onnxscript",
        "segment-anything",
        "tqdm",
        "pyyaml",
    ],
    "eval": ["rosbags>=0.10", "scikit-image>=0.22", "matplotlib>=3.7", "tqdm"],
    # The TensorRT versions the code is written for: 8.6-10.x (TensorRT 11 removed the FP16/INT8
    # builder flags and the calibrator). pycuda has no wheels: it compiles against the CUDA toolkit.
    "tensorrt": ["tensorrt>=8.6,<11", "pycuda"],
    # colcon: the tests build the package as a ROS user does (colcon build, ament_python).
    "dev": ["pytest>=7", "ruff", "hypothesis>=6", "colcon-core", "colcon-ros"],
}
EXTRAS["all-cpu"] = sorted(
    {dep for name, deps in EXTRAS.items() if name not in ("tensorrt",) for dep in deps}
)

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
        (f"share/{PACKAGE}/rviz", glob("rviz/*.rviz")),
    ],
    package_data={PACKAGE: ["data/*.json", "data/*.npz", "data/*.onnx"]},
    python_requires=">=3.10",
    install_requires=[
        "setuptools",
        "numpy>=1.23",
        "opencv-python-headless>=4.8",
        "onnxruntime>=1.16",
        # Builds the ONNX model from the released checkpoint without PyTorch (model/onnx_builder.py).
        "onnx>=1.15",
        "pyyaml",
        "tqdm",
    ],
    extras_require=EXTRAS,
    zip_safe=True,
    maintainer="sage_ros developers",
    maintainer_email="sage-ros@example.org",
    description="Thermal + RGB fusion for ROS 2 with the distilled SAGE student",
    license="MIT",
    entry_points={
        "console_scripts": [
            "sage-ros = sage_ros.cli:main",
            "fusion_node = sage_ros.node.run:main",  # records signals before the heavy imports
        ],
    },
)
