"""agent: the four agent nodes (state_serializer, ternary_encoder, policy_value, diagnostics_monitor) in one
process, for `ros2 launch bitrl_ros agent.launch.py composed:=true` (and sim.launch.py).

Each node is the same class as in its own process and reads its own section of the parameter files given with
`--ros-args --params-file ...`; they share one EventsExecutor, so a state goes serializer -> encoder -> policy
without leaving the process. What it saves against one process per node (bench/README.md):
three Python interpreters with rclpy and a DDS participant each (about 65 MB apiece on the board) and the CPU that
four process wake-ups per env step cost. The managed nodes start themselves here (autostart, as with `ros2 run`):
ternary_encoder is built, configured and active before policy_value is built. PPO updates still run in
policy_value's own update process (update_worker), so learning stays out of this interpreter.
"""
from __future__ import annotations

import sys

from bitrl_ros.nodes.base import spin_nodes, torch_on_one_thread


def main(args=None) -> int:
    from bitrl_ros.nodes.diagnostics_monitor import DiagnosticsMonitorNode
    from bitrl_ros.nodes.policy_value import PolicyValueNode
    from bitrl_ros.nodes.state_serializer import StateSerializerNode
    from bitrl_ros.nodes.ternary_encoder import TernaryEncoderNode

    torch_on_one_thread()  # as policy_value's own process
    return spin_nodes([StateSerializerNode, TernaryEncoderNode, PolicyValueNode, DiagnosticsMonitorNode], args)


if __name__ == "__main__":
    sys.exit(main())
