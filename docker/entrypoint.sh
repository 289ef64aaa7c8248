#!/usr/bin/env bash
# The images' entry point: the apt ROS 2 environment, then the workspace's, then the command.
set -e
source "/opt/ros/${ROS_DISTRO:-kilted}/setup.bash"
source /ws/install/setup.bash
exec "$@"
