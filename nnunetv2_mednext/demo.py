"""The end-to-end demo: synthetic dataset -> plan -> preprocess -> train -> predict -> evaluate, two trainers."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

from nnunetv2_mednext.errors import MedNeXtUserError
from nnunetv2_mednext.evaluation.compare import count_parameters, epoch_times
from nnunetv2_mednext.pipeline import NnUNetRunner
from nnunetv2_mednext.synthetic import make_synthetic_2d

DEMO_DATASET_ID = 990
DEFAULT_TRAINERS = ("nnUNetTrainerMedNeXt_budget", "nnUNetTrainerMedNeXtRefUNet_budget")


def run_demo(
    workdir: str | Path, epochs: int = 2, iters: int = 25, val_iters: int = 4, n_train: int = 16, n_test: int = 4,
    size: int = 64, trainers: Sequence[str] = DEFAULT_TRAINERS, overwrite: bool = False, log=print,
) -> list[dict]:
    """Run the whole pipeline in ``workdir``; returns one result row per trainer (also written as JSON/markdown)."""
    workdir = Path(workdir)
    if (workdir / "demo_results.json").exists() and not overwrite:
        raise MedNeXtUserError(f"{workdir} already holds demo results; choose another --workdir or pass --overwrite")
    runner = NnUNetRunner(workdir)
    t0 = time.perf_counter()

    def step(i: int, text: str) -> None:
        log(f"[{i}/5 {time.perf_counter() - t0:6.1f}s] {text}")

    step(1, f"writing a synthetic 2D dataset ({n_train} train + {n_test} test, {size}x{size}) to {runner.raw}")
    folder = make_synthetic_2d(runner.raw, DEMO_DATASET_ID, n_train, n_test, size, overwrite=overwrite)
    step(2, "nnUNetv2_plan_and_preprocess (2d)")
    runner.plan_and_preprocess(DEMO_DATASET_ID, ("2d",))
    budget = {"NNUNETV2_MEDNEXT_BUDGET": f"{epochs},{iters},{val_iters}"}
    rows = []
    for trainer in trainers:
        step(3, f"nnUNetv2_train {DEMO_DATASET_ID} 2d 0 -tr {trainer}  ({epochs} epochs x {iters} iterations)")
        wall = runner.train(DEMO_DATASET_ID, "2d", 0, trainer, extra_env=budget)
        out = workdir / "predictions" / trainer
        step(4, f"nnUNetv2_predict -> {out}")
        pred_wall = runner.predict(DEMO_DATASET_ID, "2d", trainer, folder / "imagesTs", out)
        step(5, "nnUNetv2_evaluate_folder")
        summary = runner.evaluate(folder / "labelsTs", out)
        fold = runner.results / folder.name / f"{trainer}__nnUNetPlans__2d" / "fold_0"
        params, _ = count_parameters(fold)
        times = epoch_times(fold)
        rows.append({
            "trainer": trainer,
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
            "| trainer | params (M) | s / epoch | train wall (s) | Dice disc | Dice square | mean Dice |\n"
            "|---|---:|---:|---:|---:|---:|---:|")
    lines = [f"| {r['trainer']} | {r['params_M']:.2f} | {r['seconds_per_epoch']:.1f} | {r['train_wall_s']:.0f} | "
             f"{r['dice_disc']:.3f} | {r['dice_square']:.3f} | {r['dice_mean']:.3f} |" for r in rows]
    return "\n".join([head, *lines])
