"""Benchmark the default MedNeXt networks against nnU-Net's default ``PlainConvUNet`` on the same plan.

For a 2D plan (224x224, 6 stages, strides 1,2,2,2,2,2) and a 3D plan (64^3, 5 stages, strides 1,2,2,2,2), batch 2,
1 input channel, 4 classes, deep supervision on, every network is built through nnU-Net's own
``get_network_from_plans``:

* ``mednext_t`` (seed MedNeXt, the default), also run with the plain PyTorch ops (``reference ops``: the
  implementation before ``networks/fastops/``, same weights and maths) so one run gives before and after;
* ``mednextv1_s_k3`` (Roy et al. S, kernel 3);
* nnU-Net's ``PlainConvUNet`` with nnU-Net's default plan kwargs (features 32 doubling, capped at 512 in 2D / 320 in
  3D, 2 convs per stage, conv bias, InstanceNorm, LeakyReLU): the baseline of every ratio.

Measured, all in one run:

* params; MACs (``FlopCounterMode``, forward, one sample);
* **train step** (forward, nnU-Net-style deep-supervision cross-entropy, backward, AdamW step) and **inference**
  (``no_grad``, eval, deep supervision off): ``--repeats`` paired repetitions, the networks interleaved in a rotating
  order inside each repetition; the ratio ours / nnU-Net is taken *per repetition* and its median and
  interquartile range are reported (load from other processes hits both members of a pair alike);
* **memory, two ways**: (a) *activation memory*: bytes of the distinct tensors autograd saves for backward in one
  training forward (``saved_tensors_hooks``; deterministic); (b) *step memory*: in a fresh process per network,
  the peak resident set size of two training steps minus the resident size before them (CPU), or
  ``max_memory_allocated`` minus the allocation before them (CUDA): activations, gradients, AdamW state and
  backend workspaces;
* the load average before and after each section;
* ``torch.profiler`` op-level self time of one training step of the default network (2D and 3D), by op and by op
  family;
* with ``--trainer-step``: the full nnU-Net training step of ``nnUNetTrainerMedNeXt`` against
  ``nnUNetTrainerMedNeXtRecipeUNet`` (same recipe, nnU-Net's U-Net) in-process on a planned synthetic dataset with the
  given patch and batch: data loading, forward, loss, backward, clipping + optimizer step, each timed, and a
  profile of each ``train_step``.

Everything goes to ``docs/benchmarks.md`` (``--output``); ``--json`` also writes the raw per-repetition numbers.

Usage::

    python benchmarks/bench_networks.py --threads 1 --trainer-step               # full run (quiet machine)
    python benchmarks/bench_networks.py --tiny --no-write                         # seconds: does it work?
    python benchmarks/bench_networks.py --device cuda --amp --channels-last
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as _dt
import gc
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from nnunetv2_mednext.doctor.plans import PLAIN_CLASS, plain_unet_arch_kwargs, synthetic_topology
from nnunetv2_mednext.networks import get_seg_variant
from nnunetv2_mednext.networks.fastops import reference_ops
from nnunetv2_mednext.networks.memory import cuda_norm_policy
from nnunetv2_mednext.networks.memory import saved_tensor_bytes as shared_saved_tensor_bytes
from nnunetv2_mednext.networks.recompute import recompute_suspended

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
#: sections of DOC written by other benchmarks (``bench_inference.py``): kept, from this marker on, when DOC is rewritten
KEPT_MARKER = "<!-- kept: sections of other benchmarks -->"


def kept_sections(path: Path) -> str:
    """The part of ``path`` from :data:`KEPT_MARKER` on (other benchmarks' sections), or nothing."""
    if not path.is_file():
        return ""
    text = path.read_text(encoding="utf-8")
    at = text.find(KEPT_MARKER)
    return "\n" + text[at:] if at >= 0 else ""
MEDNEXT_CLASS = "nnunetv2_mednext.networks.segmentation.MedNeXtUNet"
OURS = ("mednext_t", "mednextv1_s_k3")
BASELINE = "nnU-Net PlainConvUNet"
REFERENCE_SUFFIX = " (reference ops)"
NO_RECOMPUTE_SUFFIX = " (no recompute)"
SECTIONS = ("fp32", "autocast")
# issue 14's targets, ours / nnU-Net on the same plan: (network, quantity) -> ratio at most
TARGETS = {
    ("mednext_t", "train"): 1.0,
    ("mednext_t", "infer"): 0.8,
    ("mednext_t", "saved"): 1.5,
    ("mednext_t", "rss"): 1.5,
    ("mednextv1_s_k3", "train"): 1.5,
}
# issue 22's targets on the GPU path (autocast), ours / nnU-Net's on the same plan, activation memory
AUTOCAST_TARGETS = {("mednext_t", "saved"): 1.0, ("mednextv1_s_k3", "saved"): 1.5}
QUANTITY_LABEL = {"train": "train step", "infer": "inference", "saved": "activation memory", "rss": "step memory"}

PLANS = {
    "2d": {"patch": (224, 224), "n_stages": 6, "max_features": 512},
    "3d": {"patch": (64, 64, 64), "n_stages": 5, "max_features": 320},
}
TINY_PLANS = {
    "2d": {"patch": (64, 64), "n_stages": 4, "max_features": 512},
    "3d": {"patch": (16, 16, 16), "n_stages": 3, "max_features": 320},
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


def build(name: str, plan: str, in_ch: int, classes: int, **overrides) -> nn.Module:
    """Build through nnU-Net's ``get_network_from_plans`` (deep supervision on, nnU-Net's init)."""
    if name == BASELINE:
        kwargs, imports = plain_arch_kwargs(plan)
        cls = PLAIN_CLASS
    else:
        topo = plan_topology(plan)
        kwargs = get_seg_variant(name).arch_kwargs(
            topo["n_stages"], topo["kernel_sizes"], topo["strides"], topo["conv_op"], topo["features_per_stage"],
            **overrides,
        )
        imports, cls = ["conv_op"], MEDNEXT_CLASS
    return get_network_from_plans(cls, kwargs, imports, in_ch, classes, allow_init=True, deep_supervision=True)


def set_deep_supervision(net: nn.Module, enabled: bool) -> None:
    net.decoder.deep_supervision = enabled


@dataclass(frozen=True)
class Spec:
    """A benchmarked row: a registered variant (or the baseline), arch overrides, plain or fast ops, selective
    recompute on or off, and ``amp`` (autocast: bf16 on a CPU, fp16 with a GradScaler on CUDA)."""

    label: str
    variant: str
    overrides: tuple[tuple[str, object], ...] = ()
    reference_ops: bool = False
    recompute: bool = True
    amp: bool = False

    def build(self, plan: str, in_ch: int, classes: int) -> nn.Module:
        return build(self.variant, plan, in_ch, classes, **dict(self.overrides))

    @contextlib.contextmanager
    def context(self) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            if self.reference_ops:
                stack.enter_context(reference_ops())
            if not self.recompute:
                stack.enter_context(recompute_suspended())
            yield

    def payload(self) -> list:
        return [self.label, self.variant, list(self.overrides), self.reference_ops, self.recompute, self.amp]


def default_specs(networks: list[str], reference: bool) -> list[Spec]:
    """The fp32 section: fast ops (the CPU route), and the default network with the plain ops (what CUDA runs
    without AMP) with and without selective recompute."""
    specs = []
    for name in networks:
        specs.append(Spec(name, name))
        if reference and name == OURS[0]:
            specs.append(Spec(name + REFERENCE_SUFFIX, name, reference_ops=True))
            specs.append(Spec(f"{name} (reference ops, no recompute)", name, reference_ops=True, recompute=False))
    return [*specs, Spec(BASELINE, BASELINE)]


def autocast_specs(networks: list[str]) -> list[Spec]:
    """The GPU-path section: every network under autocast (the fused CPU nodes step aside there), ours with and
    without selective recompute."""
    specs = []
    for name in networks:
        specs += [Spec(name, name, amp=True), Spec(name + NO_RECOMPUTE_SUFFIX, name, recompute=False, amp=True)]
    return [*specs, Spec(BASELINE, BASELINE, amp=True)]


# --------------------------------------------------------------------------------------------------------------------
# measuring
# --------------------------------------------------------------------------------------------------------------------


def count_macs(net: nn.Module, shape: tuple[int, ...]) -> int:
    """Forward MACs of one sample (deep supervision off), counted on a meta-device copy."""
    meta = copy.deepcopy(net).to("meta").eval()
    set_deep_supervision(meta, False)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad(), reference_ops():
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
    ctx: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    opt: torch.optim.Optimizer = field(init=False)
    scaler: torch.amp.GradScaler | None = field(init=False)
    train_times: list[float] = field(default_factory=list)
    infer_times: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        # fused AdamW, as the MedNeXt trainers use it (one kernel per tensor instead of a Python loop of ~10 ops)
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=1e-3, weight_decay=3e-5, eps=1e-4,
                                     fused=self.device.type in ("cpu", "cuda"))
        self.scaler = torch.amp.GradScaler("cuda") if self.amp and self.device.type == "cuda" else None

    def _autocast(self):
        """nnU-Net's CUDA AMP (fp16 + GradScaler); on a CPU bf16, the autocast a CPU runs."""
        dtype = torch.float16 if self.device.type == "cuda" else torch.bfloat16
        return torch.autocast(self.device.type, dtype=dtype, enabled=self.amp)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def train_step(self) -> None:
        self.net.train()
        set_deep_supervision(self.net, True)
        self.opt.zero_grad(set_to_none=True)
        with self.ctx(), self._autocast():
            loss = ds_loss(self.net(self.x), self.targets)
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
            else:
                loss.backward()
        if self.scaler is not None:
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            self.opt.step()

    @torch.no_grad()
    def infer(self) -> None:
        self.net.eval()
        set_deep_supervision(self.net, False)
        with self.ctx(), self._autocast():
            self.net(self.x)

    def timed(self, fn: Callable[[], None]) -> float:
        self._sync()
        t0 = time.perf_counter()
        fn()
        self._sync()
        return time.perf_counter() - t0


def saved_tensor_bytes(runner: Runner, cuda_norms: bool = False) -> int:
    """Bytes of the distinct storages autograd saves for backward in one training forward (weights excluded);
    ``cuda_norms``: under autocast on a CPU, group/layer norms in float32 as on CUDA (``cuda_norm_policy``)."""
    runner.net.train()
    set_deep_supervision(runner.net, True)

    def forward() -> torch.Tensor:
        with runner.ctx(), runner._autocast(), cuda_norm_policy() if cuda_norms else contextlib.nullcontext():
            return ds_loss(runner.net(runner.x), runner.targets)

    return shared_saved_tensor_bytes(forward, list(runner.net.parameters()))


def release_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc ``malloc_trim``).

    Training several different networks in turn fragments glibc's heap: without this, the process kept ~12 GB
    resident after the 3D section (4 networks) while waiting for the trainer-step worker.
    """
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def reset_peak_rss() -> bool:
    """Reset this process's peak resident size (Linux ``clear_refs``); False where that is not possible.

    ``ru_maxrss`` alone is not enough: a child process starts with its parent's high-water mark (fork), so a worker
    started by a big benchmark process would report the parent's peak.
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    """Peak resident size since :func:`reset_peak_rss` (``VmHWM``), else since the process started."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def make_runner(spec: Spec, plan: str, args: argparse.Namespace, device: torch.device) -> Runner:
    shape = (args.batch, args.in_channels, *PLANS[plan]["patch"])
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen)
    y = torch.randint(0, args.classes, (shape[0], *shape[2:]), generator=gen)
    torch.manual_seed(0)
    net = spec.build(plan, args.in_channels, args.classes).to(device)
    xd = x.to(device)
    if args.channels_last and device.type == "cuda":
        fmt = torch.channels_last if len(shape) == 4 else torch.channels_last_3d
        net, xd = net.to(memory_format=fmt), xd.contiguous(memory_format=fmt)
    n_out = PLANS[plan]["n_stages"] - 1
    targets = [t.to(device) for t in ds_targets(y, n_out)]
    amp = spec.amp or (args.amp and device.type == "cuda")
    return Runner(spec.label, net, xd, targets, device, amp, spec.context)


def step_memory(spec: Spec, plan: str, args: argparse.Namespace, device: torch.device) -> int:
    """Peak extra memory of two training steps in this process (call it in a fresh process)."""
    runner = make_runner(spec, plan, args, device)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        base = _rss_bytes()
        reset_peak_rss()
    for _ in range(2):  # the first step creates the gradients and the AdamW state
        runner.train_step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated() - base)
    return int(peak_rss_bytes() - base)


def _worker_argv(args: argparse.Namespace) -> list[str]:
    out = ["--device", args.device, "--batch", str(args.batch), "--in-channels", str(args.in_channels),
           "--classes", str(args.classes), "--threads", str(args.threads)]
    if args.tiny:
        out.append("--tiny")
    if args.amp:
        out.append("--amp")
    if args.channels_last:
        out.append("--channels-last")
    return out


def run_section_isolated(plan: str, section: str, args: argparse.Namespace) -> list[Result]:
    """:func:`run_plan` of one plan and section in a fresh interpreter: training ten networks in turn fragments
    the heap until the process holds tens of GB (its progress goes to this process's stderr)."""
    argv = [*_worker_argv(args), "--repeats", str(args.repeats), "--repeats-3d", str(args.repeats_3d), "--warmup",
            str(args.warmup), "--memory", args.memory, "--networks", *args.networks]
    if not args.reference:
        argv.append("--no-reference")
    payload = json.dumps({"plan": plan, "section": section})
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_section-worker", payload, *argv]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=_thread_env(args.threads))
    if proc.returncode != 0:
        raise SystemExit(f"{plan} {section} section worker failed (exit {proc.returncode})")
    return [Result(**r) for r in json.loads(proc.stdout.strip().splitlines()[-1])]


def step_memory_isolated(spec: Spec, plan: str, args: argparse.Namespace) -> int:
    """:func:`step_memory` in a fresh interpreter (peak RSS is per process)."""
    payload = json.dumps({"spec": spec.payload(), "plan": plan})
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_memory-worker", payload, *_worker_argv(args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_thread_env(args.threads))
    if proc.returncode != 0:
        raise SystemExit(f"step-memory worker for {spec.label} ({plan}) failed:\n{proc.stderr[-3000:]}")
    return int(json.loads(proc.stdout.strip().splitlines()[-1])["bytes"])


def _thread_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


@dataclass
class Result:
    plan: str
    name: str
    params: int
    macs: int
    train: list[float]
    infer: list[float]
    saved: int
    rss: int | None
    train_ratio: list[float] = field(default_factory=list)
    infer_ratio: list[float] = field(default_factory=list)
    section: str = "fp32"
    saved_cuda_norms: int | None = None  # autocast section on a CPU: group/layer norms in float32, as on CUDA


def quartiles(v: list[float]) -> tuple[float, float, float]:
    q = np.percentile(v, [25, 50, 75])
    return float(q[0]), float(q[1]), float(q[2])


def rotated(items: list, shift: int) -> list:
    shift %= max(len(items), 1)
    return items[shift:] + items[:shift]


def run_plan(plan: str, specs: list[Spec], args: argparse.Namespace, device: torch.device,
             section: str = "fp32") -> list[Result]:
    """Paired, interleaved timings of every spec on one plan, plus both memory measures."""
    runners = [make_runner(s, plan, args, device) for s in specs]
    shape = (args.batch, args.in_channels, *PLANS[plan]["patch"])
    info = {r.name: (sum(p.numel() for p in r.net.parameters()), count_macs(r.net, shape)) for r in runners}
    for _ in range(args.warmup):
        for r in runners:
            r.train_step()
            r.infer()
    saved, saved_cuda = {}, {}
    for r in runners:
        saved[r.name] = saved_tensor_bytes(r)
        if r.amp and device.type == "cpu":
            saved_cuda[r.name] = saved_tensor_bytes(r, cuda_norms=True)
        gc.collect()
    repeats = args.repeats if plan == "2d" else args.repeats_3d
    for i in range(repeats):
        for r in rotated(runners, i):
            r.train_times.append(r.timed(r.train_step))
        for r in rotated(runners, i):
            r.infer_times.append(r.timed(r.infer))
        print(f"  {plan} {section} repeat {i + 1}/{repeats}: "
              + ", ".join(f"{r.name} {r.train_times[-1]:.2f}s" for r in runners), flush=True)
    results = [Result(plan, r.name, *info[r.name], r.train_times, r.infer_times, saved[r.name], None, section=section,
                      saved_cuda_norms=saved_cuda.get(r.name)) for r in runners]
    del runners
    release_memory()
    if args.memory == "both":
        for spec, res in zip(specs, results):
            res.rss = step_memory_isolated(spec, plan, args)
            print(f"  {plan} {section} step memory {res.name}: {res.rss / 2**20:.0f} MiB", flush=True)
    base = next(r for r in results if r.name == BASELINE)
    for res in results:
        res.train_ratio = [a / b for a, b in zip(res.train, base.train)]
        res.infer_ratio = [a / b for a, b in zip(res.infer, base.infer)]
    return results


# --------------------------------------------------------------------------------------------------------------------
# profiling
# --------------------------------------------------------------------------------------------------------------------

OP_FAMILIES = [  # first match wins; the key of a profiler event is its aten op (or autograd node) name
    ("GEMM (pointwise convs)", ("aten::mm", "aten::addmm", "aten::bmm", "aten::linear", "aten::matmul")),
    ("convolution (oneDNN / native)", ("mkldnn_convolution", "convolution_backward", "slow_conv", "aten::_convolution",
                                       "aten::convolution", "thnn_conv", "conv_depthwise")),
    ("norm", ("group_norm", "batch_norm", "instance_norm", "layer_norm", "aten::var_mean")),
    ("GELU / activation", ("gelu", "leaky_relu", "relu")),
    ("element-wise + copies", ("aten::add", "aten::mul", "aten::addcmul", "aten::copy_", "aten::fill_", "aten::sub",
                               "aten::div", "aten::cat", "aten::zero_", "aten::clone", "aten::contiguous", "aten::pow",
                               "aten::rsqrt", "aten::sum", "aten::mean", "aten::flip", "aten::constant_pad_nd")),
    ("optimizer", ("Optimizer", "aten::lerp", "aten::sqrt", "aten::addcdiv", "_foreach")),
    ("loss", ("log_softmax", "nll_loss", "cross_entropy")),
]


def op_family(key: str) -> str:
    for family, needles in OP_FAMILIES:
        if any(n in key for n in needles):
            return family
    return "other (autograd, Python, allocation)"


@contextlib.contextmanager
def _profiled(use_cuda: bool, record_shapes: bool = True) -> Iterator:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if use_cuda else [])
    with profile(activities=activities, record_shapes=record_shapes) as prof:
        yield prof


def summarize_profile(prof, steps: int, use_cuda: bool, top: int) -> dict:
    key = "self_device_time_total" if use_cuda else "self_cpu_time_total"
    events = prof.key_averages()
    total = sum(getattr(e, key) for e in events) / steps
    top_ops = sorted(events, key=lambda e: getattr(e, key), reverse=True)[:top]
    rows = [(e.key, getattr(e, key) / steps / 1e3, 100 * getattr(e, key) / steps / max(total, 1e-9), e.count // steps)
            for e in top_ops]
    families: dict[str, float] = defaultdict(float)
    for e in events:
        families[op_family(e.key)] += getattr(e, key) / steps / 1e3
    shaped = sorted(prof.key_averages(group_by_input_shape=True), key=lambda e: getattr(e, key), reverse=True)
    by_shape = [(e.key, _shape_text(e.input_shapes), getattr(e, key) / steps / 1e3, e.count // steps)
                for e in shaped[:top]]
    return {"total_ms": total / 1e3, "top": rows, "families": dict(families), "by_shape": by_shape,
            "clock": "device (CUDA kernels)" if use_cuda else "CPU (self time)"}


def _shape_text(shapes) -> str:
    parts = [("x".join(map(str, s)) if s else "") for s in (shapes or [])[:3]]
    return ", ".join(p for p in parts if p)


def profile_isolated(spec: Spec, plan: str, args: argparse.Namespace) -> dict:
    """:func:`profile_train_step` in a fresh interpreter: the profiler's event records take gigabytes, which a
    process that has already trained every network of the run may not have left."""
    payload = json.dumps({"spec": spec.payload(), "plan": plan})
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_profile-worker", payload, *_worker_argv(args),
           "--profile-top", str(args.profile_top)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_thread_env(args.threads))
    if proc.returncode != 0:
        raise SystemExit(f"profile worker for {spec.label} ({plan}) failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def profile_train_step(spec: Spec, plan: str, args: argparse.Namespace, device: torch.device, steps: int = 2) -> dict:
    """Profile ``steps`` training steps after one warm-up step: top ops, op families, top (op, shape) pairs."""
    runner = make_runner(spec, plan, args, device)
    runner.train_step()
    with _profiled(device.type == "cuda") as prof:
        for _ in range(steps):
            runner.train_step()
    out = summarize_profile(prof, steps, device.type == "cuda", args.profile_top)
    out.update(name=spec.label, plan=plan)
    del runner
    release_memory()
    return out


# --------------------------------------------------------------------------------------------------------------------
# full nnU-Net training step (in a subprocess, on a planned synthetic dataset)
# --------------------------------------------------------------------------------------------------------------------

TRAINERS = ("nnUNetTrainerMedNeXtRecipeUNet", "nnUNetTrainerMedNeXt")


def trainer_step_isolated(args: argparse.Namespace) -> dict:
    """Plan a synthetic 2D dataset, then measure the trainers' steps in a fresh interpreter (nnU-Net reads its
    folder variables at import)."""
    from PIL import Image

    from nnunetv2_mednext.nnunet.pipeline import NnUNetRunner
    from nnunetv2_mednext.nnunet.synthetic import make_synthetic_2d

    h, w = args.trainer_patch
    with tempfile.TemporaryDirectory(prefix="bench_trainer_") as tmp:
        runner = NnUNetRunner(tmp)
        folder = make_synthetic_2d(runner.raw, 990, n_train=args.trainer_cases, n_test=1, size=max(h, w))
        for png in folder.glob("*/*.png"):  # images of exactly the requested patch: nnU-Net plans that patch
            Image.open(png).crop((0, 0, w, h)).save(png)
        t0 = time.perf_counter()
        runner.plan_and_preprocess(990, ("2d",))
        print(f"  planned a synthetic {h}x{w} dataset in {time.perf_counter() - t0:.0f} s", flush=True)
        plans_file = runner.preprocessed / runner.dataset_name(990) / "nnUNetPlans.json"
        plans = json.loads(plans_file.read_text())
        plans["configurations"]["2d"]["batch_size"] = args.trainer_batch  # the patch stays the planned one
        plans_file.write_text(json.dumps(plans, indent=1))
        env = _thread_env(args.threads)
        env.update(runner.env({"nnUNet_n_proc_DA": "0"}))
        payload = json.dumps({"dataset": 990, "repeats": args.trainer_repeats, "top": args.profile_top})
        cmd = [sys.executable, str(Path(__file__).resolve()), "--_trainer-worker", payload, "--threads", str(args.threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise SystemExit(f"trainer-step worker failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])


def _trainer_worker(payload: dict, threads: int) -> dict:
    """In a process whose nnU-Net folder variables point at the planned dataset: time and profile train steps."""
    from nnunetv2.run.run_training import get_trainer_from_args

    trainers = {}
    for name in TRAINERS:  # exactly as nnUNetv2_train builds them (nnU-Net's own trainer lookup)
        t = get_trainer_from_args(str(payload["dataset"]), "2d", "all", name, "nnUNetPlans", device=torch.device("cpu"))
        torch.set_num_threads(threads)  # nnU-Net's -device cpu path is not taken here; keep the benchmark's pin
        t.num_epochs, t.num_iterations_per_epoch = 1, 10_000
        t.on_train_start()
        t.on_train_epoch_start()
        trainers[name] = t
    phases: dict[str, dict[str, list[float]]] = {n: defaultdict(list) for n in trainers}
    batches = {n: next(t.dataloader_train) for n, t in trainers.items()}
    for t, b in zip(trainers.values(), batches.values()):
        t.train_step(b)  # warm-up
    for i in range(payload["repeats"]):
        for name in rotated(list(trainers), i):
            t = trainers[name]
            t0 = time.perf_counter()
            batch = next(t.dataloader_train)
            t1 = time.perf_counter()
            t.train_step(batch)
            t2 = time.perf_counter()
            phases[name]["data"].append(t1 - t0)
            phases[name]["train_step"].append(t2 - t1)
            for k, v in _phase_times(t, batch).items():
                phases[name][k].append(v)
    profiles = {}
    for name, t in trainers.items():
        with _profiled(False) as prof:
            t.train_step(batches[name])
        profiles[name] = summarize_profile(prof, 1, False, payload["top"])
    out = {"phases": {n: dict(v) for n, v in phases.items()}, "profiles": profiles,
           "params": {n: sum(p.numel() for p in t.network.parameters()) for n, t in trainers.items()},
           "threads": torch.get_num_threads(), "patch": list(t.configuration_manager.patch_size),
           "batch": t.configuration_manager.batch_size,
           "n_stages": t.configuration_manager.network_arch_init_kwargs["n_stages"]}
    return out


def _phase_times(trainer, batch: dict) -> dict[str, float]:
    """One more step split into the phases of nnU-Net's ``train_step`` (same operations, timed one by one)."""
    data = batch["data"].to(trainer.device)
    target = [t.to(trainer.device) for t in batch["target"]] if isinstance(batch["target"], list) else batch["target"]
    trainer.optimizer.zero_grad(set_to_none=True)
    t0 = time.perf_counter()
    output = trainer.network(data)
    t1 = time.perf_counter()
    loss = trainer.loss(output, target)
    t2 = time.perf_counter()
    loss.backward()
    t3 = time.perf_counter()
    torch.nn.utils.clip_grad_norm_(trainer.network.parameters(), 12)
    trainer.optimizer.step()
    t4 = time.perf_counter()
    return {"forward": t1 - t0, "loss": t2 - t1, "backward": t3 - t2, "clip_and_step": t4 - t3}


# --------------------------------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------------------------------


NOTES = [
    "## Reading the numbers",
    "",
    "* `mednext_t` and `mednext_t (reference ops)` are the same network with the same weights; the difference is "
    "`networks/fastops/` (channels-last activations, 1x1 convs as GEMMs, faster depthwise backward, fused "
    "autograd nodes that recompute norm and GELU outputs instead of saving them; `docs/architecture.md` section 9). "
    "Their outputs and gradients agree to float rounding (`tests/test_fastops.py`). `(reference ops)` is what a "
    "GPU runs without AMP: plain ops with selective recompute (`networks/recompute.py`); `(reference ops, no "
    "recompute)` is plain autograd, the implementation before both.",
    "* Where the time goes on the CPU route (profiles below): GEMMs of the 1x1 convs on expanded maps, element-wise "
    "passes and copies (norm apply, residual adds, layout changes), depthwise convolutions, and GELU (computed "
    "twice for the maps that are recomputed in backward). None of them dominates; the U-Net's time is ~70 % dense "
    "convolutions.",
    "* The Roy et al. network (`mednextv1_s_k3`) gets the layer-level speed-ups (GEMMs, depthwise backward, norm, "
    "2D-sliced weight gradients of its strided and transposed 3D depthwise convs) and the fused plain block; its "
    "up/down blocks are recomputed branches: the forward of a 3D transposed depthwise conv stays on oneDNN's "
    "generic kernel (150 ms for 64 channels, 32^3 -> 64^3, about 20x the strided conv that reverses it).",
    "* The fused nodes are CPU paths. On a GPU the plain ops run with selective recompute (the GPU-path section "
    "above); measure them there with `--device cuda --amp` or `nnunetv2-mednext doctor`.",
    "",
]


def machine_info(device: torch.device, args: argparse.Namespace) -> list[str]:
    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    lines = [
        f"* Date: {_dt.datetime.now().strftime('%Y-%m-%d %H:%M')}",
        f"* Machine: {platform.machine()}, {os.cpu_count()} logical CPUs ({cpu}), intra-op threads: "
        f"{torch.get_num_threads()} (pinned with `--threads`; subprocesses get `OMP_NUM_THREADS` = the same)",
        f"* Python {platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}",
    ]
    if device.type == "cuda":
        lines.append(f"* GPU: {torch.cuda.get_device_name(device)}, AMP fp16: {args.amp}, channels_last: "
                     f"{args.channels_last}")
    return lines


def _mib(v: int | None) -> str:
    return "—" if v is None else f"{v / 2**20:.0f}"


def _fmt_ratio(values: list[float]) -> str:
    lo, med, hi = quartiles(values)
    return f"{med:.2f} [{lo:.2f}-{hi:.2f}]"


def _fmt_time(values: list[float]) -> str:
    lo, med, hi = quartiles(values)
    return f"{med:.3f} [{lo:.3f}-{hi:.3f}]"


def verdicts(results: list[Result], section: str = "fp32") -> list[tuple[str, str, float, float, bool]]:
    """(network, quantity, plan, measured median ratio, target, met) for every target that was measured."""
    out = []
    targets = TARGETS if section == "fp32" else AUTOCAST_TARGETS
    for plan in PLANS:
        rows = {r.name: r for r in results if r.plan == plan and r.section == section}
        base = rows.get(BASELINE)
        if base is None:
            continue
        for (name, quantity), target in targets.items():
            r = rows.get(name)
            if r is None:
                continue
            if quantity in ("train", "infer"):
                value = quartiles(r.train_ratio if quantity == "train" else r.infer_ratio)[1]
            elif quantity == "saved":
                value = r.saved / base.saved
            elif r.rss is not None and base.rss:
                value = r.rss / base.rss
            else:
                continue
            out.append((name, f"{QUANTITY_LABEL[quantity]} ({plan.upper()})", value, target, value <= target))
    return out


def render(results: list[Result], profiles: list[dict], trainer: dict | None, args: argparse.Namespace,
           device: torch.device, command: str, loads: dict[str, tuple[float, float]]) -> str:
    mem_b = ("peak `max_memory_allocated` minus the allocation before two training steps" if device.type == "cuda"
             else "peak resident set size minus the resident size before two training steps, in a fresh process")
    out = [
        "# Network benchmark: MedNeXt vs nnU-Net's default U-Net",
        "",
        "Generated by `benchmarks/bench_networks.py`; the numbers below are from one run of:",
        "",
        "```bash",
        command,
        "```",
        "",
        *machine_info(device, args),
        "* Load average (1 min) before / after each section: "
        + "; ".join(f"{k} {a:.2f} / {b:.2f}" for k, (a, b) in loads.items()),
        "",
        "Setup: every network is built through nnU-Net's `get_network_from_plans` (deep supervision on, nnU-Net's "
        f"weight init) for the same plan. Batch {args.batch}, {args.in_channels} input channel(s), {args.classes} "
        f"classes, fp32{' + AMP fp16' if args.amp and device.type == 'cuda' else ''}. Baseline: `PlainConvUNet` with "
        "nnU-Net's default plan kwargs (features 32 doubling, capped at 512 in 2D and 320 in 3D; 2 convs per stage in "
        "encoder and decoder; conv bias; InstanceNorm; LeakyReLU). "
        f"`{OURS[0]}{REFERENCE_SUFFIX}` is the same network and weights run with the plain PyTorch ops "
        "(`NNUNETV2_MEDNEXT_FAST_OPS=0`): the implementation before `networks/fastops/`.",
        "",
        "* **Params**: all parameters. **GMACs**: forward, one sample, deep supervision off, `FlopCounterMode` "
        "FLOPs / 2 (convolutions and matmuls only).",
        "* **Train step**: forward + nnU-Net-style deep-supervision CE + backward + AdamW step. **Inference**: one "
        f"`no_grad` forward, eval mode, deep supervision off. {args.repeats} (2D) / {args.repeats_3d} (3D) paired "
        f"repetitions after {args.warmup} warm-up step(s); in each repetition every network runs once, in an order "
        "that rotates between repetitions. Times: median [interquartile range] in seconds.",
        "* **Ratio**: ours / nnU-Net *per repetition* (the two members of a pair ran seconds apart, under the same "
        "load), then the median [interquartile range] of those ratios.",
        "* **Activation memory**: bytes of the tensors autograd saves for backward in one training forward "
        "(`saved_tensors_hooks`, weights excluded). **Step memory**: " + mem_b + " (activations, gradients, AdamW "
        "state, workspaces).",
        "",
    ]
    for plan in PLANS:
        rows = [r for r in results if r.plan == plan and r.section == "fp32"]
        if not rows:
            continue
        p = PLANS[plan]
        out += [
            f"## {plan.upper()}: patch {'x'.join(map(str, p['patch']))}, {p['n_stages']} stages, strides "
            f"{','.join(['1'] + ['2'] * (p['n_stages'] - 1))}",
            "",
            "| Network | Params (M) | GMACs | Train step (s) | Train ratio | Inference (s) | Inference ratio | "
            "Activation memory (MiB) | ratio | Step memory (MiB) | ratio |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        base = next(r for r in rows if r.name == BASELINE)
        for r in rows:
            is_base = r is base
            rss_ratio = "—" if r.rss is None or not base.rss else ("1" if is_base else f"{r.rss / base.rss:.2f}")
            out.append(
                f"| `{r.name}` | {r.params / 1e6:.2f} | {r.macs / 1e9:.2f} | {_fmt_time(r.train)} | "
                f"{'1' if is_base else _fmt_ratio(r.train_ratio)} | {_fmt_time(r.infer)} | "
                f"{'1' if is_base else _fmt_ratio(r.infer_ratio)} | {_mib(r.saved)} | "
                f"{'1' if is_base else f'{r.saved / base.saved:.2f}'} | {_mib(r.rss)} | {rss_ratio} |"
            )
        out.append("")

    checks = verdicts(results)
    if checks:
        out += ["## Targets (issue 14)", "", "| Network | Quantity | Target (ours / nnU-Net) | Measured | Verdict |",
                "|---|---|---:|---:|---|"]
        for name, quantity, value, target, met in checks:
            verdict = "met" if met else f"missed by {value / target - 1:.0%}"
            out.append(f"| `{name}` | {quantity} | <= {target} | {value:.2f} | {verdict} |")
        out.append("")

    out += render_autocast(results, args, device)
    out += NOTES
    for prof in profiles:
        out += [
            f"## Profile: one training step of `{prof['name']}` ({prof['plan'].upper()})",
            "",
            f"`torch.profiler`, {prof['clock']}, averaged over 2 steps after a warm-up step; total "
            f"{prof['total_ms']:.0f} ms per step (profiler overhead included).",
            "",
            "| Op family | ms / step | % |",
            "|---|---:|---:|",
        ]
        for fam, ms in sorted(prof["families"].items(), key=lambda kv: -kv[1]):
            out.append(f"| {fam} | {ms:.1f} | {100 * ms / max(prof['total_ms'], 1e-9):.1f} |")
        out += ["", "| Op | ms / step | % | calls / step |", "|---|---:|---:|---:|"]
        out += [f"| `{k}` | {ms:.1f} | {pct:.1f} | {n} |" for k, ms, pct, n in prof["top"]]
        out += ["", "Most expensive (op, input shapes) pairs:", "", "| Op | Inputs | ms / step | calls / step |",
                "|---|---|---:|---:|"]
        out += [f"| `{k}` | {s} | {ms:.1f} | {n} |" for k, s, ms, n in prof["by_shape"]]
        out.append("")

    if trainer:
        out += render_trainer(trainer)
    return "\n".join(out)


def recompute_cost(results: list[Result], plan: str, name: str) -> list[float]:
    """Per-repetition step time of ``name`` over the same network without selective recompute (autocast rows)."""
    rows = {r.name: r for r in results if r.plan == plan and r.section == "autocast"}
    on, off = rows.get(name), rows.get(name + NO_RECOMPUTE_SUFFIX)
    return [] if on is None or off is None else [a / b for a, b in zip(on.train, off.train)]


def render_autocast(results: list[Result], args: argparse.Namespace, device: torch.device) -> list[str]:
    """The "GPU path, measured on CPU" section: every network under autocast, ours with and without recompute."""
    rows_all = [r for r in results if r.section == "autocast"]
    if not rows_all:
        return []
    cpu = device.type == "cpu"
    dtype = "bf16" if cpu else "fp16 + GradScaler"
    out = [
        "## GPU path, measured on " + ("CPU" if cpu else "this GPU"),
        "",
        f"nnU-Net's trainers run the forward under autocast on a GPU; there the fused CPU nodes of "
        f"`networks/fastops/` step aside and the plain PyTorch ops run, with selective recompute "
        f"(`networks/recompute.py`: each residual branch keeps only its input and recomputes its body in backward; "
        f"`NNUNETV2_MEDNEXT_RECOMPUTE=0` turns it off, the `{NO_RECOMPUTE_SUFFIX.strip(' ()')}` rows). Same plans, "
        f"batch and loss as above, every row under {dtype} autocast, the U-Net too.",
        "",
        "* **Activation memory**: bytes autograd saves for backward in one training forward (the accounting above).",
    ]
    if cpu:
        out += [
            "* **CUDA norms**: the same, with `group_norm`/`layer_norm` run in float32 as CUDA autocast runs them "
            "(CPU autocast keeps them in bf16; `networks.memory.cuda_norm_policy`): the figure a GPU keeps. The "
            "U-Net's instance norms are not in CUDA's float32 list, so its two figures agree.",
            "* **Train step**: CPU time under bf16 autocast (bf16 GEMMs are emulated on CPUs without AVX-512 BF16: "
            "the absolute times say little about a GPU; the recompute's cost does).",
        ]
    out.append("")
    for plan in PLANS:
        rows = [r for r in rows_all if r.plan == plan]
        if not rows:
            continue
        base = next(r for r in rows if r.name == BASELINE)
        p = PLANS[plan]
        cuda_head = " CUDA norms (MiB) | ratio |" if cpu else ""
        out += [
            f"### {plan.upper()}: patch {'x'.join(map(str, p['patch']))}, {p['n_stages']} stages, {dtype} autocast",
            "",
            "| Network | Train step (s) | Train ratio | Activation memory (MiB) | ratio |" + cuda_head
            + " Step memory (MiB) | ratio |",
            "|---|---:|---:|---:|---:|" + ("---:|---:|" if cpu else "") + "---:|---:|",
        ]
        for r in rows:
            is_base = r is base
            cuda = ""
            if cpu:
                c, cb = r.saved_cuda_norms, base.saved_cuda_norms
                cuda = f" {_mib(c)} | {'1' if is_base else (f'{c / cb:.2f}' if c and cb else '—')} |"
            rss_ratio = "—" if r.rss is None or not base.rss else ("1" if is_base else f"{r.rss / base.rss:.2f}")
            out.append(
                f"| `{r.name}` | {_fmt_time(r.train)} | {'1' if is_base else _fmt_ratio(r.train_ratio)} | "
                f"{_mib(r.saved)} | {'1' if is_base else f'{r.saved / base.saved:.2f}'} |{cuda} {_mib(r.rss)} | "
                f"{rss_ratio} |"
            )
        out.append("")
        costs = [(n, recompute_cost(results, plan, n)) for n in OURS]
        costs = [(n, c) for n, c in costs if c]
        if costs:
            out += ["Step-time cost of selective recompute (with / without, paired per repetition): "
                    + "; ".join(f"`{n}` {_fmt_ratio(c)}" for n, c in costs) + ".", ""]
    checks = verdicts(results, "autocast")
    if checks:
        out += ["### Targets (issue 22): activation memory on the autocast path", "",
                "| Network | Quantity | Target (ours / nnU-Net) | Measured | Verdict |", "|---|---|---:|---:|---|"]
        for name, quantity, value, target, met in checks:
            verdict = "met" if met else f"missed by {value / target - 1:.0%}"
            out.append(f"| `{name}` | {quantity} | <= {target} | {value:.2f} | {verdict} |")
        if cpu:
            cuda_rows = []
            for plan in PLANS:
                rows = {r.name: r for r in rows_all if r.plan == plan}
                base = rows.get(BASELINE)
                for (name, _), target in AUTOCAST_TARGETS.items():
                    r = rows.get(name)
                    if r and base and r.saved_cuda_norms and base.saved_cuda_norms:
                        v = r.saved_cuda_norms / base.saved_cuda_norms
                        cuda_rows.append(f"| `{name}` | activation memory, CUDA norms ({plan.upper()}) | <= {target} | "
                                         f"{v:.2f} | {'met' if v <= target else f'missed by {v / target - 1:.0%}'} |")
            out += cuda_rows
        out.append("")
    return out


def render_trainer(tr: dict) -> list[str]:
    names = list(tr["phases"])
    base, ours = names[0], names[-1]
    patch = "x".join(map(str, tr["patch"]))
    out = [
        "## Full nnU-Net training step",
        "",
        f"`{ours}` against `{base}` (the same recipe: AdamW, warm-up + poly, gradient clipping at 12, deep "
        f"supervision, nnU-Net's Dice + CE loss; only the network differs), built in-process by nnU-Net from one "
        f"planned synthetic 2D dataset with patch {patch} ({tr['n_stages']} stages, as nnU-Net planned it) and "
        f"batch {tr['batch']}, `nnUNet_n_proc_DA=0` (data "
        f"augmentation in the main process, as in the CPU runs of `docs/results.md`), {tr['threads']} intra-op "
        "thread(s). Median [interquartile range] over paired, interleaved steps; `train_step` is nnU-Net's own "
        "method, the phases come from one more step split into nnU-Net's operations.",
        "",
        "| Phase | " + " | ".join(f"`{n}` (s)" for n in names) + " | ratio |",
        "|---|" + "---:|" * (len(names) + 1),
    ]
    for phase in ("data", "train_step", "forward", "loss", "backward", "clip_and_step"):
        vals = [tr["phases"][n][phase] for n in names]
        ratio = [a / b for a, b in zip(tr["phases"][ours][phase], tr["phases"][base][phase])]
        out.append(f"| {phase} | " + " | ".join(_fmt_time(v) for v in vals) + f" | {_fmt_ratio(ratio)} |")
    total = {n: [a + b for a, b in zip(tr["phases"][n]["data"], tr["phases"][n]["train_step"])] for n in names}
    ratio = [a / b for a, b in zip(total[ours], total[base])]
    out.append("| data + train_step | " + " | ".join(_fmt_time(total[n]) for n in names) + f" | {_fmt_ratio(ratio)} |")
    for name in names:
        prof = tr["profiles"][name]
        out += ["", f"Profile of one `train_step` of `{name}` ({prof['total_ms']:.0f} ms, CPU self time):", "",
                "| Op family | ms | % |", "|---|---:|---:|"]
        for fam, ms in sorted(prof["families"].items(), key=lambda kv: -kv[1]):
            out.append(f"| {fam} | {ms:.1f} | {100 * ms / max(prof['total_ms'], 1e-9):.1f} |")
    out.append("")
    return out


# --------------------------------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------------------------------


def _portable_arg(arg: str) -> str:
    """One command-line argument as the report shows it: an absolute path of this machine becomes a path relative
    to the repository, or ``$TMPDIR/<name>`` outside it (reports never name this machine's folders)."""
    if not os.path.isabs(arg):
        return shlex.quote(arg)
    repo = Path(__file__).resolve().parents[1]
    path = Path(arg).resolve()
    if path.is_relative_to(repo):
        return shlex.quote(str(path.relative_to(repo)))
    return f'"$TMPDIR/{path.name}"'


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmark MedNeXt vs nnU-Net's PlainConvUNet.")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--plans", nargs="+", default=list(PLANS), choices=list(PLANS))
    parser.add_argument("--networks", nargs="+", default=list(OURS), help="registered variants compared with nnU-Net")
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS,
                        help="fp32: fast ops (the CPU route) and plain ops; autocast: the GPU path (bf16 on a CPU)")
    parser.add_argument("--no-reference", dest="reference", action="store_false",
                        help=f"skip the `{OURS[0]}{REFERENCE_SUFFIX}` row")
    parser.add_argument("--repeats", type=int, default=11, help="paired repetitions, 2D (at least 9 for the docs)")
    parser.add_argument("--repeats-3d", type=int, default=9, help="paired repetitions, 3D")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per network first")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--in-channels", type=int, default=1)
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads, pinned (default 1)")
    parser.add_argument("--memory", choices=["both", "saved"], default="both",
                        help="'saved': activation memory only (no step-memory subprocesses)")
    parser.add_argument("--amp", action="store_true", help="fp16 autocast + GradScaler (CUDA only)")
    parser.add_argument("--channels-last", action="store_true", help="channels_last memory format (CUDA only)")
    parser.add_argument("--profile", nargs="*", default=["mednext_t:2d", "mednext_t:3d", "mednextv1_s_k3:3d"],
                        metavar="NAME:PLAN",
                        help="networks to profile for one training step (none: give the flag without values)")
    parser.add_argument("--profile-top", type=int, default=15)
    parser.add_argument("--trainer-step", action="store_true",
                        help="also measure nnU-Net's full training step (plans a synthetic dataset; minutes)")
    parser.add_argument("--trainer-patch", type=int, nargs=2, default=[256, 224], metavar=("H", "W"),
                        help="patch of the trainer-step plan (default: the ACDC plan of docs/results.md)")
    parser.add_argument("--trainer-batch", type=int, default=14, help="batch of the trainer-step plan (ACDC: 14)")
    parser.add_argument("--trainer-repeats", type=int, default=9)
    parser.add_argument("--trainer-cases", type=int, default=8, help="synthetic training cases to plan")
    parser.add_argument("--tiny", action="store_true", help="tiny plans and few repetitions: proves the script works")
    parser.add_argument("--output", type=Path, default=DOC)
    parser.add_argument("--json", type=Path, default=None, help="also write the raw measurements as JSON")
    parser.add_argument("--no-write", action="store_true", help="print the markdown instead of writing it")
    parser.add_argument("--_memory-worker", dest="memory_worker", help=argparse.SUPPRESS)
    parser.add_argument("--_trainer-worker", dest="trainer_worker", help=argparse.SUPPRESS)
    parser.add_argument("--_profile-worker", dest="profile_worker", help=argparse.SUPPRESS)
    parser.add_argument("--_section-worker", dest="section_worker", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def apply_tiny(args: argparse.Namespace) -> None:
    """Tiny plans and settings (CI): the code paths of a full run in seconds."""
    PLANS.update(copy.deepcopy(TINY_PLANS))
    args.repeats, args.repeats_3d, args.warmup = min(args.repeats, 2), min(args.repeats_3d, 2), min(args.warmup, 1)
    args.trainer_patch, args.trainer_batch = [32, 32], 2
    args.trainer_repeats, args.trainer_cases = min(args.trainer_repeats, 2), min(args.trainer_cases, 4)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.tiny:
        apply_tiny(args)
    torch.set_num_threads(args.threads)
    if args.memory_worker:
        payload = json.loads(args.memory_worker)
        label, variant, overrides, ref, recompute, amp = payload["spec"]
        spec = Spec(label, variant, tuple(tuple(o) for o in overrides), ref, recompute, amp)
        print(json.dumps({"bytes": step_memory(spec, payload["plan"], args, torch.device(args.device))}))
        return {}
    if args.section_worker:
        payload = json.loads(args.section_worker)
        specs = (default_specs(args.networks, args.reference) if payload["section"] == "fp32"
                 else autocast_specs(args.networks))
        stdout, sys.stdout = sys.stdout, sys.stderr  # progress lines to stderr, the result alone to stdout
        try:
            rows = run_plan(payload["plan"], specs, args, torch.device(args.device), section=payload["section"])
        finally:
            sys.stdout = stdout
        print(json.dumps([r.__dict__ for r in rows]))
        return {}
    if args.profile_worker:
        payload = json.loads(args.profile_worker)
        spec = Spec(*payload["spec"][:2], tuple(tuple(o) for o in payload["spec"][2]), *payload["spec"][3:])
        print(json.dumps(profile_train_step(spec, payload["plan"], args, torch.device(args.device))))
        return {}
    if args.trainer_worker:
        print(json.dumps(_trainer_worker(json.loads(args.trainer_worker), args.threads)))
        return {}

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda requested but CUDA is not available")
    if device.type != "cuda" and (args.amp or args.channels_last):
        print("note: --amp and --channels-last only apply on CUDA; ignored", file=sys.stderr)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    given = argv if argv is not None else sys.argv[1:]
    command = ("python benchmarks/bench_networks.py " + " ".join(_portable_arg(a) for a in given)).strip()
    results: list[Result] = []
    loads: dict[str, tuple[float, float]] = {}
    for plan in args.plans:
        if "fp32" in args.sections:
            print(f"== {plan} ==", flush=True)
            before = os.getloadavg()[0]
            results += run_section_isolated(plan, "fp32", args)
            loads[plan.upper()] = (before, os.getloadavg()[0])
        if "autocast" in args.sections:
            print(f"== {plan} autocast ==", flush=True)
            before = os.getloadavg()[0]
            results += run_section_isolated(plan, "autocast", args)
            loads[f"{plan.upper()} autocast"] = (before, os.getloadavg()[0])
    profiles = []
    for item in args.profile:
        name, _, plan = item.partition(":")
        if (plan or "2d") in args.plans:
            before = os.getloadavg()[0]
            profiles.append(profile_isolated(Spec(name, name), plan or "2d", args))
            loads[f"profile {name} {(plan or '2d').upper()}"] = (before, os.getloadavg()[0])
    trainer = None
    if args.trainer_step:
        if device.type != "cpu":
            raise SystemExit("--trainer-step measures the CPU training step; run it with --device cpu")
        print("== nnU-Net training step ==", flush=True)
        before = os.getloadavg()[0]
        trainer = trainer_step_isolated(args)
        loads["trainer step"] = (before, os.getloadavg()[0])
    text = render(results, profiles, trainer, args, device, command, loads)
    raw = {"command": command, "results": [r.__dict__ for r in results], "profiles": profiles, "trainer": trainer,
           "loads": loads}
    if args.json:
        args.json.write_text(json.dumps(raw, indent=1), encoding="utf-8")
    if args.no_write:
        print(text)
    else:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n" + kept_sections(args.output), encoding="utf-8")
        print(text)
        print(f"\nwrote {args.output}")
    return raw


if __name__ == "__main__":
    main()
