"""MSD Hippocampus on CPU: nnU-Net's default U-Net versus MedNeXt at the same iteration budget, stock commands.

1. ``nnunetv2-mednext convert msd ../shared/data/msd_hippocampus --max-cases N`` (first N cases by name);
2. ``nnUNetv2_plan_and_preprocess -d 4 -c CONFIGS`` (nnU-Net's own plans: both trainers see the same topology,
   patch and batch size); with ``--resenc`` also ``-pl nnUNetPlannerResEncM`` (plans ``nnUNetResEncUNetMPlans``);
3. per configuration and row (a trainer on a plans identifier): ``nnUNetv2_train 4 CONFIG 0 -tr NAME -p PLANS
   -device cpu`` with ``NNUNETV2_MEDNEXT_BUDGET=EPOCHS,ITERS,VAL``; nnU-Net's own fold-0 validation
   (``validation/summary.json``) gives the Dice; ``compare``'s helpers give parameters (checkpoint) and epoch times
   (training log).

``--resenc`` adds nnU-Net's ResEnc-M preset twice: with nnU-Net's recipe (``nnUNetTrainerMedNeXtRefUNet_budget``)
and with the MedNeXt recipe (``nnUNetTrainerMedNeXtRecipeUNet_budget``); both trainers build the network the plans
name. Writes ``OUT/results.json`` and ``OUT/results.md`` (one line per row, with its plans)::

    python benchmarks/hippocampus_budget.py --cases 60 --budget 3,20,2 --configs 2d 3d_fullres --out runs/hippo
    python benchmarks/hippocampus_budget.py --cases 60 --budget 3,20,2 --configs 2d 3d_fullres --resenc --out runs/hippo
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from nnunetv2_mednext.evaluation.compare import count_parameters, epoch_times
from nnunetv2_mednext.nnunet.pipeline import PLANNER_FOR_PLANS, NnUNetRunner

REPO = Path(__file__).resolve().parents[1]
TRAINERS = ("nnUNetTrainerMedNeXtRefUNet_budget", "nnUNetTrainerMedNeXt_budget")
PLANS, RESENC_PLANS = "nnUNetPlans", "nnUNetResEncUNetMPlans"
# ResEnc-M with nnU-Net's recipe and with the MedNeXt recipe: (trainer, plans identifier)
RESENC_ROWS = (("nnUNetTrainerMedNeXtRefUNet_budget", RESENC_PLANS), ("nnUNetTrainerMedNeXtRecipeUNet_budget", RESENC_PLANS))


def rows(args: argparse.Namespace) -> list[tuple[str, str]]:
    """The comparison's rows, ``(trainer, plans identifier)``: ``--trainers`` on nnU-Net's plans, then ResEnc-M."""
    return [(t, PLANS) for t in args.trainers] + (list(RESENC_ROWS) if args.resenc else [])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    shared = Path(os.environ.get("NNUNETV2_MEDNEXT_SHARED", REPO.parent / "shared"))
    p.add_argument("--src", type=Path, default=shared / "data" / "msd_hippocampus")
    p.add_argument("--out", type=Path, default=REPO / "runs" / "hippocampus")
    p.add_argument("--cases", type=int, default=60)
    p.add_argument("--budget", default="3,20,2", help="EPOCHS,ITERS,VAL_ITERS per trainer")
    p.add_argument("--configs", nargs="+", default=["2d", "3d_fullres"])
    p.add_argument("--trainers", nargs="+", default=list(TRAINERS), help="trainers on nnU-Net's nnUNetPlans")
    p.add_argument("--resenc", action="store_true",
                   help="add ResEnc-M rows (nnUNetPlannerResEncM plans, nnU-Net's and the MedNeXt recipe)")
    args = p.parse_args(argv)
    if not args.src.is_dir():
        sys.exit(f"error: {args.src} not found; pass --src with the MSD Task04 folder (imagesTr/, labelsTr/)")

    runner = NnUNetRunner(args.out)
    if not (runner.raw / "Dataset004_Hippocampus").exists():
        subprocess.run([sys.executable, "-m", "nnunetv2_mednext", "convert", "msd", str(args.src), "--out",
                        str(runner.raw), "--max-cases", str(args.cases), "-q"], check=True, env=runner.env())
    plans = {}
    for identifier in dict.fromkeys(p for _, p in rows(args)):
        plans_file = runner.preprocessed / "Dataset004_Hippocampus" / f"{identifier}.json"
        if not plans_file.exists():
            runner.plan_and_preprocess(4, tuple(args.configs), planner=PLANNER_FOR_PLANS[identifier])
        plans[identifier] = json.loads(plans_file.read_text())
    results = []
    for config in args.configs:
        for trainer, identifier in rows(args):
            cfg = plans[identifier]["configurations"][config]
            fold = runner.results / "Dataset004_Hippocampus" / f"{trainer}__{identifier}__{config}" / "fold_0"
            wall = None
            if not (fold / "checkpoint_final.pth").exists():
                t0 = time.perf_counter()
                runner.train(4, config, 0, trainer, plans=identifier,
                             extra_env={"NNUNETV2_MEDNEXT_BUDGET": args.budget})
                wall = time.perf_counter() - t0
            params, _ = count_parameters(fold)
            epochs = epoch_times(fold)
            iters = int(args.budget.split(",")[1])
            summary = json.loads((fold / "validation" / "summary.json").read_text())
            results.append({
                "config": config, "trainer": trainer, "plans": identifier,
                "network": cfg.get("architecture", {}).get("network_class_name", "").rsplit(".", 1)[-1],
                "patch": cfg["patch_size"], "batch": cfg["batch_size"],
                "params_M": round(params / 1e6, 3), "s_per_iter": round(sum(epochs[1:] or epochs) / len(epochs[1:] or epochs) / iters, 2),
                "train_wall_s": round(wall, 1) if wall else None,
                "dice": {k: round(v["Dice"], 4) for k, v in summary["mean"].items()},
                "dice_mean": round(summary["foreground_mean"]["Dice"], 4), "val_cases": len(summary["metric_per_case"]),
            })
            print(json.dumps(results[-1]), flush=True)
    meta = {"cases": args.cases, "budget": args.budget, "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(), "command": " ".join(["python", *sys.argv])}
    (args.out / "results.json").write_text(json.dumps({"meta": meta, "rows": results}, indent=2))
    lines = [f"MSD Hippocampus, first {args.cases} cases, fold 0 of nnU-Net's 5-fold split, budget {args.budget} "
             "(epochs, iterations, validation iterations), CPU. The network column is the plans' network class; "
             "MedNeXt trainers build MedNeXt on that plan's topology instead.", "",
             "| config | trainer | plans | network | patch | batch | params (M) | s / iter | Dice anterior | "
             "Dice posterior | mean Dice |",
             "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['config']} | {r['trainer']} | {r['plans']} | {r['network']} | {'x'.join(map(str, r['patch']))} | "
                     f"{r['batch']} | {r['params_M']:.2f} | {r['s_per_iter']:.2f} | {r['dice'].get('1', 0):.3f} | "
                     f"{r['dice'].get('2', 0):.3f} | {r['dice_mean']:.3f} |")
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
