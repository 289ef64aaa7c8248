"""Offline evaluation: the agent with learning off (greedy actions, no checkpoints written), fed by a bag.

The bag source (a node that plays a recorded rosbag2/MCAP back as `observation` and /clock) comes in a later
issue; until then start any source of `observation` yourself (e.g. `ros2 bag play <bag>` on a machine with
ros2cli). No executable that does not exist yet is named here.

    ros2 launch bitrl_ros replay.launch.py
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription, LogInfo
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration

PACKAGE = "bitrl_ros"


def generate_launch_description():
    share = get_package_share_directory(PACKAGE)
    default_config = os.path.join(share, "config", "agent.yaml")
    agent = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(share, "launch", "agent.launch.py")),
        launch_arguments={"config": LaunchConfiguration("config"), "mode": LaunchConfiguration("mode"),
                          "env": LaunchConfiguration("env"), "backbone": LaunchConfiguration("backbone"),
                          "use_sim_time": "true", "learn": "false"}.items())
    return LaunchDescription([
        DeclareLaunchArgument("config", default_value=default_config, description="ROS 2 parameter file"),
        DeclareLaunchArgument("mode", default_value="", description="lockstep | realtime (empty: from config)"),
        DeclareLaunchArgument("env", default_value="", description="environment id (empty: from config)"),
        DeclareLaunchArgument("backbone", default_value="",
                              description="backbone id or model dir (empty: from config)"),
        LogInfo(msg="replay.launch.py: agent started with learn:=false; the bag player is not part of bitrl_ros yet "
                    "(a later issue): publish `observation` and /clock from your own source, e.g. ros2 bag play"),
        agent,
    ])
