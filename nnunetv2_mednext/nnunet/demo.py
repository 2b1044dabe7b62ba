"""The end-to-end demo: synthetic dataset -> plan -> preprocess -> train -> predict -> evaluate, several trainers.

Default trainers: MedNeXt, nnU-Net's own trainer (its U-Net and SGD recipe), and nnU-Net's U-Net trained with the
MedNeXt recipe -- the control that tells the network's share of a difference from the optimiser's.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from nnunetv2_mednext.errors import MedNeXtUserError
from nnunetv2_mednext.evaluation.compare import count_parameters, epoch_times
from nnunetv2_mednext.nnunet.pipeline import PLANNER_FOR_PLANS, NnUNetRunner
from nnunetv2_mednext.nnunet.synthetic import make_synthetic_2d

DEMO_DATASET_ID = 990
DEFAULT_TRAINERS = (
    "nnUNetTrainerMedNeXt_budget", "nnUNetTrainerMedNeXtRefUNet_budget", "nnUNetTrainerMedNeXtRecipeUNet_budget",
)
RESULT_FILES = ("demo_results.json", "demo_results.md")
#: what each default trainer is, for the table
ROLES = {
    "nnUNetTrainerMedNeXt_budget": "MedNeXt-T, MedNeXt recipe",
    "nnUNetTrainerMedNeXtRefUNet_budget": "nnU-Net's U-Net, nnU-Net's recipe (SGD)",
    "nnUNetTrainerMedNeXtRecipeUNet_budget": "nnU-Net's U-Net, MedNeXt recipe (control)",
}
#: extra rows by name: (trainer, plans identifier); the trainer builds the network the plans name
BASELINES = {"resenc": ("nnUNetTrainerMedNeXtRefUNet_budget", "nnUNetResEncUNetMPlans")}
BASELINE_ROLES = {"nnUNetResEncUNetMPlans": "nnU-Net's ResEnc-M preset, nnU-Net's recipe (SGD)"}


def check_trainer_names(trainers: Sequence[str]) -> None:
    """Unknown trainer names fail before minutes of planning, with the closest names."""
    import difflib

    from nnunetv2_mednext.nnunet.trainers.variants import trainer_names

    known = trainer_names()
    for name in trainers:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
            hint = f"did you mean {' or '.join(close)}? " if close else ""
            raise MedNeXtUserError(f"unknown trainer {name!r}; {hint}fix: pass trainers listed by "
                                   "`nnunetv2-mednext info --trainers` (the demo runs this package's trainers)")


def run_demo(
    workdir: str | Path, epochs: int = 2, iters: int = 25, val_iters: int = 4, n_train: int = 16, n_test: int = 4,
    size: int = 64, trainers: Sequence[str] = DEFAULT_TRAINERS, overwrite: bool = False,
    log: Callable[[str], None] = print, threads: int = 1, baselines: Sequence[str] = (),
) -> list[dict]:
    """Run the whole pipeline in ``workdir``; returns one result row per trainer (also written as JSON/markdown).

    ``baselines`` adds rows from :data:`BASELINES` (``"resenc"``: nnU-Net's ResEnc-M preset, planned by
    ``nnUNetPlannerResEncM``, trained with nnU-Net's recipe at the same budget)."""
    from nnunetv2_mednext.fsutil import ensure_writable, exclusive_lock

    workdir = Path(workdir).resolve()  # the nnU-Net commands run inside it: relative paths would nest
    check_trainer_names(trainers)
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        raise MedNeXtUserError(f"unknown baseline {unknown[0]!r}; fix: --baselines {' '.join(BASELINES)}")
    runs = [(t, "nnUNetPlans") for t in trainers] + [BASELINES[b] for b in dict.fromkeys(baselines)]
    existing = [n for n in RESULT_FILES if (workdir / n).exists()]
    if existing and not overwrite:
        raise MedNeXtUserError(f"{workdir} already holds demo results ({', '.join(existing)}); fix: choose another "
                               "--workdir or pass --overwrite")
    ensure_writable(workdir, "--workdir")
    with exclusive_lock(workdir, "demo folder"):
        return _run(workdir, epochs, iters, val_iters, n_train, n_test, size, runs, overwrite, log, threads)


def _run(workdir: Path, epochs: int, iters: int, val_iters: int, n_train: int, n_test: int, size: int,
         runs: Sequence[tuple[str, str]], overwrite: bool, log: Callable[[str], None], threads: int) -> list[dict]:
    runner = NnUNetRunner(workdir)
    t0 = time.perf_counter()
    all_plans = list(dict.fromkeys(p for _, p in runs))
    n_steps = 1 + len(all_plans) + 3 * len(runs)
    counter = iter(range(1, n_steps + 1))

    def step(text: str) -> None:
        log(f"[{next(counter)}/{n_steps} {time.perf_counter() - t0:6.1f}s] {text}")

    def progress(line: str) -> None:
        log(f"           {line}")

    step(f"writing a synthetic 2D dataset ({n_train} train + {n_test} test, {size}x{size}) to {runner.raw}")
    folder = make_synthetic_2d(runner.raw, DEMO_DATASET_ID, n_train, n_test, size, overwrite=overwrite)
    for plans in all_plans:
        planner = PLANNER_FOR_PLANS[plans]
        step("nnUNetv2_plan_and_preprocess (2d)" + (f" -pl {planner}" if planner else ""))
        runner.plan_and_preprocess(DEMO_DATASET_ID, ("2d",), planner=planner)
    env = {"NNUNETV2_MEDNEXT_BUDGET": f"{epochs},{iters},{val_iters}", "OMP_NUM_THREADS": str(threads)}
    rows = []
    for trainer, plans in runs:
        p_arg = "" if plans == "nnUNetPlans" else f" -p {plans}"
        step(f"nnUNetv2_train {DEMO_DATASET_ID} 2d 0 -tr {trainer}{p_arg}  ({epochs} epochs x {iters} iterations)")
        wall = runner.train(DEMO_DATASET_ID, "2d", 0, trainer, plans=plans, extra_env=env, progress=progress)
        out = workdir / "predictions" / (trainer if plans == "nnUNetPlans" else f"{trainer}__{plans}")
        step(f"nnUNetv2_predict -> {out}")
        pred_wall = runner.predict(DEMO_DATASET_ID, "2d", trainer, folder / "imagesTs", out, plans=plans)
        step("nnUNetv2_evaluate_folder")
        summary = runner.evaluate(folder / "labelsTs", out)
        fold = runner.results / folder.name / f"{trainer}__{plans}__2d" / "fold_0"
        params, _ = count_parameters(fold)
        times = epoch_times(fold)
        rows.append({
            "trainer": trainer,
            "plans": plans,
            "role": BASELINE_ROLES.get(plans) or ROLES.get(trainer, ""),
            "params_M": round((params or 0) / 1e6, 3),
            "seconds_per_epoch": round(sum(times) / max(1, len(times)), 2),
            "train_wall_s": round(wall, 1),
            "predict_wall_s": round(pred_wall, 1),
            "dice_disc": round(summary["mean"]["1"]["Dice"], 4),
            "dice_square": round(summary["mean"]["2"]["Dice"], 4),
            "dice_mean": round(summary["foreground_mean"]["Dice"], 4),
        })
    (workdir / "demo_results.json").write_text(json.dumps(rows, indent=2))
    table = format_table(rows, epochs, iters, threads)
    (workdir / "demo_results.md").write_text(table + "\n")
    log(f"done in {time.perf_counter() - t0:.0f} s; results in {workdir} (every command and its environment: "
        f"{runner.logs})\n")
    log(table)
    return rows


def format_table(rows: Sequence[dict], epochs: int, iters: int, threads: int = 1) -> str:
    head = (f"Same budget for every trainer: {epochs} epoch(s) x {iters} iterations, CPU, {threads} thread(s).\n\n"
            "| trainer | plans | what | params (M) | s / epoch | train wall (s) | Dice disc | Dice square | mean Dice |\n"
            "|---|---|---|---:|---:|---:|---:|---:|---:|")
    lines = [f"| {r['trainer']} | {r.get('plans', 'nnUNetPlans')} | {r.get('role', '')} | {r['params_M']:.2f} | "
             f"{r['seconds_per_epoch']:.1f} | "
             f"{r['train_wall_s']:.0f} | {r['dice_disc']:.3f} | {r['dice_square']:.3f} | {r['dice_mean']:.3f} |"
             for r in rows]
    note = ("\n\nRead the MedNeXt row against the control row (same recipe, nnU-Net's U-Net): the gap to nnU-Net's own "
            "trainer at so short a budget comes mostly from the optimiser (AdamW + warm-up vs SGD), not the network.")
    names = {r["trainer"] for r in rows}
    return "\n".join([head, *lines]) + (note if "nnUNetTrainerMedNeXtRecipeUNet_budget" in names else "")
