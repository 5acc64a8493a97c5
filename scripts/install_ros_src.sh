#!/usr/bin/env bash
# Install the real upstream ROS 2 Python packages that PyPI does not carry into the venv, so that the
# tests exercise ros2/launch, launch_ros and message_filters themselves (not stand-ins).
#
#   scripts/install_ros_src.sh ROS_SRC_DIR VENV_DIR
#
# ROS_SRC_DIR holds launch.tar.gz, launch_ros.tar.gz and message_filters.tar.gz (../shared/ros_src, see
# its README). On a robot these packages come from the ROS distribution instead; nothing here is needed.
# The archives are extracted under build/ros_src (gitignored); their sha256 is checked first.
set -euo pipefail

SRC=${1:?usage: install_ros_src.sh ROS_SRC_DIR VENV_DIR}
VENV=${2:?usage: install_ros_src.sh ROS_SRC_DIR VENV_DIR}
SRC=$(cd "$SRC" && pwd)
VENV=$(cd "$VENV" && pwd)
cd "$(dirname "$0")/.."
DEST=$PWD/build/ros_src

# The checksums published in ros_src/README.md: refuse archives that differ from the ones tested.
declare -A SHA=(
  [launch]=31c26ae31a4d355984f786262b4ad5f667c72c812d6dcd64afcb7c3c2cdbe9e7
  [launch_ros]=46c5fd74a19b4d5f3101387d212ee103b1bba7e852fbbf4d6b931dd8a6806447
  [message_filters]=e98162de39be3e40164a0bad274bfb0cfeacaf47241fcc96d3e04174340c49bd
)
mkdir -p "$DEST"
for name in launch launch_ros message_filters; do
  archive=$SRC/$name.tar.gz
  got=$(sha256sum "$archive" | cut -d' ' -f1)
  if [ "$got" != "${SHA[$name]}" ]; then
    echo "error: $archive has sha256 $got, expected ${SHA[$name]}" >&2
    exit 1
  fi
  rm -rf "${DEST:?}/$name"
  tar -xzf "$archive" -C "$DEST"
done

echo "installing ros2/launch and launch_ros from $SRC (dependencies from PyPI, the packages with --no-deps)"
# The upstream setup.py files make setuptools print pages of deprecation warnings: keep them in a log,
# shown only when pip fails.
LOG=$DEST/pip.log
pip_quiet() {
  if ! "$VENV/bin/pip" install --quiet "$@" >>"$LOG" 2>&1; then
    cat "$LOG" >&2
    echo "error: pip install $* failed (log: $LOG)" >&2
    exit 1
  fi
}
: >"$LOG"
# Their setup.py files ask for `ament_index_python`, which PyPI names ros-ament-index-python.
pip_quiet ros-lifecycle-msgs osrf-pycommon ros-ament-index-python lark pyyaml packaging
pip_quiet --no-deps \
  "$DEST/launch/launch" "$DEST/launch/launch_xml" "$DEST/launch/launch_yaml" \
  "$DEST/launch_ros/launch_ros" "$DEST/launch_ros/ros2launch"

# message_filters' setup.py is a ROS 1 catkin file: put its Python sources on the venv's path instead.
site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$DEST/message_filters/src" > "$site/sage_ros_message_filters.pth"
"$VENV/bin/python" -c 'import launch, message_filters; print("launch, launch_ros and message_filters installed (importing launch_ros also needs composition_interfaces: a ROS distribution, or the test placeholder)")' \
  2>&1 | tail -1
