"""bag_recorder: the graph's topics, as serialized CDR bytes, into a rosbag2 bag (MCAP or sqlite3) via BagRecorder.

Subscriptions are raw (no deserialization), with the publishers' QoS (reliable pipeline topics, transient-local
training stats, best-effort /clock) but a deeper queue, so a slow disk write never costs a message in lockstep.
The bag timestamp is the receive time (wall clock ns), as `ros2 bag record` does; headers keep their stamps.
"""
from __future__ import annotations

import time

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.qos import QoSProfile
from rosgraph_msgs.msg import Clock

from bitrl_msgs.msg import Action, EncodedState, Observation, SerializedState, TrainingStats
from bitrl_ros.bag.recorder import BagRecorder
from bitrl_ros.errors import BagError
from bitrl_ros.nodes.base import CLOCK_QOS, declare_parameters, DIAGNOSTICS_QOS, PIPELINE_QOS, spin_node, STATS_QOS

# topic (last name component) -> (message class, ROS type name, publisher QoS)
TOPIC_TYPES = {
    "observation": (Observation, "bitrl_msgs/msg/Observation", PIPELINE_QOS),
    "serialized_state": (SerializedState, "bitrl_msgs/msg/SerializedState", PIPELINE_QOS),
    "encoded_state": (EncodedState, "bitrl_msgs/msg/EncodedState", PIPELINE_QOS),
    "action": (Action, "bitrl_msgs/msg/Action", PIPELINE_QOS),
    "training_stats": (TrainingStats, "bitrl_msgs/msg/TrainingStats", STATS_QOS),
    "diagnostics": (DiagnosticArray, "diagnostic_msgs/msg/DiagnosticArray", DIAGNOSTICS_QOS),
    "clock": (Clock, "rosgraph_msgs/msg/Clock", CLOCK_QOS),
}
QUEUE_DEPTH = 1000


def qos_dict(qos: QoSProfile, depth: int | None = None) -> dict:
    """Map an rclpy QoSProfile to the plain names BagRecorder writes as offered_qos_profiles."""
    return {"history": qos.history.name.lower(), "depth": depth if depth is not None else qos.depth,
            "reliability": qos.reliability.name.lower(), "durability": qos.durability.name.lower()}


class BagRecorderNode(Node):
    def __init__(self, **node_kwargs):
        super().__init__("bag_recorder", **node_kwargs)
        p = declare_parameters(self, "bag_recorder")
        self.path, self.storage_name = p["path"], p["storage"]
        unknown = [t for t in p["topics"] if t.strip("/").split("/")[-1] not in TOPIC_TYPES]
        if unknown:
            raise BagError(f"bag_recorder: cannot record topic(s) {unknown} (known: {', '.join(TOPIC_TYPES)})")
        self.recorder = BagRecorder(self.path, self.storage_name, flush_interval_s=p["flush_interval_s"])
        self.subs = []
        for topic in p["topics"]:
            cls, type_name, qos = TOPIC_TYPES[topic.strip("/").split("/")[-1]]
            sub_qos = QoSProfile(history=qos.history, depth=max(qos.depth, QUEUE_DEPTH), reliability=qos.reliability,
                                 durability=qos.durability)
            name = self.resolve_topic_name(topic)  # namespace applied: the name the bag records
            self.recorder.add_topic(name, type_name, qos_dict(qos))
            self.subs.append(self.create_subscription(cls, topic, self._callback_for(name), sub_qos, raw=True))
        self.flush_timer = self.create_timer(p["flush_interval_s"], self.recorder.flush)
        self.get_logger().info(f"recording {', '.join(self.recorder.connections)} to {self.path} "
                               f"({self.storage_name})")

    def _callback_for(self, name):
        def cb(data: bytes):
            if not self.recorder.closed:
                self.recorder.write(name, time.time_ns(), data)
        return cb

    @property
    def counts(self) -> dict[str, int]:
        return dict(self.recorder.counts)

    def subscriptions_matched(self) -> bool:
        """Every recorded pipeline topic has a publisher in the graph (used before a run starts publishing)."""
        return all(self.count_publishers(s.topic_name) >= 1 for s in self.subs
                   if s.topic_name.split("/")[-1] in ("observation", "action"))

    def shutdown(self) -> None:
        """Finish the bag (MCAP summary + metadata.yaml); safe to call twice."""
        if not self.recorder.closed:
            self.recorder.close()
            self.get_logger().info(f"bag {self.path}: {self.recorder.message_count} messages")

    def destroy_node(self):
        self.shutdown()
        return super().destroy_node()


def main(args=None) -> int:
    return spin_node(BagRecorderNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
