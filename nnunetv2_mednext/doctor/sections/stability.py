"""Section ``stability``: N AMP steps per network on fresh batches of a learnable synthetic target: no NaN/inf in
loss, gradients or weights, and the loss goes down."""

from __future__ import annotations

import time
from typing import Any

import torch

from .. import amp as gpu
from ..cases import Case, build_case, ds_targets, failure, free, learnable_batch, sync
from ..findings import Report
from ..profiles import NUM_CLASSES
from .base import Context, Section, Skip, status_cell, table


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
    sync(device)
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


def skip_reason(ctx: Context) -> Skip | None:
    try:
        gpu.select_amp(ctx.device.type, ctx.profile.stability_amp, ctx.cap)
    except gpu.UnsupportedError as e:
        return "stability", str(e)
    return None


def run(ctx: Context) -> None:
    pm, _ = ctx.plans
    p = ctx.profile
    amp = gpu.select_amp(ctx.device.type, p.stability_amp, ctx.cap)
    for i, net_name in enumerate(ctx.nets):
        per_net = ctx.left() / (len(ctx.nets) - i)  # what is left, shared by the networks still to run
        if per_net < 2:
            ctx.report.skip(f"stability {net_name}", "stability time budget spent")
            continue
        ctx.log(f"{ctx.elapsed()} stability {net_name}: {p.stability_steps} {amp.name} steps on "
                f"{p.stability_config} (up to {per_net:.0f} s)")
        row: dict[str, Any] = {"net": net_name, "config": p.stability_config, "amp": amp.name}
        try:
            case = build_case(pm, net_name, p.stability_config, ctx.device, amp, total_steps=p.stability_steps)
            row.update(stability_run(case, pm, ctx.device, p.stability_steps, time.monotonic() + per_net),
                       checkpointing=case.checkpointing)
            del case
        except Exception as e:
            row.update(failure(e))
        free(ctx.device)
        ctx.report.stability.append(row)
        ctx.log(f"{ctx.elapsed()}   -> {row.get('status')}: {row.get('steps', 0)} steps, loss {row.get('loss_first')} "
                f"-> {row.get('loss_last')}{' ' + row['reason'] if row.get('reason') else ''}")


def render(report: Report) -> list[str]:
    if not report.stability:
        return []
    return table("Stability",
                 ["Fresh learnable batches every step (label = local mean of the noise image, 3 classes), the "
                  "trainer's schedule over the run; loss = mean of the first / last 10 % of steps."],
                 ["net", "config", "AMP", ">steps", ">non-finite loss", ">non-finite grad steps", "loss first -> last",
                  ">max grad norm", ">s", "status"],
                 ([r["net"], r["config"], r["amp"], r.get("steps", "-"), r.get("nonfinite_losses", "-"),
                   r.get("nonfinite_grad_steps", "-"), f"{r.get('loss_first', '-')} -> {r.get('loss_last', '-')}",
                   r.get("max_grad_norm", "-"), r.get("seconds", "-"), status_cell(r)] for r in report.stability))


SECTION = Section("stability", run, render, skip_reason)
