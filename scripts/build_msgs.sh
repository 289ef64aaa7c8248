#!/usr/bin/env bash
# Build the bitrl_msgs interface package (bitrl_msgs/, ament_cmake + rosidl) and install it into the venv, next to
# the ROS 2 wheels from PyPI: C/C++ typesupport libraries in $VENV/lib (where the wheels keep theirs, and which the
# wheels' ros_wheels_bootstrapper puts on LD_LIBRARY_PATH when the venv's python starts), the Python package in
# the venv's site-packages, CMake config / ament index / .msg files in $VENV/share.
#
# usage: scripts/build_msgs.sh [--force | --uninstall]
#   (no option)   build and install if any source is newer than the installed copy, else do nothing
#   --force       rebuild and reinstall regardless
#   --uninstall   remove the installed bitrl_msgs from the venv (and the build tree)
# env: VENV (default .venv), BUILD_DIR (default build/bitrl_msgs), JOBS (default: number of CPUs)
#
# On a machine with ROS 2 from apt, use colcon instead (see README.md); this script is for the pip-only venv.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SELF="$ROOT/scripts/$(basename "${BASH_SOURCE[0]}")"
cd "$ROOT"
VENV_ARG="${VENV:-.venv}"
VENV="$(cd "$VENV_ARG" 2>/dev/null && pwd || true)"
SRC="$ROOT/bitrl_msgs"
BUILD_DIR="${BUILD_DIR:-$ROOT/build/bitrl_msgs}"
JOBS="${JOBS:-$(nproc 2>/dev/null || echo 2)}"
REQS="$ROOT/requirements-build.txt"

say() { echo "build_msgs: $*"; }
die() { echo "build_msgs: ERROR: $*" >&2; exit 1; }

[[ -n "$VENV" && -x "$VENV/bin/python" ]] ||
  die "no virtual environment at $VENV_ARG (run 'make setup' first, or set VENV=...)"
PY="$VENV/bin/python"
PYVER="$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')" ||
  die "$PY does not run"
SITE="$VENV/lib/python$PYVER/site-packages"
STAMP="$VENV/share/bitrl_msgs/.bitrl-build-stamp"

uninstall() {
  say "removing installed bitrl_msgs from $VENV"
  rm -rf "$SITE/bitrl_msgs" "$SITE"/bitrl_msgs-*.egg-info "$VENV/share/bitrl_msgs" "$VENV/include/bitrl_msgs"
  rm -f "$VENV"/lib/libbitrl_msgs__*.so \
    "$VENV/share/ament_index/resource_index/packages/bitrl_msgs" \
    "$VENV/share/ament_index/resource_index/rosidl_interfaces/bitrl_msgs" \
    "$VENV/share/ament_index/resource_index/package_run_dependencies/bitrl_msgs" \
    "$VENV/share/ament_index/resource_index/parent_prefix_path/bitrl_msgs"
}

MODE="${1:-}"
case "$MODE" in
  "") ;;
  --force) ;;
  --uninstall) uninstall; rm -rf "$BUILD_DIR"; say "done"; exit 0 ;;
  -h|--help) sed -n '2,13p' "$SELF"; exit 0 ;;
  *) die "unknown option '$MODE' (use --force, --uninstall or --help)" ;;
esac

# --- up to date? (installed stamp newer than every source, this script and the pins; key files present) -------
if [[ "$MODE" != "--force" && -f "$STAMP" && -f "$SITE/bitrl_msgs/msg/__init__.py" &&
      -f "$VENV/lib/libbitrl_msgs__rosidl_typesupport_c.so" ]]; then
  newer="$(find "$SRC" "$REQS" "$SELF" -newer "$STAMP" -type f -print -quit)"
  if [[ -z "$newer" ]]; then
    say "up to date ($SITE/bitrl_msgs)"
    exit 0
  fi
  say "rebuilding: $newer changed since the last build"
fi

# --- tools -----------------------------------------------------------------------------------------------------
command -v cmake >/dev/null || die "cmake not found: install it (apt-get install cmake, or pip install cmake) and rerun"
cmake_ver="$(cmake --version | head -n1 | awk '{print $3}')"
[[ "$(printf '%s\n3.20\n' "$cmake_ver" | sort -V | head -n1)" == "3.20" ]] ||
  die "cmake $cmake_ver is too old: rosidl needs >= 3.20"
command -v "${CC:-cc}" >/dev/null || die "no C compiler (${CC:-cc}): install build-essential / gcc and g++"
command -v "${CXX:-c++}" >/dev/null || die "no C++ compiler (${CXX:-c++}): install build-essential / g++"
GEN=()
command -v ninja >/dev/null && GEN=(-G Ninja)

# --- build-time Python dependencies (ament_cmake, rosidl generators), pinned ----------------------------------------
say "installing build dependencies from ${REQS#"$ROOT"/} into $VENV"
"$PY" -m pip install --quiet --disable-pip-version-check -r "$REQS" ||
  die "pip could not install $REQS (offline? wrong index?)"

# Only the venv: never mix in a sourced /opt/ros (its Python paths would shadow the venv's wheels).
export CMAKE_PREFIX_PATH="$VENV" AMENT_PREFIX_PATH="$VENV" PATH="$VENV/bin:$PATH"
unset PYTHONPATH COLCON_PREFIX_PATH

# A build tree configured for another venv or source directory cannot be reused.
if [[ -f "$BUILD_DIR/CMakeCache.txt" ]] &&
   ! grep -qx "CMAKE_INSTALL_PREFIX:PATH=$VENV" "$BUILD_DIR/CMakeCache.txt"; then
  say "build tree $BUILD_DIR was configured for another prefix: starting it afresh"
  rm -rf "$BUILD_DIR"
fi

mkdir -p "$BUILD_DIR"
t0=$SECONDS
say "configuring $SRC -> $BUILD_DIR (install prefix $VENV, python $PY)"
cmake -S "$SRC" -B "$BUILD_DIR" "${GEN[@]}" \
  -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_INSTALL_PREFIX="$VENV" \
  -DPython3_EXECUTABLE="$PY" \
  -DPYTHON_INSTALL_DIR="lib/python$PYVER/site-packages" \
  -DBUILD_TESTING=OFF >"$BUILD_DIR/configure.log" 2>&1 ||
  { tail -n 40 "$BUILD_DIR/configure.log" >&2; die "cmake configure failed (full log: $BUILD_DIR/configure.log)"; }
grep 'bitrl_msgs: repointed' "$BUILD_DIR/configure.log" | sed 's/^-- /build_msgs: cmake: /' || true

say "building with $JOBS jobs"
cmake --build "$BUILD_DIR" --parallel "$JOBS" >"$BUILD_DIR/build.log" 2>&1 ||
  { tail -n 40 "$BUILD_DIR/build.log" >&2; die "build failed (full log: $BUILD_DIR/build.log)"; }

# Replace, not overlay: an interface removed from bitrl_msgs/ must not survive in the venv.
uninstall
say "installing into $VENV"
cmake --install "$BUILD_DIR" >"$BUILD_DIR/install.log" 2>&1 ||
  { tail -n 40 "$BUILD_DIR/install.log" >&2; die "install failed (full log: $BUILD_DIR/install.log)"; }

# The check that matters: the venv's own python imports the messages with no extra environment.
( cd / && env -u LD_LIBRARY_PATH -u _ROS_WHEELS_BOOTSTRAP_COMPLETE "$PY" -c \
    'from bitrl_msgs.msg import Observation; from bitrl_msgs.srv import ResetEpisode
from rclpy.serialization import serialize_message, deserialize_message
assert deserialize_message(serialize_message(Observation(step=3)), Observation).step == 3' ) ||
  die "bitrl_msgs was installed but '$PY -c \"from bitrl_msgs.msg import Observation\"' fails"

touch "$STAMP"
say "installed bitrl_msgs in $((SECONDS - t0)) s: python package $SITE/bitrl_msgs," \
  "libraries $VENV/lib/libbitrl_msgs__*.so"
