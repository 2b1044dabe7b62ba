"""Learning rate as a pure function of the optimiser step (linear warm-up, then cosine decay), so a resumed run
needs no scheduler state."""

from __future__ import annotations

import math


def lr_at(step: int, total_steps: int, warmup_steps: int, base_lr: float, min_lr: float = 0.0) -> float:
    if total_steps <= 0:
        return base_lr
    warmup_steps = min(warmup_steps, total_steps // 2)
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0) / span, 1.0)
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * progress))
