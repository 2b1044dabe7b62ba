"""Section ``matrix``: training iterations/s and memory per network, plan and mode (AMP, channels-last), eager."""

from __future__ import annotations

from .. import amp as gpu
from ..cases import measure_item
from ..findings import Report
from .base import Context, Section, gib, shape, status_cell, table


def run(ctx: Context) -> None:
    pm, _ = ctx.plans
    for config, amp_name, cl in ctx.profile.matrix:
        mode = f"{config} {amp_name}{' channels-last' if cl else ''}"
        try:
            amp = gpu.select_amp(ctx.device.type, amp_name, ctx.cap)
        except gpu.UnsupportedError as e:
            ctx.report.skip(f"matrix {mode}", str(e))
            continue
        for net_name in ctx.within_budget("matrix", ctx.nets, lambda n, mode=mode: f"{n} {mode}"):
            ctx.log(f"{ctx.elapsed()} matrix {net_name} {mode}")
            ctx.add(ctx.report.matrix, measure_item(pm, net_name, config, ctx.device, amp, cl, None, ctx.profile))


def render(report: Report) -> list[str]:
    if not report.matrix:
        return []
    m = report.meta
    cpu = m["device"] != "cuda"
    mem_col = "peak max_memory_allocated (above memory held between steps)" if not cpu else "saved for backward"

    def cells(r: dict) -> list:
        mem = (f"{gib(r.get('peak_bytes'))} ({gib(r.get('activation_bytes'))})" if not cpu
               else gib(r.get("activation_bytes")))
        return [r["net"], r["config"], f"{shape(r)} x {r['batch']}", r["amp"], "yes" if r["channels_last"] else "no",
                f"{r.get('params', 0) / 1e6:.2f}", "on" if r.get("checkpointing") else "off", r.get("it_per_s", "-"),
                mem, status_cell(r)]

    return table("Training steps (eager)",
                 ["nnU-Net's loss (Dice + CE, deep supervision), each trainer's optimiser, clip norm 12, one synthetic "
                  f"batch; it/s over {m['repeats']} step(s) after {m['warmup']} warm-up step(s)."],
                 ["net", "config", "patch x batch", "AMP", "channels-last", ">params (M)", "ckpt", ">it/s",
                  f">{mem_col}", "status"], map(cells, report.matrix))


SECTION = Section("matrix", run, render)
