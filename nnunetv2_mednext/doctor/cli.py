"""The command line of the device check: ``nnunetv2-mednext doctor``, ``python -m nnunetv2_mednext.doctor`` and
``benchmarks/device_check.py`` take the same options (:func:`add_arguments`)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

from nnunetv2_mednext.errors import MedNeXtUserError

from .profiles import NETS, PROFILES, SECTIONS, WORKER_FLAG

DESCRIPTION = "Device check: do the GPU paths work, and how fast (CPU subset without CUDA)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--out", default="device_check",
                        help="folder for device_check.json/.md (default ./device_check)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier report in --out")
    parser.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto",
                        help="auto: CUDA when available, else the CPU subset")
    parser.add_argument("--quick", action="store_true", help="CPU subset at CI size (about a minute on 2 cores)")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="time budget in seconds (default: 460 GPU, 2400 CPU, 270 --quick); what does not fit is "
                             "skipped and listed")
    parser.add_argument("--compile", choices=["try", "off"], default="try",
                        help="try: compile where inductor can run (CUDA; CPU with a C++ compiler), in a child process "
                             "under a timeout")
    parser.add_argument("--skip", nargs="+", default=[], choices=list(SECTIONS), help="sections to leave out")
    parser.add_argument("--nets", nargs="+", default=None, choices=list(NETS), help="networks (default: all four)")


def run(args: argparse.Namespace, argv: Sequence[str] = ()) -> int:
    """Run the check; exit code 0 when nothing failed (skips and planner flags are reported, not failures)."""
    import torch

    from .check import run_check
    from .report import attention, write_report

    out_dir = Path(args.out)
    if (out_dir / "device_check.json").exists() and not args.overwrite:
        raise MedNeXtUserError(f"{out_dir} already holds a device check report; choose another --out or pass "
                               "--overwrite")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise MedNeXtUserError("--device cuda: no CUDA device is visible to torch (check the driver and "
                               "CUDA_VISIBLE_DEVICES), or run the CPU subset with --device cpu")
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    if args.quick and device.type == "cuda":
        raise MedNeXtUserError("--quick is the CI-sized CPU subset; drop it on a GPU, or add --device cpu")
    profile = PROFILES["gpu" if device.type == "cuda" else "quick" if args.quick else "cpu"]
    if args.budget_s is not None:
        if args.budget_s <= 0:
            raise MedNeXtUserError(f"--budget-s must be positive, got {args.budget_s}")
        profile = dataclasses.replace(profile, budget_s=args.budget_s)
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"device check: {'GPU ' + torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU subset'}, "
          f"profile {profile.name}, budget {profile.budget_s:.0f} s", flush=True)
    report = run_check(profile, device, out_dir, argv, args.skip, args.nets, args.compile,
                       log=lambda s: print(s, flush=True), progress=lambda r: write_report(r, out_dir))
    js, md = write_report(report, out_dir)
    fails, attn = report.failures(), attention(report)
    print(f"\n{'FAIL' if fails else 'PASS'}: {len(fails)} failure(s), {len(attn)} attention, "
          f"{len(report.skipped)} skipped")
    for line in fails:
        print(f"  failure: {line}")
    for line in attn:
        print(f"  attention: {line}")
    for s in report.skipped:
        print(f"  skipped: {s['what']}: {s['why']}")
    if report.planner:
        print("\nplanner memory model:")
        for line in report.refit:
            print(f"  {line}")
    if report.routes_best:
        print("\nfastest routes (defaults unchanged):")
        for b in report.routes_best:
            print(f"  {b['net']} {b['config']}: {b['verdict']}" + (f"; setting: {b['setting']}" if b.get("choice")
                                                                     else ""))
    print(f"\nwrote {js} and {md}")
    return 1 if fails else 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == [WORKER_FLAG]:
        from .child import worker_main

        profile_name, device_name, result_file, *keys = argv[1:]
        worker_main(profile_name, device_name, Path(result_file), keys)
        return 0
    parser = argparse.ArgumentParser(prog="device_check", description=DESCRIPTION)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args, argv)
    except MedNeXtUserError as e:
        print(f"device_check: error: {e}", file=sys.stderr)
        return 2
