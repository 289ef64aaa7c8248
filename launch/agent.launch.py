"""The agent: state_serializer -> ternary_encoder -> policy_value, plus diagnostics_monitor; one process per node,
or all four in one process with composed:=true (the `agent` executable: less memory, faster lockstep; see
bench/README.md).

The robot driver (or sim.launch.py's sim_bridge) supplies `observation` and consumes `action`.

    ros2 launch bitrl_ros agent.launch.py mode:=realtime
    ros2 launch bitrl_ros agent.launch.py config:=/path/to/agent.yaml env:=Hopper-v5 backbone:=minilm-fp32
    ros2 launch bitrl_ros agent.launch.py composed:=true

Launch arguments left empty keep the parameter file's values; `bitrl run` starts the same nodes from the same
file in one process.

ternary_encoder and policy_value are managed (lifecycle) nodes, started with autostart:=false: this file drives
them through configure (the backbone loads, the checkpoint resumes) and, once each is inactive, activate. A
failed configure leaves that node unconfigured, with the error in its log, and the agent does not act. Composed,
the two configure and activate themselves in order inside the one process (autostart), as with `ros2 run`.
"""
import os
import threading
import time

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, OpaqueFunction, RegisterEventHandler
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from lifecycle_msgs.msg import Transition

from bitrl_ros.params import node_overrides_file

PACKAGE = "bitrl_ros"
AGENT_NODES = ("state_serializer", "ternary_encoder", "policy_value", "diagnostics_monitor")
BACKBONE_NODES = ("state_serializer", "ternary_encoder")  # the nodes that have a `backbone` parameter
MANAGED_NODES = ("ternary_encoder", "policy_value")       # lifecycle nodes: configured, then activated, from here
ACTIVATE_POLL_S = 2.0  # how often a managed node's state is asked, in case its transition event is lost


def _truthy(text: str) -> bool:
    return text.strip().lower() in ("1", "true", "yes", "on")


def _agent_nodes(context):
    arg = {name: LaunchConfiguration(name).perform(context)
           for name in ("config", "mode", "env", "backbone", "use_sim_time", "learn", "record",
                        "record_storage", "composed")}
    composed = _truthy(arg["composed"])
    nodes, files = [], []
    for name in AGENT_NODES:
        overrides = {"use_sim_time": _truthy(arg["use_sim_time"])}
        for key in ("mode", "env"):
            if arg[key]:
                overrides[key] = arg[key]
        if arg["backbone"] and name in BACKBONE_NODES:
            overrides["backbone"] = arg["backbone"]
        if arg["learn"] and name == "policy_value":
            overrides["learn"] = _truthy(arg["learn"])
        if composed:
            files.append(node_overrides_file(name, overrides))
            continue
        if name in MANAGED_NODES:
            overrides["autostart"] = False
            nodes += _managed(LifecycleNode(package=PACKAGE, executable=name, name=name, namespace="", output="screen",
                                            parameters=[arg["config"], node_overrides_file(name, overrides)]))
            continue
        nodes.append(Node(package=PACKAGE, executable=name, name=name, output="screen",
                          parameters=[arg["config"], node_overrides_file(name, overrides)]))
    if composed:  # no name: a __node remap would rename all four
        nodes.append(Node(package=PACKAGE, executable="agent", output="screen", parameters=[arg["config"], *files]))
    if arg["record"]:  # record:=<bag dir>: the bag_recorder node joins the graph
        rec = {"path": arg["record"], "use_sim_time": False}
        if arg["record_storage"]:
            rec["storage"] = arg["record_storage"]
        for key in ("mode", "env"):
            if arg[key]:
                rec[key] = arg[key]
        nodes.insert(0, Node(package=PACKAGE, executable="bag_recorder", name="bag_recorder", output="screen",
                             parameters=[arg["config"], node_overrides_file("bag_recorder", rec)]))
    return nodes


def _managed(node: LifecycleNode) -> list:
    """A lifecycle node, the request to configure it, and what activates it once it is inactive: the node's
    configuring -> inactive transition event, or, where that event never reaches the launch (it travels on a
    volatile topic the launch may not have matched yet; seen here once in ~15 launches, and upstream as
    ros2/rcl#1166), a poll of the node's get_state service. Whichever sees `inactive` first asks, once.
    """
    def change(transition_id):
        return ChangeState(lifecycle_node_matcher=matches_action(node), transition_id=transition_id)

    asked = threading.Lock()  # held by the path that asked for activate

    def on_inactive_event(context):
        return [EmitEvent(event=change(Transition.TRANSITION_ACTIVATE))] if asked.acquire(blocking=False) else None

    def start_polling(context):
        threading.Thread(target=_activate_when_inactive, daemon=True, name=f"activate {node.node_name}",
                         args=(context, node.node_name, asked, change(Transition.TRANSITION_ACTIVATE))).start()

    activate = RegisterEventHandler(OnStateTransition(target_lifecycle_node=node, start_state="configuring",
                                                      goal_state="inactive",
                                                      entities=[OpaqueFunction(function=on_inactive_event)]))
    return [activate, node, EmitEvent(event=change(Transition.TRANSITION_CONFIGURE)),
            OpaqueFunction(function=start_polling)]


def _activate_when_inactive(context, node_name: str, asked: threading.Lock, activate: ChangeState) -> None:
    """Every ACTIVATE_POLL_S: the node's state; at `inactive`, emit activate unless the event path has."""
    from launch_ros.ros_adapters import get_ros_node
    from lifecycle_msgs.srv import GetState

    ros = get_ros_node(context)
    client = ros.create_client(GetState, f"{node_name}/get_state")
    try:
        while not context.is_shutdown and not asked.locked():
            time.sleep(ACTIVATE_POLL_S)
            if not client.service_is_ready():
                continue
            answered = threading.Event()
            future = client.call_async(GetState.Request())
            future.add_done_callback(lambda _: answered.set())
            if not answered.wait(ACTIVATE_POLL_S) or future.result() is None:
                future.cancel()
                continue
            if future.result().current_state.label == "inactive" and asked.acquire(blocking=False):
                context.asyncio_loop.call_soon_threadsafe(context.emit_event_sync, activate)
    finally:
        ros.destroy_client(client)


def generate_launch_description():
    default_config = os.path.join(get_package_share_directory(PACKAGE), "config", "agent.yaml")
    return LaunchDescription([
        DeclareLaunchArgument("config", default_value=default_config, description="ROS 2 parameter file"),
        DeclareLaunchArgument("mode", default_value="", description="lockstep | realtime (empty: from config)"),
        DeclareLaunchArgument("env", default_value="", description="environment id (empty: from config)"),
        DeclareLaunchArgument("backbone", default_value="",
                              description="backbone id or model dir (empty: from config)"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="follow /clock (lockstep sim)"),
        DeclareLaunchArgument("learn", default_value="", description="policy_value.learn (empty: from config)"),
        DeclareLaunchArgument("record", default_value="",
                              description="bag directory to record the graph's topics to (empty: no recording)"),
        DeclareLaunchArgument("record_storage", default_value="", description="mcap | sqlite3 (empty: from config)"),
        DeclareLaunchArgument("composed", default_value="false",
                              description="true: the four agent nodes in one process (the `agent` executable)"),
        OpaqueFunction(function=_agent_nodes),
    ])
