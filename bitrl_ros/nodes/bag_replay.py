"""bag_replay: a bag's observations (bitrl bag, or a foreign bag through a YAML mapping) back onto `observation`,
with /clock from the recorded stamps, at the recorded rate, faster, or stepped on the agent's actions.

Records are read lazily from the bag (bounded memory). Stepped mode (rate 0) publishes observation k+1 when the
action for (episode, step) k arrives (or after action_timeout_s, counted); a terminal observation gets no action
from the agent, so the next one follows at once.
"""
from __future__ import annotations

import threading
import time

from rclpy.node import Node
from rosgraph_msgs.msg import Clock

from bitrl_msgs.msg import Action, Observation
from bitrl_ros.bag.sources import iter_observations
from bitrl_ros.nodes.base import CLOCK_QOS, declare_parameters, PIPELINE_QOS, spin_node
from bitrl_ros.nodes.stats import ReplayStats


class BagReplayNode(Node):
    def __init__(self, **node_kwargs):
        super().__init__("bag_replay", **node_kwargs)
        p = declare_parameters(self, "bag_replay")
        self.bag, self.rate = p["bag"], float(p["rate"])
        self.stepped = self.rate == 0.0
        self.max_messages = p["max_messages"]
        self.action_timeout_s = p["action_timeout_s"]
        self.start_delay_s = p["start_delay_s"]
        self.min_subscribers = p["min_subscribers"]
        self.env_id = p["env"]
        self._records = iter_observations(self.bag, p["topic"], mapping=p["mapping"] or None)
        self._next = self._pull()  # opens the bag now: a bad bag fails at start-up with a BagError
        self.obs_pub = self.create_publisher(Observation, "observation", PIPELINE_QOS)
        self.clock_pub = self.create_publisher(Clock, "/clock", CLOCK_QOS) if p["publish_clock"] else None
        self.action_sub = self.create_subscription(Action, "action", self._on_action, PIPELINE_QOS)
        self.replayed = 0
        self.actions_received = 0
        self.action_timeouts = 0
        self.published: list[tuple[int, int]] = []   # (episode, step) in publishing order
        self.finished = threading.Event()
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self._created = time.monotonic()
        self._t0_bag: int | None = None
        self._waiting: tuple[int, int] | None = None
        self._waiting_since = 0.0
        self._lock = threading.Lock()
        self.timer = self.create_timer(0.001 if self.stepped or self.rate > 1 else 0.002, self._tick)

    def _pull(self):
        try:
            return next(self._records)
        except StopIteration:
            return None

    def _ready(self) -> bool:
        subs = self.obs_pub.get_subscription_count() >= self.min_subscribers
        acts = not self.stepped or self.count_publishers(self.action_sub.topic_name) >= 1
        return (subs and acts) or time.monotonic() - self._created > self.start_delay_s

    def _on_action(self, msg: Action) -> None:
        self.actions_received += 1
        with self._lock:
            if self._waiting == (int(msg.episode), int(msg.step)):
                self._waiting = None

    def _tick(self) -> None:
        if self.finished.is_set():
            return
        if self.started_at is None:
            if not self._ready():
                return
            time.sleep(0.1)  # let the freshly matched readers settle
            self.started_at = time.perf_counter()
        if self._next is None or (self.max_messages and self.replayed >= self.max_messages):
            with self._lock:
                waiting = self._waiting
            if waiting is not None and time.monotonic() - self._waiting_since < self.action_timeout_s:
                return  # the last action is still on its way
            self.ended_at = time.perf_counter()
            self.finished.set()
            self.get_logger().info(f"bag finished: {self.replayed} observations replayed, {self.actions_received} "
                                   f"actions received, {self.action_timeouts} action timeouts")
            return
        if self.stepped:
            with self._lock:
                waiting = self._waiting
            if waiting is not None:
                if time.monotonic() - self._waiting_since < self.action_timeout_s:
                    return
                self.action_timeouts += 1
            self._publish(self._next)
        else:
            rec = self._next
            if self._t0_bag is None:
                self._t0_bag = rec.t_ns
            due = (rec.t_ns - self._t0_bag) / 1e9 / self.rate
            if time.perf_counter() - self.started_at < due:
                return
            self._publish(rec)
        self._next = self._pull()

    def _publish(self, rec) -> None:
        stamp_ns = rec.stamp_ns if rec.stamp_ns is not None else rec.t_ns
        msg = Observation()
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(int(stamp_ns), 1_000_000_000)
        msg.header.frame_id = self.env_id
        msg.episode, msg.step = int(rec.episode), int(rec.step)
        msg.values = rec.values.astype("float32").tolist()
        msg.mission, msg.reward = rec.mission, float(rec.reward)
        msg.terminated, msg.truncated = bool(rec.terminated), bool(rec.truncated)
        if self.clock_pub is not None:
            self.clock_pub.publish(Clock(clock=msg.header.stamp))
        with self._lock:
            self._waiting = None if (rec.terminated or rec.truncated) else (msg.episode, msg.step)
            self._waiting_since = time.monotonic()
        self.obs_pub.publish(msg)
        self.replayed += 1
        self.published.append((msg.episode, msg.step))

    def stats(self) -> ReplayStats:
        with self._lock:
            published = tuple(self.published)
        return ReplayStats(replayed=self.replayed, published=published, actions_received=self.actions_received,
                           action_timeouts=self.action_timeouts, messages_per_s=self.messages_per_s(),
                           started_at=self.started_at, ended_at=self.ended_at)

    def messages_per_s(self) -> float:
        if self.started_at is None:
            return 0.0
        end = self.ended_at or time.perf_counter()
        return self.replayed / max(end - self.started_at, 1e-9)


def main(args=None) -> int:
    return spin_node(BagReplayNode, args, done=lambda node: node.finished.is_set())


if __name__ == "__main__":
    raise SystemExit(main())
