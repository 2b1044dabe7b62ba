"""``run_check``: every section in turn (:data:`.sections.ALL`) within its share of the time budget and the run's,
with the skip rules and the partial report after each section written once, here."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import shlex
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from . import amp as gpu
from .findings import Report
from .profiles import NETS, Profile
from .sections import ALL, Context


def environment(device: torch.device, profile: Profile, argv: Sequence[str]) -> dict:
    """The report's ``meta``: command, versions, machine, and the AMP and compile rules on this device."""
    from nnunetv2_mednext import __version__
    from nnunetv2_mednext.versions import installed_version

    meta: dict[str, Any] = {
        "command": "nnunetv2-mednext doctor " + " ".join(shlex.quote(a) for a in argv),
        "date": _dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "profile": profile.name,
        "device": device.type,
        "subset": "GPU" if device.type == "cuda" else "CPU subset",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "nnunetv2": installed_version("nnunetv2"),
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


def section_shares(profile: Profile, device: torch.device, skip: Sequence[str]) -> dict[str, float]:
    """Seconds each section may take; with 2+ GPUs the matrix and compile sections leave time for the DDP run."""
    shares = dict(profile.sections)
    if device.type == "cuda" and torch.cuda.device_count() >= 2 and "nnunet_train" not in skip:
        shares["matrix"] -= 40
        shares["compile"] -= 60
    return shares


def run_check(profile: Profile, device: torch.device, out_dir: Path, argv: Sequence[str] = (),
              skip: Sequence[str] = (), nets: Sequence[str] | None = None, compile_request: str = "try",
              log: Callable[[str], None] = print, progress: Callable[[Report], None] | None = None) -> Report:
    """Run every section that fits in its budget and the run's; returns the report (``write_report`` writes it).

    ``progress(report)`` is called after each section (the command writes a partial report there, so a run that is
    killed still leaves one)."""
    t_start = time.monotonic()
    report = Report(meta=environment(device, profile, argv))
    report.meta.update(budget_s=profile.budget_s, warmup=profile.warmup, repeats=profile.repeats,
                       plans=profile.plans, compile_backend=profile.compile_backend)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    ctx = Context(profile, device, out_dir, report, [n for n in NETS if n in (nets or NETS)], compile_request, log,
                  section_shares(profile, device, skip), t_start, t_start + profile.budget_s)
    if device.type != "cuda":
        report.skip("fp16 + GradScaler", "nnU-Net's CUDA AMP path (fp16 autocast + torch.amp.GradScaler) needs a "
                    "CUDA device; the CPU subset runs the same step function with bf16 autocast (no scaler)")
        report.skip("torch.cuda.max_memory_allocated", "needs CUDA; on CPU the memory column is the bytes autograd "
                    "saves for backward")
    seconds = report.meta.setdefault("section_seconds", {})  # what each section took: to size the shares
    for section in ALL:
        t0 = time.monotonic()
        if section.name in skip:
            report.skip(section.label, f"--skip {section.name}")
        else:
            ctx.section_end = min(time.monotonic() + ctx.shares.get(section.name, 0.0), ctx.deadline)
            why = section.skip_reason(ctx)
            if why is not None:
                report.skip(*why)
            else:
                section.run(ctx)
        seconds[section.name] = round(time.monotonic() - t0, 1)
        if section is ALL[-1]:
            report.meta["complete"] = True
        report.meta.update(seconds=round(time.monotonic() - t_start, 1), last_section=section.name)
        if progress is not None:
            progress(report)
    return report
