"""The heads' Adam (rl/adam.py) against torch.optim.Adam: the same parameters after every step, bit for bit, the
same state_dict layout both ways, and no torch._dynamo import (what it exists for).
"""
import subprocess
import sys

import pytest
import torch

from bitrl_ros.rl.adam import Adam


def _net(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(12, 32), torch.nn.Tanh(), torch.nn.Linear(32, 3))


def _train(net, opt, steps: int, seed: int = 1, lr_at=None):
    g = torch.Generator().manual_seed(seed)
    for i in range(steps):
        if lr_at and i == lr_at[0]:
            for group in opt.param_groups:
                group["lr"] = lr_at[1]
        x = torch.randn(16, 12, generator=g)
        loss = (net(x) ** 2).mean() + net(x).sum() * 0.01
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_updates_equal_torch_adam_bit_for_bit():
    mine, ref = _net(0), _net(0)
    _train(mine, Adam(mine.parameters(), lr=3e-3, eps=1e-5), 50, lr_at=(20, 1e-3))
    _train(ref, torch.optim.Adam(ref.parameters(), lr=3e-3, eps=1e-5, foreach=False), 50, lr_at=(20, 1e-3))
    for a, b in zip(mine.parameters(), ref.parameters()):
        assert torch.equal(a, b)


def test_state_dict_has_torch_layout_and_loads_torch_state():
    mine, ref = _net(0), _net(0)
    opt_mine = Adam(mine.parameters(), lr=1e-3, eps=1e-5)
    opt_ref = torch.optim.Adam(ref.parameters(), lr=1e-3, eps=1e-5, foreach=False)
    _train(mine, opt_mine, 5)
    _train(ref, opt_ref, 5)
    sd_mine, sd_ref = opt_mine.state_dict(), opt_ref.state_dict()
    assert sd_mine["state"].keys() == sd_ref["state"].keys()
    for i in sd_ref["state"]:
        assert sd_mine["state"][i].keys() == sd_ref["state"][i].keys()
        for slot in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(sd_mine["state"][i][slot], sd_ref["state"][i][slot])
    assert sd_mine["param_groups"][0]["params"] == sd_ref["param_groups"][0]["params"]
    # torch's state into ours (what an old checkpoint held) continues exactly as torch's own optimizer does
    cont = _net(0)
    cont.load_state_dict(ref.state_dict())
    loaded = Adam(cont.parameters(), lr=5.0, eps=1e-5)
    loaded.load_state_dict(sd_ref)
    assert loaded.param_groups[0]["lr"] == 1e-3
    _train(cont, loaded, 5, seed=2)
    _train(ref, opt_ref, 5, seed=2)
    for p, q in zip(cont.parameters(), ref.parameters()):
        assert torch.equal(p, q)
    with pytest.raises(ValueError, match="layout"):
        Adam(torch.nn.Linear(2, 2).parameters(), lr=1e-3).load_state_dict(sd_ref)


def test_training_heads_never_imports_torch_dynamo():
    code = ("import sys, torch\nfrom bitrl_ros.rl.adam import Adam\nnet = torch.nn.Linear(4, 2)\n"
            "opt = Adam(net.parameters(), lr=1e-3)\nnet(torch.randn(3, 4)).sum().backward()\nopt.step()\n"
            "opt.zero_grad()\nopt.load_state_dict(opt.state_dict())\nprint('torch._dynamo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
