"""Device check (``nnunetv2-mednext doctor``, ``benchmarks/device_check.py``): do the GPU paths work, and how fast.

No dataset is read: batches are synthetic, at the shapes of nnU-Net plans written for the check
(:func:`~nnunetv2_mednext.plan_networks.synthetic_plans`). Four networks are built from the same plans by the
trainers users run (``nnUNetTrainerMedNeXt`` = ``mednext_t``, ``nnUNetTrainerMedNeXtV1_S_k3``,
``nnUNetTrainerMedNeXtV1_L_k3`` with its default gradient checkpointing, and nnU-Net's own ``nnUNetTrainer`` =
``PlainConvUNet``), with nnU-Net's loss (Dice + CE, deep supervision) and each trainer's optimiser recipe. Sections:

* **matrix**: train iterations/s and memory per network, plan and mode (fp16 + GradScaler, bf16, channels-last);
* **stability**: N AMP steps per network on fresh batches of a learnable synthetic target: no NaN/inf in loss,
  gradients or weights, and the loss goes down;
* **planner**: the MedNeXt planner's memory estimate (and nnU-Net's for ``PlainConvUNet``) against the measured peak;
* **compile**: the same training steps under ``torch.compile`` (inductor), in a child process under a timeout;
* **predictor**: nnU-Net's ``nnUNetPredictor`` (sliding window, Gaussian weighting, mirroring) on a synthetic volume;
* **classify**: the classification trainer's networks (``mednext_cls_t`` against ``resnet18``) under its AMP and
  channels-last rules, then ``classify train`` + ``predict`` end to end on a synthetic set
  (:mod:`nnunetv2_mednext.classification.gpu_check`);
* **nnunet_train**: the stock ``nnUNetv2_train`` on a synthetic dataset, ``-num_gpus 2`` when two GPUs are visible.

On a CPU the same command runs the CPU subset (bf16 autocast, inductor if a C++ compiler is there, checkpointing,
the predictor) and lists what it skipped and why. Everything runs inside a time budget; what does not fit is skipped
and says so. Results: ``device_check.json`` and ``device_check.md`` in the output folder.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import math
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nnunetv2_mednext import gpu
from nnunetv2_mednext.errors import MedNeXtUserError
from nnunetv2_mednext.networks.fastops import reference_ops
from nnunetv2_mednext.networks.memory import count_params, peak_allocated_bytes, saved_tensor_bytes
from nnunetv2_mednext.plan_networks import synthetic_plans

NETS: dict[str, str] = {  # network label -> trainer that builds it (and whose optimiser recipe is used)
    "mednext_t": "nnUNetTrainerMedNeXt",
    "mednextv1_s_k3": "nnUNetTrainerMedNeXtV1_S_k3",
    "mednextv1_l_k3": "nnUNetTrainerMedNeXtV1_L_k3",
    "PlainConvUNet": "nnUNetTrainer",
}
NUM_CLASSES = 3
SECTIONS = ("matrix", "stability", "planner", "compile", "predictor", "classify", "nnunet_train")
RATIO_TOLERANCE = 0.25  # planner estimate vs measured peak
# nnU-Net 2.8 ExperimentPlanner: a proxy of UNet_reference_val_{3d,2d} at batch {2,12} fills 8 GB
NNUNET_REFERENCE = {3: (560_000_000, 2), 2: (85_000_000, 12)}
NNUNET_REFERENCE_GB = 8


@dataclass
class Profile:
    """Shapes, step counts and time budgets of one run of the check.

    ``matrix``: (configuration, AMP mode, channels-last) in priority order; each is run for every network.
    ``sections``: seconds each section may take at most; ``budget_s``: the whole run. What does not fit is skipped.
    """

    name: str
    plans: dict[str, dict]  # configuration -> {"patch": [...], "batch_size": int}
    matrix: tuple[tuple[str, str, bool], ...]
    warmup: int
    repeats: int
    stability_config: str
    stability_steps: int
    stability_amp: str
    compile_backend: str
    compile_items: tuple[tuple[str, str], ...]  # (network, configuration)
    predictor_nets: tuple[str, ...]
    predictor_config: str
    predictor_volume: tuple[int, ...]
    budget_s: float
    sections: dict[str, float]
    classify_size: int = 224  # the classifiers' training steps: input px, batch
    classify_batch: int = 32
    classify_train_size: int = 64  # classify train end to end on a synthetic set


PROFILES: dict[str, Profile] = {
    # one GPU, under 9 minutes with start-up: 3D plan 128^3 batch 2, 2D plan 256^2 batch 12 (nnU-Net's reference batch)
    "gpu": Profile(
        "gpu", {"3d_fullres": {"patch": [128] * 3, "batch_size": 2}, "2d": {"patch": [256, 256], "batch_size": 12},
                "3d_stability": {"patch": [64] * 3, "batch_size": 2}},
        (("3d_fullres", "fp16", False), ("3d_fullres", "bf16", False), ("2d", "fp16", False),
         ("3d_fullres", "fp16", True), ("2d", "bf16", False), ("2d", "fp16", True)),
        2, 8, "3d_stability", 300, "fp16",
        "inductor", (("mednext_t", "3d_fullres"), ("mednextv1_l_k3", "3d_fullres"), ("PlainConvUNet", "3d_fullres"),
                     ("mednextv1_s_k3", "3d_fullres"), ("mednext_t", "2d"), ("PlainConvUNet", "2d")),
        tuple(NETS), "3d_fullres", (160, 192, 192), 460.0,
        # with 2+ GPUs the matrix and compile sections give 40 s and 60 s to the DDP run (see run_check)
        {"matrix": 150.0, "stability": 90.0, "compile": 130.0, "predictor": 40.0, "classify": 40.0,
         "nnunet_train": 120.0},
    ),
    # CPU subset, full: about half an hour on two shared cores
    "cpu": Profile(
        "cpu", {"3d_fullres": {"patch": [32] * 3, "batch_size": 1}, "2d": {"patch": [64, 64], "batch_size": 2},
                "2d_stability": {"patch": [32, 32], "batch_size": 2}},
        (("3d_fullres", "fp32", False), ("3d_fullres", "bf16", False), ("2d", "fp32", False), ("2d", "bf16", False),
         ("3d_fullres", "fp32", True), ("2d", "fp32", True)),
        1, 3, "2d_stability", 100, "bf16",
        "inductor", (("mednext_t", "2d"), ("mednextv1_l_k3", "2d"), ("PlainConvUNet", "2d")),
        tuple(NETS), "3d_fullres", (48, 48, 48), 2400.0,
        {"matrix": 600.0, "stability": 600.0, "compile": 900.0, "predictor": 120.0, "classify": 120.0,
         "nnunet_train": 0.0},
        classify_size=128, classify_batch=8, classify_train_size=32,
    ),
    # CPU subset for CI: about a minute on two cores; compile traces with aot_eager (inductor's CPU code
    # generation alone takes minutes per network on one core)
    "quick": Profile(
        "quick", {"3d_fullres": {"patch": [16] * 3, "batch_size": 1}, "2d": {"patch": [32, 32], "batch_size": 2},
                  "2d_stability": {"patch": [16, 16], "batch_size": 4}},
        (("3d_fullres", "fp32", False), ("3d_fullres", "bf16", False), ("2d", "fp32", False), ("2d", "bf16", False)),
        1, 1, "2d_stability", 20, "bf16",
        "aot_eager", (("mednext_t", "2d"), ("mednextv1_l_k3", "2d")),
        ("mednext_t",), "3d_fullres", (24, 24, 24), 270.0,
        {"matrix": 90.0, "stability": 60.0, "compile": 60.0, "predictor": 30.0, "classify": 30.0,
         "nnunet_train": 0.0},
        classify_size=32, classify_batch=4, classify_train_size=32,
    ),
}


# ----------------------------------------------------------------------------------------------------------------
# building blocks: plans, networks, loss, optimiser, batches
# ----------------------------------------------------------------------------------------------------------------


def trainer_class(net: str) -> type:
    """The trainer class that builds network ``net`` (see :data:`NETS`)."""
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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


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
    _sync(device)
    first_s = time.perf_counter() - t0
    row: dict[str, Any] = {"first_steps_s": round(first_s, 3)}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        start_alloc = torch.cuda.memory_allocated(device)
    t1 = time.perf_counter()
    for _ in range(repeats):
        losses.append(case.step().loss)
    _sync(device)
    dt = time.perf_counter() - t1
    row["it_per_s"] = round(repeats / dt, 3)
    row["s_per_it"] = round(dt / repeats, 4)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        row.update(peak_bytes=int(peak), activation_bytes=int(peak - start_alloc))
    elif cpu_memory:
        def forward() -> torch.Tensor:
            with gpu.autocast(device.type, case.amp):
                return case.loss(case.net(case.x), case.targets)

        row["activation_bytes"] = int(saved_tensor_bytes(forward, list(case.net.parameters())))
        with reference_ops():  # the GPU execution path (no fused CPU nodes), as the planner models it
            row["peak_bytes"] = int(peak_allocated_bytes(lambda: forward().backward()))
        case.optimizer.zero_grad(set_to_none=True)
    loss_values = torch.stack(losses).cpu()
    row["losses_finite"] = bool(torch.isfinite(loss_values).all())
    row["last_loss"] = round(float(loss_values[-1]), 4)
    if case.scaler is not None:
        row["grad_scale"] = float(case.scaler.get_scale())
    return row


def stability_run(case: Case, pm: Any, device: torch.device, steps: int, deadline: float) -> dict:
    """``steps`` steps on fresh learnable batches with the recipe's schedule; NaN/inf checks and loss trend."""
    cm = pm.get_configuration(case.config)
    gen = torch.Generator(device=device).manual_seed(1)
    losses, norms = [], []
    t0 = time.perf_counter()
    for i in range(steps):
        if time.monotonic() > deadline:
            break
        case.scheduler.step(i)
        x, y = learnable_batch(gen, cm.batch_size, cm.patch_size, NUM_CLASSES, device)
        out = gpu.train_step(case.net, case.optimizer, case.loss, x, ds_targets(y, cm), case.amp, case.scaler)
        losses.append(out.loss)
        norms.append(out.grad_norm.float())
    _sync(device)
    done = len(losses)
    row: dict[str, Any] = {"steps": done, "steps_requested": steps, "seconds": round(time.perf_counter() - t0, 2)}
    if done == 0:
        row.update(status="skipped", reason="time budget spent before the first step")
        return row
    loss = torch.stack(losses).cpu()
    norm = torch.stack(norms).cpu()
    k = max(1, done // 10)
    finite_loss = torch.isfinite(loss)
    first = float(loss[:k][finite_loss[:k]].mean()) if finite_loss[:k].any() else float("nan")
    last = float(loss[-k:][finite_loss[-k:]].mean()) if finite_loss[-k:].any() else float("nan")
    weights_finite = all(bool(torch.isfinite(p).all()) for p in case.net.parameters())
    overflow = int((~torch.isfinite(norm)).sum())
    row.update(
        nonfinite_losses=int((~finite_loss).sum()), nonfinite_grad_steps=overflow, weights_finite=weights_finite,
        loss_first=round(first, 4), loss_last=round(last, 4), window=k,
        max_grad_norm=round(float(norm[torch.isfinite(norm)].max()), 3) if torch.isfinite(norm).any() else None,
    )
    problems = stability_problems(row, case.scaler is not None)
    if done < steps:
        row["note"] = f"time budget: {done} of {steps} steps ran"
    row["status"] = "fail" if problems else "ok"
    if problems:
        row["reason"] = "; ".join(problems)
    return row


def stability_problems(row: dict, has_scaler: bool, min_drop: float = 0.05) -> list[str]:
    """What is wrong with a stability run (empty: passed). With a GradScaler a few overflowing steps are expected
    (it skips them and lowers its scale): up to max(5, 5 %) are accepted; without one any is a failure."""
    out = []
    if row["nonfinite_losses"]:
        out.append(f"{row['nonfinite_losses']} non-finite losses")
    allowed = max(5, int(0.05 * row["steps"])) if has_scaler else 0
    if row["nonfinite_grad_steps"] > allowed:
        out.append(f"{row['nonfinite_grad_steps']} steps with non-finite gradients (allowed {allowed})")
    if not row["weights_finite"]:
        out.append("non-finite weights after training")
    if not (row["loss_last"] <= row["loss_first"] - min_drop):
        out.append(f"loss did not go down by {min_drop}: {row['loss_first']} -> {row['loss_last']}")
    return out


def planner_estimate(net_name: str, proxy: int, batch: int, dims: int, device_type: str) -> tuple[float | None, str]:
    """Memory the planners predict for a training step (bytes) and the model's name.

    MedNeXt nets: ``proxy x batch x BYTES_PER_PROXY_UNIT`` (GPU, fp16 AMP) or ``x BYTES_PER_PROXY_UNIT_FP32`` (CPU,
    compared with the peak bytes allocated by a step on the GPU path). ``PlainConvUNet``: nnU-Net's reference
    values (GPU only).
    """
    from nnunetv2_mednext.nnunet.planners import mednext_planner as mp

    if net_name != "PlainConvUNet":
        if device_type == "cuda":
            return proxy * batch * mp.BYTES_PER_PROXY_UNIT, "MedNeXt planner (fp16 AMP)"
        return proxy * batch * mp.BYTES_PER_PROXY_UNIT_FP32, "MedNeXt planner, fp32 activations"
    if device_type != "cuda":
        return None, "nnU-Net planner (GPU model only)"
    ref, ref_bs = NNUNET_REFERENCE[dims]
    return proxy * batch * NNUNET_REFERENCE_GB * 1e9 / (ref * ref_bs), "nnU-Net planner reference values"


def planner_rows(matrix: list[dict], device_type: str) -> list[dict]:
    """Estimate vs measured for the rows that match the planner's model (fp16 on CUDA / fp32 on CPU, eager)."""
    base_amp = "fp16" if device_type == "cuda" else "fp32"
    rows = []
    for r in matrix:
        if r.get("status") != "ok" or r["amp"] != base_amp or r["channels_last"] or r["compile"]:
            continue
        dims = len(r["patch"])
        estimate, model = planner_estimate(r["net"], r["proxy"], r["batch"], dims, device_type)
        measured = r.get("peak_bytes")
        row = {"net": r["net"], "config": r["config"], "patch": r["patch"], "batch": r["batch"], "proxy": r["proxy"],
               "checkpointing": r["checkpointing"], "model": model, "estimate_bytes": estimate,
               "measured_bytes": measured, "measured_what": "peak max_memory_allocated" if device_type == "cuda"
               else "peak bytes allocated by a training step on the GPU path (fp32, plain ops)"}
        if estimate and measured:
            row["ratio"] = round(measured / estimate, 3)
            row["within_tolerance"] = abs(row["ratio"] - 1) <= RATIO_TOLERANCE
            row["bytes_per_proxy_unit"] = round(measured / (r["proxy"] * r["batch"]), 3)
        rows.append(row)
    return rows


def refit_advice(rows: list[dict], device_type: str) -> list[str]:
    """How to re-fit the MedNeXt planner's constants from the planner rows (printed and written to the report)."""
    from nnunetv2_mednext.nnunet.planners import mednext_planner as mp

    fit_rows = [r for r in rows if r["net"] != "PlainConvUNet" and not r["checkpointing"] and "bytes_per_proxy_unit" in r]
    lines = []
    if not fit_rows:
        return ["No MedNeXt row without checkpointing was measured: nothing to re-fit from."]
    fit = statistics.median(r["bytes_per_proxy_unit"] for r in fit_rows)
    used = ", ".join(f"{r['net']} {r['config']} {r['bytes_per_proxy_unit']}" for r in fit_rows)
    if device_type == "cuda":
        now = mp.BYTES_PER_PROXY_UNIT
        lines.append(f"Measured bytes per proxy unit (peak / (proxy x batch)), MedNeXt rows without checkpointing: "
                     f"{used}; median {fit:.3f}. The planner uses BYTES_PER_PROXY_UNIT = {now:.3f} "
                     f"(= BYTES_PER_PROXY_UNIT_AMP {mp.BYTES_PER_PROXY_UNIT_AMP} x OVERHEAD_FACTOR "
                     f"{mp.OVERHEAD_FACTOR}).")
        if abs(fit / now - 1) > RATIO_TOLERANCE:
            lines.append(f"Outside ±{RATIO_TOLERANCE:.0%}: re-fit in nnunetv2_mednext/nnunet/planners/mednext_planner.py by "
                         f"setting OVERHEAD_FACTOR = {fit / mp.BYTES_PER_PROXY_UNIT_AMP:.3f} "
                         f"(so that BYTES_PER_PROXY_UNIT = {fit:.3f}); keep BYTES_PER_PROXY_UNIT_AMP (CPU-measured by "
                         "benchmarks/calibrate_planner.py), re-run this check and the planner tests.")
        else:
            lines.append(f"Within ±{RATIO_TOLERANCE:.0%}: the constants stand.")
        lines.append("Rows with gradient checkpointing are not in the fit: the planner's proxy does not model "
                     "checkpointing, so it over-estimates those networks (their ratio shows by how much).")
    else:
        now = mp.BYTES_PER_PROXY_UNIT_FP32
        lines.append(f"CPU (fp32): peak bytes a training step allocates per proxy unit, MedNeXt rows without "
                     f"checkpointing: {used}; median {fit:.3f} against BYTES_PER_PROXY_UNIT_FP32 = {now}. This checks "
                     "only the fp32 part of the model; OVERHEAD_FACTOR needs the CUDA run of this check.")
        if abs(fit / now - 1) > RATIO_TOLERANCE:
            lines.append(f"Outside ±{RATIO_TOLERANCE:.0%} at these (small) CPU shapes; benchmarks/calibrate_planner.py "
                         "measures at plan-sized shapes and is the reference for BYTES_PER_PROXY_UNIT_FP32.")
    return lines


def predictor_run(pm: Any, dataset_json: dict, net_name: str, config: str, volume: Sequence[int],
                  device: torch.device) -> dict:
    """nnU-Net's predictor (sliding window 0.5, Gaussian, mirroring on every axis) on a synthetic volume."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.inference.sliding_window_prediction import compute_steps_for_sliding_window

    cm = pm.get_configuration(config)
    cls = trainer_class(net_name)
    torch.manual_seed(0)
    net = cls.build_network_architecture(pm, cm, 1, NUM_CLASSES, False).to(device)
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=True,
                                perform_everything_on_device=device.type == "cuda", device=device, verbose=False,
                                verbose_preprocessing=False, allow_tqdm=False)
    axes = tuple(range(len(cm.patch_size)))
    predictor.manual_initialization(net, pm, cm, [net.state_dict()], dataset_json, cls.__name__, axes)
    steps = compute_steps_for_sliding_window(list(volume), cm.patch_size, 0.5)
    windows = int(np.prod([len(s) for s in steps]))
    gen = torch.Generator().manual_seed(0)
    if device.type == "cuda":  # warm-up (cuDNN autotuning) on one window
        predictor.predict_logits_from_preprocessed_data(torch.randn((1, *cm.patch_size), generator=gen))
    data = torch.randn((1, *volume), generator=gen)
    _sync(device)
    t0 = time.perf_counter()
    logits = predictor.predict_logits_from_preprocessed_data(data)
    _sync(device)
    seconds = time.perf_counter() - t0
    ok_shape = tuple(logits.shape) == (NUM_CLASSES, *volume)
    finite = bool(torch.isfinite(logits).all())
    row = {"net": net_name, "config": config, "volume": list(volume), "patch": list(cm.patch_size), "windows": windows,
           "forward_passes": windows * 2 ** len(axes), "seconds_per_case": round(seconds, 3),
           "logits_shape_ok": ok_shape, "logits_finite": finite, "status": "ok" if ok_shape and finite else "fail"}
    if not (ok_shape and finite):
        row["reason"] = f"logits shape {tuple(logits.shape)} finite={finite}"
    return row


# ----------------------------------------------------------------------------------------------------------------
# compile worker (child process)
# ----------------------------------------------------------------------------------------------------------------


def compile_worker(profile_name: str, items: Sequence[tuple[str, str]], device_name: str, result_file: Path) -> None:
    """Run each (network, configuration) compiled, fp16+GradScaler on CUDA (nnU-Net's path) / bf16 on CPU; append
    one JSON line per item to ``result_file`` as soon as it is done."""
    profile = PROFILES[profile_name]
    device = torch.device(device_name)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    amp = gpu.select_amp(device.type, "fp16" if device.type == "cuda" else "bf16",
                         gpu.cuda_capability(device) if device.type == "cuda" else None)
    pm, _ = plans_manager(profile)
    for net_name, config in items:
        with open(result_file, "a") as fh:
            fh.write(json.dumps({"net": net_name, "config": config, "event": "start", "t": time.time()}) + "\n")
        row = _matrix_item(pm, net_name, config, device, amp, False, profile.compile_backend, profile)
        with open(result_file, "a") as fh:
            fh.write(json.dumps({**row, "event": "done"}) + "\n")
        _free(device)


def _matrix_item(pm: Any, net_name: str, config: str, device: torch.device, amp: gpu.AmpMode, channels_last: bool,
                 compile_backend: str | None, profile: Profile) -> dict:
    cm = pm.get_configuration(config)
    row: dict[str, Any] = {"net": net_name, "config": config, "patch": list(cm.patch_size), "batch": cm.batch_size,
                           "amp": amp.name, "channels_last": channels_last, "compile": compile_backend or False}
    case = None
    try:
        case = build_case(pm, net_name, config, device, amp, channels_last, compile_backend)
        row.update(params=case.params, checkpointing=case.checkpointing, proxy=case.proxy)
        row.update(bench_case(case, device, profile.warmup + (1 if compile_backend else 0), profile.repeats,
                              cpu_memory=not compile_backend))
        row["status"] = "ok" if row["losses_finite"] else "fail"
        if not row["losses_finite"]:
            row["reason"] = "non-finite loss"
    except torch.cuda.OutOfMemoryError as e:
        row.update(status="fail", reason=f"CUDA out of memory: {str(e).splitlines()[0]}")
    except Exception as e:  # the check reports every failure and goes on
        row.update(status="fail", reason=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                   traceback=traceback.format_exc(limit=6))
    del case
    _free(device)
    return row


# ----------------------------------------------------------------------------------------------------------------
# the check
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class Report:
    """Everything the check found; written as JSON and markdown."""

    meta: dict = field(default_factory=dict)
    matrix: list[dict] = field(default_factory=list)
    stability: list[dict] = field(default_factory=list)
    planner: list[dict] = field(default_factory=list)
    refit: list[str] = field(default_factory=list)
    compile: list[dict] = field(default_factory=list)
    predictor: list[dict] = field(default_factory=list)
    classify: list[dict] = field(default_factory=list)
    nnunet_train: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)

    def skip(self, what: str, why: str) -> None:
        self.skipped.append({"what": what, "why": why})

    def failures(self) -> list[str]:
        out = []
        for section in ("matrix", "stability", "compile", "predictor", "classify", "nnunet_train"):
            for r in getattr(self, section):
                if r.get("status") == "fail" and not r.get("warn_only"):
                    label = " ".join(str(r.get(k)) for k in ("net", "config", "amp") if r.get(k) is not None)
                    out.append(f"{section}: {label}: {r.get('reason', 'failed')}")
        return out

    def attention(self) -> list[str]:
        out = [f"planner: {r['net']} {r['config']}: measured / estimate = {r['ratio']}"
               + (" (gradient checkpointing, not in the planner's model)" if r["checkpointing"] else "")
               for r in self.planner if r.get("within_tolerance") is False and r["net"] != "PlainConvUNet"]
        out += [f"compile: {r['net']} {r['config']}: {r['status']}: {r.get('reason')}"
                for r in self.compile if r.get("status") in ("timeout", "skipped")]
        out += [f"compile (warning only on CPU): {r['net']} {r['config']}: {r.get('reason')}"
                for r in self.compile if r.get("status") == "fail" and r.get("warn_only")]
        return out


def environment(device: torch.device, profile: Profile, argv: Sequence[str]) -> dict:
    import nnunetv2  # noqa: F401  (version below)

    from nnunetv2_mednext import __version__
    from nnunetv2_mednext.cli.cmd_info import _version

    meta: dict[str, Any] = {
        "command": "nnunetv2-mednext doctor " + " ".join(shlex.quote(a) for a in argv),
        "date": _dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "profile": profile.name,
        "device": device.type,
        "subset": "GPU" if device.type == "cuda" else "CPU subset",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "nnunetv2": _version("nnunetv2"),
        "nnunetv2_mednext": __version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} logical CPUs, {torch.get_num_threads()} torch threads",
    }
    try:
        meta["load_average"] = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        pass
    compiles, why = gpu.nnunet_compiles(device.type)
    meta["nnunet_compiles"] = {"compiles": compiles, "why": why}
    if device.type == "cuda":
        cap = gpu.cuda_capability(device)
        meta.update(gpu=torch.cuda.get_device_name(device), capability=list(cap), cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version(), n_gpus=torch.cuda.device_count(),
                    gpu_memory_bytes=torch.cuda.get_device_properties(device).total_memory,
                    amp_auto=gpu.select_amp("cuda", "auto", cap).name, amp_nnunet=gpu.nnunet_amp("cuda").name)
    else:
        meta.update(amp_auto=gpu.select_amp("cpu", "auto").name, amp_nnunet=gpu.nnunet_amp("cpu").name,
                    cxx=gpu.find_cxx())
    return meta


def run_check(profile: Profile, device: torch.device, out_dir: Path, argv: Sequence[str] = (),
              skip: Sequence[str] = (), nets: Sequence[str] | None = None, compile_request: str = "try",
              log: Callable[[str], None] = print, progress: Callable[[Report], None] | None = None) -> Report:
    """Run every section that fits in its budget and the run's; returns the report (``write_report`` writes it).

    ``progress(report)`` is called after each section (the command writes a partial report there, so a run that is
    killed still leaves one)."""
    t_start = time.monotonic()
    deadline = t_start + profile.budget_s
    nets = [n for n in NETS if n in (nets or NETS)]
    report = Report(meta=environment(device, profile, argv))
    report.meta.update(budget_s=profile.budget_s, warmup=profile.warmup, repeats=profile.repeats,
                       plans=profile.plans, compile_backend=profile.compile_backend)
    cap = gpu.cuda_capability(device) if device.type == "cuda" else None
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    pm, dataset_json = plans_manager(profile)

    def elapsed() -> str:
        return f"[{time.monotonic() - t_start:6.1f}s]"

    sections = dict(profile.sections)
    if device.type == "cuda" and torch.cuda.device_count() >= 2 and "nnunet_train" not in skip:
        sections["matrix"] -= 40  # leave time for the 2-GPU nnUNetv2_train run at the end
        sections["compile"] -= 60

    def section_deadline(name: str) -> float:
        return min(time.monotonic() + sections.get(name, 0.0), deadline)

    def done(section: str) -> None:
        report.meta.update(seconds=round(time.monotonic() - t_start, 1), last_section=section)
        if progress is not None:
            progress(report)

    if device.type != "cuda":
        report.skip("fp16 + GradScaler", "nnU-Net's CUDA AMP path (fp16 autocast + torch.amp.GradScaler) needs a "
                    "CUDA device; the CPU subset runs the same step function with bf16 autocast (no scaler)")
        report.skip("torch.cuda.max_memory_allocated", "needs CUDA; on CPU the memory column is the bytes autograd "
                    "saves for backward")

    # 1. training steps: iterations/s and memory, eager
    if "matrix" in skip:
        report.skip("matrix", "--skip matrix")
    else:
        end = section_deadline("matrix")
        for config, amp_name, cl in profile.matrix:
            mode = f"{config} {amp_name}{' channels-last' if cl else ''}"
            try:
                amp = gpu.select_amp(device.type, amp_name, cap)
            except gpu.UnsupportedError as e:
                report.skip(f"matrix {mode}", str(e))
                continue
            for net_name in nets:
                if time.monotonic() > end:
                    report.skip(f"matrix {net_name} {mode}", "matrix time budget spent")
                    continue
                log(f"{elapsed()} matrix {net_name} {mode}")
                row = _matrix_item(pm, net_name, config, device, amp, cl, None, profile)
                report.matrix.append(row)
                log(f"{elapsed()}   -> {_row_summary(row)}")

    done("matrix")

    # 2. stability: many AMP steps on fresh learnable batches
    if "stability" in skip:
        report.skip("stability", "--skip stability")
    else:
        end = section_deadline("stability")
        try:
            amp = gpu.select_amp(device.type, profile.stability_amp, cap)
        except gpu.UnsupportedError as e:
            amp = None
            report.skip("stability", str(e))
        todo = nets if amp else []
        for i, net_name in enumerate(todo):
            per_net = (end - time.monotonic()) / (len(todo) - i)
            if per_net < 2:
                report.skip(f"stability {net_name}", "stability time budget spent")
                continue
            log(f"{elapsed()} stability {net_name}: {profile.stability_steps} {amp.name} steps on "
                f"{profile.stability_config} (up to {per_net:.0f} s)")
            try:
                case = build_case(pm, net_name, profile.stability_config, device, amp,
                                  total_steps=profile.stability_steps)
                row = stability_run(case, pm, device, profile.stability_steps, time.monotonic() + per_net)
                row.update(net=net_name, config=profile.stability_config, amp=amp.name,
                           checkpointing=case.checkpointing)
                del case
            except Exception as e:
                row = {"net": net_name, "config": profile.stability_config, "amp": amp.name, "status": "fail",
                       "reason": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(limit=6)}
            _free(device)
            report.stability.append(row)
            log(f"{elapsed()}   -> {row.get('status')}: {row.get('steps', 0)} steps, loss {row.get('loss_first')} "
                f"-> {row.get('loss_last')}{' ' + row['reason'] if row.get('reason') else ''}")

    # 3. planner memory model (from the matrix rows)
    report.planner = planner_rows(report.matrix, device.type)
    report.refit = refit_advice(report.planner, device.type)
    done("stability and planner")

    # 4. torch.compile, in a child process under a timeout
    if "compile" in skip:
        report.skip("compile", "--skip compile")
    else:
        do, why = gpu.compile_plan(device.type, compile_request)
        items = [(n, c) for n, c in profile.compile_items if n in nets]
        budget = section_deadline("compile") - time.monotonic()
        if not do:
            report.skip("compile", why)
        elif budget < 10:
            report.skip("compile", "time budget spent")
        else:
            if profile.compile_backend != "inductor":
                report.skip("compile with inductor", f"the {profile.name} profile compiles with the "
                            f"{profile.compile_backend} backend (dynamo + AOTAutograd tracing, no code generation): "
                            "inductor's CPU code generation takes minutes per network on one core; the full CPU "
                            "subset (without --quick) and the GPU run use inductor")
            backend = profile.compile_backend if profile.compile_backend != "inductor" else why
            log(f"{elapsed()} compile ({backend}): {', '.join(f'{n} {c}' for n, c in items)}; up to {budget:.0f} s")
            report.compile = compile_section(profile, items, device, out_dir, budget, warn_only=device.type != "cuda")
            for r in report.compile:
                log(f"{elapsed()}   -> {r['net']} {r['config']}: {_row_summary(r)}")

    done("compile")

    # 5. nnU-Net's predictor
    if "predictor" in skip:
        report.skip("predictor", "--skip predictor")
    else:
        end = section_deadline("predictor")
        for net_name in [n for n in profile.predictor_nets if n in nets]:
            if time.monotonic() > end:
                report.skip(f"predictor {net_name}", "predictor time budget spent")
                continue
            log(f"{elapsed()} predictor {net_name} on a {'x'.join(map(str, profile.predictor_volume))} volume")
            try:
                row = predictor_run(pm, dataset_json, net_name, profile.predictor_config, profile.predictor_volume,
                                    device)
            except Exception as e:
                row = {"net": net_name, "config": profile.predictor_config, "status": "fail",
                       "reason": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(limit=6)}
            _free(device)
            report.predictor.append(row)
            log(f"{elapsed()}   -> {_row_summary(row)}")

    done("predictor")

    # 6. the classification trainer: its networks' training steps, then classify train + predict end to end
    if "classify" in skip:
        report.skip("classify", "--skip classify")
    else:
        from nnunetv2_mednext.classification import gpu_check

        end = section_deadline("classify")
        for net_name in gpu_check.SPEED_NETS:
            if time.monotonic() > end:
                report.skip(f"classify {net_name}", "classify time budget spent")
                continue
            log(f"{elapsed()} classify: {net_name} training steps, {profile.classify_size} px x "
                f"{profile.classify_batch}")
            report.classify.append(gpu_check.speed_row(net_name, profile.classify_size, profile.classify_batch,
                                                       device, profile.warmup, profile.repeats))
            _free(device)
            log(f"{elapsed()}   -> {_row_summary(report.classify[-1])}")
        if time.monotonic() > end:
            report.skip("classify train", "classify time budget spent")
        else:
            log(f"{elapsed()} classify train + predict ({profile.classify_train_size} px, synthetic set)")
            report.classify.append(gpu_check.train_run(device, profile.classify_train_size))
            _free(device)
            log(f"{elapsed()}   -> {_row_summary(report.classify[-1])}")

    done("classify")

    # 7. the stock nnUNetv2_train (DDP with two GPUs)
    if "nnunet_train" in skip:
        report.skip("nnUNetv2_train", "--skip nnunet_train")
    elif device.type != "cuda":
        report.skip("nnUNetv2_train -num_gpus 2 (DDP)", "needs 2+ CUDA GPUs; nnUNetv2_train -device cpu is run by "
                    "the test suite (tests/test_nnunet_integration.py)")
    else:
        n = torch.cuda.device_count()
        if n < 2:
            report.skip("nnUNetv2_train -num_gpus 2 (DDP)", f"needs 2+ GPUs; {n} visible")
        left = deadline - time.monotonic()
        if left < sections["nnunet_train"]:
            report.skip("nnUNetv2_train on a synthetic dataset", f"time budget: {left:.0f} s left, needs about "
                        f"{sections['nnunet_train']:.0f} s (a larger --budget-s adds it)")
        else:
            gpus = min(n, 2)
            log(f"{elapsed()} nnUNetv2_train -num_gpus {gpus} (synthetic 3D dataset, _tiny)")
            report.nnunet_train.append(nnunet_train_run(out_dir, gpus, left))
            log(f"{elapsed()}   -> {_row_summary(report.nnunet_train[-1])}")
    report.meta["complete"] = True
    done("nnunet_train")
    return report


def _row_summary(r: dict) -> str:
    if r.get("status") != "ok":
        return f"{r.get('status')}: {r.get('reason', '')}"
    parts = []
    if "it_per_s" in r:
        parts.append(f"{r['it_per_s']} it/s")
    if "peak_bytes" in r:
        parts.append(f"peak {r['peak_bytes'] / 2**30:.2f} GiB")
    elif "activation_bytes" in r:
        parts.append(f"saved {r['activation_bytes'] / 2**20:.1f} MiB")
    if "seconds" in r:
        parts.append(f"{r['seconds']} s")
    if "images_per_s" in r:
        parts.append(f"{r['images_per_s']} images/s")
    if "seconds_per_case" in r:
        parts.append(f"{r['seconds_per_case']} s/case, {r['forward_passes']} forward passes")
    return "ok " + ", ".join(parts)


def compile_section(profile: Profile, items: Sequence[tuple[str, str]], device: torch.device, out_dir: Path,
                    budget_s: float, warn_only: bool) -> list[dict]:
    """Compiled training steps in a child process, killed after ``budget_s``; one row per item."""
    result = out_dir / "compile_results.jsonl"
    result.unlink(missing_ok=True)
    env = dict(os.environ)
    if device.type == "cpu":
        env.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")
    argv = [sys.executable, "-m", "nnunetv2_mednext.device_check", "--compile-worker", profile.name, device.type,
            str(result), *[f"{n}:{c}" for n, c in items]]
    run = gpu.run_guarded(argv, budget_s, env=env, log_path=out_dir / "compile_worker.log")
    events = [json.loads(line) for line in result.read_text().splitlines()] if result.exists() else []
    done = {(e["net"], e["config"]): e for e in events if e.get("event") == "done"}
    started = {(e["net"], e["config"]) for e in events if e.get("event") == "start"}
    rows = []
    for net_name, config in items:
        row = done.get((net_name, config))
        if row is None:
            row = {"net": net_name, "config": config, "compile": True}
            if (net_name, config) in started and run.status == "timeout":
                row.update(status="timeout", reason=f"still compiling/running when the {budget_s:.0f} s compile "
                           "budget ran out")
            elif run.status == "timeout":
                row.update(status="skipped", reason="compile budget spent before this item")
            else:
                row.update(status="fail", reason=f"compile worker {run.status} (exit {run.returncode}): "
                           + (run.tail.splitlines()[-1] if run.tail else "no output"))
        row.pop("event", None)
        if row.get("status") == "fail" and warn_only:
            row["warn_only"] = True
        rows.append(row)
    return rows


def nnunet_train_run(out_dir: Path, gpus: int, timeout_s: float, device: str = "cuda") -> dict:
    """Stock ``nnUNetv2_train`` (``nnUNetTrainerMedNeXt_tiny``, fold 0) on a synthetic 3D dataset with ``gpus`` GPUs.

    The 1-GPU run compiles, as nnU-Net does by default on CUDA. The 2-GPU run keeps compile off: DDP with batch 1 per
    GPU plus torch.compile and deep supervision is a crash nnU-Net itself warns about.
    """
    from nnunetv2_mednext.nnunet.pipeline import NnUNetRunner, nnunet_command
    from nnunetv2_mednext.nnunet.synthetic import make_synthetic_3d

    trainer = "nnUNetTrainerMedNeXt_tiny"
    compile_flag = "1" if gpus == 1 else "0"
    row: dict[str, Any] = {"net": "mednext_t", "config": "3d_fullres", "gpus": gpus, "trainer": trainer,
                           "nnUNet_compile": compile_flag}
    t0 = time.perf_counter()
    try:
        runner = NnUNetRunner(Path(tempfile.mkdtemp(prefix="mednext_doctor_train_")), device=device)
        make_synthetic_3d(runner.raw, 991, n_train=6, n_test=1, shape=(32, 64, 64))
        runner.plan_and_preprocess(991, ("3d_fullres",))
        argv = [nnunet_command("nnUNetv2_train"), "991", "3d_fullres", "0", "-tr", trainer, "-device", device,
                "-num_gpus", str(gpus)]
        env = runner.env({"nnUNet_compile": compile_flag})
        res = gpu.run_guarded(argv, timeout_s - (time.perf_counter() - t0), env=env,
                              log_path=out_dir / f"nnunet_train_{gpus}gpu.log")
        fold = runner.results / runner.dataset_name(991) / f"{trainer}__nnUNetPlans__3d_fullres" / "fold_0"
        final = (fold / "checkpoint_final.pth").exists()
        logs = "\n".join(p.read_text() for p in fold.glob("training_log_*.txt"))
        nan = any("nan" in line.lower() for line in logs.splitlines() if "loss" in line.lower())
        row.update(checkpoint_final=final, nan_in_log=nan)
        if res.status == "ok" and final and not nan:
            row["status"] = "ok"
        else:
            row.update(status="fail", reason=f"nnUNetv2_train {res.status} (exit {res.returncode}); checkpoint_final "
                       f"{'written' if final else 'missing'}; NaN loss in log: {nan}; "
                       + (res.tail.splitlines()[-1] if res.tail else ""))
    except Exception as e:
        row.update(status="fail", reason=str(e).strip().splitlines()[0] if str(e) else type(e).__name__)
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


# ----------------------------------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------------------------------


def _gib(v: float | None) -> str:
    return "-" if v is None else f"{v / 2**30:.2f} GiB" if v >= 2**30 else f"{v / 2**20:.1f} MiB"


def render_markdown(report: Report) -> str:
    m = report.meta
    cpu = m["device"] != "cuda"
    fails, attn = report.failures(), report.attention()
    verdict = "FAIL" if fails else "PASS"
    out = [
        f"# nnunetv2-mednext device check: {m['subset']}",
        "",
        f"`{m['command']}`, {m['date']}, {m['seconds']} s of a {m['budget_s']:.0f} s budget.",
        "",
    ]
    if not m.get("complete"):
        out += [f"**Partial report**: written after section '{m.get('last_section')}'; the run did not finish.", ""]
    if cpu:
        out += ["**CPU subset.** No CUDA device: fp16 + GradScaler, `torch.cuda.max_memory_allocated`, the CUDA "
                "compile backend and DDP did not run (listed under *Skipped*). Timings on a shared CPU are "
                "indicative only.", ""]
    out += [f"**Verdict: {verdict}** ({len(fails)} failure(s), {len(attn)} item(s) needing attention, "
            f"{len(report.skipped)} skipped).", ""]
    out += [f"* failure: {f}" for f in fails] + [f"* attention: {a}" for a in attn]
    out += ["", "## Environment", ""]
    keys = ["gpu", "capability", "n_gpus", "gpu_memory_bytes", "cuda", "cudnn", "torch", "nnunetv2", "nnunetv2_mednext",
            "python", "machine", "load_average", "cxx", "amp_auto", "amp_nnunet"]
    out += [f"* {k}: {m[k] if k != 'gpu_memory_bytes' else _gib(m[k])}" for k in keys if k in m]
    out.append(f"* nnU-Net compiles here: {m['nnunet_compiles']['compiles']} ({m['nnunet_compiles']['why']})")
    if report.matrix:
        mem_col = "peak max_memory_allocated (above memory held between steps)" if not cpu else "saved for backward"
        out += ["", "## Training steps (eager)", "",
                "nnU-Net's loss (Dice + CE, deep supervision), each trainer's optimiser, clip norm 12, one synthetic "
                f"batch; it/s over {m['repeats']} step(s) after {m['warmup']} warm-up step(s).", "",
                f"| net | config | patch x batch | AMP | channels-last | params (M) | ckpt | it/s | {mem_col} | status |",
                "|---|---|---|---|---|---:|---|---:|---:|---|"]
        for r in report.matrix:
            mem = (f"{_gib(r.get('peak_bytes'))} ({_gib(r.get('activation_bytes'))})" if not cpu
                   else _gib(r.get("activation_bytes")))
            out.append(f"| {r['net']} | {r['config']} | {'x'.join(map(str, r['patch']))} x {r['batch']} | {r['amp']} "
                       f"| {'yes' if r['channels_last'] else 'no'} | {r.get('params', 0) / 1e6:.2f} "
                       f"| {'on' if r.get('checkpointing') else 'off'} | {r.get('it_per_s', '-')} | {mem} "
                       f"| {r['status']}{': ' + r['reason'] if r.get('reason') else ''} |")
    if report.stability:
        out += ["", "## Stability", "",
                "Fresh learnable batches every step (label = local mean of the noise image, 3 classes), the trainer's "
                "schedule over the run; loss = mean of the first / last 10 % of steps.", "",
                "| net | config | AMP | steps | non-finite loss | non-finite grad steps | loss first -> last | "
                "max grad norm | s | status |", "|---|---|---|---:|---:|---:|---|---:|---:|---|"]
        for r in report.stability:
            out.append(f"| {r['net']} | {r['config']} | {r['amp']} | {r.get('steps', '-')} | "
                       f"{r.get('nonfinite_losses', '-')} | {r.get('nonfinite_grad_steps', '-')} | "
                       f"{r.get('loss_first', '-')} -> {r.get('loss_last', '-')} | {r.get('max_grad_norm', '-')} | "
                       f"{r.get('seconds', '-')} | {r['status']}{': ' + r['reason'] if r.get('reason') else ''} |")
    if report.planner:
        out += ["", "## Planner memory model vs measured", "",
                f"ratio = measured / estimate; flagged outside ±{RATIO_TOLERANCE:.0%}.", "",
                "| net | config | patch x batch | ckpt | model | estimate | measured | ratio | bytes / proxy unit |",
                "|---|---|---|---|---|---:|---:|---:|---:|"]
        for r in report.planner:
            ratio = r.get("ratio")
            flag = "" if ratio is None else (" ok" if r["within_tolerance"] else " **flag**")
            out.append(f"| {r['net']} | {r['config']} | {'x'.join(map(str, r['patch']))} x {r['batch']} | "
                       f"{'on' if r['checkpointing'] else 'off'} | {r['model']} | {_gib(r['estimate_bytes'])} | "
                       f"{_gib(r['measured_bytes'])} ({r['measured_what']}) | {ratio if ratio is not None else '-'}"
                       f"{flag} | {r.get('bytes_per_proxy_unit', '-')} |")
        out += ["", "Re-fitting the constants:", ""] + [f"* {line}" for line in report.refit]
    if report.compile:
        out += ["", f"## torch.compile ({m.get('compile_backend', 'inductor')} backend)", "",
                "Same training step, network and nnU-Net's Dice loss compiled as nnUNetTrainer does; first steps "
                "include compilation.", "",
                "| net | config | AMP | first steps (s) | it/s | memory | status |", "|---|---|---|---:|---:|---:|---|"]
        for r in report.compile:
            mem = _gib(r.get("peak_bytes", r.get("activation_bytes")))
            out.append(f"| {r['net']} | {r['config']} | {r.get('amp', '-')} | {r.get('first_steps_s', '-')} | "
                       f"{r.get('it_per_s', '-')} | {mem} | {r['status']}"
                       f"{': ' + r['reason'] if r.get('reason') else ''} |")
    if report.predictor:
        out += ["", "## nnU-Net predictor", "",
                "`nnUNetPredictor`, tile step 0.5, Gaussian weighting, mirroring on every axis, synthetic volume.", "",
                "| net | volume | patch | windows | forward passes | s / case | status |",
                "|---|---|---|---:|---:|---:|---|"]
        for r in report.predictor:
            out.append(f"| {r['net']} | {'x'.join(map(str, r.get('volume', [])))} | "
                       f"{'x'.join(map(str, r.get('patch', [])))} | {r.get('windows', '-')} | "
                       f"{r.get('forward_passes', '-')} | {r.get('seconds_per_case', '-')} | {r['status']}"
                       f"{': ' + r['reason'] if r.get('reason') else ''} |")
    if report.classify:
        out += ["", "## Classification trainer", "",
                "Training steps (AdamW, cross-entropy, one synthetic batch) under the trainer's device rules (CUDA: "
                "bf16 autocast where supported, else fp16 + GradScaler, channels-last; CPU: float32), then `classify "
                "train` (fold 0 of 2) and `predict` end to end on a synthetic set.", "",
                "| net | what | AMP | params (M) | images/s | step s | ratio to resnet18 | peak memory | status |",
                "|---|---|---|---:|---:|---:|---:|---:|---|"]
        base = next((r.get("step_s") for r in report.classify if r["net"] == "resnet18" and r.get("step_s")), None)
        for r in report.classify:
            what = f"{r['config']} x {r['batch']}" if "batch" in r else r["config"]
            ratio = f"{r['step_s'] / base:.2f}" if base and r.get("step_s") else "-"
            params = f"{r['params'] / 1e6:.2f}" if r.get("params") else "-"
            out.append(f"| {r['net']} | {what} | {r.get('amp', '-')} | {params} | {r.get('images_per_s', '-')} | "
                       f"{r.get('step_s', '-')} | {ratio} | {_gib(r.get('peak_bytes'))} | {r['status']}"
                       f"{': ' + r['reason'] if r.get('reason') else ''} |")
    if report.nnunet_train:
        out += ["", "## Stock nnUNetv2_train", "", "| trainer | GPUs | nnUNet_compile | s | status |",
                "|---|---:|---|---:|---|"]
        for r in report.nnunet_train:
            out.append(f"| {r['trainer']} | {r['gpus']} | {r['nnUNet_compile']} | {r['seconds']} | {r['status']}"
                       f"{': ' + r['reason'] if r.get('reason') else ''} |")
    if report.skipped:
        out += ["", "## Skipped", ""] + [f"* {s['what']}: {s['why']}" for s in report.skipped]
    return "\n".join(out) + "\n"


def write_report(report: Report, out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    data = asdict(report)
    data["verdict"] = "fail" if report.failures() else "pass"
    data["failures"], data["attention"] = report.failures(), report.attention()
    js, md = out_dir / "device_check.json", out_dir / "device_check.md"
    js.write_text(json.dumps(data, indent=2, default=str) + "\n")
    md.write_text(render_markdown(report))
    return js, md


# ----------------------------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="device_check", help="folder for device_check.json/.md (default ./device_check)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier report in --out")
    parser.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto",
                        help="auto: CUDA when available, else the CPU subset")
    parser.add_argument("--quick", action="store_true", help="CPU subset at CI size (about a minute on 2 cores)")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="time budget in seconds (default: 460 GPU, 2400 CPU, 270 --quick); what does not fit is "
                             "skipped and listed")
    parser.add_argument("--compile", choices=["try", "off"], default="try",
                        help="try: compile where inductor can run (CUDA; CPU with a C++ compiler), in a child process "
                             "under a timeout")
    parser.add_argument("--skip", nargs="+", default=[], choices=list(SECTIONS), help="sections to leave out")
    parser.add_argument("--nets", nargs="+", default=None, choices=list(NETS), help="networks (default: all four)")


def run(args: argparse.Namespace, argv: Sequence[str] = ()) -> int:
    """Run the check; exit code 0 when nothing failed (skips and planner flags are reported, not failures)."""
    out_dir = Path(args.out)
    if (out_dir / "device_check.json").exists() and not args.overwrite:
        raise MedNeXtUserError(f"{out_dir} already holds a device check report; choose another --out or pass "
                               "--overwrite")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise MedNeXtUserError("--device cuda: no CUDA device is visible to torch (check the driver and "
                               "CUDA_VISIBLE_DEVICES), or run the CPU subset with --device cpu")
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    if args.quick and device.type == "cuda":
        raise MedNeXtUserError("--quick is the CI-sized CPU subset; drop it on a GPU, or add --device cpu")
    profile = PROFILES["gpu" if device.type == "cuda" else "quick" if args.quick else "cpu"]
    if args.budget_s is not None:
        if args.budget_s <= 0:
            raise MedNeXtUserError(f"--budget-s must be positive, got {args.budget_s}")
        profile = Profile(**{**asdict(profile), "budget_s": args.budget_s})
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"device check: {'GPU ' + torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU subset'}, "
          f"profile {profile.name}, budget {profile.budget_s:.0f} s", flush=True)
    report = run_check(profile, device, out_dir, argv, args.skip, args.nets, args.compile,
                       log=lambda s: print(s, flush=True), progress=lambda r: write_report(r, out_dir))
    js, md = write_report(report, out_dir)
    fails, attn = report.failures(), report.attention()
    print(f"\n{'FAIL' if fails else 'PASS'}: {len(fails)} failure(s), {len(attn)} attention, "
          f"{len(report.skipped)} skipped")
    for line in fails:
        print(f"  failure: {line}")
    for line in attn:
        print(f"  attention: {line}")
    for s in report.skipped:
        print(f"  skipped: {s['what']}: {s['why']}")
    if report.planner:
        print("\nplanner memory model:")
        for line in report.refit:
            print(f"  {line}")
    print(f"\nwrote {js} and {md}")
    return 1 if fails else 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--compile-worker"]:
        profile_name, device_name, result_file, *items = argv[1:]
        compile_worker(profile_name, [tuple(i.split(":", 1)) for i in items], device_name, Path(result_file))
        return 0
    parser = argparse.ArgumentParser(prog="device_check", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args, argv)
    except MedNeXtUserError as e:
        print(f"device_check: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
