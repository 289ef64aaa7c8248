"""state_serializer: Observation -> SerializedState (text + token ids), with the library's TextStage.

Invalid observations (NaN/Inf, wrong length, empty) are refused with a WARN naming the field and counted;
nothing is published for them, so the policy holds its safe action for that step. Terminal observations are
serialized like any other: the policy needs their features to bootstrap truncated episodes.
"""
from __future__ import annotations

from rclpy.node import Node

from bitrl_msgs.msg import Observation, SerializedState
from bitrl_ros.backbone import load_tokenizer
from bitrl_ros.envs import get_spec
from bitrl_ros.errors import ConfigError, InvalidObservation
from bitrl_ros.features import node_serializer, TextStage
from bitrl_ros.nodes.base import declare_parameters, PIPELINE_QOS, spin_node
from bitrl_ros.nodes.convert import copy_header, observation_to_array, to_int32_list


class _NoTokenizer:
    """Backbone "mlp" has no tokenizer: the text is still published (for logs and bags), with no token ids."""

    truncated_count = 0

    def encode_aligned(self, texts, spans, max_tokens=None):
        return [[] for _ in texts], [[] for _ in texts]

    def count_tokens(self, text):
        return 0


class StateSerializerNode(Node):
    def __init__(self, **node_kwargs):
        super().__init__("state_serializer", **node_kwargs)
        self.params = p = declare_parameters(self, "state_serializer")
        try:
            spec = get_spec(p["env"])
            serializer = node_serializer(p)
            # Plain Python where it can: this process only tokenizes (bench/README.md, "Memory of the graph").
            tokenizer = load_tokenizer(p["backbone"], plain_python=True) or _NoTokenizer()
        except ValueError as exc:  # unknown backbone id / model dir without a tokenizer / scales missing
            raise ConfigError(f"state_serializer: invalid parameters ({exc})") from None
        self.tokenizer = tokenizer
        self.stage = TextStage(spec, serializer, tokenizer, p["max_tokens"])
        self.obs_dim = spec.obs_dim

        self.published_count = 0
        self.invalid_count = 0         # observations refused (NaN/Inf, wrong length, empty)
        self.truncated_count = 0       # states whose token ids were cut to max_tokens
        self.truncated_tokens_total = 0
        self.last_invalid_reason = ""

        self.pub = self.create_publisher(SerializedState, "serialized_state", PIPELINE_QOS)
        self.sub = self.create_subscription(Observation, "observation", self._on_observation, PIPELINE_QOS)
        text = (f"{p['format']} text ({p['numbers']} numbers)" if serializer.fmt == p["format"]
                else f"{serializer.fmt} text with the mission")  # language-conditioned envs have their own renderer
        self.get_logger().info(f"serializing {p['env']} observations as {text} for backbone {p['backbone']} "
                               f"(token budget {p['max_tokens']})")

    def _on_observation(self, msg: Observation) -> None:
        try:
            _, texts, ids, fields = self.stage(observation_to_array(msg).reshape(1, -1), [msg.mission])
        except InvalidObservation as exc:
            self.invalid_count += 1
            self.last_invalid_reason = str(exc)
            self.get_logger().warning(f"episode {msg.episode} step {msg.step}: {exc}; refused "
                                      f"({self.invalid_count} so far)", throttle_duration_sec=1.0)
            return
        text, token_ids = texts[0], ids[0]
        out = copy_header(msg, SerializedState())
        out.text = text
        out.token_ids = to_int32_list(token_ids)
        out.token_fields = to_int32_list(fields[0])
        cut = 0
        if self.tokenizer.truncated_count > self.truncated_count:  # the tokenizer counts the texts it cut
            self.truncated_count = self.tokenizer.truncated_count
            cut = max(self.tokenizer.count_tokens(text) - len(token_ids), 0)
            self.truncated_tokens_total += cut
        out.truncated_tokens = cut
        self.pub.publish(out)
        self.published_count += 1

    def stats(self) -> dict:
        return {"published": self.published_count, "invalid": self.invalid_count,
                "truncated": self.truncated_count, "truncated_tokens": self.truncated_tokens_total}


def main(args=None) -> int:
    return spin_node(StateSerializerNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
