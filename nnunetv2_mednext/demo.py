"""The end-to-end demo: synthetic dataset -> plan -> preprocess -> train -> predict -> evaluate, two trainers."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

from nnunetv2_mednext.errors import MedNeXtUserError
from nnunetv2_mednext.evaluation.compare import count_parameters, epoch_times
from nnunetv2_mednext.pipeline import PLANNER_FOR_PLANS, NnUNetRunner
from nnunetv2_mednext.synthetic import make_synthetic_2d

DEMO_DATASET_ID = 990
DEFAULT_TRAINERS = ("nnUNetTrainerMedNeXt_budget", "nnUNetTrainerMedNeXtRefUNet_budget")
# extra rows by name: (trainer, plans identifier); the trainer builds the network the plans name
BASELINES = {"resenc": ("nnUNetTrainerMedNeXtRefUNet_budget", "nnUNetResEncUNetMPlans")}


def run_demo(
    workdir: str | Path, epochs: int = 2, iters: int = 25, val_iters: int = 4, n_train: int = 16, n_test: int = 4,
    size: int = 64, trainers: Sequence[str] = DEFAULT_TRAINERS, overwrite: bool = False, log=print,
    baselines: Sequence[str] = (),
) -> list[dict]:
    """Run the whole pipeline in ``workdir``; returns one result row per trainer (also written as JSON/markdown).

    ``baselines`` adds rows from :data:`BASELINES` (``"resenc"``: nnU-Net's ResEnc-M preset, planned by
    ``nnUNetPlannerResEncM``, trained with nnU-Net's recipe at the same budget)."""
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        raise MedNeXtUserError(f"unknown baseline {unknown[0]!r}; fix: --baselines {' '.join(BASELINES)}")
    runs = [(t, "nnUNetPlans") for t in trainers] + [BASELINES[b] for b in dict.fromkeys(baselines)]
    workdir = Path(workdir)
    if (workdir / "demo_results.json").exists() and not overwrite:
        raise MedNeXtUserError(f"{workdir} already holds demo results; choose another --workdir or pass --overwrite")
    runner = NnUNetRunner(workdir)
    t0 = time.perf_counter()

    def step(i: int, text: str) -> None:
        log(f"[{i}/5 {time.perf_counter() - t0:6.1f}s] {text}")

    step(1, f"writing a synthetic 2D dataset ({n_train} train + {n_test} test, {size}x{size}) to {runner.raw}")
    folder = make_synthetic_2d(runner.raw, DEMO_DATASET_ID, n_train, n_test, size, overwrite=overwrite)
    for plans in dict.fromkeys(p for _, p in runs):
        planner = PLANNER_FOR_PLANS[plans]
        step(2, "nnUNetv2_plan_and_preprocess (2d)" + (f" -pl {planner}" if planner else ""))
        runner.plan_and_preprocess(DEMO_DATASET_ID, ("2d",), planner=planner)
    budget = {"NNUNETV2_MEDNEXT_BUDGET": f"{epochs},{iters},{val_iters}"}
    rows = []
    for trainer, plans in runs:
        p_arg = "" if plans == "nnUNetPlans" else f" -p {plans}"
        step(3, f"nnUNetv2_train {DEMO_DATASET_ID} 2d 0 -tr {trainer}{p_arg}  ({epochs} epochs x {iters} iterations)")
        wall = runner.train(DEMO_DATASET_ID, "2d", 0, trainer, plans=plans, extra_env=budget)
        out = workdir / "predictions" / (trainer if plans == "nnUNetPlans" else f"{trainer}__{plans}")
        step(4, f"nnUNetv2_predict -> {out}")
        pred_wall = runner.predict(DEMO_DATASET_ID, "2d", trainer, folder / "imagesTs", out, plans=plans)
        step(5, "nnUNetv2_evaluate_folder")
        summary = runner.evaluate(folder / "labelsTs", out)
        fold = runner.results / folder.name / f"{trainer}__{plans}__2d" / "fold_0"
        params, _ = count_parameters(fold)
        times = epoch_times(fold)
        rows.append({
            "trainer": trainer,
            "plans": plans,
            "params_M": round((params or 0) / 1e6, 3),
            "seconds_per_epoch": round(sum(times) / max(1, len(times)), 2),
            "train_wall_s": round(wall, 1),
            "predict_wall_s": round(pred_wall, 1),
            "dice_disc": round(summary["mean"]["1"]["Dice"], 4),
            "dice_square": round(summary["mean"]["2"]["Dice"], 4),
            "dice_mean": round(summary["foreground_mean"]["Dice"], 4),
        })
    (workdir / "demo_results.json").write_text(json.dumps(rows, indent=2))
    table = format_table(rows, epochs, iters)
    (workdir / "demo_results.md").write_text(table + "\n")
    log(f"done in {time.perf_counter() - t0:.0f} s; results in {workdir}\n")
    log(table)
    return rows


def format_table(rows: Sequence[dict], epochs: int, iters: int) -> str:
    head = (f"Same budget for every trainer: {epochs} epoch(s) x {iters} iterations, CPU.\n\n"
            "| trainer | plans | params (M) | s / epoch | train wall (s) | Dice disc | Dice square | mean Dice |\n"
            "|---|---|---:|---:|---:|---:|---:|---:|")
    lines = [f"| {r['trainer']} | {r.get('plans', 'nnUNetPlans')} | {r['params_M']:.2f} | {r['seconds_per_epoch']:.1f} | "
             f"{r['train_wall_s']:.0f} | {r['dice_disc']:.3f} | {r['dice_square']:.3f} | {r['dice_mean']:.3f} |"
             for r in rows]
    return "\n".join([head, *lines])
