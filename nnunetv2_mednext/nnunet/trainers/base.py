"""nnU-Net trainer for MedNeXt networks: network from the plan's topology, AdamW + warm-up + poly schedule."""

from __future__ import annotations

import os
from typing import Any, ClassVar

import numpy as np
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from torch import nn

from nnunetv2_mednext.envflags import parse_flag

from .network_from_plans import build_mednext_from_plans
from .schedule import WarmupPolyLR
from .seeding import seed_from_env
from .threads import apply_thread_env

CHECKPOINTING_ENV = "NNUNETV2_MEDNEXT_CHECKPOINTING"


def checkpointing_from_env(value: str | None) -> bool | None:
    """``NNUNETV2_MEDNEXT_CHECKPOINTING``: ``1``/``on`` or ``0``/``off``; unset or empty keeps the variant's default."""
    return parse_flag(CHECKPOINTING_ENV, value, None, "recompute every block in backward: less memory, slower",
                      "off", "the variant's default")


class nnUNetTrainerMedNeXt(nnUNetTrainer):
    """Seed MedNeXt (default variant ``mednext_t``) on nnU-Net's plans.

    Recipe: AdamW (lr 3e-3, weight decay 1e-4, eps 1e-4 so fp16 AMP never divides by a vanishing second moment),
    linear warm-up over the first 2 % of iterations (at most 50 epochs' worth), then poly decay (exponent 0.9),
    nnU-Net's gradient clipping (norm 12) and deep supervision on every decoder stage. Subclasses change
    ``mednext_variant`` / ``mednext_overrides`` and the class attributes below.
    """

    mednext_variant: ClassVar[str] = "mednext_t"
    mednext_overrides: ClassVar[dict[str, Any]] = {}
    mednext_lr: ClassVar[float] = 3e-3  # 1e-3 (Roy et al.) learns 2-5x slower at short budgets: docs/nnunet.md
    mednext_weight_decay: ClassVar[float] = 1e-4
    mednext_adam_eps: ClassVar[float] = 1e-4
    mednext_warmup_fraction: ClassVar[float] = 0.02
    # False: no weight decay on norms, biases and layer scales; True: on every parameter (Roy et al.'s AdamW)
    mednext_decay_norms_and_biases: ClassVar[bool] = False
    mednext_max_warmup_epochs: ClassVar[int] = 50

    def __init__(
        self, plans: dict, configuration: str, fold: int, dataset_json: dict, device: torch.device = torch.device("cuda")
    ) -> None:
        checkpointing_from_env(os.environ.get(CHECKPOINTING_ENV))  # a bad setting fails before nnU-Net writes a log
        seed_from_env()
        super().__init__(plans, configuration, fold, dataset_json, device)
        apply_thread_env(self.device)
        self.initial_lr = self.mednext_lr
        self.weight_decay = self.mednext_weight_decay
        self._iteration_in_epoch = 0

    @classmethod
    def build_network_architecture(
        cls,
        plans_manager: Any,
        configuration_manager: Any,
        num_input_channels: int,
        num_output_channels: int,
        enable_deep_supervision: bool = True,
    ) -> nn.Module:
        """nnU-Net >= 2.7 builder signature; called on the class by the predictor (deep supervision off).

        Builds the network from its arguments only (never the command line or the input files).

        ``NNUNETV2_MEDNEXT_CHECKPOINTING=1/0`` switches gradient checkpointing on or off for this run, whatever the
        variant's default (M/L on, the others off); it changes memory and speed, never the weights.
        """
        overrides = dict(cls.mednext_overrides)
        checkpointing = checkpointing_from_env(os.environ.get(CHECKPOINTING_ENV))
        if checkpointing is not None:
            overrides["checkpointing"] = checkpointing
        return build_mednext_from_plans(
            cls.mednext_variant, configuration_manager, num_input_channels, num_output_channels,
            enable_deep_supervision, overrides,
        )

    def initialize(self) -> None:
        super().initialize()
        net = self.network.module if hasattr(self.network, "module") else self.network
        net = getattr(net, "_orig_mod", net)  # torch.compile wrapper
        if not hasattr(net, "checkpointing"):  # a subclass that trains another network
            return
        state = "on" if net.checkpointing else "off"
        self.print_to_log_file(
            f"MedNeXt variant {self.mednext_variant}: gradient checkpointing {state} (set {CHECKPOINTING_ENV}=1/0 to "
            "change it)"
        )
        if self.enable_deep_supervision:
            weights = [round(float(w), 4) for w in getattr(self.loss, "weight_factors", ())]
            extra = " (the last on the bottleneck, as Roy et al.)" if self._has_bottleneck_head() else ""
            self.print_to_log_file(f"deep supervision: {len(weights)} outputs{extra}, loss weights {weights}")

    def _unwrapped_network(self) -> nn.Module | None:
        net = getattr(self, "network", None)
        net = net.module if hasattr(net, "module") else net  # DDP
        return getattr(net, "_orig_mod", net)  # torch.compile wrapper

    def _has_bottleneck_head(self) -> bool:
        """Whether the network returns Roy et al.'s extra deep-supervision output on the bottleneck."""
        return bool(getattr(self._unwrapped_network(), "ds_bottleneck", False))

    def _get_deep_supervision_scales(self) -> list | None:
        """nnU-Net's scales (one per decoder stage), plus the bottleneck's when the network has that head."""
        scales = super()._get_deep_supervision_scales()
        if scales is not None and self._has_bottleneck_head():
            strides = np.vstack(self.configuration_manager.pool_op_kernel_sizes)
            scales = [*scales, list(1 / np.prod(strides, axis=0))]
        return scales

    def _build_loss(self) -> nn.Module:
        """nnU-Net's loss; with the bottleneck head, Roy et al.'s weights ``2^-i`` over all ``n_stages`` outputs.

        nnU-Net v2 gives its lowest-resolution output weight 0; the official MedNeXt trainer (nnU-Net v1 with a pool
        list lengthened to 6 entries) weighted all five outputs 1, 1/2, ..., 1/16 (normalised), which is what a
        network with the bottleneck head gets here.
        """
        loss = super()._build_loss()
        if self.enable_deep_supervision and self._has_bottleneck_head():
            weights = np.array([1 / 2**i for i in range(len(self._get_deep_supervision_scales()))])
            loss.weight_factors = tuple(float(w) for w in weights / weights.sum())
        return loss

    def configure_optimizers(self) -> tuple[torch.optim.Optimizer, WarmupPolyLR]:
        decay, no_decay = [], []
        for name, p in self.network.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim <= 1 or name.endswith(".gamma") else decay).append(p)
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.weight_decay},
             {"params": no_decay, "weight_decay": self.weight_decay if self.mednext_decay_norms_and_biases else 0.0}],
            lr=self.initial_lr,
            eps=self.mednext_adam_eps,
            # one fused kernel per tensor instead of ~10 ops: MedNeXt has ~4x the parameter tensors of the U-Net,
            # and the per-tensor loop cost 85 ms of a 2D CPU step (and seconds when OpenMP threads oversubscribe)
            fused=torch.device(self.device).type in ("cpu", "cuda"),
        )
        total = self.num_epochs * self.num_iterations_per_epoch
        warmup = min(round(self.mednext_warmup_fraction * total), self.mednext_max_warmup_epochs * self.num_iterations_per_epoch)
        scheduler = WarmupPolyLR(optimizer, self.initial_lr, total, warmup, self.num_iterations_per_epoch)
        return optimizer, scheduler

    def on_train_epoch_start(self) -> None:
        self._iteration_in_epoch = 0
        super().on_train_epoch_start()

    def train_step(self, batch: dict) -> dict:
        self.lr_scheduler.step_iteration(self.current_epoch * self.num_iterations_per_epoch + self._iteration_in_epoch)
        self._iteration_in_epoch += 1
        return super().train_step(batch)
