"""The nnU-Net glue of the device check: each network built by the trainer users run, with nnU-Net's loss, the
trainer's optimiser recipe and a learnable synthetic batch (:class:`Case`), and the timed training steps."""

from __future__ import annotations

import gc
import math
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nnunetv2_mednext.networks.fastops import reference_ops
from nnunetv2_mednext.networks.memory import count_params, peak_allocated_bytes, saved_tensor_bytes

from . import amp as gpu
from .plans import synthetic_plans
from .profiles import NETS, NUM_CLASSES, Profile


def trainer_class(net: str) -> type:
    """The trainer class that builds network ``net`` (see :data:`~.profiles.NETS`)."""
    name = NETS[net]
    if name == "nnUNetTrainer":
        from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

        return nnUNetTrainer
    from nnunetv2_mednext.nnunet.trainers.variants import TRAINERS

    return TRAINERS[name]


def plans_manager(profile: Profile) -> tuple[Any, dict]:
    """nnU-Net ``PlansManager`` over the profile's synthetic plans, and the dataset.json."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans, dataset_json = synthetic_plans(profile.plans, NUM_CLASSES)
    return PlansManager(plans), dataset_json


def nnunet_loss(configuration_manager: Any, n_outputs: int, compile_backend: str | None = None) -> nn.Module:
    """``nnUNetTrainer``'s loss: Dice (batch Dice per plan) + CE, deep supervision weights 1/2^i, lowest 0."""
    from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
    from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

    loss = DC_and_CE_loss({"batch_dice": configuration_manager.batch_dice, "smooth": 1e-5, "do_bg": False, "ddp": False},
                          {}, weight_ce=1, weight_dice=1, ignore_label=None, dice_class=MemoryEfficientSoftDiceLoss)
    if compile_backend:  # what nnUNetTrainer does when it compiles
        loss.dc = torch.compile(loss.dc, backend=compile_backend)
    weights = np.array([1 / 2**i for i in range(n_outputs)])
    weights[-1] = 0
    return DeepSupervisionWrapper(loss, weights / weights.sum())


class _RecipeView:
    """Attributes a trainer's ``configure_optimizers`` reads, for a network outside a trainer instance."""

    def __init__(self, cls: type, **attrs: Any) -> None:
        self._cls = cls
        self.__dict__.update(attrs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cls, name)


def recipe_optimizer(cls: type, net: nn.Module, total_steps: int) -> tuple[torch.optim.Optimizer, Any]:
    """The trainer's own ``configure_optimizers`` for ``net`` over ``total_steps`` iterations; scheduler.step(i)."""
    if hasattr(cls, "mednext_lr"):
        lr, wd = cls.mednext_lr, cls.mednext_weight_decay
    else:  # nnUNetTrainer.__init__ defaults
        lr, wd = 1e-2, 3e-5
    device = next(net.parameters()).device
    view = _RecipeView(cls, network=net, initial_lr=lr, weight_decay=wd, num_epochs=max(1, total_steps),
                       num_iterations_per_epoch=1, device=device)
    return cls.configure_optimizers(view)


def learnable_batch(gen: torch.Generator, batch: int, patch: Sequence[int], n_classes: int,
                    device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise image and a label a network can learn: the local (5-voxel box) mean of the image, cut into
    ``n_classes`` equally likely bins. Fresh batches each step, so a falling loss means learning, not memorising."""
    x = torch.randn((batch, 1, *patch), generator=gen, device=device)
    pool = F.avg_pool3d if len(patch) == 3 else F.avg_pool2d
    local = pool(x, 5, stride=1, padding=2, count_include_pad=False) * math.sqrt(5 ** len(patch))
    edges = torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(0, 1, n_classes + 1)[1:-1]).to(device)
    return x, torch.bucketize(local, edges).to(torch.int16)


def ds_targets(y: torch.Tensor, configuration_manager: Any) -> list[torch.Tensor]:
    """Labels for every deep-supervision output (nearest neighbour), as nnU-Net's data loader gives them."""
    strides = np.cumprod(np.array(configuration_manager.pool_op_kernel_sizes), axis=0)[:-1]
    patch = np.array(y.shape[2:])
    out = []
    for s in strides:
        shape = [int(v) for v in patch // s]
        out.append(y if list(y.shape[2:]) == shape else
                   F.interpolate(y.float(), size=shape, mode="nearest").to(y.dtype))
    return out


@dataclass
class Case:
    """One network ready to train: optimiser, loss, a fixed batch, AMP mode and scaler."""

    net_name: str
    config: str
    net: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    loss: nn.Module
    x: torch.Tensor
    targets: list[torch.Tensor]
    amp: gpu.AmpMode
    scaler: Any
    params: int
    checkpointing: bool
    proxy: int

    def step(self) -> gpu.StepOutput:
        return gpu.train_step(self.net, self.optimizer, self.loss, self.x, self.targets, self.amp, self.scaler)

    def forward_loss(self) -> torch.Tensor:
        """Forward pass and loss under the case's autocast (no backward)."""
        with gpu.autocast(self.x.device.type, self.amp):
            return self.loss(self.net(self.x), self.targets)


def build_case(pm: Any, net_name: str, config: str, device: torch.device, amp: gpu.AmpMode,
               channels_last: bool = False, compile_backend: str | None = None, total_steps: int = 1000) -> Case:
    """Build ``net_name`` for ``config`` with its trainer, nnU-Net's loss, its recipe and a learnable batch;
    ``compile_backend`` (e.g. ``inductor``) compiles network and Dice loss as ``nnUNetTrainer`` does."""
    cm = pm.get_configuration(config)
    cls = trainer_class(net_name)
    torch.manual_seed(0)
    net = cls.build_network_architecture(pm, cm, 1, NUM_CLASSES, True)
    proxy = int(net.compute_conv_feature_map_size(cm.patch_size))
    net = net.to(device)
    gen = torch.Generator(device=device).manual_seed(0)
    x, y = learnable_batch(gen, cm.batch_size, cm.patch_size, NUM_CLASSES, device)
    targets = ds_targets(y, cm)
    if channels_last:
        net, x = gpu.to_channels_last(net, x)
    optimizer, scheduler = recipe_optimizer(cls, net, total_steps)
    loss = nnunet_loss(cm, len(targets), compile_backend)
    params = count_params(net)
    checkpointing = bool(getattr(net, "checkpointing", False))
    if compile_backend:
        net = torch.compile(net, backend=compile_backend)
    return Case(net_name, config, net, optimizer, scheduler, loss, x, targets, amp,
                gpu.make_grad_scaler(amp, device.type), params, checkpointing, proxy)


def check_amp(device: torch.device) -> gpu.AmpMode:
    """nnU-Net's AMP where it has one (fp16 + GradScaler on CUDA); bf16 autocast, its stand-in, on a CPU."""
    cap = gpu.cuda_capability(device) if device.type == "cuda" else None
    return gpu.select_amp(device.type, "fp16" if device.type == "cuda" else "bf16", cap)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def failure(e: BaseException) -> dict:
    """The fields of a row for an exception: the check reports every failure and goes on."""
    if isinstance(e, torch.cuda.OutOfMemoryError):
        return {"status": "fail", "reason": f"CUDA out of memory: {str(e).splitlines()[0]}"}
    return {"status": "fail", "reason": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
            "traceback": traceback.format_exc(limit=6)}


# ----------------------------------------------------------------------------------------------------------------
# measurements
# ----------------------------------------------------------------------------------------------------------------


def bench_case(case: Case, device: torch.device, warmup: int, repeats: int, cpu_memory: bool = True) -> dict:
    """Time ``repeats`` steps after ``warmup``; peak CUDA memory over them (on CPU: activation bytes saved for
    backward by one more forward, unless ``cpu_memory`` is off: compiled graphs save their own tensors)."""
    t0 = time.perf_counter()
    losses = []
    for _ in range(warmup):
        losses.append(case.step().loss)
    sync(device)
    first_s = time.perf_counter() - t0
    row: dict[str, Any] = {"first_steps_s": round(first_s, 3)}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        start_alloc = torch.cuda.memory_allocated(device)
    t1 = time.perf_counter()
    for _ in range(repeats):
        losses.append(case.step().loss)
    sync(device)
    dt = time.perf_counter() - t1
    row["it_per_s"] = round(repeats / dt, 3)
    row["s_per_it"] = round(dt / repeats, 4)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        row.update(peak_bytes=int(peak), activation_bytes=int(peak - start_alloc))
    elif cpu_memory:
        row["activation_bytes"] = int(saved_tensor_bytes(case.forward_loss, list(case.net.parameters())))
        with reference_ops():  # the GPU execution path (no fused CPU nodes), as the planner models it
            row["peak_bytes"] = int(peak_allocated_bytes(lambda: case.forward_loss().backward()))
        case.optimizer.zero_grad(set_to_none=True)
    loss_values = torch.stack(losses).cpu()
    row["losses_finite"] = bool(torch.isfinite(loss_values).all())
    row["last_loss"] = round(float(loss_values[-1]), 4)
    if case.scaler is not None:
        row["grad_scale"] = float(case.scaler.get_scale())
    return row


def measure_item(pm: Any, net_name: str, config: str, device: torch.device, amp: gpu.AmpMode, channels_last: bool,
                 compile_backend: str | None, profile: Profile,
                 measure: Callable[[Case], dict] | None = None) -> dict:
    """One row of timed training steps for ``net_name`` on ``config``: ``measure(case)`` (default
    :func:`bench_case` with the profile's warm-up and repeats) adds its numbers; any failure becomes the row's."""
    cm = pm.get_configuration(config)
    row: dict[str, Any] = {"net": net_name, "config": config, "patch": list(cm.patch_size), "batch": cm.batch_size,
                           "amp": amp.name, "channels_last": channels_last, "compile": compile_backend or False}
    if measure is None:
        def measure(case: Case) -> dict:
            return bench_case(case, device, profile.warmup + (1 if compile_backend else 0), profile.repeats,
                              cpu_memory=not compile_backend)
    case = None
    try:
        case = build_case(pm, net_name, config, device, amp, channels_last, compile_backend)
        row.update(params=case.params, checkpointing=case.checkpointing, proxy=case.proxy)
        row.update(measure(case))
        row["status"] = "ok" if row["losses_finite"] else "fail"
        if not row["losses_finite"]:
            row["reason"] = "non-finite loss"
    except Exception as e:
        row.update(failure(e))
    del case
    free(device)
    return row
