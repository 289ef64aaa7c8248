"""The live graph under 2,000 malformed messages per input topic (bench/graph_fuzz.py, which also runs 10,000):
it stays up, keeps stepping, rejects what it must and keeps its PPO updates finite.
"""
import pytest


@pytest.mark.slow
def test_live_graph_survives_malformed_messages_on_every_topic():
    from bench.graph_fuzz import fuzz_graph

    out = fuzz_graph(per_topic=2000, rate=400.0, seed=3, rollout=64, after_s=10.0, log=lambda *a: None)
    assert out["graph_up"] and out["sent"] == 8000
    assert out["steps_during_fuzz"] > 0 and out["rate_after_hz"] > 0  # it kept stepping through and after
    assert out["updates"] >= 1 and out["updates_finite"] and out["failed_updates"] == 0
    assert out["policy_invalid_inputs"] > 0 and out["bridge_invalid_actions"] > 0 and out["encoder_errors"] > 0
