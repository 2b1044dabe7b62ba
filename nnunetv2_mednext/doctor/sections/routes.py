"""Section ``routes``: GPU routes ready to prove.

Three switches change how a MedNeXt network trains on a GPU without changing what it computes: channels-last
activations (cuDNN's depthwise kernels), ``torch.compile`` as nnU-Net runs it (on by default on CUDA), and the
selective recompute policy (:mod:`nnunetv2_mednext.networks.recompute`). Each *route* is one combination; this section
measures them side by side in one run, under nnU-Net's AMP (fp16 + GradScaler on CUDA; bf16 autocast on a CPU),
for ``mednext_t`` and ``mednextv1_s_k3`` against ``PlainConvUNet`` on the same route: iterations/s and peak memory
(CUDA: ``max_memory_allocated`` above the memory held between steps; CPU: the peak bytes a training step allocates,
and the bytes saved for backward). It names the fastest route per network with the one setting that selects it.
Defaults never change here: a route becomes a default only when a GPU measurement says so.

Each route is applied as a user's run sees it: its environment variables (set, or unset for the defaults) and the
in-process recompute switch that ``NNUNETV2_MEDNEXT_RECOMPUTE`` sets at import; compiled routes run in a child
process under a timeout (:mod:`..worker`). Channels-last is also applied to the model and the input by the check
itself (``.to(memory_format=...)``); :func:`channels_last_honoured` verifies that the network's own
``prepare_input`` honours ``NNUNETV2_MEDNEXT_CHANNELS_LAST=1`` under autocast before the route is named.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from nnunetv2_mednext.networks import fastops
from nnunetv2_mednext.networks.fastops import CHANNELS_LAST_ENV, is_channels_last
from nnunetv2_mednext.networks.memory import cuda_norm_policy, peak_allocated_bytes, saved_tensor_bytes
from nnunetv2_mednext.networks.recompute import RECOMPUTE_ENV, recompute_enabled, set_recompute

from .. import amp as gpu
from ..cases import Case, bench_case, check_amp, measure_item
from ..findings import Report
from ..profiles import ROUTE_NETS, Profile
from ..worker import item_key, run_in_child
from .base import Context, Section, gib, status_cell, table

UNET = "PlainConvUNet"
MARGIN = 0.05  # a route must beat what a run gets without settings by this much to be named the one to select
MIN_CHILD_S = 10  # seconds a child process needs at least (start-up)


@dataclass(frozen=True)
class Route:
    """One combination of the three switches, and the setting that selects it."""

    name: str
    label: str
    recompute: bool = True
    channels_last: bool = False
    compiled: bool = False

    @property
    def mednext_only(self) -> bool:
        """Recompute is a MedNeXt switch: the U-Net has none, its recompute-on row is the reference."""
        return not self.recompute

    @property
    def unet_route(self) -> str:
        """The U-Net's route these rows are compared with."""
        return "compiled" if self.compiled else "channels_last" if self.channels_last else "default"

    def env(self) -> dict[str, str | None]:
        """The package's environment variables for this route (None: unset, the default)."""
        return {RECOMPUTE_ENV: None if self.recompute else "0", CHANNELS_LAST_ENV: "1" if self.channels_last else None}

    def selectable(self, device_type: str) -> bool:
        """Whether a training run can take this route (nnU-Net never compiles on a CPU)."""
        return device_type == "cuda" or not self.compiled

    def setting(self, device_type: str) -> str:
        """What a user sets to train on this route."""
        if not self.selectable(device_type):
            return "none: nnU-Net never compiles on a CPU"
        parts = [f"`{k}={v}`" for k, v in self.env().items() if v is not None]
        if device_type == "cuda":
            parts.append("`nnUNet_compile` unset (nnU-Net's default on CUDA)" if self.compiled else "`nnUNet_compile=0`")
        return " + ".join(parts) or "none (the defaults)"


ROUTES: dict[str, Route] = {r.name: r for r in (
    Route("default", "eager, recompute on"),
    Route("recompute_off", "eager, recompute off", recompute=False),
    Route("channels_last", "eager, channels-last", channels_last=True),
    Route("compiled", "compiled, recompute on", compiled=True),
    Route("compiled_recompute_off", "compiled, recompute off", recompute=False, compiled=True),
)}


def baseline_route(device_type: str) -> str:
    """The route a training run takes without any setting: compiled where nnU-Net compiles by default (CUDA)."""
    return "compiled" if gpu.nnunet_compiles(device_type, env={})[0] else "default"


@contextlib.contextmanager
def applied(route: Route) -> Iterator[None]:
    """The route's environment variables and the recompute switch, restored afterwards."""
    saved = {k: os.environ.get(k) for k in route.env()}
    was = recompute_enabled()
    try:
        for k, v in route.env().items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        set_recompute(route.recompute)
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        set_recompute(was)


def channels_last_honoured(device: torch.device, amp: gpu.AmpMode) -> bool:
    """Whether ``NNUNETV2_MEDNEXT_CHANNELS_LAST=1`` makes the MedNeXt networks' input channels-last under ``amp``
    (their ``prepare_input``); when not, the setting alone does not select the channels-last route yet."""
    x = torch.zeros((1, 2, 2, 2, 2), device=device)
    with applied(ROUTES["channels_last"]), gpu.autocast(device.type, amp):
        return is_channels_last(fastops.prepare_input(x))


def plan(profile: Profile, nets: list[str]) -> list[tuple[str, str, str]]:
    """``(net, config, route)`` in the order they run: per configuration route by route, eager ones first."""
    return [(n, c, r.name) for c in profile.routes_configs for r in ROUTES.values() for n in ROUTE_NETS
            if n in nets and not (n == UNET and r.mednext_only)
            and not (r.compiled and n not in profile.routes_compiled_nets)]


def _measure(case: Case, device: torch.device, profile: Profile, route: Route) -> dict:
    row = bench_case(case, device, profile.warmup + (1 if route.compiled else 0), profile.repeats, cpu_memory=False)
    if device.type == "cuda":
        row["mem_bytes"] = row["activation_bytes"]
    else:
        if not route.compiled:  # saved-tensor hooks see eager autograd only
            row["saved_bytes"] = int(saved_tensor_bytes(case.forward_loss, list(case.net.parameters())))
        row["mem_bytes"] = int(peak_allocated_bytes(case.step))
    return row


def route_row(net: str, config: str, route: str, fields: dict) -> dict:
    """A row of this section: network, plan, route and its recompute policy first, then ``fields``."""
    return {"net": net, "config": config, "route": route, "recompute": ROUTES[route].recompute, **fields}


def measure_route(pm: Any, net: str, config: str, device: torch.device, profile: Profile, route_name: str) -> dict:
    """One route's row: timed steps under the route's settings; on a CPU with norms in float32 as on CUDA."""
    route = ROUTES[route_name]
    backend = profile.compile_backend if route.compiled else None
    norms = cuda_norm_policy() if device.type == "cpu" else contextlib.nullcontext()
    with applied(route), norms:
        row = measure_item(pm, net, config, device, check_amp(device), route.channels_last, backend, profile,
                           measure=lambda case: _measure(case, device, profile, route))
    return route_row(net, config, route.name, row)


def add_ratios(rows: list[dict]) -> None:
    """``time_vs_unet`` and ``memory_vs_unet``: each MedNeXt row against the U-Net on the same route and plan."""
    unet = {(r["config"], r["route"]): r for r in rows if r["net"] == UNET and r.get("status") == "ok"}
    for r in rows:
        ref = unet.get((r["config"], ROUTES[r["route"]].unet_route))
        if r["net"] == UNET or r.get("status") != "ok" or ref is None:
            continue
        r["time_vs_unet"] = round(r["s_per_it"] / ref["s_per_it"], 3)
        if r.get("mem_bytes") and ref.get("mem_bytes"):
            r["memory_vs_unet"] = round(r["mem_bytes"] / ref["mem_bytes"], 3)


def choose(rows: list[dict], device_type: str, cl_honoured: bool) -> dict:
    """The fastest route of one network on one plan, and the route to select: the fastest one a run can take,
    when it beats what a run gets without settings by ``MARGIN``; else the defaults."""
    ok = [r for r in rows if r.get("status") == "ok"]
    base_name = baseline_route(device_type)
    base = next((r for r in ok if r["route"] == base_name), None)
    takeable = [r for r in ok if ROUTES[r["route"]].selectable(device_type)
                and (cl_honoured or not ROUTES[r["route"]].channels_last)]
    out: dict[str, Any] = {"net": rows[0]["net"], "config": rows[0]["config"], "baseline": base_name, "notes": []}
    fastest = max(ok, key=lambda r: r["it_per_s"], default=None)
    if fastest is not None and fastest not in takeable:
        why = ("nnU-Net never compiles on a CPU" if not ROUTES[fastest["route"]].selectable(device_type) else
               f"{CHANNELS_LAST_ENV}=1 does not reach the network under autocast yet (networks/fastops.prepare_input)")
        out["notes"].append(f"`{fastest['route']}` ran fastest ({fastest['it_per_s']} it/s) but a run cannot take it "
                            f"by a setting: {why}")
    best = max(takeable, key=lambda r: r["it_per_s"], default=None)
    if best is None:
        out.update(choice=None, verdict="no route that a run can take finished")
        return out
    out.update(fastest=best["route"], it_per_s=best["it_per_s"])
    if base is None:
        out.update(choice=best["route"], verdict=f"what a run gets without settings (`{base_name}`) did not finish "
                   f"here; fastest: `{best['route']}`")
    else:
        speedup = best["it_per_s"] / base["it_per_s"]
        out["speedup"] = round(speedup, 3)
        if best.get("mem_bytes") and base.get("mem_bytes"):
            out["memory_ratio"] = round(best["mem_bytes"] / base["mem_bytes"], 3)
        if best is base or speedup < 1 + MARGIN:
            out.update(choice=base_name, verdict=f"keep the defaults: no route is {MARGIN:.0%} faster than "
                       f"`{base_name}`, what a run gets without settings")
        else:
            out.update(choice=best["route"], verdict=f"`{best['route']}` is {speedup:.2f}x the speed of `{base_name}`, "
                       "what a run gets without settings")
    out["setting"] = ROUTES[out["choice"]].setting(device_type)
    if not ROUTES[out["choice"]].recompute:
        out["notes"].append(f"Plan with `{RECOMPUTE_ENV}=0` too: the MedNeXt planner sizes patch and batch for the "
                            "recompute policy it plans under")
    if device_type != "cuda":
        out["notes"].append("Measured on a CPU: indicative only, a GPU run decides")
    return out


def run(ctx: Context) -> None:
    pm, _ = ctx.plans
    p, device = ctx.profile, ctx.device
    amp = check_amp(device)
    honoured = channels_last_honoured(device, amp)
    ctx.report.meta["routes"] = {"amp": amp.name, "baseline": baseline_route(device.type),
                                 "channels_last_honoured": honoured, "compile_backend": p.compile_backend}
    do_compile, why = gpu.compile_plan(device.type, ctx.compile_request)
    # on CUDA the compile section's rows are the compiled route (same AMP, plan and steps) when the switches are
    # at their defaults in this process; CPU rows there carry no memory measure
    reuse = device.type == "cuda" and all(os.environ.get(k) is None for k in (RECOMPUTE_ENV, CHANNELS_LAST_ENV))
    compiled_rows = {(r["net"], r["config"]): r for r in ctx.report.compile
                     if reuse and r.get("status") == "ok" and r.get("amp") == amp.name}
    rows: list[dict] = []
    for config in p.routes_configs:
        items = [i for i in plan(p, ctx.nets) if i[1] == config]
        for net, _, route in ctx.within_budget("routes", [i for i in items if not ROUTES[i[2]].compiled],
                                               lambda i: f"{i[0]} {i[1]} {i[2]}"):
            ctx.log(f"{ctx.elapsed()} routes {net} {config} {route}")
            ctx.add(rows, measure_route(pm, net, config, device, p, route))
        todo = []
        for net, _, route in (i for i in items if ROUTES[i[2]].compiled):
            if route == "compiled" and (net, config) in compiled_rows:
                row = compiled_rows[(net, config)]
                rows.append(route_row(net, config, route, {**row, "mem_bytes": row.get("activation_bytes"),
                                                           "source": "compile section"}))
            elif not do_compile:
                ctx.report.skip(f"routes {net} {config} {route}", why)
            elif ctx.left() < MIN_CHILD_S:
                ctx.report.skip(f"routes {net} {config} {route}", "routes time budget spent")
            else:
                todo.append((net, route))
        if todo:
            ctx.log(f"{ctx.elapsed()} routes {config} compiled ({p.compile_backend}): "
                    f"{', '.join(f'{n} {r}' for n, r in todo)}; up to {ctx.left():.0f} s")
            done = run_in_child(f"routes_{config}", p, [item_key(n, config, r) for n, r in todo], device, ctx.out_dir,
                                ctx.left(), warn_only=device.type != "cuda", section="routes")
            for net, route in todo:
                ctx.add(rows, route_row(net, config, route, done[item_key(net, config, route)]),
                        prefix=f"{net} {route}: ")
    add_ratios(rows)
    ctx.report.routes = rows
    ctx.report.routes_best = [choose([r for r in rows if (r["net"], r["config"]) == key], device.type, honoured)
                              for key in dict.fromkeys((r["net"], r["config"]) for r in rows if r["net"] != UNET)]


def attention(report: Report) -> list[str]:
    out = [f"routes: {r['net']} {r['config']} {r['route']}: {r['status']}: {r.get('reason')}"
           for r in report.routes if r.get("status") in ("timeout", "skipped")
           or (r.get("status") == "fail" and r.get("warn_only"))]
    if report.meta.get("device") == "cuda":  # a GPU's fastest route that no setting selects yet
        out += [f"routes: {b['net']} {b['config']}: {note}" for b in report.routes_best for note in b["notes"]
                if "cannot take it" in note]
    return out


def render(report: Report) -> list[str]:
    if not report.routes:
        return []
    meta = report.meta.get("routes", {})
    cpu = report.meta["device"] != "cuda"
    device_type = "cpu" if cpu else "cuda"
    mem = ("peak bytes a training step allocates (torch.profiler; norms in float32 as on CUDA)" if cpu
           else "peak `max_memory_allocated` above the memory held between steps")
    intro = [
        f"Each route is one setting, measured side by side under nnU-Net's AMP ({meta.get('amp')}): eager with "
        "recompute on (`default`), recompute off, channels-last (model and input converted by the check), compiled "
        f"(network and Dice loss, as nnUNetTrainer compiles them; {meta.get('compile_backend')} here), compiled with "
        f"recompute off. Memory: {mem}. x U-Net: the ratio to PlainConvUNet on the same route (the U-Net has no "
        "recompute: recompute-off rows compare with its recompute-on row).",
        f"**Defaults are unchanged**: this section only measures. A run without settings takes `{meta.get('baseline')}`;"
        " the setting column is what selects each route."
        + (" CPU numbers are indicative only: a GPU run decides." if cpu else ""),
    ]
    if not meta.get("channels_last_honoured", True):
        intro.append(f"`{CHANNELS_LAST_ENV}=1` does not yet make the network's input channels-last under autocast "
                     "(`networks/fastops.prepare_input` converts only while the CPU fast ops run): the channels-last "
                     "row shows what the setting will give once it does (docs/gpu.md).")
    columns = ["net", "config", "route", "setting", ">it/s", ">time x U-Net", ">memory", ">memory x U-Net"]
    columns += [">saved for backward"] if cpu else []

    def ratio(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    def cells(r: dict) -> list:
        setting = "(reference)" if r["net"] == UNET else ROUTES[r["route"]].setting(device_type)
        out = [r["net"], r["config"], r["route"], setting, r.get("it_per_s", "-"), ratio(r.get("time_vs_unet")),
               gib(r.get("mem_bytes")), ratio(r.get("memory_vs_unet"))]
        return out + ([gib(r.get("saved_bytes"))] if cpu else []) + [status_cell(r)]

    out = table("GPU routes ready to prove", intro, [*columns, "status"], map(cells, report.routes))
    out += ["", "Fastest route per network:", ""]
    for b in report.routes_best:
        line = f"* **{b['net']} {b['config']}**: {b['verdict']}"
        if b.get("choice"):
            line += f"; select `{b['choice']}` with {b['setting']}"
        if b.get("memory_ratio"):
            line += f" (memory x{b['memory_ratio']:.2f} of `{b['baseline']}`)"
        out.append(line + "".join(f". {n}" for n in b["notes"]) + ".")
    return out


SECTION = Section("routes", run, render, attention=attention)
