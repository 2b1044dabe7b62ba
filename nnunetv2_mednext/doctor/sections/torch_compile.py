"""Section ``compile``: the training steps under ``torch.compile`` (network and Dice loss, as ``nnUNetTrainer``
compiles them), in a child process under a timeout (:mod:`..worker`)."""

from __future__ import annotations

from .. import amp as gpu
from ..findings import Report
from ..worker import item_key, run_in_child
from .base import Context, Section, Skip, gib, status_cell, table

MIN_BUDGET_S = 10


def skip_reason(ctx: Context) -> Skip | None:
    do, why = gpu.compile_plan(ctx.device.type, ctx.compile_request)
    if not do:
        return "compile", why
    if ctx.left() < MIN_BUDGET_S:
        return "compile", "time budget spent"
    return None


def run(ctx: Context) -> None:
    p = ctx.profile
    items = [(n, c) for n, c in p.compile_items if n in ctx.nets]
    budget = ctx.left()
    if p.compile_backend != "inductor":
        ctx.report.skip("compile with inductor", f"the {p.name} profile compiles with the {p.compile_backend} backend "
                        "(dynamo + AOTAutograd tracing, no code generation): inductor's CPU code generation takes "
                        "minutes per network on one core; the full CPU subset (without --quick) and the GPU run use "
                        "inductor")
    backend = p.compile_backend if p.compile_backend != "inductor" else gpu.compile_plan(ctx.device.type)[1]
    ctx.log(f"{ctx.elapsed()} compile ({backend}): {', '.join(f'{n} {c}' for n, c in items)}; up to {budget:.0f} s")
    rows = run_in_child("compile", p, [item_key(n, c) for n, c in items], ctx.device, ctx.out_dir, budget,
                        warn_only=ctx.device.type != "cuda")
    for n, c in items:
        ctx.add(ctx.report.compile, {"net": n, "config": c, **rows[item_key(n, c)]}, prefix=f"{n} {c}: ")


def attention(report: Report) -> list[str]:
    return ([f"compile: {r['net']} {r['config']}: {r['status']}: {r.get('reason')}"
             for r in report.compile if r.get("status") in ("timeout", "skipped")]
            + [f"compile (warning only on CPU): {r['net']} {r['config']}: {r.get('reason')}"
               for r in report.compile if r.get("status") == "fail" and r.get("warn_only")])


def render(report: Report) -> list[str]:
    if not report.compile:
        return []
    return table(f"torch.compile ({report.meta.get('compile_backend', 'inductor')} backend)",
                 ["Same training step, network and nnU-Net's Dice loss compiled as nnUNetTrainer does; first steps "
                  "include compilation."],
                 ["net", "config", "AMP", ">first steps (s)", ">it/s", ">memory", "status"],
                 ([r["net"], r["config"], r.get("amp", "-"), r.get("first_steps_s", "-"), r.get("it_per_s", "-"),
                   gib(r.get("peak_bytes", r.get("activation_bytes"))), status_cell(r)] for r in report.compile))


SECTION = Section("compile", run, render, skip_reason, attention)
