"""What each 2D classifier costs: parameters, MACs per image, training-step and inference time on CPU (images/s),
MedNeXt (fast and reference ops) against timm's ResNet, ConvNeXt and EfficientNet, measured in one process as paired
repetitions (ratios to ``resnet18``).

One repetition times one training step (forward, cross-entropy, backward, AdamW step) and one inference forward of
every network in turn, on the same random batch; ratios are taken per repetition, then the median and interquartile
range are reported, so slow phases of the machine hit every network alike. Threads are pinned (``--threads``).

    python benchmarks/bench_classifiers.py --size 224 --batch 32 --repeats 7 --threads 1 --classes 2 \
        --models mednext_cls_t mednext_cls_s resnet18 resnet50 convnext_atto efficientnet_b0
    python benchmarks/bench_classifiers.py --tiny          # proves the script works (CI)
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

import torch
from torch import nn

BASELINE = "resnet18"
DEFAULT_MODELS = ("mednext_cls_t", "mednext_cls_t (reference ops)", BASELINE, "convnext_atto")


def build(name: str, in_chans: int, classes: int, tiny: bool) -> tuple[nn.Module, bool]:
    """The network called ``name`` (``(reference ops)`` suffix: the same MedNeXt run by the plain PyTorch ops)."""
    from nnunetv2_mednext.classification.models import build_classifier

    base = name.replace(" (reference ops)", "")
    kwargs = {"dims": [8, 16, 24, 32], "depths": [1, 1, 1, 1]} if tiny and base.startswith("mednext") else {}
    torch.manual_seed(0)
    return build_classifier(base, in_chans, classes, **kwargs), base != name


def step_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor, reference: bool) -> tuple[Callable, Callable]:
    from nnunetv2_mednext.networks.fastops import reference_ops

    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()

    def ctx():
        return reference_ops() if reference else torch.enable_grad()

    def train() -> None:
        model.train()
        with ctx():
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
            opt.step()

    def infer() -> None:
        model.eval()
        with ctx(), torch.inference_mode():
            model(x)

    return train, infer


def macs_per_image(model: nn.Module, in_chans: int, size: int) -> float:
    """Multiply-accumulates of one forward pass of one image (PyTorch's FLOP counter: convolutions and matrix
    products, 2 FLOPs per MAC; norms and activations are not counted, as in the usual tables)."""
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, in_chans, size, size))
    return counter.get_total_flops() / 2


def _timed(fn: Callable) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def quartiles(values: list[float]) -> tuple[float, float, float]:
    v = sorted(values)
    if len(v) < 4:
        return statistics.median(v), v[0], v[-1]
    q = statistics.quantiles(v, n=4)
    return statistics.median(v), q[0], q[2]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--in-chans", type=int, default=3)
    p.add_argument("--classes", type=int, default=3)
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--tiny", action="store_true", help="small inputs and networks, 2 repetitions")
    args = p.parse_args(argv)
    if BASELINE not in args.models:
        p.error(f"--models must include the baseline {BASELINE}")
    if args.tiny:
        args.size, args.batch, args.repeats, args.warmup = 32, 4, 2, 1
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, args.in_chans, args.size, args.size, generator=g)
    y = torch.randint(0, args.classes, (args.batch,), generator=g)
    fns, params, macs = {}, {}, {}
    for name in args.models:
        model, reference = build(name, args.in_chans, args.classes, args.tiny)
        params[name] = sum(q.numel() for q in model.parameters())
        macs[name] = macs_per_image(model, args.in_chans, args.size)
        fns[name] = step_fn(model, x, y, reference)
        for _ in range(args.warmup):
            fns[name][0]()
            fns[name][1]()
    times = {n: ([], []) for n in args.models}
    for _ in range(args.repeats):
        for name in args.models:
            times[name][0].append(_timed(fns[name][0]))
            times[name][1].append(_timed(fns[name][1]))
    load_after = os.getloadavg()[0]

    def ratio(name: str, k: int) -> str:
        r = [a / b for a, b in zip(times[name][k], times[BASELINE][k])]
        med, lo, hi = quartiles(r)
        return f"{med:.2f} [{lo:.2f}-{hi:.2f}]"

    lines = [
        f"{args.size}x{args.size} input, {args.in_chans} channels, batch {args.batch}, {args.repeats} paired "
        f"repetitions, torch {torch.__version__}, {args.threads} thread(s), {platform.machine()}, "
        f"load average (1 min) before / after {load_before:.2f} / {load_after:.2f}",
        "",
        "| network | params (M) | train step s (median) | train ratio | inference s (median) | inference ratio | "
        f"GMACs / image at {args.size} | train images / s | inference images / s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in args.models:
        train_s, infer_s = statistics.median(times[name][0]), statistics.median(times[name][1])
        lines.append(f"| `{name}` | {params[name] / 1e6:.2f} | {train_s:.3f} | {ratio(name, 0)} | {infer_s:.3f} | "
                     f"{ratio(name, 1)} | {macs[name] / 1e9:.3f} | {args.batch / train_s:.1f} | "
                     f"{args.batch / infer_s:.1f} |")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
