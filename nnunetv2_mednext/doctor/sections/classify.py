"""Section ``classify``: the classification trainer's part of the device check.

* :func:`speed_row`: training steps of one classifier (AdamW, cross-entropy) under the trainer's device rules --
  on CUDA bf16 autocast where supported, else fp16 with a ``GradScaler``, channels-last; float32 on a CPU --
  on a synthetic batch: images/s, peak CUDA memory, finite loss;
* :func:`train_run`: ``classify train`` end to end (one fold, 2 epochs) on a small synthetic set, then ``predict``
  with its checkpoint, on the given device.

The rows are plain dicts with ``status`` ``ok`` or ``fail`` (and ``reason``), as the other sections of the check.
"""

from __future__ import annotations

import tempfile
import time
import traceback
from pathlib import Path

import torch
from torch import nn

from nnunetv2_mednext.classification.models import build_classifier

from ..cases import free, sync
from ..findings import Report
from .base import Context, Section, gib, status_cell, table

N_CLASSES = 3
SPEED_NETS = ("mednext_cls_t", "resnet18")  # resnet18: the reference of the ratios


def _amp(device: torch.device) -> tuple[torch.dtype | None, bool]:
    """The trainer's rule: (autocast dtype or None, GradScaler on)."""
    from nnunetv2_mednext.classification.trainer import cuda_amp_dtype

    if device.type != "cuda":
        return None, False
    dtype = cuda_amp_dtype()
    return dtype, dtype == torch.float16


def _amp_name(dtype: torch.dtype | None) -> str:
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32")  # the check's other sections' names


def speed_row(name: str, size: int, batch: int, device: torch.device, warmup: int, repeats: int) -> dict:
    """Training steps of classifier ``name`` at ``size`` px and ``batch`` images: images/s and memory."""
    dtype, scaled = _amp(device)
    channels_last = device.type == "cuda"
    row: dict = {"net": name, "config": f"{size}px", "batch": batch, "amp": _amp_name(dtype),
                 "channels_last": channels_last}
    try:
        torch.manual_seed(0)
        model: nn.Module = build_classifier(name, 3, N_CLASSES).to(device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        scaler = torch.amp.GradScaler("cuda", enabled=scaled)
        loss_fn = nn.CrossEntropyLoss()
        x = torch.randn(batch, 3, size, size, device=device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, N_CLASSES, (batch,), device=device)
        model.train()
        losses: list[float] = []

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                loss = loss_fn(model(x), y)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            losses.append(float(loss.detach()))

        for _ in range(warmup):
            step()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        sync(device)
        t0 = time.perf_counter()
        for _ in range(repeats):
            step()
        sync(device)
        seconds = (time.perf_counter() - t0) / max(repeats, 1)
        finite = all(torch.isfinite(torch.tensor(losses)).tolist())
        row.update(params=sum(p.numel() for p in model.parameters()), step_s=round(seconds, 4),
                   images_per_s=round(batch / seconds, 1), losses_finite=finite,
                   status="ok" if finite else "fail", **({} if finite else {"reason": f"non-finite loss {losses}"}))
        if device.type == "cuda":
            row["peak_bytes"] = torch.cuda.max_memory_allocated(device)
    except Exception as e:  # a row, not a crash: the check goes on and reports it
        row.update(status="fail", reason=f"{type(e).__name__}: {e}", traceback=traceback.format_exc(limit=6))
    return row


def train_run(device: torch.device, size: int, epochs: int = 2) -> dict:
    """``classify train`` (MedNeXt-T, fold 0 of 2, ``epochs`` epochs) and ``predict`` on a synthetic set."""
    from nnunetv2_mednext.classification.config import TrainConfig
    from nnunetv2_mednext.classification.console import Console
    from nnunetv2_mednext.classification.predict import Predictor, find_checkpoints, gather_inputs
    from nnunetv2_mednext.classification.prepare import prepare
    from nnunetv2_mednext.classification.synthetic import make_shapes_dataset
    from nnunetv2_mednext.classification.trainer import train_folds

    row: dict = {"net": "mednext_cls_t", "config": f"classify train {size}px, {epochs} epochs", "status": "fail"}
    t0 = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="doctor_classify_") as tmp:
            data = make_shapes_dataset(Path(tmp) / "data", n_per_class=8, size=size, seed=1)
            quiet = Console(quiet=True)
            prepared = prepare(data, Path(tmp) / "run", n_folds=2, console=quiet)
            cfg = TrainConfig(input_size=size, epochs=epochs, batch_size=8, warmup_epochs=1, device=str(device),
                              quiet=True)
            run = train_folds(prepared, Path(tmp) / "run", cfg, folds=[0], console=quiet)
            fold = run["folds"][0]
            predictor = Predictor(find_checkpoints(Path(tmp) / "run"), device=str(device))
            probs = predictor.predict([s.path for s in gather_inputs(data, predictor.class_names)], progress=False)
            ok = probs.shape == (3 * 8, N_CLASSES) and bool(abs(probs.sum(1) - 1).max() < 1e-4)
            row.update(status="ok" if ok else "fail", epochs=fold["epochs"], accuracy=round(fold["accuracy"], 3),
                       predictions=len(probs), amp=_amp_name(_amp(device)[0]),
                       **({} if ok else {"reason": f"predictions of shape {probs.shape} for 24 images"}))
    except Exception as e:
        row.update(reason=f"{type(e).__name__}: {e}", traceback=traceback.format_exc(limit=6))
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


def run(ctx: Context) -> None:
    p = ctx.profile
    for net_name in ctx.within_budget("classify", SPEED_NETS, str):
        ctx.log(f"{ctx.elapsed()} classify: {net_name} training steps, {p.classify_size} px x {p.classify_batch}")
        row = speed_row(net_name, p.classify_size, p.classify_batch, ctx.device, p.warmup, p.repeats)
        free(ctx.device)
        ctx.add(ctx.report.classify, row)
    for size in ctx.within_budget("classify", [p.classify_train_size], lambda _: "train"):
        ctx.log(f"{ctx.elapsed()} classify train + predict ({size} px, synthetic set)")
        row = train_run(ctx.device, size)
        free(ctx.device)
        ctx.add(ctx.report.classify, row)


def render(report: Report) -> list[str]:
    if not report.classify:
        return []
    base = next((r.get("step_s") for r in report.classify if r["net"] == "resnet18" and r.get("step_s")), None)

    def cells(r: dict) -> list:
        return [r["net"], f"{r['config']} x {r['batch']}" if "batch" in r else r["config"], r.get("amp", "-"),
                f"{r['params'] / 1e6:.2f}" if r.get("params") else "-", r.get("images_per_s", "-"),
                r.get("step_s", "-"), f"{r['step_s'] / base:.2f}" if base and r.get("step_s") else "-",
                gib(r.get("peak_bytes")), status_cell(r)]

    return table("Classification trainer",
                 ["Training steps (AdamW, cross-entropy, one synthetic batch) under the trainer's device rules (CUDA: "
                  "bf16 autocast where supported, else fp16 + GradScaler, channels-last; CPU: float32), then `classify "
                  "train` (fold 0 of 2) and `predict` end to end on a synthetic set."],
                 ["net", "what", "AMP", ">params (M)", ">images/s", ">step s", ">ratio to resnet18", ">peak memory",
                  "status"], map(cells, report.classify))


SECTION = Section("classify", run, render)
