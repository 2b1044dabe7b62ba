"""The doctor's CUDA training paths, written so that their logic also runs (and is tested) on a CPU.

* :func:`select_amp`: which autocast dtype a device can run (fp16 needs a ``GradScaler``; bf16 needs compute
  capability 8.0 on CUDA) and :func:`nnunet_amp`, what ``nnUNetTrainer.train_step`` itself uses;
* :func:`train_step`: one optimisation step in nnU-Net's order (autocast forward and loss, scaled backward,
  ``unscale_`` *before* gradient clipping, ``scaler.step``, ``scaler.update``);
* :func:`nnunet_compiles` (nnU-Net's own rule) and :func:`compile_plan` (what the device check tries), and
  :func:`run_guarded`, which runs a compile attempt in a child process under a timeout;
* :func:`to_channels_last` and :func:`peak_memory` (``torch.cuda.max_memory_allocated`` over a call).
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


class UnsupportedError(Exception):
    """This device cannot run the requested mode; the message says why (the check reports it as skipped)."""


@dataclass(frozen=True)
class AmpMode:
    """An autocast setting: ``dtype`` None means autocast off; fp16 needs a gradient scaler."""

    name: str
    dtype: torch.dtype | None
    grad_scaler: bool


FP32 = AmpMode("fp32", None, False)
FP16 = AmpMode("fp16", torch.float16, True)
BF16 = AmpMode("bf16", torch.bfloat16, False)
AMP_MODES = {m.name: m for m in (FP32, FP16, BF16)}
BF16_MIN_CAPABILITY = (8, 0)  # Ampere: bf16 tensor cores


def cuda_capability(device: torch.device | str | None = None) -> tuple[int, int] | None:
    """``(major, minor)`` compute capability of a CUDA device, None when CUDA is not available."""
    if not torch.cuda.is_available():
        return None
    return tuple(torch.cuda.get_device_capability(device))  # type: ignore[return-value]


def select_amp(device_type: str, requested: str = "auto", capability: tuple[int, int] | None = None) -> AmpMode:
    """The autocast mode ``requested`` (``auto``, ``fp32``, ``fp16``, ``bf16``) resolves to on this device.

    ``auto`` is bf16 where it runs natively (CUDA capability >= 8.0, and CPUs), else fp16 with a ``GradScaler``:
    bf16 has fp32's exponent range, so it needs no loss scaling and does not overflow. Raises :class:`UnsupportedError`
    with the reason when the device cannot run the mode.
    """
    if requested not in ("auto", *AMP_MODES):
        raise ValueError(f"unknown AMP mode {requested!r}; use auto, fp32, fp16 or bf16")
    if device_type == "cuda":
        if capability is None:
            raise ValueError("select_amp on CUDA needs the device's compute capability")
        bf16_ok = tuple(capability) >= BF16_MIN_CAPABILITY
        if requested == "auto":
            return BF16 if bf16_ok else FP16
        if requested == "bf16" and not bf16_ok:
            raise UnsupportedError(
                f"bf16 autocast needs compute capability >= {BF16_MIN_CAPABILITY[0]}.{BF16_MIN_CAPABILITY[1]} "
                f"(Ampere or newer); this GPU has {capability[0]}.{capability[1]}: use fp16 with a GradScaler"
            )
        return AMP_MODES[requested]
    if device_type == "cpu":
        if requested == "auto":
            return BF16
        if requested == "fp16":
            raise UnsupportedError("fp16 with a GradScaler is nnU-Net's CUDA path; on a CPU the check runs bf16 autocast")
        return AMP_MODES[requested]
    if requested in ("auto", "fp32"):
        return FP32
    raise UnsupportedError(f"autocast on {device_type!r} is not covered by this check")


def nnunet_amp(device_type: str) -> AmpMode:
    """What ``nnUNetTrainer.train_step`` runs: fp16 autocast with a ``GradScaler`` on CUDA, fp32 elsewhere."""
    return FP16 if device_type == "cuda" else FP32


def autocast(device_type: str, amp: AmpMode) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``amp`` (a no-op context for fp32)."""
    if amp.dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=amp.dtype)


def make_grad_scaler(amp: AmpMode, device_type: str) -> torch.amp.GradScaler | None:
    """A ``torch.amp.GradScaler`` when ``amp`` needs one (fp16), else None."""
    return torch.amp.GradScaler(device_type) if amp.grad_scaler else None


@dataclass
class StepOutput:
    """Loss and total gradient norm (unscaled, before clipping) of one step, as tensors: no device sync."""

    loss: torch.Tensor
    grad_norm: torch.Tensor


def train_step(
    net: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: Callable[[Any, Any], torch.Tensor], x: torch.Tensor,
    target: Any, amp: AmpMode, scaler: Any = None, clip_norm: float | None = 12.0,
) -> StepOutput:
    """One training step in the order of ``nnUNetTrainer.train_step`` (clip norm 12 as there).

    With a scaler: ``scale(loss).backward()``, ``unscale_(optimizer)``, clip, ``step``, ``update``. Unscaling first
    makes the clip threshold apply to the true gradients, and lets ``step`` skip the update when they are not
    finite (an fp16 overflow; the scaler then lowers its scale).
    """
    if amp.grad_scaler and scaler is None:
        raise ValueError(f"{amp.name} autocast needs a gradient scaler (make_grad_scaler)")
    params = [p for p in net.parameters() if p.requires_grad]
    optimizer.zero_grad(set_to_none=True)
    with autocast(x.device.type, amp):
        output = net(x)
        loss = loss_fn(output, target)
    max_norm = float("inf") if clip_norm is None else clip_norm
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        optimizer.step()
    return StepOutput(loss.detach().float(), norm.detach())


def to_channels_last(net: nn.Module, x: torch.Tensor) -> tuple[nn.Module, torch.Tensor]:
    """Network and input in channels-last layout (``channels_last`` for 4D, ``channels_last_3d`` for 5D input)."""
    if x.ndim == 4:
        fmt = torch.channels_last
    elif x.ndim == 5:
        fmt = torch.channels_last_3d
    else:
        raise ValueError(f"channels-last needs a 4D or 5D input, got {x.ndim}D")
    return net.to(memory_format=fmt), x.contiguous(memory_format=fmt)


@dataclass
class PeakMemory:
    """``torch.cuda.max_memory_allocated`` over a call, and that peak above what was allocated before it."""

    peak: int
    above_start: int


def peak_memory(fn: Callable[[], Any], device: torch.device) -> PeakMemory:
    """Run ``fn`` and return the CUDA memory peak it reached (weights, gradients, optimizer state, activations)."""
    if device.type != "cuda":
        raise UnsupportedError("torch.cuda.max_memory_allocated needs a CUDA device")
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    start = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device)
    return PeakMemory(peak, peak - start)


# ----------------------------------------------------------------------------------------------------------------
# torch.compile guard
# ----------------------------------------------------------------------------------------------------------------

_TRUE = ("true", "1", "t")


def nnunet_compiles(device_type: str, env: Mapping[str, str] | None = None,
                    system: str | None = None) -> tuple[bool, str]:
    """Whether ``nnUNetTrainer`` compiles the network (its ``_do_i_compile`` rule), and why."""
    env = os.environ if env is None else env
    system = platform.system() if system is None else system
    if device_type == "mps":
        return False, "nnU-Net never compiles on MPS"
    if device_type == "cpu":
        return False, "nnU-Net never compiles on CPU (nnUNet_compile is ignored there)"
    if system == "Windows":
        return False, "nnU-Net never compiles on Windows"
    flag = env.get("nnUNet_compile")
    if flag is None:
        return True, "nnU-Net compiles by default on CUDA (nnUNet_compile unset)"
    if flag.lower() in _TRUE:
        return True, f"nnUNet_compile={flag}"
    return False, f"nnUNet_compile={flag} switches nnU-Net's compile off"


def compile_plan(device_type: str, requested: str = "try", system: str | None = None,
                 cxx: str | bool | None = True) -> tuple[bool, str]:
    """Whether the device check attempts ``torch.compile`` (inductor) here, and why not when it does not.

    ``requested``: ``try`` (wherever inductor can run) or ``off``. ``cxx``: path of a C++ compiler, or a falsy value
    when none is found (inductor's CPU backend needs one); ``True`` means look it up on ``PATH`` / ``$CXX``.
    """
    if requested not in ("try", "off"):
        raise ValueError(f"unknown compile request {requested!r}; use try or off")
    system = platform.system() if system is None else system
    if requested == "off":
        return False, "compile not requested (--compile off)"
    if device_type == "mps":
        return False, "torch.compile does not support MPS"
    if system == "Windows":
        return False, "inductor is not supported on native Windows"
    if device_type == "cpu":
        if cxx is True:
            cxx = find_cxx()
        if not cxx:
            return False, "inductor's CPU backend needs a C++ compiler (g++ or clang++ on PATH, or $CXX); none found"
        return True, f"inductor CPU backend (C++ compiler {cxx})"
    if device_type == "cuda":
        return True, "inductor CUDA backend (Triton)"
    return False, f"compile on {device_type!r} is not covered by this check"


def find_cxx() -> str | None:
    """The C++ compiler inductor would use: ``$CXX``, else ``g++`` / ``clang++`` on ``PATH``."""
    for name in (os.environ.get("CXX"), "g++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


@dataclass
class GuardedRun:
    """Outcome of :func:`run_guarded`: ``ok``, ``failed`` (non-zero exit) or ``timeout``; output tail for the report."""

    status: str
    seconds: float
    returncode: int | None
    tail: str


def run_guarded(argv: Sequence[str], timeout_s: float, env: Mapping[str, str] | None = None,
                log_path: str | os.PathLike | None = None) -> GuardedRun:
    """Run ``argv`` in its own process group; kill that group (inductor's compile workers too) after ``timeout_s``."""
    start = time.perf_counter()
    log = open(log_path, "w") if log_path else None
    try:
        proc = subprocess.Popen(list(argv), stdout=log or subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=dict(env) if env is not None else None, start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=max(0.1, timeout_s))
            status = "ok" if proc.returncode == 0 else "failed"
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            status = "timeout"
    finally:
        if log:
            log.close()
    if log_path:
        out = open(log_path).read()
    tail = "\n".join((out or "").strip().splitlines()[-12:])
    return GuardedRun(status, time.perf_counter() - start, proc.returncode if status != "timeout" else None, tail)
