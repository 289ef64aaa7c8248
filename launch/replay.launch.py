"""Replay a bag into the agent in evaluation mode: bag_replay publishes the recorded observations (and /clock)
and the agent nodes run with learn:=false, resuming from policy_value.checkpoint_dir.

    ros2 launch bitrl_ros replay.launch.py bag:=runs/bag rate:=0   # stepped on the agent's actions

When the bag is exhausted bag_replay ends, and the launch shuts down with it.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription, OpaqueFunction, Shutdown
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from bitrl_ros.params import node_overrides_file

PACKAGE = "bitrl_ros"


def _player(context):
    arg = {n: LaunchConfiguration(n).perform(context) for n in ("config", "bag", "rate", "mapping", "mode", "env")}
    overrides = {"bag": arg["bag"], "rate": float(arg["rate"]), "mapping": arg["mapping"], "use_sim_time": False}
    for key in ("mode", "env"):
        if arg[key]:
            overrides[key] = arg[key]
    return [Node(package=PACKAGE, executable="bag_replay", name="bag_replay", output="screen",
                 parameters=[arg["config"], node_overrides_file("bag_replay", overrides)],
                 on_exit=Shutdown(reason="bag_replay finished"))]


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
        DeclareLaunchArgument("bag", description="bag directory (or .mcap/.db3 file) to replay"),
        DeclareLaunchArgument("rate", default_value="1.0", description="1.0 recorded rate, >1 faster, 0 stepped"),
        DeclareLaunchArgument("mapping", default_value="", description="YAML topic mapping of a foreign bag"),
        DeclareLaunchArgument("mode", default_value="", description="lockstep | realtime (empty: from config)"),
        DeclareLaunchArgument("env", default_value="", description="environment id (empty: from config)"),
        DeclareLaunchArgument("backbone", default_value="",
                              description="backbone id or model dir (empty: from config)"),
        agent,
        OpaqueFunction(function=_player),
    ])
