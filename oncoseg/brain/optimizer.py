"""The training algorithm of paper 004 (section 2.4), reusable by any task.

:class:`NormalisedSGD` is SGD with momentum whose step uses the gradient divided by its norm
(over all parameters together), so the size of an update never depends on the size of the
gradient: v <- mu v - lr g / ||g||, theta <- theta + v. The paper sums the gradients of N
batches per iteration: call ``backward`` on N batches (gradients accumulate) before ``step``.

:class:`LossPlateauHalving` lowers the learning rate by watching the loss: every F iterations
it compares the mean loss of the last F/2 iterations with that of the F/2 before; if it did not
fall below ``d_loss`` times the earlier mean, the learning rate halves (not below its minimum),
and after two such insufficient decreases in a row F doubles. Paper: lr 0.25, minimum 0.001,
F = 200, d_loss = 0.98.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch


class NormalisedSGD(torch.optim.Optimizer):
    def __init__(self, params: Iterable[Any], lr: float = 0.25, momentum: float = 0.9):
        if lr <= 0 or not 0 <= momentum < 1:
            raise ValueError(f"need lr > 0 and 0 <= momentum < 1 (got {lr}, {momentum})")
        super().__init__(params, {"lr": lr, "momentum": momentum})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        grads = [p.grad for group in self.param_groups for p in group["params"]
                 if p.grad is not None]
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])) \
            if grads else torch.tensor(0.0)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                velocity = state.get("velocity")
                if velocity is None:
                    velocity = state["velocity"] = torch.zeros_like(p)
                velocity.mul_(group["momentum"])
                if norm > 0:
                    velocity.add_(p.grad, alpha=-group["lr"] / float(norm))
                p.add_(velocity)
        return loss


class LossPlateauHalving:
    per_iteration = True  # the training loop hands it every iteration's loss

    def __init__(self, optimizer: torch.optim.Optimizer, lr_min: float = 0.001,
                 period: int = 200, d_loss: float = 0.98):
        if period < 2 or not 0 < d_loss < 1:
            raise ValueError(f"need period >= 2 and 0 < d_loss < 1 (got {period}, {d_loss})")
        self.optimizer, self.lr_min, self.d_loss = optimizer, lr_min, d_loss
        self.period = period
        self.losses: list[float] = []
        self.insufficient = 0  # insufficient decreases in a row

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def step(self, loss: float | torch.Tensor) -> None:
        """Record one iteration's loss; every ``period`` iterations, decide."""
        self.losses.append(float(loss.detach()) if isinstance(loss, torch.Tensor) else
                           float(loss))
        if len(self.losses) < self.period:
            return
        half = self.period // 2
        previous = sum(self.losses[-2 * half:-half]) / half
        current = sum(self.losses[-half:]) / half
        self.losses = []
        if current > self.d_loss * previous:
            for group in self.optimizer.param_groups:
                group["lr"] = max(group["lr"] / 2, self.lr_min)
            self.insufficient += 1
            if self.insufficient == 2:
                self.period *= 2
                self.insufficient = 0
        else:
            self.insufficient = 0

    def state_dict(self) -> dict[str, Any]:
        return {"period": self.period, "losses": list(self.losses),
                "insufficient": self.insufficient}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.period = int(state["period"])
        self.losses = [float(v) for v in state["losses"]]
        self.insufficient = int(state["insufficient"])
