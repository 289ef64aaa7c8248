"""ternary_encoder: SerializedState -> EncodedState, the frozen backbone's readout of one state (a pooled vector,
or one vector per observation field, averaged over the tokens SerializedState.token_fields assigns to it).

A managed (lifecycle) node (nodes/managed.py): configure loads the backbone, activate starts encoding, deactivate
stops it (states arriving meanwhile are dropped), cleanup frees the backbone. Identical token sequences hit the
backbone's LRU cache (the backbone is frozen, so the features are the same); cache_hit says whether the cache
answered. Backbone "mlp" has no encoder: an empty embedding is published and the policy uses the raw observation.
"""
from __future__ import annotations

import time

from bitrl_msgs.msg import EncodedState, SerializedState
from bitrl_ros.backbone import load_backbone
from bitrl_ros.errors import ConfigError
from bitrl_ros.features import check_same_tokenizer, EmbedStage, node_layout
from bitrl_ros.nodes.base import declare_parameters, PIPELINE_QOS, spin_node
from bitrl_ros.nodes.convert import copy_header, to_float32_list
from bitrl_ros.nodes.managed import ManagedNode
from bitrl_ros.telemetry import SampleWindow

# The encoder accepts any sequence the serializer's budget (<= 512) allows; positions are checked by the model.
MAX_TOKENS = 512


class TernaryEncoderNode(ManagedNode):
    def __init__(self, owns_process: bool = False, **node_kwargs):
        """owns_process: the node is alone in its process (`ros2 run` / `ros2 launch`), so it may set torch's
        process-wide thread count (when the backbone runs on the torch engine); in `bitrl run` it shares the
        process with the trainer and must not. A ternary model on the native engine never imports torch.
        """
        super().__init__("ternary_encoder", **node_kwargs)
        self.params = p = declare_parameters(self, "ternary_encoder")
        self.owns_process = owns_process
        self.backbone_id = p["backbone"]
        self.backbone = self.layout = self.stage = self.feature_dim = None
        self.load_s = 0.0
        self.encode_ms = SampleWindow(1000)  # wall time of recent encode calls (cache hits included)
        self.published_count = 0
        self.error_count = 0                 # states that could not be encoded (e.g. empty token ids)
        self._cache_off_logged = False

        self.pub = self.create_publisher(EncodedState, "encoded_state", PIPELINE_QOS)
        self.sub = self.create_subscription(SerializedState, "serialized_state", self._on_state, PIPELINE_QOS)
        self.start(p["autostart"])

    def configure(self) -> None:
        p = self.params
        t0 = time.perf_counter()
        try:
            backbone = load_backbone(p["backbone"], cache_mb=p["cache_mb"], max_tokens=MAX_TOKENS,
                                     engine=p["engine"], threads=p["threads"])
        except ValueError as exc:
            raise ConfigError(f"ternary_encoder: invalid value for 'backbone' = {p['backbone']!r} ({exc})") from None
        critic = None
        if p["critic_backbone"]:
            try:
                critic = load_backbone(p["critic_backbone"], cache_mb=p["cache_mb"], max_tokens=MAX_TOKENS,
                                       engine="auto", threads=p["threads"])
                check_same_tokenizer(backbone, critic)
            except ValueError as exc:
                raise ConfigError(f"ternary_encoder: invalid value for 'critic_backbone' = "
                                  f"{p['critic_backbone']!r} ({exc})") from None
        try:
            layout = node_layout(p, self.backbone_id, 0 if backbone is None else backbone.hidden_size,
                                 0 if critic is None else critic.hidden_size)
        except ValueError as exc:
            raise ConfigError(f"ternary_encoder: invalid parameters ({exc})") from None
        self.backbone, self.layout, self.load_s = backbone, layout, time.perf_counter() - t0
        if self.owns_process and any(b is not None and b.engine_name == "torch" for b in (backbone, critic)):
            import torch

            torch.set_num_threads(p["threads"])
        self.stage = EmbedStage(self.backbone, self.layout, critic)
        self.feature_dim = self.layout.encoded_dim
        self._cache_off_logged = False
        critic_note = "" if critic is None else f" + critic {p['critic_backbone']} ({critic.engine_name} engine)"
        self.get_logger().info(f"backbone {self.backbone_id} ({p['engine']} engine, {p['threads']} thread(s))"
                               f"{critic_note} loaded in {self.load_s:.2f} s; feature dim {self.feature_dim}, "
                               f"readout {self.layout.readout}, cache {p['cache_mb']:g} MiB")

    def cleanup(self) -> None:
        self.backbone = self.layout = self.stage = self.feature_dim = None

    def _on_state(self, msg: SerializedState) -> None:
        if not self.active:
            return  # unconfigured or inactive: nothing is encoded
        out = copy_header(msg, EncodedState())
        out.backbone_id = self.backbone_id
        out.readout = self.layout.readout
        if self.backbone is not None:
            hits = self.backbone.cache_stats()["hits"]
            t0 = time.perf_counter()
            try:
                feats = self.stage.embed([msg.token_ids.tolist()], [msg.token_fields.tolist()])
            except ValueError as exc:  # empty or over-long token ids: a serializer/encoder mismatch
                self.error_count += 1
                self.get_logger().warning(f"episode {msg.episode} step {msg.step}: cannot encode ({exc}); dropped "
                                          f"({self.error_count} so far)", throttle_duration_sec=1.0)
                return
            ms = (time.perf_counter() - t0) * 1e3
            out.embedding = to_float32_list(feats[0])
            out.encode_ms = ms
            stats = self.backbone.cache_stats()
            out.cache_hit = stats["hits"] > hits
            self.encode_ms.add(ms)
            if stats["off"] and not self._cache_off_logged:
                self._cache_off_logged = True
                self.get_logger().info(f"embedding cache switched off: {stats['off']}")
        self.pub.publish(out)
        self.published_count += 1

    def cache_stats(self) -> dict:
        """hits, misses, hit_rate, size of the backbone's embedding cache ({} for backbone "mlp")."""
        return {} if self.backbone is None else self.backbone.cache_stats()


def main(args=None) -> int:
    return spin_node(lambda: TernaryEncoderNode(owns_process=True), args)


if __name__ == "__main__":
    raise SystemExit(main())
