"""Simulation: sim_bridge (a gymnasium env on the graph) plus the agent from agent.launch.py.

    ros2 launch bitrl_ros sim.launch.py                      # lockstep on sim time, CartPole-v1
    ros2 launch bitrl_ros sim.launch.py mode:=realtime env:=Hopper-v5
    ros2 launch bitrl_ros sim.launch.py max_steps:=20000           # ends by itself after 20k env steps
    ros2 launch bitrl_ros sim.launch.py composed:=true             # the agent's four nodes in one process

In lockstep the bridge publishes /clock and every agent node runs with use_sim_time:=true. The bridge is the
world: when it ends (max_steps reached, or a failure) the whole launch shuts down, and every agent node flushes
what it owns (policy_value: checkpoint, learning curve, summary; bag_recorder: the bag). This is the graph
`bitrl run --config config/agent.yaml` builds in one process.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription, OpaqueFunction, Shutdown
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from bitrl_ros.params import node_overrides_file, read_ros_params

PACKAGE = "bitrl_ros"


def _sim(context):
    share = get_package_share_directory(PACKAGE)
    arg = {name: LaunchConfiguration(name).perform(context)
           for name in ("config", "mode", "env", "backbone", "record", "record_storage", "max_steps", "composed")}
    mode = arg["mode"] or read_ros_params(arg["config"])["sim_bridge"].get("mode", "lockstep")
    bridge_overrides = {"mode": mode, "use_sim_time": False}  # the bridge is the clock
    if arg["env"]:
        bridge_overrides["env"] = arg["env"]
    if arg["max_steps"]:
        bridge_overrides["max_steps"] = int(arg["max_steps"])
    agent = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(share, "launch", "agent.launch.py")),
        launch_arguments={"config": arg["config"], "mode": mode, "env": arg["env"], "backbone": arg["backbone"],
                          "record": arg["record"], "record_storage": arg["record_storage"],
                          "composed": arg["composed"],
                          "use_sim_time": "true" if mode == "lockstep" else "false"}.items())
    bridge = Node(package=PACKAGE, executable="sim_bridge", name="sim_bridge", output="screen",
                  parameters=[arg["config"], node_overrides_file("sim_bridge", bridge_overrides)],
                  on_exit=Shutdown(reason="sim_bridge finished"))
    return [bridge, agent]


def generate_launch_description():
    default_config = os.path.join(get_package_share_directory(PACKAGE), "config", "agent.yaml")
    return LaunchDescription([
        DeclareLaunchArgument("config", default_value=default_config, description="ROS 2 parameter file"),
        DeclareLaunchArgument("mode", default_value="", description="lockstep | realtime (empty: from config)"),
        DeclareLaunchArgument("env", default_value="", description="environment id (empty: from config)"),
        DeclareLaunchArgument("backbone", default_value="",
                              description="backbone id or model dir (empty: from config)"),
        DeclareLaunchArgument("record", default_value="",
                              description="bag directory to record the graph's topics to (empty: no recording)"),
        DeclareLaunchArgument("record_storage", default_value="", description="mcap | sqlite3 (empty: from config)"),
        DeclareLaunchArgument("max_steps", default_value="",
                              description="env steps after which the bridge, and with it the launch, ends "
                                          "(empty: from config; 0: never)"),
        DeclareLaunchArgument("composed", default_value="false",
                              description="true: the four agent nodes in one process (agent.launch.py)"),
        OpaqueFunction(function=_sim),
    ])
