"""Benchmark our default segmentation networks against nnU-Net's default ``PlainConvUNet`` on the same plan.

In one process, for a 2D plan (224x224, 6 stages, strides 1,2,2,2,2,2) and a 3D plan (64^3, 5 stages, strides
1,2,2,2,2), batch 2, 1 input channel, 4 classes, deep supervision on, it builds through nnU-Net's own
``get_network_from_plans``:

* ``mednext_t`` (seed MedNeXt, our default) and ``mednextv1_s_k3`` (Roy et al. S, kernel 3);
* nnU-Net's ``PlainConvUNet`` with nnU-Net's default plan kwargs (features 32 doubling, capped at 512 in 2D / 320 in
  3D, 2 convs per stage in encoder and decoder, conv bias, InstanceNorm (affine, eps 1e-5), LeakyReLU, He init);

and reports params, MACs (``FlopCounterMode``, forward, per sample), the median time of a training step (forward,
deep-supervision cross-entropy, backward, AdamW step), the median inference time (``no_grad``, eval, deep
supervision off), peak memory, and the ratios ours / nnU-Net. Measurements of the networks are interleaved
(A, B, C, A, B, C, ...) so that load from other processes spreads evenly over them.

Memory: on CPU, the bytes of the distinct tensors autograd saves for backward during one training forward
(``torch.autograd.graph.saved_tensors_hooks``): the activation memory of a step, without weights/optimizer state.
On CUDA, ``torch.cuda.max_memory_allocated`` over one training step (everything: weights, grads, optimizer state,
activations, workspace).

It then profiles one training step of the default 2D net with ``torch.profiler`` (top ops, and convolution time
split by kind / kernel / resolution) and writes everything to ``docs/benchmarks.md``.

Usage::

    python benchmarks/bench_networks.py                       # CPU, full run, writes docs/benchmarks.md
    python benchmarks/bench_networks.py --repeats 3 --warmup 1 --no-write --plans 2d   # quick look
    python benchmarks/bench_networks.py --device cuda --amp --channels-last
"""

from __future__ import annotations

import argparse
import copy
import datetime as _dt
import gc
import os
import platform
import shlex
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from nnunetv2_mednext.networks import get_seg_variant
from nnunetv2_mednext.plan_networks import PLAIN_CLASS, plain_unet_arch_kwargs, synthetic_topology
from nnunetv2_mednext.plan_networks import saved_tensor_bytes as shared_saved_tensor_bytes

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
MEDNEXT_CLASS = "nnunetv2_mednext.networks.segmentation.MedNeXtUNet"
OURS = ("mednext_t", "mednextv1_s_k3")
BASELINE = "nnU-Net PlainConvUNet"
GOALS = {"params": 0.25, "macs": 0.5, "train": 1.0}  # default 2D seed net vs PlainConvUNet, ratio at most

PLANS = {
    "2d": {"patch": (224, 224), "n_stages": 6, "max_features": 512},
    "3d": {"patch": (64, 64, 64), "n_stages": 5, "max_features": 320},
}


# --------------------------------------------------------------------------------------------------------------------
# building
# --------------------------------------------------------------------------------------------------------------------


def plan_topology(plan: str) -> dict:
    p = PLANS[plan]
    return synthetic_topology(p["patch"], p["n_stages"], p["max_features"])


def plain_arch_kwargs(plan: str) -> tuple[dict, list[str]]:
    """nnU-Net's default ``PlainConvUNet`` arch_kwargs for the plan (as ``nnUNetPlanner`` writes them)."""
    return plain_unet_arch_kwargs(plan_topology(plan))


def build(name: str, plan: str, in_ch: int, classes: int) -> nn.Module:
    """Build through nnU-Net's ``get_network_from_plans`` (deep supervision on, nnU-Net's init)."""
    if name == BASELINE:
        kwargs, imports = plain_arch_kwargs(plan)
        cls = PLAIN_CLASS
    else:
        topo = plan_topology(plan)
        kwargs = get_seg_variant(name).arch_kwargs(
            topo["n_stages"], topo["kernel_sizes"], topo["strides"], topo["conv_op"], topo["features_per_stage"]
        )
        imports, cls = ["conv_op"], MEDNEXT_CLASS
    return get_network_from_plans(cls, kwargs, imports, in_ch, classes, allow_init=True, deep_supervision=True)


def set_deep_supervision(net: nn.Module, enabled: bool) -> None:
    net.decoder.deep_supervision = enabled


# --------------------------------------------------------------------------------------------------------------------
# measuring
# --------------------------------------------------------------------------------------------------------------------


def count_macs(net: nn.Module, shape: tuple[int, ...]) -> int:
    """Forward MACs of one sample (deep supervision off), counted on a meta-device copy."""
    meta = copy.deepcopy(net).to("meta").eval()
    set_deep_supervision(meta, False)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        meta(torch.zeros((1, *shape[1:]), device="meta"))
    return counter.get_total_flops() // 2


def ds_targets(y: torch.Tensor, n_outputs: int) -> list[torch.Tensor]:
    """Nearest-neighbour downsampled labels for every deep-supervision output (scales 1, 1/2, 1/4, ...)."""
    out = [y]
    for _ in range(n_outputs - 1):
        prev = out[-1]
        idx = (slice(None), *(slice(None, None, 2) for _ in range(prev.ndim - 1)))
        out.append(prev[idx])
    return out


def ds_loss(outputs: list[torch.Tensor], targets: list[torch.Tensor]) -> torch.Tensor:
    """nnU-Net-style deep-supervision CE: weights 1/2^i (normalised), lowest resolution weighted 0."""
    w = np.array([1 / 2**i for i in range(len(outputs))])
    w[-1] = 0
    w = w / w.sum()
    return sum(float(wi) * F.cross_entropy(o.float(), t) for wi, o, t in zip(w, outputs, targets) if wi > 0)


@dataclass
class Runner:
    """One network with its optimizer, inputs and timing samples."""

    name: str
    net: nn.Module
    x: torch.Tensor
    targets: list[torch.Tensor]
    device: torch.device
    amp: bool
    opt: torch.optim.Optimizer = field(init=False)
    scaler: torch.amp.GradScaler | None = field(init=False)
    train_times: list[float] = field(default_factory=list)
    infer_times: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=1e-3, weight_decay=3e-5, eps=1e-4)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp else None

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def train_step(self) -> None:
        self.net.train()
        set_deep_supervision(self.net, True)
        self.opt.zero_grad(set_to_none=True)
        with self._autocast():
            loss = ds_loss(self.net(self.x), self.targets)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            loss.backward()
            self.opt.step()

    @torch.no_grad()
    def infer(self) -> None:
        self.net.eval()
        set_deep_supervision(self.net, False)
        with self._autocast():
            self.net(self.x)

    def timed(self, fn: Callable[[], None]) -> float:
        self._sync()
        t0 = time.perf_counter()
        fn()
        self._sync()
        return time.perf_counter() - t0

    def peak_memory(self) -> int:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.train_step()
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated()
        return saved_tensor_bytes(self)


def saved_tensor_bytes(runner: Runner) -> int:
    """Bytes of the distinct storages autograd saves for backward in one training forward (CPU memory measure)."""
    runner.net.train()
    set_deep_supervision(runner.net, True)

    def forward() -> torch.Tensor:
        with runner._autocast():
            return ds_loss(runner.net(runner.x), runner.targets)

    return shared_saved_tensor_bytes(forward, list(runner.net.parameters()))


@dataclass
class Result:
    plan: str
    name: str
    params: int
    macs: int
    train_s: float
    infer_s: float
    memory: int
    train_iqr: tuple[float, float]
    infer_iqr: tuple[float, float]


def _quartiles(v: list[float]) -> tuple[float, float]:
    q = np.percentile(v, [25, 75])
    return float(q[0]), float(q[1])


def run_plan(plan: str, args: argparse.Namespace, device: torch.device) -> list[Result]:
    shape = (args.batch, args.in_channels, *PLANS[plan]["patch"])
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen)
    y = torch.randint(0, args.classes, (shape[0], *shape[2:]), generator=gen)
    runners = []
    for name in (*OURS, BASELINE):
        torch.manual_seed(0)
        net = build(name, plan, args.in_channels, args.classes)
        n_out = len(net.decoder.seg_layers) if hasattr(net.decoder, "seg_layers") else PLANS[plan]["n_stages"] - 1
        xd, targets = x.to(device), [t.to(device) for t in ds_targets(y, n_out)]
        net = net.to(device)
        if args.channels_last and device.type == "cuda":
            fmt = torch.channels_last if len(shape) == 4 else torch.channels_last_3d
            net, xd = net.to(memory_format=fmt), xd.contiguous(memory_format=fmt)
        runners.append(Runner(name, net, xd, targets, device, args.amp and device.type == "cuda"))

    info = {r.name: (sum(p.numel() for p in r.net.parameters()), count_macs(r.net, shape)) for r in runners}
    repeats = args.repeats if plan == "2d" else args.repeats_3d
    for _ in range(args.warmup):
        for r in runners:
            r.train_step()
            r.infer()
    memory = {}
    for r in runners:  # after the warm-up: cuDNN autotuning workspaces are not part of a step's peak
        memory[r.name] = r.peak_memory()
        gc.collect()
    for i in range(repeats):
        for r in runners:
            r.train_times.append(r.timed(r.train_step))
        for r in runners:
            r.infer_times.append(r.timed(r.infer))
        print(f"  {plan} repeat {i + 1}/{repeats}: "
              + ", ".join(f"{r.name} {r.train_times[-1]:.2f}s" for r in runners), flush=True)
    results = [
        Result(plan, r.name, info[r.name][0], info[r.name][1], statistics.median(r.train_times),
               statistics.median(r.infer_times), memory[r.name], _quartiles(r.train_times), _quartiles(r.infer_times))
        for r in runners
    ]
    del runners
    gc.collect()
    return results


# --------------------------------------------------------------------------------------------------------------------
# profiling
# --------------------------------------------------------------------------------------------------------------------


def profile_train_step(name: str, plan: str, args: argparse.Namespace, device: torch.device, steps: int = 2) -> dict:
    """Profile ``steps`` training steps (after one warm-up): top ops and convolution time by kind."""
    from torch.profiler import ProfilerActivity, profile

    shape = (args.batch, args.in_channels, *PLANS[plan]["patch"])
    torch.manual_seed(0)
    net = build(name, plan, args.in_channels, args.classes).to(device)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen)
    y = torch.randint(0, args.classes, (shape[0], *shape[2:]), generator=gen)
    runner = Runner(name, net, x.to(device), [t.to(device) for t in ds_targets(y, len(net.decoder.seg_layers))],
                    device, args.amp and device.type == "cuda")
    runner.train_step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities, record_shapes=True) as prof:
        for _ in range(steps):
            runner.train_step()
    use_cuda = device.type == "cuda"
    key = "self_device_time_total" if use_cuda else "self_cpu_time_total"
    events = prof.key_averages()
    total = sum(getattr(e, key) for e in events) / steps
    top = sorted(events, key=lambda e: getattr(e, key), reverse=True)[: args.profile_top]
    top_rows = [(e.key, getattr(e, key) / steps / 1e3, 100 * getattr(e, key) / steps / max(total, 1e-9), e.count // steps)
                for e in top]

    # convolution time (forward + backward, inclusive of the backend kernels) by kind, kernel and input resolution
    dilations: dict[tuple[int, ...], set[int]] = defaultdict(set)
    for m in net.modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            dilations[tuple(m.weight.shape)].add(max(m.dilation))
    time_key = "device_time_total" if device.type == "cuda" else "cpu_time_total"
    conv = defaultdict(float)
    for e in prof.key_averages(group_by_input_shape=True):
        if e.key not in ("aten::convolution", "aten::convolution_backward"):
            continue
        shapes = e.input_shapes
        backward = e.key == "aten::convolution_backward"
        inp, weight = (shapes[1], shapes[2]) if backward else (shapes[0], shapes[1])
        if not inp or not weight or len(weight) < 3:
            continue
        ms = getattr(e, time_key) / steps / 1e3
        depthwise = weight[1] == 1 and inp[1] > 1
        kind = "depthwise" if depthwise else ("1x1" if all(k == 1 for k in weight[2:]) else "dense")
        dil = dilations.get(tuple(weight), set())
        if depthwise and dil and min(dil) > 1:
            kind += f" (dilation {min(dil)})"
        conv[(kind, "x".join(map(str, weight[2:])), f"{inp[1]}ch {'x'.join(map(str, inp[2:]))}")] += ms
        conv[(kind.split(" ")[0], "*", "*")] += ms
        conv[("phase", "bwd" if backward else "fwd", "*")] += ms
    del runner, net
    gc.collect()
    return {"name": name, "plan": plan, "total_ms": total / 1e3, "top": top_rows, "conv": dict(conv),
            "clock": "device (CUDA kernels)" if use_cuda else "CPU (self time)"}


# --------------------------------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------------------------------


NOTES = [
    "Reading the numbers:",
    "",
    "* Fewer parameters and MACs do not make a faster CPU step: most of the seed net's MACs are 1x1 convs on "
    "expanded hidden maps, and its depthwise convs add few MACs but much time; both run at a much lower fraction of "
    "peak than the dense 3x3 convs of `PlainConvUNet`. The profile below shows where the step goes; rows marked `dilation` are the LA-FFN's "
    "dilated depthwise convs.",
    "* Activation memory is higher than nnU-Net's although the MACs are lower: every block keeps several maps for "
    "backward, including the `r`-times expanded hidden maps (the Roy et al. blocks on the full-resolution light "
    "levels included), while `PlainConvUNet` keeps about two maps per conv and applies LeakyReLU in place.",
    "* The 3D rows come from few repeats (a CPU step takes seconds); treat them as indicative.",
]


def machine_info(device: torch.device, args: argparse.Namespace) -> list[str]:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    lines = [
        f"* Date: {_dt.datetime.now().strftime('%Y-%m-%d %H:%M')}",
        f"* Machine: {platform.machine()}, {os.cpu_count()} logical CPUs ({cpu}), intra-op threads used: "
        f"{torch.get_num_threads()}",
        f"* Python {platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}",
    ]
    try:
        lines.append(f"* Load average at the end of the run (1/5/15 min): {' / '.join(f'{v:.2f}' for v in os.getloadavg())}")
    except OSError:
        pass
    if device.type == "cuda":
        lines.append(f"* GPU: {torch.cuda.get_device_name(device)}, AMP fp16: {args.amp}, channels_last: "
                     f"{args.channels_last}")
    return lines


def _fmt_bytes(v: int) -> str:
    return f"{v / 2**20:.0f} MiB"


def render(results: list[Result], profiles: list[dict], args: argparse.Namespace, device: torch.device,
           command: str) -> str:
    mem_label = ("peak `torch.cuda.max_memory_allocated` over one training step" if device.type == "cuda"
                 else "activation memory: bytes of the tensors autograd saves for backward in one training forward")
    out = [
        "# Network benchmark: MedNeXt vs nnU-Net's default U-Net",
        "",
        "Generated by `benchmarks/bench_networks.py`; numbers below are from one run of:",
        "",
        "```bash",
        command,
        "```",
        "",
        *machine_info(device, args),
        "",
        "Setup: each network is built through nnU-Net's `get_network_from_plans` (deep supervision on, nnU-Net's "
        "weight init) for the same plan. Batch "
        f"{args.batch}, {args.in_channels} input channel(s), {args.classes} classes, fp32"
        f"{' + AMP fp16' if args.amp and device.type == 'cuda' else ''}. "
        "Baseline: `PlainConvUNet` with nnU-Net's default plan kwargs (features 32 doubling, capped at 512 in 2D and "
        "320 in 3D; 2 convs per stage in encoder and decoder; conv bias; InstanceNorm; LeakyReLU).",
        "",
        "* **Params**: all parameters. **GMACs**: forward, one sample, deep supervision off, `FlopCounterMode` "
        "FLOPs / 2 (convolutions and matmuls only).",
        "* **Train step**: median wall time of forward + nnU-Net-style deep-supervision CE + backward + AdamW step, "
        f"over {args.repeats} (2D) / {args.repeats_3d} (3D) repeats after {args.warmup} warm-up step(s) per network "
        "(interquartile range in brackets).",
        f"* **Inference**: median wall time of one `no_grad` forward, eval mode, deep supervision off (batch {args.batch}).",
        f"* **Memory**: {mem_label}.",
        "* **Ratio**: ours / nnU-Net for the same plan.",
        "",
        "**Caveat (shared machine).** This machine's cores are shared with other jobs, so absolute times drift "
        "between runs; the networks are measured interleaved and only medians are reported, so the *ratios* are the "
        "meaningful numbers. With more intra-op threads than free cores, OpenMP threads spin-wait on descheduled "
        "peers and small ops (depthwise convs on few channels) slow down 10-50x; use `--threads` to pin the thread "
        "count (the command above states what was used).",
        "",
    ]
    for plan in PLANS:
        rows = [r for r in results if r.plan == plan]
        if not rows:
            continue
        base = next(r for r in rows if r.name == BASELINE)
        p = PLANS[plan]
        out += [
            f"## {plan.upper()}: patch {'x'.join(map(str, p['patch']))}, {p['n_stages']} stages, strides "
            f"{','.join(['1'] + ['2'] * (p['n_stages'] - 1))}",
            "",
            "| Network | Params (M) | GMACs | Train step (s) | Inference (s) | Memory | Params ratio | MACs ratio "
            "| Train ratio | Inference ratio | Memory ratio |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            is_base = r is base

            def ratio(a: float, b: float, is_base: bool = is_base) -> str:
                return "1" if is_base else f"{a / b:.2f}"

            out.append(
                f"| `{r.name}` | {r.params / 1e6:.2f} | {r.macs / 1e9:.2f} | {r.train_s:.3f} "
                f"[{r.train_iqr[0]:.3f}-{r.train_iqr[1]:.3f}] | {r.infer_s:.3f} [{r.infer_iqr[0]:.3f}-{r.infer_iqr[1]:.3f}] "
                f"| {_fmt_bytes(r.memory)} | {ratio(r.params, base.params)} | {ratio(r.macs, base.macs)} "
                f"| {ratio(r.train_s, base.train_s)} | {ratio(r.infer_s, base.infer_s)} | {ratio(r.memory, base.memory)} |"
            )
        out.append("")

    seed2d = next((r for r in results if r.plan == "2d" and r.name == OURS[0]), None)
    base2d = next((r for r in results if r.plan == "2d" and r.name == BASELINE), None)
    if seed2d and base2d:
        out += ["## Goals for the default 2D seed net (`mednext_t`)", "",
                "| Goal | Target (ours / nnU-Net) | Measured | Verdict |", "|---|---:|---:|---|"]
        for label, key, a, b in [("Parameters", "params", seed2d.params, base2d.params),
                                 ("MACs", "macs", seed2d.macs, base2d.macs),
                                 ("Train step time", "train", seed2d.train_s, base2d.train_s)]:
            ratio, target = a / b, GOALS[key]
            verdict = "met" if ratio <= target else f"missed by {ratio / target - 1:.1%} ({ratio:.3f}x vs {target}x)"
            out.append(f"| {label} | <= {target} | {ratio:.3f} | {verdict} |")
        out += ["", *NOTES, ""]

    for prof in profiles:
        out += [
            f"## Profile: one training step of `{prof['name']}` ({prof['plan'].upper()})",
            "",
            f"`torch.profiler`, {prof['clock']}, averaged over 2 steps after a warm-up step; total "
            f"{prof['total_ms']:.0f} ms per step (profiler overhead included).",
            "",
            "| Op | ms / step | % | calls / step |",
            "|---|---:|---:|---:|",
        ]
        out += [f"| `{k}` | {ms:.1f} | {pct:.1f} | {n} |" for k, ms, pct, n in prof["top"]]
        conv = prof["conv"]
        kinds = [(k, v) for k, v in conv.items() if k[1] == "*" and k[0] != "phase"]
        if kinds:
            conv_total = sum(v for _, v in kinds)
            full_res = "x".join(map(str, PLANS[prof["plan"]]["patch"]))
            at_full = sum(v for k, v in conv.items() if k[1] != "*" and k[2].endswith(" " + full_res))
            dilated = sum(v for k, v in conv.items() if k[1] != "*" and "dilation" in k[0])
            out += [
                "",
                f"Summary: convolutions (forward + backward) take {conv_total:.0f} ms of the {prof['total_ms']:.0f} ms "
                f"step ({100 * conv_total / prof['total_ms']:.0f} %); "
                + ", ".join(f"{k[0]} {100 * v / conv_total:.0f} %" for k, v in sorted(kinds, key=lambda kv: -kv[1]))
                + f" of that. Convs whose input is at full resolution ({full_res}) take {100 * at_full / conv_total:.0f} %"
                f" of the convolution time; dilated depthwise convs (LA-FFN) {100 * dilated / conv_total:.0f} %.",
            ]
            out += ["", "Convolution time (forward + backward) by kind:", "",
                    "| Kind | ms / step |", "|---|---:|"]
            out += [f"| {k[0]} | {v:.1f} |" for k, v in sorted(kinds, key=lambda kv: -kv[1])]
            detail = sorted(((k, v) for k, v in conv.items() if k[1] != "*" and k[0] != "phase"), key=lambda kv: -kv[1])
            out += ["", "Most expensive convolution configurations (forward + backward):", "",
                    "| Kind | Kernel | Input (channels, size) | ms / step |", "|---|---|---|---:|"]
            out += [f"| {k[0]} | {k[1]} | {k[2]} | {v:.1f} |" for k, v in detail[:10]]
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Benchmark MedNeXt vs nnU-Net's PlainConvUNet.")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--plans", nargs="+", default=list(PLANS), choices=list(PLANS))
    parser.add_argument("--repeats", type=int, default=15, help="timed repetitions per network, 2D (median reported)")
    parser.add_argument("--repeats-3d", type=int, default=3, help="timed repetitions per network, 3D (slow on CPU)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per network first")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--in-channels", type=int, default=1)
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--amp", action="store_true", help="fp16 autocast + GradScaler (CUDA only)")
    parser.add_argument("--channels-last", action="store_true", help="channels_last memory format (CUDA only)")
    parser.add_argument("--profile", nargs="*", default=["mednext_t:2d"], metavar="NAME:PLAN",
                        help="networks to profile for one training step (default mednext_t:2d; none: no value)")
    parser.add_argument("--profile-top", type=int, default=15)
    parser.add_argument("--output", type=Path, default=DOC)
    parser.add_argument("--no-write", action="store_true", help="print the markdown instead of writing it")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda requested but CUDA is not available")
    if device.type != "cuda" and (args.amp or args.channels_last):
        print("note: --amp and --channels-last only apply on CUDA; ignored", file=sys.stderr)
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    command = "python benchmarks/bench_networks.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None
                                                                                         else sys.argv[1:]))
    results = []
    for plan in args.plans:
        print(f"== {plan} ==", flush=True)
        results += run_plan(plan, args, device)
    profiles = []
    for spec in args.profile:
        name, _, plan = spec.partition(":")
        profiles.append(profile_train_step(name, plan or "2d", args, device))
    text = render(results, profiles, args, device, command.strip())
    if args.no_write:
        print(text)
    else:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n", encoding="utf-8")
        print(text)
        print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
