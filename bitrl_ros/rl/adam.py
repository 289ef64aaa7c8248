"""Adam for the heads, written here so that the process that trains does not pay for torch.compile.

torch.optim.Optimizer's methods import torch._dynamo (and with it sympy) on their first call, for the compiler's
sake: about 74 MB of resident memory in a process that never compiles anything, a fifth of policy_value on a
4 GB board. This class does the same arithmetic as torch.optim.Adam (single-tensor path; no weight decay,
amsgrad or maximize: the heads use none), operation for operation, so its updates equal torch's bit for bit
(test_rl_adam.py), and it keeps torch's state_dict layout (``state``: index -> step / exp_avg / exp_avg_sq,
``param_groups``: lr, betas, eps, params), so checkpoints read and write as before.
"""
from __future__ import annotations

import copy

import torch


class Adam:
    def __init__(self, params, lr: float, eps: float = 1e-8, betas: tuple[float, float] = (0.9, 0.999)):
        params = list(params)
        if not params:
            raise ValueError("Adam got an empty parameter list")
        self.param_groups = [{"params": params, "lr": float(lr), "betas": tuple(betas), "eps": float(eps)}]
        self.state: dict[torch.Tensor, dict] = {}

    def _params(self) -> list[torch.Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    def zero_grad(self) -> None:
        for p in self._params():
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state.get(p)
                if state is None:
                    state = self.state[p] = {"step": torch.tensor(0.0), "exp_avg": torch.zeros_like(p),
                                             "exp_avg_sq": torch.zeros_like(p)}
                grad, exp_avg, exp_avg_sq = p.grad, state["exp_avg"], state["exp_avg_sq"]
                state["step"] += 1
                exp_avg.lerp_(grad, 1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                step = state["step"].item()
                step_size = lr / (1 - beta1**step)
                denom = (exp_avg_sq.sqrt() / (1 - beta2**step) ** 0.5).add_(eps)
                p.addcdiv_(exp_avg, denom, value=-step_size)

    def state_dict(self) -> dict:
        """torch.optim's layout: parameters by their index over the groups."""
        index = {id(p): i for i, p in enumerate(self._params())}
        groups = [{**{k: v for k, v in g.items() if k != "params"}, "params": [index[id(p)] for p in g["params"]]}
                  for g in self.param_groups]
        state = {index[id(p)]: {k: v.clone() for k, v in s.items()} for p, s in self.state.items()}
        return {"state": state, "param_groups": copy.deepcopy(groups)}

    def load_state_dict(self, state_dict: dict) -> None:
        params = self._params()
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups) or any(len(g["params"]) != len(mine["params"])
                                                        for g, mine in zip(groups, self.param_groups)):
            raise ValueError("the saved optimizer state has another parameter layout")
        for mine, saved in zip(self.param_groups, groups):
            mine.update({k: (tuple(v) if k == "betas" else v) for k, v in saved.items()
                         if k in ("lr", "betas", "eps")})
        self.state = {}
        for i, slots in state_dict["state"].items():
            p = params[int(i)]
            self.state[p] = {"step": torch.as_tensor(slots["step"], dtype=torch.float32).clone().reshape(()),
                             "exp_avg": torch.as_tensor(slots["exp_avg"]).to(p.dtype).clone(),
                             "exp_avg_sq": torch.as_tensor(slots["exp_avg_sq"]).to(p.dtype).clone()}
