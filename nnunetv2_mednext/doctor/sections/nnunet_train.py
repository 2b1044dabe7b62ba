"""Section ``nnunet_train``: the stock ``nnUNetv2_train`` on a synthetic dataset, ``-num_gpus 2`` when two GPUs
are visible (DDP); with one GPU only when the budget allows."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from .. import amp as gpu
from ..findings import Report
from .base import Context, Section, Skip, status_cell, table


def nnunet_train_run(out_dir: Path, gpus: int, timeout_s: float, device: str = "cuda") -> dict:
    """Stock ``nnUNetv2_train`` (``nnUNetTrainerMedNeXt_tiny``, fold 0) on a synthetic 3D dataset with ``gpus`` GPUs.

    The 1-GPU run compiles, as nnU-Net does by default on CUDA. The 2-GPU run keeps compile off: DDP with batch 1 per
    GPU plus torch.compile and deep supervision is a crash nnU-Net itself warns about.
    """
    from nnunetv2_mednext.nnunet.pipeline import NnUNetRunner, nnunet_command
    from nnunetv2_mednext.nnunet.synthetic import make_synthetic_3d

    trainer = "nnUNetTrainerMedNeXt_tiny"
    compile_flag = "1" if gpus == 1 else "0"
    row: dict[str, Any] = {"net": "mednext_t", "config": "3d_fullres", "gpus": gpus, "trainer": trainer,
                           "nnUNet_compile": compile_flag}
    t0 = time.perf_counter()
    try:
        runner = NnUNetRunner(Path(tempfile.mkdtemp(prefix="mednext_doctor_train_")), device=device)
        make_synthetic_3d(runner.raw, 991, n_train=6, n_test=1, shape=(32, 64, 64))
        runner.plan_and_preprocess(991, ("3d_fullres",))
        argv = [nnunet_command("nnUNetv2_train"), "991", "3d_fullres", "0", "-tr", trainer, "-device", device,
                "-num_gpus", str(gpus)]
        env = runner.env({"nnUNet_compile": compile_flag})
        res = gpu.run_guarded(argv, timeout_s - (time.perf_counter() - t0), env=env,
                              log_path=out_dir / f"nnunet_train_{gpus}gpu.log")
        fold = runner.results / runner.dataset_name(991) / f"{trainer}__nnUNetPlans__3d_fullres" / "fold_0"
        final = (fold / "checkpoint_final.pth").exists()
        logs = "\n".join(p.read_text() for p in fold.glob("training_log_*.txt"))
        nan = any("nan" in line.lower() for line in logs.splitlines() if "loss" in line.lower())
        row.update(checkpoint_final=final, nan_in_log=nan)
        if res.status == "ok" and final and not nan:
            row["status"] = "ok"
        else:
            row.update(status="fail", reason=f"nnUNetv2_train {res.status} (exit {res.returncode}); checkpoint_final "
                       f"{'written' if final else 'missing'}; NaN loss in log: {nan}; "
                       + (res.tail.splitlines()[-1] if res.tail else ""))
    except Exception as e:
        row.update(status="fail", reason=str(e).strip().splitlines()[0] if str(e) else type(e).__name__)
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


def skip_reason(ctx: Context) -> Skip | None:
    if ctx.device.type != "cuda":
        return ("nnUNetv2_train -num_gpus 2 (DDP)", "needs 2+ CUDA GPUs; nnUNetv2_train -device cpu is run by the test "
                "suite (tests/test_nnunet_integration.py)")
    return None


def run(ctx: Context) -> None:
    n = torch.cuda.device_count()
    if n < 2:
        ctx.report.skip("nnUNetv2_train -num_gpus 2 (DDP)", f"needs 2+ GPUs; {n} visible")
    left = ctx.deadline - time.monotonic()
    need = ctx.shares.get("nnunet_train", 0.0)
    if left < need:
        ctx.report.skip("nnUNetv2_train on a synthetic dataset", f"time budget: {left:.0f} s left, needs about "
                        f"{need:.0f} s (a larger --budget-s adds it)")
        return
    gpus = min(n, 2)
    ctx.log(f"{ctx.elapsed()} nnUNetv2_train -num_gpus {gpus} (synthetic 3D dataset, _tiny)")
    ctx.add(ctx.report.nnunet_train, nnunet_train_run(ctx.out_dir, gpus, left))


def render(report: Report) -> list[str]:
    if not report.nnunet_train:
        return []
    return table("Stock nnUNetv2_train", [], ["trainer", ">GPUs", "nnUNet_compile", ">s", "status"],
                 ([r["trainer"], r["gpus"], r["nnUNet_compile"], r["seconds"], status_cell(r)]
                  for r in report.nnunet_train))


SECTION = Section("nnunet_train", run, render, skip_reason, skip_label="nnUNetv2_train")
