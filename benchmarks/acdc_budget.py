"""ACDC (TransUNet 70/10/20 split) on CPU: nnU-Net's default 2D U-Net versus MedNeXt at the same iteration budget.

A third model, nnU-Net's U-Net trained with the MedNeXt recipe (``nnUNetTrainerMedNeXtRecipeUNet_budget``), tells
the network's share of a difference from the optimiser's; ``--no-recipe-control`` leaves it out (a third shorter).
``--resenc`` adds nnU-Net's residual-encoder preset ResEnc-M (planner ``nnUNetPlannerResEncM``, plans
``nnUNetResEncUNetMPlans``, the default nnU-Net recommends since 2.4), trained with nnU-Net's recipe and with the
MedNeXt recipe: the same two trainers, which build whatever network the plans name.

A row of the comparison is a trainer plus a plans identifier (``ROWS``; ``--rows`` picks them by key), so each row
names the plan it used, and a new baseline is one entry.

Steps, each a stock command in a subprocess (nnU-Net finds our trainers through the package's start-up hook):

1. ``nnunetv2-mednext convert acdc <source> --write-splits`` (SSL4MIS HDF5 copy; fold 0 = train 70 / val 10 patients);
2. ``nnUNetv2_plan_and_preprocess -d ID -c 2d -npfp 1 -np 1 -gpu_memory_target 2`` (same plans for the U-Net and
   MedNeXt rows; the small memory target keeps the batch at a size both networks can train in CPU RAM), and with
   ``--resenc`` the same with ``-pl nnUNetPlannerResEncM`` (same memory target);
3. per row (``nnUNetTrainerMedNeXtRefUNet_budget``, ``nnUNetTrainerMedNeXtRecipeUNet_budget``,
   ``nnUNetTrainerMedNeXt_budget`` on ``nnUNetPlans``; the first two again on ``nnUNetResEncUNetMPlans``):
   ``nnUNetv2_train ID 2d 0 -tr NAME -p PLANS -device cpu`` with ``NNUNETV2_MEDNEXT_BUDGET=EPOCHS,ITERS,VAL_ITERS``,
   ``nnUNetv2_predict`` on the 20 test patients (40 volumes) into ``fold_0/test_predictions`` (timed:
   ``inference_time.json``), ``nnunetv2-mednext evaluate`` (mm and TransUNet rules);
4. ``nnunetv2-mednext compare`` on the test predictions, then ``docs/results.md`` with the exact commands.

Usage::

    python benchmarks/acdc_budget.py --dry-run            # print the commands only
    python benchmarks/acdc_budget.py --budget 4,50,2      # the docs/results.md run (about 100 min on 2 CPU cores)
    python benchmarks/acdc_budget.py --budget 4,50,2 --resenc   # plus the two ResEnc-M rows
    python benchmarks/acdc_budget.py --budget 1,2,1 --max-patients 2 --work /tmp/acdc_smoke   # smoke test

All nnU-Net folders live under ``--work`` (checkpoints are large; keep it out of git). The environment is
``nnUNet_raw/nnUNet_preprocessed/nnUNet_results`` under the work dir, ``nnUNet_def_n_proc=1``, ``nnUNet_compile=0``,
and ``nnUNet_n_proc_DA=0`` on the train command only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

from nnunetv2_mednext.nnunet.pipeline import PLANNER_FOR_PLANS

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO.parent / "shared" / "data" / "acdc_ssl4mis_h5"


class Row(NamedTuple):
    """One model of the comparison: a trainer on a plans identifier."""

    key: str
    trainer: str
    plans: str
    name: str
    what: str

    @property
    def model(self) -> str:
        """nnU-Net's results folder name ``Trainer__Plans__configuration``."""
        return f"{self.trainer}__{self.plans}__{CONFIG}"

    @property
    def slug(self) -> str:
        """Unique per row (a trainer may run on several plans): step names, evaluation folders."""
        return self.trainer if self.plans == PLANS else f"{self.trainer}__{self.plans}"


PLANS, RESENC_PLANS, CONFIG, FOLD = "nnUNetPlans", "nnUNetResEncUNetMPlans", "2d", 0
REF_TRAINER, RECIPE_TRAINER = "nnUNetTrainerMedNeXtRefUNet_budget", "nnUNetTrainerMedNeXtRecipeUNet_budget"
ROWS = {r.key: r for r in (
    Row("unet", REF_TRAINER, PLANS, "nnU-Net 2D U-Net",
        "nnU-Net's default trainer and PlainConvUNet from `nnUNetPlans` (SGD, lr 1e-2, poly)"),
    Row("unet_recipe", RECIPE_TRAINER, PLANS, "U-Net (MedNeXt recipe)",
        "the same PlainConvUNet trained with the MedNeXt recipe (AdamW, lr 3e-3, warm-up, poly): the control that "
        "separates network from optimiser"),
    Row("mednext", "nnUNetTrainerMedNeXt_budget", PLANS, "MedNeXt (seed, T)",
        "seed MedNeXt-T on the same plans, with its recipe"),
    Row("resenc_m", REF_TRAINER, RESENC_PLANS, "nnU-Net ResEnc-M",
        "nnU-Net's default trainer and ResidualEncoderUNet from `nnUNetResEncUNetMPlans` (planner "
        "`nnUNetPlannerResEncM`, same memory target)"),
    Row("resenc_m_recipe", RECIPE_TRAINER, RESENC_PLANS, "ResEnc-M (MedNeXt recipe)",
        "the same ResidualEncoderUNet trained with the MedNeXt recipe"),
)}
DEFAULT_ROWS = ("unet", "unet_recipe", "mednext")
RESENC_ROWS = ("resenc_m", "resenc_m_recipe")
RECIPE_CONTROL = ROWS["unet_recipe"].trainer
DEFAULT_BUDGET = "2,15,2"
BUDGET_ENV = "NNUNETV2_MEDNEXT_BUDGET"


def selected_models(args: argparse.Namespace) -> list[Row]:
    """The rows of this run: ``--rows`` (default unet, unet_recipe, mednext), ``--resenc`` adds the ResEnc-M rows,
    ``--no-recipe-control`` drops the U-Net with the MedNeXt recipe."""
    keys = list(args.rows or DEFAULT_ROWS)
    if getattr(args, "resenc", False):
        keys += [k for k in RESENC_ROWS if k not in keys]
    if not args.recipe_control:
        keys = [k for k in keys if k != "unet_recipe"]
    return [ROWS[k] for k in keys]


def _tool(name: str) -> str:
    """The console script next to this interpreter (the venv's), else whatever is on PATH."""
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else (shutil.which(name) or name)


class Step:
    def __init__(self, name: str, argv: list[str], env: dict[str, str], timed_cases: int | None = None,
                 record: Path | None = None) -> None:
        self.name, self.argv, self.env, self.timed_cases, self.record = name, argv, env, timed_cases, record
        self.seconds: float | None = None

    def shell(self) -> str:
        """The command as one shell line, with its step-specific environment and display names of the tools."""
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env.items())
        argv = [Path(self.argv[0]).name, *self.argv[1:]]
        return (env + " " if env else "") + " ".join(shlex.quote(a) for a in argv)


def build_steps(args: argparse.Namespace) -> tuple[list[Step], dict[str, str], dict[str, Path]]:
    work = Path(args.work).resolve()
    raw, pre, res = work / "nnUNet_raw", work / "nnUNet_preprocessed", work / "nnUNet_results"
    ds = f"Dataset{args.dataset_id:03d}_{args.name}"
    base_env = {
        "nnUNet_raw": str(raw), "nnUNet_preprocessed": str(pre), "nnUNet_results": str(res),
        "nnUNet_def_n_proc": "1", "nnUNet_compile": "0",
    }
    paths = {"work": work, "raw": raw / ds, "results": res / ds, "eval": work / "evaluation",
             "compare": work / "compare_test"}
    convert = [_tool("nnunetv2-mednext"), "convert", "acdc", str(Path(args.source).resolve()), "--out", str(raw),
               "--id", str(args.dataset_id), "--name", args.name, "--write-splits", "--preprocessed", str(pre),
               "--overwrite", "-q"]
    if args.max_patients:
        convert += ["--max-per-split", str(args.max_patients)]
    steps = [Step("convert", convert, {})]
    models = selected_models(args)
    for plans in dict.fromkeys(r.plans for r in models):  # each plans identifier once, in row order
        planner = PLANNER_FOR_PLANS[plans]
        steps.append(Step("plan_and_preprocess" + (f" {planner}" if planner else ""),
                          [_tool("nnUNetv2_plan_and_preprocess"), "-d", str(args.dataset_id), "-c", CONFIG,
                           *(["-pl", planner] if planner else []), "-npfp", "1", "-np", "1",
                           "-gpu_memory_target", str(args.gpu_memory_target)], {}))
    n_test = 2 * (min(args.max_patients, 20) if args.max_patients else 20)
    for row in models:
        tr = row.trainer
        pred = paths["results"] / row.model / f"fold_{FOLD}" / "test_predictions"
        plans_arg = [] if row.plans == PLANS else ["-p", row.plans]
        steps.append(Step(f"train {row.slug}", [_tool("nnUNetv2_train"), str(args.dataset_id), CONFIG, str(FOLD),
                                                "-tr", tr, *plans_arg, "-device", "cpu"],
                          {BUDGET_ENV: args.budget, "nnUNet_n_proc_DA": "0"}))
        steps.append(Step(f"predict {row.slug}", [_tool("nnUNetv2_predict"), "-i", str(paths["raw"] / "imagesTs"),
                                                  "-o", str(pred), "-d", str(args.dataset_id), "-c", CONFIG, "-f",
                                                  str(FOLD), "-tr", tr, "-p", row.plans, "-device", "cpu", "-npp", "1",
                                                  "-nps", "1", *([] if args.tta else ["--disable_tta"])], {},
                          timed_cases=n_test, record=pred / "inference_time.json"))
        steps.append(Step(f"evaluate {row.slug}", [_tool("nnunetv2-mednext"), "evaluate",
                                                   str(paths["raw"] / "labelsTs"), str(pred), "-o",
                                                   str(paths["eval"] / row.slug), "--method", row.slug], {}))
    steps.append(Step("compare", [_tool("nnunetv2-mednext"), "compare", "-d", str(args.dataset_id),
                                  "-m", *[r.model for r in models],
                                  "-f", str(FOLD), "--subdir", "test_predictions", "--gt",
                                  str(paths["raw"] / "labelsTs"), "--hd95", "mm",
                                  "--names", *[r.name for r in models], "-o", str(paths["compare"])], {}))
    return steps, base_env, paths


def run_step(step: Step, base_env: dict[str, str], log_dir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("nnUNet_n_proc_DA", BUDGET_ENV)}
    env.update(base_env)
    env.update(step.env)
    log = log_dir / (step.name.replace(" ", "_") + ".log")
    print(f"[{datetime.now():%H:%M:%S}] {step.name}: {step.shell()}\n    log: {log}", flush=True)
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.run(step.argv, env=env, stdout=f, stderr=subprocess.STDOUT, cwd=REPO)
    step.seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-25:]
        print("\n".join(tail), file=sys.stderr)
        raise SystemExit(f"step '{step.name}' failed with exit code {proc.returncode}; full log: {log}")
    if step.record is not None and step.timed_cases:
        # process start-up and model loading are included: an upper bound per case
        step.record.write_text(json.dumps({"seconds_total": step.seconds, "num_cases": step.timed_cases,
                                           "seconds_per_case": step.seconds / step.timed_cases,
                                           "note": "wall time of nnUNetv2_predict incl. start-up, -npp 1 -nps 1, CPU"}))
    print(f"    done in {step.seconds:.0f} s", flush=True)


def _plans_line(paths: dict[str, Path], plans: str = PLANS) -> str:
    """Patch, batch, spacing and network class of one plans identifier's 2d configuration."""
    path = paths["work"] / "nnUNet_preprocessed" / paths["raw"].name / f"{plans}.json"
    try:
        cfg = json.loads(path.read_text())["configurations"][CONFIG]
        network = cfg.get("architecture", {}).get("network_class_name", "?").rsplit(".", 1)[-1]
        return f"patch {cfg['patch_size']}, batch {cfg['batch_size']}, spacing {cfg['spacing']}, network {network}"
    except (OSError, KeyError, ValueError):
        return "plans not found"


def _has_resenc(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "resenc", False) or set(getattr(args, "rows", None) or ()) & set(RESENC_ROWS))


def _per_iteration_lines(comparison_json: Path, iters: int, val_iters: int) -> list[str]:
    """Seconds per iteration from the epoch times ``compare`` read from nnU-Net's training logs."""
    try:
        models = json.loads(comparison_json.read_text())["models"]
    except (OSError, KeyError, ValueError):
        return []
    rows = [f"| {m.get('name') or m['model']} | {m['epoch_time_s'] / (iters + val_iters):.2f} |"
            for m in models if m.get("epoch_time_s")]
    if not rows:
        return []
    return [f"Seconds per iteration = epoch time / ({iters} training + {val_iters} validation iterations); validation "
            "iterations have no backward pass, so this slightly underestimates a training iteration.", "",
            "| Model | s / iteration |", "|---|---|", *rows, ""]


def _full_length_lines(args: argparse.Namespace) -> list[str]:
    """The same protocol at nnU-Net's full length, for a GPU machine (MedNeXt on its own planner's plans)."""
    d = str(args.dataset_id)
    ds = f"Dataset{args.dataset_id:03d}_{args.name}"
    return [
        "## Full-length protocol (GPU machine)", "",
        "nnU-Net's default length (1000 epochs × 250 iterations) with each model on plans sized for a GPU: the U-Net "
        "on `nnUNetPlans`, MedNeXt on `nnUNetMedNeXtPlans` from the MedNeXt planner (its memory model keeps the batch "
        "within the GPU's memory).", "",
        "```bash",
        f"nnunetv2-mednext convert acdc {shlex.quote(str(args.source))} --id {d} --name {args.name} --write-splits",
        f"nnUNetv2_plan_and_preprocess -d {d} -c 2d",
        f"nnunetv2-mednext plan_and_preprocess -d {d} -c 2d",
        f"nnUNetv2_train {d} 2d 0 -tr nnUNetTrainer",
        f"nnUNetv2_train {d} 2d 0 -tr nnUNetTrainerMedNeXtRecipeUNet",
        f"nnUNetv2_train {d} 2d 0 -tr nnUNetTrainerMedNeXt -p nnUNetMedNeXtPlans",
        f"nnUNetv2_predict -i $nnUNet_raw/{ds}/imagesTs -o test_unet -d {d} -c 2d -f 0 -tr nnUNetTrainer",
        f"nnUNetv2_predict -i $nnUNet_raw/{ds}/imagesTs -o test_unet_recipe -d {d} -c 2d -f 0 "
        "-tr nnUNetTrainerMedNeXtRecipeUNet",
        f"nnUNetv2_predict -i $nnUNet_raw/{ds}/imagesTs -o test_mednext -d {d} -c 2d -f 0 "
        "-tr nnUNetTrainerMedNeXt -p nnUNetMedNeXtPlans",
        *(resenc := ([f"nnUNetv2_plan_and_preprocess -d {d} -c 2d -pl nnUNetPlannerResEncM",
                      f"nnUNetv2_train {d} 2d 0 -tr nnUNetTrainer -p {RESENC_PLANS}",
                      f"nnUNetv2_predict -i $nnUNet_raw/{ds}/imagesTs -o test_resenc_m -d {d} -c 2d -f 0 "
                      f"-tr nnUNetTrainer -p {RESENC_PLANS}"] if _has_resenc(args) else [])),
        *[f"nnunetv2-mednext evaluate $nnUNet_raw/{ds}/labelsTs test_{n} -o eval_{n}"
          for n in ("unet", "unet_recipe", "mednext", *(["resenc_m"] if resenc else []))],
        "```", "",
        "`--write-splits` makes fold 0 the TransUNet train/validation split (the paper's protocol). For nnU-Net's "
        "own protocol, convert without it: nnU-Net then splits the 80 training and validation patients into 5 "
        f"folds itself; train folds 0-4 and run `nnUNetv2_find_best_configuration {d} -c 2d -tr TRAINER`.", "",
    ]


def write_results(args: argparse.Namespace, steps: list[Step], base_env: dict[str, str], paths: dict[str, Path],
                  out: Path) -> None:
    import torch

    env_line = " ".join(f"{k}={shlex.quote(v)}" for k, v in base_env.items())
    epochs, iters, val_iters = args.budget.split(",")
    cap = args.max_patients or 100
    n_train, n_val, n_test = min(70, cap), min(10, cap), min(20, cap)
    lines = [
        "# Results: ACDC, nnU-Net 2D U-Net " + ("and ResEnc-M " if _has_resenc(args) else "")
        + "versus MedNeXt at the same CPU budget", "",
        f"Written by `benchmarks/acdc_budget.py` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC.", "",
        "## Setup", "",
        f"- Data: `{args.source}` (SSL4MIS HDF5 copy of ACDC; nominal spacing, see `docs/protocols.md`), "
        f"TransUNet 70/10/20 patient split"
        + (f", **reduced to {args.max_patients} patient(s) per split (smoke run)**" if args.max_patients else "") + ".",
        f"- Training: fold 0 = the {n_train} training patients ({2 * n_train} volumes), validation on the {n_val} "
        f"validation patients; test = the {n_test} test patients ({2 * n_test} volumes), never seen in training or "
        "model selection.",
        f"- Budget: `{BUDGET_ENV}={args.budget}` = {epochs} epochs × {iters} iterations "
        f"({int(epochs) * int(iters)} training iterations), {val_iters} validation iterations per epoch; "
        "identical for every trainer. nnU-Net's default is 1000 × 250, so these are **short-budget** numbers, "
        "not converged ones.",
        "- Plans (2d): " + "; ".join(f"`{p}`: {_plans_line(paths, p)}" for p in dict.fromkeys(
            r.plans for r in selected_models(args))) + ". Test predictions "
        + ("with" if args.tta else "without") + " mirroring TTA; nnU-Net's end-of-training validation (the validation "
        "patients) always mirrors.",
        "- Models: " + "; ".join(f"{r.name}: `{r.trainer}` on `{r.plans}` ({r.what})" for r in selected_models(args))
        + ".",
        f"- Machine: {platform.machine()} CPU, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"torch {torch.__version__}, no GPU.", "",
        "## Commands", "", "Environment for every command (`$WORK` is the `--work` folder):", "", "```bash",
        f"export {env_line}", "```", "",
        "```bash", *[s.shell() for s in steps], "```", "",
        "| Step | Wall time (s) |", "|---|---|",
        *[f"| {s.name} | {s.seconds:.0f} |" for s in steps if s.seconds is not None], "",
        f"## Test set ({n_test} patients, {2 * n_test} volumes)", "",
    ]
    for row in selected_models(args):
        table = paths["eval"] / row.slug / "table.md"
        if table.is_file():
            lines += [table.read_text().replace("## Evaluation of", "### Evaluation of"), ""]
    cmp_md = paths["compare"] / "comparison.md"
    if cmp_md.is_file():
        text = cmp_md.read_text().replace("\n## ", "\n### ").replace("# Comparison on", "## Comparison on")
        lines += [text, ""]
    png = paths["compare"] / "comparison.png"
    if png.is_file():
        target = out.parent / (out.stem + "_acdc_budget.png")
        shutil.copyfile(png, target)
        lines += [f"![DSC per class and per case]({target.name})", ""]
    lines += _per_iteration_lines(paths["compare"] / "comparison.json", int(iters), int(val_iters))
    lines += ["Reading: TransUNet-protocol tables (docs/protocols.md) report converged models; compare the rows "
              "here with each other, not with those tables.", ""]
    lines += _full_length_lines(args)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(portable("\n".join(lines), paths["work"]))
    print(f"wrote {out}")


def portable(text: str, work: Path) -> str:
    """The report without this machine's absolute paths: the work folder as ``$WORK``, the repository's parent
    (where ``shared/`` lives) as ``..``."""
    return text.replace(str(work), "$WORK").replace(str(REPO.parent) + os.sep, "../")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", default=str(DEFAULT_SOURCE), help="ACDC SSL4MIS HDF5 folder")
    p.add_argument("--work", default="/tmp/nnunetv2_mednext_acdc_budget", help="work dir for nnU-Net's folders")
    p.add_argument("--budget", default=DEFAULT_BUDGET, help=f"EPOCHS,ITERS,VAL_ITERS (default {DEFAULT_BUDGET})")
    p.add_argument("--gpu-memory-target", type=float, default=2.0,
                   help="nnU-Net planner memory target in GB (default 2: batch 14 instead of 56 at 8 GB; at batch 56 "
                        "MedNeXt's CPU training needs more than 20 GB RAM and was OOM-killed on a 24 GB machine)")
    p.add_argument("--dataset-id", type=int, default=802)
    p.add_argument("--name", default="ACDC")
    p.add_argument("--max-patients", type=int, help="keep only N patients per split (smoke test)")
    p.add_argument("--tta", action="store_true",
                   help="mirroring test-time augmentation on the test predictions (default off, as in TransUNet's "
                        "protocol; 4x slower in 2D). nnU-Net's own end-of-training validation always mirrors.")
    p.add_argument("--results-md", help="report path (default docs/results.md; WORK/results.md with --max-patients)")
    p.add_argument("--no-recipe-control", dest="recipe_control", action="store_false",
                   help=f"leave out {RECIPE_CONTROL} (nnU-Net's U-Net with the MedNeXt recipe)")
    p.add_argument("--resenc", action="store_true",
                   help="add nnU-Net's ResEnc-M (plans nnUNetResEncUNetMPlans from nnUNetPlannerResEncM), with "
                        "nnU-Net's recipe and with the MedNeXt recipe")
    p.add_argument("--rows", nargs="+", choices=list(ROWS), metavar="ROW",
                   help=f"the rows to run, in order (default: {' '.join(DEFAULT_ROWS)}; choices: {', '.join(ROWS)})")
    p.add_argument("--dry-run", action="store_true", help="print the commands and exit")
    args = p.parse_args(argv)
    parts = args.budget.split(",")
    if len(parts) != 3 or not all(x.isdigit() and int(x) > 0 for x in parts):
        p.error(f"--budget {args.budget!r}: use EPOCHS,ITERS,VAL_ITERS with positive integers")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    steps, base_env, paths = build_steps(args)
    if args.dry_run:
        print("# environment")
        print("export " + " ".join(f"{k}={shlex.quote(v)}" for k, v in base_env.items()))
        print("# commands")
        for s in steps:
            print(s.shell())
        return 0
    if not Path(args.source).is_dir():
        raise SystemExit(f"ACDC source {args.source} not found; pass --source")
    out = Path(args.results_md) if args.results_md else (
        paths["work"] / "results.md" if args.max_patients else REPO / "docs" / "results.md")
    log_dir = paths["work"] / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for s in steps:
        run_step(s, base_env, log_dir)
    write_results(args, steps, base_env, paths, out)
    print(f"total {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
