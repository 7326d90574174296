"""Per-step learning-rate schedule: linear warmup, then cosine decay (JSON-serialisable state)."""
from __future__ import annotations

import math

import torch


def cosine_warmup_lr(step: int, total_steps: int, warmup_steps: int, base_lr: float, min_lr: float) -> float:
    """lr(step) = base * (step+1)/warmup during warmup, then
    min + (base - min) * (1 + cos(pi * (step - warmup) / (total - warmup))) / 2."""
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


class CosineWarmup:
    """Sets ``group["lr"] = lr(step) * group.get("lr_scale", 1)`` for every param group; call ``step()`` after
    each optimiser step.  ``state_dict()`` is plain JSON (the step counter)."""

    def __init__(self, optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int, base_lr: float,
                 min_lr: float):
        self.optimizer = optimizer
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.base_lr = float(base_lr)
        self.min_lr = float(min_lr)
        self.step_count = 0
        self._apply()

    def lr(self) -> float:
        return cosine_warmup_lr(self.step_count, self.total_steps, self.warmup_steps, self.base_lr, self.min_lr)

    def _apply(self) -> None:
        lr = self.lr()
        for g in self.optimizer.param_groups:
            g["lr"] = lr * g.get("lr_scale", 1.0)

    def step(self) -> None:
        self.step_count += 1
        self._apply()

    def state_dict(self) -> dict:
        return {"step_count": self.step_count, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps, "base_lr": self.base_lr, "min_lr": self.min_lr}

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step_count"])
        self._apply()
