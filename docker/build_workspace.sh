#!/usr/bin/env bash
# Every install step of the Docker images (docker/Dockerfile.pi, docker/Dockerfile.dev), in one script that also
# runs on the host: `make launch-setup` (CI) builds the colcon workspace of the launch tests with it.
#
# usage: docker/build_workspace.sh WS --python PY [--python-deps] [--symlink-install]
#   WS                 the colcon workspace (created if missing); its src/bitrl_ros is this repository (linked,
#                      unless WS/src/bitrl_ros already holds it, as in the images)
#   --python PY        the interpreter that runs colcon, hence the one the nodes' entry points start with: a venv
#                      that sees the ROS 2 Python packages (apt: python3 -m venv --system-site-packages)
#   --python-deps      first install, with PY, the Python dependencies a ROS 2 from apt does not provide:
#                      requirements.txt without its ros-* wheels (apt has those), torch CPU first on its own,
#                      then requirements-nodeps.txt without dependencies
#   --symlink-install  colcon's --symlink-install (development)
# The ROS 2 environment must be set up first: `source /opt/ros/$ROS_DISTRO/setup.bash` with ROS from apt; on a
# pip-only machine AMENT_PREFIX_PATH and CMAKE_PREFIX_PATH pointing at the venv, as `make launch-setup` does.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WS="${1:?usage: build_workspace.sh WS --python PY [--python-deps] [--symlink-install]}"
shift
PY="" DEPS=0 SYMLINK=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --python) PY="$2"; shift 2 ;;
    --python-deps) DEPS=1; shift ;;
    --symlink-install) SYMLINK=(--symlink-install); shift ;;
    *) echo "build_workspace.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ -x "$PY" ]] || { echo "build_workspace.sh: --python $PY is not an interpreter" >&2; exit 2; }
"$PY" -c 'import rclpy' || { echo "build_workspace.sh: $PY does not see rclpy (set up ROS 2 first)" >&2; exit 1; }
PIP=("$PY" -m pip install --quiet --disable-pip-version-check --no-cache-dir)
if [[ $DEPS == 1 ]]; then
  "${PIP[@]}" "$(grep -E '^torch==' "$ROOT/requirements.txt")"  # this exact spec takes the CPU wheel
  mkdir -p "$ROOT/build"
  grep -v -E '^(ros-|torch==)' "$ROOT/requirements.txt" > "$ROOT/build/requirements-without-ros.txt"
  "${PIP[@]}" -r "$ROOT/build/requirements-without-ros.txt"
  "${PIP[@]}" --no-deps -r "$ROOT/requirements-nodeps.txt"
fi
"$PY" -c 'import colcon_core' 2>/dev/null || "${PIP[@]}" colcon-common-extensions==0.3.0
mkdir -p "$WS/src"
[[ -e "$WS/src/bitrl_ros" ]] || ln -s "$ROOT" "$WS/src/bitrl_ros"
cd "$WS"
# bitrl_msgs lives inside the bitrl_ros package directory, where colcon's search stops: name it explicitly.
"$PY" -m colcon build "${SYMLINK[@]}" --base-paths src src/bitrl_ros/bitrl_msgs
echo "build_workspace.sh: built $WS (source $WS/install/setup.bash)"
