"""Learning-rate schedule for MedNeXt trainers: linear warm-up, then polynomial decay, per iteration."""

from __future__ import annotations

import torch


class WarmupPolyLR:
    """Sets ``lr = base * it / warmup`` during warm-up, then ``base * (1 - progress) ** exponent``.

    nnU-Net calls ``step(epoch)`` at the start of each epoch; MedNeXt trainers also call ``step_iteration``
    before every training step, so warm-up works even for 1-epoch runs.
    """

    def __init__(
        self, optimizer: torch.optim.Optimizer, base_lr: float, total_iters: int, warmup_iters: int,
        iters_per_epoch: int, exponent: float = 0.9,
    ) -> None:
        self.optimizer, self.base_lr, self.exponent = optimizer, base_lr, exponent
        self.total_iters = max(1, int(total_iters))
        self.warmup_iters = max(0, min(int(warmup_iters), self.total_iters - 1))
        self.iters_per_epoch = max(1, int(iters_per_epoch))
        self.last_lr = self.lr_at(0)
        self._apply(self.last_lr)

    def lr_at(self, iteration: int) -> float:
        it = min(max(iteration, 0), self.total_iters)
        if it < self.warmup_iters:
            return self.base_lr * (it + 1) / (self.warmup_iters + 1)
        span = max(1, self.total_iters - self.warmup_iters)
        return self.base_lr * (1 - (it - self.warmup_iters) / span) ** self.exponent

    def _apply(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.last_lr = lr

    def step(self, epoch: int | None = None) -> None:
        """Epoch-level hook called by nnU-Net: set the lr of the epoch's first iteration."""
        self.step_iteration((epoch or 0) * self.iters_per_epoch)

    def step_iteration(self, iteration: int) -> None:
        self._apply(self.lr_at(iteration))

    def get_last_lr(self) -> list[float]:
        return [self.last_lr]
