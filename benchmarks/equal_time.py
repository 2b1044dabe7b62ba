"""Accuracy at equal wall-clock: every trainer gets the same plans, the same data and the same CPU training time.

One script for the real segmentation datasets of the project:

* ``acdc``: ACDC 2D, TransUNet split (fold 0 = 70 training / 10 validation patients), scored on the 20 test
  patients (40 volumes);
* ``kvasir``: Kvasir-SEG 2d (RGB colonoscopy photographs, native sizes), ``--test-cases`` frames (default 100)
  drawn with seed 0 by ``convert images-masks`` and held out in ``imagesTs``, fold 0 of a 5-fold split of the rest;
* ``hippocampus``: MSD Task04 3d_fullres, the last ``--test-cases`` cases (by name) held out in ``imagesTs``,
  fold 0 of a 5-fold split of the rest for training.

Steps (stock commands in subprocesses; nnU-Net finds our trainers through the package's start-up hook):

1. convert (``nnunetv2-mednext convert``), plan and preprocess once (``nnUNetv2_plan_and_preprocess``; ResEnc rows
   also ``-pl nnUNetPlannerResEncM``);
2. **pilot**: each row trains 4 short epochs; the median of epochs 2-4 gives its seconds per epoch (the first
   carries start-up costs; one epoch slowed by a neighbour's start-up must not set the budget);
3. **budget**: each row gets ``round(MINUTES * 60 / seconds_per_epoch)`` epochs of the same length, so every row
   trains for the same wall-clock time (the measured training time is reported next to the target);
4. per row and seed (``NNUNETV2_MEDNEXT_SEED``; one ``nnUNet_results`` folder per seed): ``nnUNetv2_train``,
   ``nnUNetv2_predict`` on the held-out cases, ``nnunetv2-mednext evaluate``;
5. the report: test Dice mean ± std over seeds, per-case paired wins, seconds per iteration, and validation
   pseudo-Dice (nnU-Net's per-epoch EMA) against training seconds as a plot.

``--jobs 2`` runs two trainings at once, each pinned to its own core (``taskset``) with one thread; pilots run the
same way, so the per-epoch times the budget is computed from hold for the real runs. Usage::

    python benchmarks/equal_time.py acdc --dry-run
    python benchmarks/equal_time.py hippocampus --minutes 10 --seeds 0 1 2 --jobs 2 --out docs/results_hippocampus.md
    python benchmarks/equal_time.py acdc --minutes 10 --seeds 0 1 2 --jobs 2 --out docs/results_acdc.md

All nnU-Net folders live under ``--work`` (keep it out of git). Reports name paths as ``$WORK`` and ``$DATA``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runner import Task, run_pinned, write_keeping

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("NNUNETV2_MEDNEXT_SHARED", REPO.parent / "shared"))
BUDGET_ENV, SEED_ENV = "NNUNETV2_MEDNEXT_BUDGET", "NNUNETV2_MEDNEXT_SEED"
FINAL_VALIDATION_ENV = "NNUNETV2_MEDNEXT_FINAL_VALIDATION"
PILOT_EPOCHS = 4  # seconds per epoch = median of epochs 2..PILOT_EPOCHS


@dataclass(frozen=True)
class Row:
    key: str
    trainer: str
    plans: str
    name: str
    what: str
    env: tuple[tuple[str, str], ...] = ()

    @property
    def model(self) -> str:
        return f"{self.trainer}__{self.plans}"


REF, RECIPE = "nnUNetTrainerMedNeXtRefUNet_budget", "nnUNetTrainerMedNeXtRecipeUNet_budget"
ROWS = {r.key: r for r in (
    Row("unet", REF, "nnUNetPlans", "nnU-Net default", "nnU-Net's trainer and U-Net (SGD 1e-2, poly)"),
    Row("unet_recipe", RECIPE, "nnUNetPlans", "U-Net + MedNeXt recipe",
        "the same U-Net with the MedNeXt recipe (AdamW, warm-up, poly): the control"),
    Row("mednext", "nnUNetTrainerMedNeXt_budget", "nnUNetPlans", "MedNeXt (default)",
        "the default seed MedNeXt on the same plans, MedNeXt recipe"),
    Row("v1_s_k3", "nnUNetTrainerMedNeXtV1_S_k3_budget", "nnUNetPlans", "MedNeXtV1 S k3",
        "Roy et al. MedNeXt S, kernel 3, on the same plans, Roy's recipe"),
    Row("resenc_m", REF, "nnUNetResEncUNetMPlans", "nnU-Net ResEnc-M", "nnU-Net's ResEnc-M preset, nnU-Net's recipe"),
    Row("v2_s", "nnUNetTrainerMedNeXtV2_S_budget", "nnUNetPlans", "MedNeXt-v2 S",
        "the smallest MedNeXt-v2 preset (GRN blocks) on the same plans, Roy's recipe"),
)}
DEFAULT_ROWS = ("unet", "unet_recipe", "mednext", "v1_s_k3")
PLANNER = {"nnUNetPlans": None, "nnUNetResEncUNetMPlans": "nnUNetPlannerResEncM"}


VARIANT_PLANS_PREFIX = "nnUNetPlans_v_"
OPTION_PLANS_PREFIX = "nnUNetPlans_o_"


def option_row(option: str) -> Row:
    """A row for one design option of the default network (``networks.registry.DESIGN_OPTIONS``): ``mednext_t`` with
    that one choice changed, on nnU-Net's plans' topology, MedNeXt recipe (the ablation of ``docs/ablations.md``)."""
    from nnunetv2_mednext.networks.registry import DESIGN_OPTIONS

    what = DESIGN_OPTIONS[option].description if option in DESIGN_OPTIONS else "?"
    return Row(f"o_{option}", RECIPE, f"{OPTION_PLANS_PREFIX}{option}", f"option {option}", what)


def variant_row(variant: str) -> Row:
    """A row for any registered variant (ablations): nnU-Net's plans with the architecture replaced by the variant on
    the same topology (``nnUNetPlans_v_<variant>``, same patch, batch and preprocessed data), trained by the trainer
    that builds whatever network the plans name, with the MedNeXt recipe."""
    return Row(f"v_{variant}", RECIPE, f"{VARIANT_PLANS_PREFIX}{variant}", variant,
               f"registered variant `{variant}` on `nnUNetPlans`' topology, MedNeXt recipe")


def write_variant_plans(preprocessed: Path, plans_name: str) -> Path:
    """``nnUNetPlans_v_<variant>.json`` / ``nnUNetPlans_o_<design option>.json`` beside ``nnUNetPlans.json``: every
    configuration's ``architecture`` is the variant (or ``mednext_t`` with the option) built on that configuration's
    topology; everything else (patch, batch, preprocessed data) stays nnU-Net's."""
    from nnunetv2_mednext.networks.registry import design_option_kwargs
    from nnunetv2_mednext.nnunet.trainers.network_from_plans import MEDNEXT_CLASS_PATH, variant_arch_kwargs

    if plans_name.startswith(OPTION_PLANS_PREFIX):
        variant, overrides = "mednext_t", design_option_kwargs(plans_name[len(OPTION_PLANS_PREFIX):])
    else:
        variant, overrides = plans_name[len(VARIANT_PLANS_PREFIX):], {}
    plans = json.loads((preprocessed / "nnUNetPlans.json").read_text())
    plans["plans_name"] = plans_name
    for cfg in plans["configurations"].values():
        if "architecture" in cfg:
            cfg["architecture"] = {"network_class_name": MEDNEXT_CLASS_PATH,
                                   "arch_kwargs": variant_arch_kwargs(variant, cfg["architecture"]["arch_kwargs"],
                                                                      overrides),
                                   "_kw_requires_import": ["conv_op"]}
    path = preprocessed / f"{plans['plans_name']}.json"
    path.write_text(json.dumps(plans, indent=1))
    return path


@dataclass
class Dataset:
    key: str
    dataset_id: int
    name: str
    config: str
    source: Path
    gpu_memory_target: float
    test_cases: int = 0

    @property
    def folder(self) -> str:
        return f"Dataset{self.dataset_id:03d}_{self.name}"


def datasets(args: argparse.Namespace) -> Dataset:
    if args.dataset == "acdc":
        return Dataset("acdc", 802, "ACDC", "2d", Path(args.source or SHARED / "data" / "acdc_ssl4mis_h5"),
                       args.gpu_memory_target or 1.0)
    if args.dataset == "kvasir":
        return Dataset("kvasir", 501, "Kvasir", "2d", Path(args.source or SHARED / "data" / "kvasir_seg"),
                       args.gpu_memory_target or 1.0, 100 if args.test_cases is None else args.test_cases)
    return Dataset("hippocampus", 4, "Hippocampus", "3d_fullres", Path(args.source or SHARED / "data" / "msd_hippocampus"),
                   args.gpu_memory_target or 8.0, 60 if args.test_cases is None else args.test_cases)


def _tool(name: str) -> str:
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else (shutil.which(name) or name)


@dataclass
class Job:
    """One command of the report: its name, argv and the environment it adds to the bench's."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)

    def shell(self) -> str:
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env.items())
        return (env + " " if env else "") + " ".join(shlex.quote(a) for a in [Path(self.argv[0]).name, *self.argv[1:]])


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.ds = datasets(args)
        self.work = Path(args.work).resolve()
        self.raw, self.pre = self.work / "nnUNet_raw", self.work / "nnUNet_preprocessed"
        self.rows = ([ROWS[k] for k in args.rows] + [variant_row(v) for v in args.variants]
                     + [option_row(o) for o in args.options])
        self.logs = self.work / "logs"
        self.commands: list[Job] = []

    # -- environment -----------------------------------------------------------------------------------------------
    def results(self, tag: str) -> Path:
        return self.work / f"nnUNet_results_{tag}"

    def env(self, tag: str = "setup") -> dict[str, str]:
        return {"nnUNet_raw": str(self.raw), "nnUNet_preprocessed": str(self.pre),
                "nnUNet_results": str(self.results(tag)), "nnUNet_def_n_proc": "1", "nnUNet_compile": "0",
                "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

    def run_all(self, jobs: Sequence[tuple[Job, str]], parallel: bool = True) -> None:
        """Run ``(job, results tag)`` pairs, ``--jobs`` at a time (one when not ``parallel``), each pinned to its own
        core; every job is listed in the report's commands (a dry run only lists them)."""
        self.commands += [job for job, _ in jobs]
        if self.args.dry_run or not jobs:
            return
        ours = ("nnUNet_n_proc_DA", BUDGET_ENV, SEED_ENV, FINAL_VALIDATION_ENV)
        base = {k: v for k, v in os.environ.items() if k not in ours}
        tasks = [Task(job.name, job.argv, {**base, **self.env(tag), **job.env},
                      self.logs / (job.name.replace(" ", "_").replace(":", "_") + ".log"), cwd=self.work)
                 for job, tag in jobs]
        run_pinned(tasks, self.args.jobs if parallel else 1)

    # -- steps -----------------------------------------------------------------------------------------------------
    def prepare(self) -> None:
        ds = self.ds
        if ds.key == "acdc":
            convert = [_tool("nnunetv2-mednext"), "convert", "acdc", str(ds.source), "--out", str(self.raw), "--id",
                       str(ds.dataset_id), "--name", ds.name, "--write-splits", "--preprocessed", str(self.pre), "-q"]
            if self.args.max_patients:
                convert += ["--max-per-split", str(self.args.max_patients)]
        elif ds.key == "kvasir":
            convert = [_tool("nnunetv2-mednext"), "convert", "images-masks", str(ds.source), "--out", str(self.raw),
                       "--id", str(ds.dataset_id), "--name", ds.name, "--labels", "polyp", "--test-cases",
                       str(ds.test_cases), "--seed", "0", "--write-splits", "--preprocessed", str(self.pre), "-q"]
        else:
            convert = [_tool("nnunetv2-mednext"), "convert", "msd", str(ds.source), "--out", str(self.raw), "--id",
                       str(ds.dataset_id), "--name", ds.name, "--test-cases", str(ds.test_cases), "--write-splits",
                       "--preprocessed", str(self.pre), "-q"]
            if self.args.max_cases:
                convert += ["--max-cases", str(self.args.max_cases)]
        if not (self.raw / ds.folder / "dataset.json").is_file() or self.args.dry_run:
            self.run_all([(Job("convert", convert), "setup")], parallel=False)
        else:
            self.commands.append(Job("convert", convert))  # done by an earlier invocation: the report lists it
        derived = (VARIANT_PLANS_PREFIX, OPTION_PLANS_PREFIX)
        needed = [r.plans for r in self.rows]
        if any(p.startswith(derived) for p in needed):
            needed.insert(0, "nnUNetPlans")  # variant and option plans are copies of it
        for plans in sorted(dict.fromkeys(needed), key=lambda p: p.startswith(derived)):
            if plans.startswith(derived):
                if not self.args.dry_run:
                    write_variant_plans(self.pre / ds.folder, plans)
                continue
            planner = PLANNER[plans]
            job = Job(f"plan {plans}", [
                _tool("nnUNetv2_plan_and_preprocess"), "-d", str(ds.dataset_id), "-c", ds.config,
                *(["-pl", planner] if planner else []), "-npfp", "1", "-np", "1",
                "-gpu_memory_target", str(ds.gpu_memory_target)])
            if (self.pre / ds.folder / f"{plans}.json").is_file() and not self.args.dry_run:
                self.commands.append(job)  # planned by an earlier invocation
                continue
            self.run_all([(job, "setup")], parallel=False)

    def train_job(self, row: Row, budget: str, seed: int | None, tag: str) -> Job:
        ds = self.ds
        # the test set scores every run: nnU-Net's end-of-training validation (minutes on a CPU) is skipped
        env = {BUDGET_ENV: budget, FINAL_VALIDATION_ENV: "0", "nnUNet_n_proc_DA": "0", **dict(row.env)}
        if seed is not None:
            env[SEED_ENV] = str(seed)
        plans = [] if row.plans == "nnUNetPlans" else ["-p", row.plans]
        return Job(f"train {row.key} {tag}", [_tool("nnUNetv2_train"), str(ds.dataset_id), ds.config, "0", "-tr",
                                              row.trainer, *plans, "-device", "cpu"], env)

    def fold_dir(self, row: Row, tag: str) -> Path:
        return self.results(tag) / self.ds.folder / f"{row.model}__{self.ds.config}" / "fold_0"

    def pilot(self) -> dict[str, float]:
        """Seconds per epoch of each row (median of pilot epochs 2..4 of the real length), measured like the real runs."""
        a = self.args
        jobs = []
        for r in self.rows:
            job = self.train_job(r, f"{PILOT_EPOCHS},{a.iters},{a.val_iters}", 0, "pilot")
            if a.dry_run or not (self.fold_dir(r, "pilot") / "checkpoint_final.pth").is_file():
                jobs.append((job, "pilot"))
            else:
                self.commands.append(job)  # done by an earlier invocation: the report still lists it
        self.run_all(jobs)
        if a.dry_run:
            return {r.key: 1.0 for r in self.rows}
        from nnunetv2_mednext.evaluation.compare import epoch_times

        return {r.key: float(np.median(epoch_times(self.fold_dir(r, "pilot"))[1:])) for r in self.rows}

    def predict_jobs(self, row: Row, tag: str) -> list[Job]:
        """Export (exported backends only), predict the test cases, evaluate: run step by step over all runs."""
        ds = self.ds
        pred = self.fold_dir(row, tag) / "test_predictions"
        args = ["-i", str(self.raw / ds.folder / "imagesTs"), "-o", str(pred), "-d", str(ds.dataset_id), "-c",
                ds.config, "-f", "0", "-tr", row.trainer, "-p", row.plans, "-device", "cpu", "-npp", "1", "-nps", "1",
                "--disable_tta"]
        backend = self.args.backend
        if backend == "nnunet":
            jobs = [Job(f"predict {row.key} {tag}", [_tool("nnUNetv2_predict"), *args], dict(row.env))]
        else:  # the exported network inside nnU-Net's predictor (tests/test_deploy.py: nnU-Net's masks)
            jobs = [Job(f"export {row.key} {tag}", [_tool("nnunetv2-mednext"), "export-onnx", "-m",
                                                    str(self.fold_dir(row, tag).parent), "-f", "0"], dict(row.env)),
                    Job(f"predict {row.key} {tag}", [_tool("nnunetv2-mednext"), "predict", *args, "--backend",
                                                     backend], dict(row.env))]
        evaluate = Job(f"evaluate {row.key} {tag}", [_tool("nnunetv2-mednext"), "evaluate",
                                                     str(self.raw / ds.folder / "labelsTs"), str(pred), "-o",
                                                     str(pred.parent / "test_evaluation"), "--method", row.key,
                                                     "--mode", "mm"])
        return [*jobs, evaluate]

    def main_runs(self, epochs: dict[str, int]) -> None:
        a = self.args
        from nnunetv2_mednext.evaluation.compare import epoch_times

        jobs, reused = [], []
        for seed in a.seeds:
            for row in self.rows:
                tag = f"seed{seed}"
                if not a.dry_run and (self.fold_dir(row, tag) / "test_evaluation" / "summary.json").is_file():
                    # done by an earlier invocation: listed in the report with the epochs it really trained
                    done = len(epoch_times(self.fold_dir(row, tag))) or epochs[row.key]
                    self.commands.append(self.train_job(row, f"{done},{a.iters},{a.val_iters}", seed, tag))
                    reused.append((row, tag))
                    continue
                train = self.train_job(row, f"{epochs[row.key]},{a.iters},{a.val_iters}", seed, tag)
                jobs.append((train, tag, row))
        self.run_all([(train, tag) for train, tag, _ in jobs])
        self.commands += [job for r, tag in reused for job in self.predict_jobs(r, tag)]
        todo = [(row, tag) for _, tag, row in jobs]  # every run trained now gets predicted and evaluated
        n_steps = len(self.predict_jobs(self.rows[0], "seed0")) if self.rows else 0
        for step in range(n_steps):  # (export,) prediction, evaluation: each step's input comes from the one before
            self.run_all([(self.predict_jobs(r, tag)[step], tag) for r, tag in todo])


# -- report --------------------------------------------------------------------------------------------------------
def _fg_per_case(summary: dict) -> dict[str, float]:
    out = {}
    for c in summary["metric_per_case"]:
        vals = [m["Dice"] for m in c["metrics"].values() if m.get("Dice") is not None and not math.isnan(m["Dice"])]
        out[c["case"]] = float(np.mean(vals)) if vals else float("nan")
    return out


def collect(bench: Bench) -> dict:
    """Per row: per seed test summary, per-case foreground Dice, training time, curves."""
    import torch

    from nnunetv2_mednext.evaluation.compare import count_parameters, epoch_times

    out: dict = {}
    for row in bench.rows:
        entry: dict = {"seeds": {}, "name": row.name, "trainer": row.trainer, "plans": row.plans, "what": row.what}
        for seed in bench.args.seeds:
            fold = bench.fold_dir(row, f"seed{seed}")
            summary = json.loads((fold / "test_evaluation" / "summary.json").read_text())
            ckpt = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
            log = ckpt["logging"]
            times = epoch_times(fold)
            entry["seeds"][seed] = {
                "mean_dice": summary["foreground_mean"]["Dice"],
                "per_class": {k: v["Dice"] for k, v in summary["mean"].items()},
                "per_case": _fg_per_case(summary),
                "train_seconds": float(sum(times)),
                "epochs": len(times),
                "curve": {"seconds": np.cumsum(times).tolist(), "ema_dice": [float(x) for x in log["ema_fg_dice"]]},
            }
            entry.setdefault("params", count_parameters(fold)[0])
        out[row.key] = entry
    return out


def paired_wins(a: dict, b: dict) -> tuple[int, int, int]:
    """Cases where row ``a`` (mean over seeds) beats / ties / loses to row ``b``."""
    def avg(entry: dict) -> dict[str, float]:
        cases = next(iter(entry["seeds"].values()))["per_case"].keys()
        return {c: float(np.nanmean([s["per_case"][c] for s in entry["seeds"].values()])) for c in cases}

    pa, pb = avg(a), avg(b)
    wins = sum(pa[c] > pb[c] + 1e-9 for c in pa)
    losses = sum(pa[c] < pb[c] - 1e-9 for c in pa)
    return wins, len(pa) - wins - losses, losses


def plot_curves(data: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for key, entry in data.items():
        for i, s in enumerate(entry["seeds"].values()):
            ax.plot(s["curve"]["seconds"], s["curve"]["ema_dice"], color=f"C{list(data).index(key)}", alpha=0.8,
                    label=entry["name"] if i == 0 else None)
    ax.set_xlabel("training wall-clock (s)")
    ax.set_ylabel("validation pseudo-Dice (EMA)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _secs(x: float) -> str:
    return "-" if x != x else f"{x:.1f}"  # NaN: no pilot (--fixed-epochs)


def write_report(bench: Bench, per_epoch: dict[str, float], epochs: dict[str, int], out: Path) -> None:
    import torch

    a, ds = bench.args, bench.ds
    data = collect(bench)
    (bench.work / "equal_time.json").write_text(json.dumps(data, indent=1))
    png = out.with_suffix(".png")
    budget = f"{a.fixed_epochs} epochs" if a.fixed_epochs else f"{a.minutes:g} min budget"
    plot_curves(data, png, f"{ds.name} {ds.config}: validation Dice vs training time ({budget})")
    labels = list(next(iter(next(iter(data.values()))["seeds"].values()))["per_class"])
    n_cases = len(next(iter(next(iter(data.values()))["seeds"].values()))["per_case"])
    lines = [
        (f"# {ds.name} {ds.config}: accuracy at equal iterations ({a.fixed_epochs} epochs per run)" if a.fixed_epochs
         else f"# {ds.name} {ds.config}: accuracy at equal CPU wall-clock ({a.minutes:g} min of training per run)"),
        "",
        f"Written by `benchmarks/equal_time.py` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC. Command:", "",
        "```bash", "python benchmarks/equal_time.py " + " ".join(shlex.quote(x) for x in a.argv), "```", "",
        "## Setup", "",
        f"- Data: `$DATA/{ds.source.name}`; " + (
            "TransUNet split: fold 0 trains on 70 patients and validates on 10; the test set is the 20 test "
            "patients (40 volumes)." if ds.key == "acdc" else
            (f"{ds.test_cases} frames drawn with seed 0 (`convert images-masks --test-cases {ds.test_cases} --seed 0`) "
             f"are held out as the test set ({n_cases} cases, never trained on); fold 0 of a " if ds.key == "kvasir" else
             f"the last {ds.test_cases} cases by name are held out as the test set ({n_cases} cases); fold 0 of a ")
            + "5-fold split of the rest trains and validates."),
        f"- Plans: {'; '.join(f'`{p}`: {_plans_line(bench, p)}' for p in dict.fromkeys(r.plans for r in bench.rows))}.",
        (f"- Budget: every run trains {a.fixed_epochs} epochs of {a.iters} training + {a.val_iters} validation "
         "iterations (`--fixed-epochs`: equal iterations, not equal wall-clock). Seeds: " if a.fixed_epochs else
         f"- Budget: every run trains for about {a.minutes:g} min: epochs of {a.iters} training + {a.val_iters} "
         "validation iterations, as many as the row's pilot epoch time allows (table below). Seeds: ")
        + f"{', '.join(map(str, a.seeds))} (`{SEED_ENV}`, one `nnUNet_results` folder per seed). nnU-Net's "
        f"end-of-training validation is skipped (`{FINAL_VALIDATION_ENV}=0`): the held-out test set scores each run.",
        f"- Machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}; "
        f"{a.jobs} run(s) at a time, each pinned to its own core with 1 thread. Load average at the end: "
        f"{' / '.join(f'{x:.2f}' for x in os.getloadavg())}.",
        "- Test predictions without mirroring; Dice per class from `nnunetv2-mednext evaluate`.", "",
        "## Test Dice (mean ± std over seeds)", "",
        "| Row | Params (M) | s / epoch (pilot) | epochs | train time (s, mean) | mean Dice % | "
        + " | ".join(f"class {c} %" for c in labels) + " |",
        "|---|---:|---:|---:|---:|---:|" + "---:|" * len(labels),
    ]
    for key, e in data.items():
        seeds = list(e["seeds"].values())
        md = [100 * s["mean_dice"] for s in seeds]
        cells = [f"{np.mean(md):.2f} ± {np.std(md):.2f}"]
        cells += [f"{100 * np.mean([s['per_class'][c] for s in seeds]):.2f}" for c in labels]
        # epochs as trained (a row reused from an earlier invocation keeps the budget it was given then)
        ran = sorted({s["epochs"] for s in seeds})
        ran_txt = str(ran[0]) if len(ran) == 1 else f"{ran[0]}-{ran[-1]}"
        lines.append(f"| {e['name']} (`{e['trainer']}`, `{e['plans']}`) | {(e['params'] or 0) / 1e6:.2f} | "
                     f"{_secs(per_epoch[key])} | {ran_txt} | {np.mean([s['train_seconds'] for s in seeds]):.0f} | "
                     + " | ".join(cells) + " |")
    lines += ["", "Per seed (mean Dice %): " + "; ".join(
        f"{e['name']}: " + ", ".join(f"{100 * s['mean_dice']:.2f}" for s in e["seeds"].values())
        for e in data.values()), ""]
    pairs = [(x, y) for x in data if x.startswith(("mednext", "v1", "v2", "v_", "o_")) for y in ("unet_recipe", "unet")
             if y in data]
    # design options and variants against the default network they change (the ablation's comparison)
    pairs += [(x, "mednext") for x in data if x.startswith(("o_", "v_")) and "mednext" in data]
    # MedNeXt-v2 against what it changes (GRN on v1's blocks) and against the default
    pairs += [("v2_s", y) for y in ("v1_s_k3", "mednext") if "v2_s" in data and y in data]
    if pairs:
        lines += ["## Paired per-case comparison (Dice averaged over seeds)", "",
                  "| A | B | A better | tie | B better |", "|---|---|---:|---:|---:|"]
        for x, y in pairs:
            w, t, l_ = paired_wins(data[x], data[y])
            lines.append(f"| {data[x]['name']} | {data[y]['name']} | {w} | {t} | {l_} |")
        lines.append("")
    lines += [f"![validation Dice against training time]({png.name})", "",
              "The curves are nnU-Net's per-epoch validation pseudo-Dice (EMA over epochs, a few validation patches "
              "per epoch), against the cumulative training-epoch time.", "",
              "## Commands", "", "Environment (`$WORK` = `--work`; `nnUNet_results` is `$WORK/nnUNet_results_<tag>` "
              "per seed and `_pilot` for the pilots):", "", "```bash",
              "export " + " ".join(f"{k}={shlex.quote(v)}" for k, v in bench.env("TAG").items()), "```", "", "```bash",
              *[j.shell() for j in bench.commands], "```", ""]
    text = "\n".join(lines).replace(str(bench.work), "$WORK").replace(str(ds.source.parent), "$DATA")
    write_keeping(out, text, before="## Commands")  # hand-written readings survive a regeneration
    print(f"wrote {out} and {png}")


def _plans_line(bench: Bench, plans: str) -> str:
    try:
        cfg = json.loads((bench.pre / bench.ds.folder / f"{plans}.json").read_text())["configurations"][bench.ds.config]
        return f"patch {cfg['patch_size']}, batch {cfg['batch_size']}"
    except (OSError, KeyError, ValueError):
        return "?"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", choices=("acdc", "hippocampus", "kvasir"))
    p.add_argument("--source", help="dataset folder (default $NNUNETV2_MEDNEXT_SHARED/data/<dataset copy>)")
    p.add_argument("--work", default="equal_time_work", help="folder for nnU-Net's folders (default ./equal_time_work)")
    p.add_argument("--minutes", type=float, default=10, help="training wall-clock per run (default 10)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default 0 1 2)")
    p.add_argument("--rows", nargs="*", default=list(DEFAULT_ROWS), choices=list(ROWS),
                   help=f"rows (default: {' '.join(DEFAULT_ROWS)})")
    p.add_argument("--variants", nargs="*", default=[],
                   help="extra rows: registered variants (`nnunetv2-mednext info`), each on nnU-Net's plans' topology")
    p.add_argument("--options", nargs="*", default=[],
                   help="extra rows: design options of the default network (networks.registry.DESIGN_OPTIONS)")
    p.add_argument("--iters", type=int, default=25, help="training iterations per epoch (default 25)")
    p.add_argument("--val-iters", type=int, default=2, help="validation iterations per epoch (default 2)")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time, each pinned to its own core (default 1)")
    p.add_argument("--fixed-epochs", type=int, default=None, metavar="N",
                   help="every row trains N epochs (no pilot; equal iterations, not equal wall-clock): separates an "
                        "option's effect from the epoch it gains or loses in the pilot")
    p.add_argument("--gpu-memory-target", type=float,
                   help="planner memory target in GB (default 1 ACDC and Kvasir, 8 Hippocampus)")
    p.add_argument("--test-cases", type=int, default=None,
                   help="Hippocampus / Kvasir: cases held out for testing (default 60 / 100)")
    p.add_argument("--max-cases", type=int, help="Hippocampus: convert only the first N cases (smoke runs)")
    p.add_argument("--max-patients", type=int, help="ACDC: keep only N patients per split (smoke runs)")
    p.add_argument("--backend", choices=("nnunet", "onnxruntime", "openvino"), default="nnunet",
                   help="test-set prediction: nnUNetv2_predict (default), or the exported network in nnU-Net's "
                        "predictor (export-onnx + nnunetv2-mednext predict --backend; same masks, faster on a CPU)")
    p.add_argument("--out", help="report (default docs/results_<dataset>.md)")
    p.add_argument("--dry-run", action="store_true", help="print the commands only")
    args = p.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    if not args.rows and not args.variants and not args.options:
        p.error("no rows: give --rows, --variants and/or --options")
    from nnunetv2_mednext.networks.registry import DESIGN_OPTIONS

    unknown = [o for o in args.options if o not in DESIGN_OPTIONS]
    if unknown:
        p.error(f"unknown design option {unknown[0]!r}; choose from {', '.join(DESIGN_OPTIONS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bench = Bench(args)
    if not args.dry_run and not bench.ds.source.is_dir():
        raise SystemExit(f"{bench.ds.source} not found; pass --source (docs/datasets.md says where to get it)")
    from nnunetv2_mednext.fsutil import exclusive_lock

    bench.work.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(bench.work, "benchmark work folder"):
        t0 = time.perf_counter()
        bench.prepare()
        if args.fixed_epochs:
            per_epoch = {r.key: float("nan") for r in bench.rows}
            epochs = {r.key: args.fixed_epochs for r in bench.rows}
        else:
            per_epoch = bench.pilot()
            budget_s = args.minutes * 60
            epochs = {k: max(1, round(budget_s / t)) for k, t in per_epoch.items()}
        for k in epochs:
            print(f"{k}: {per_epoch[k]:.1f} s per epoch -> {epochs[k]} epochs", flush=True)
        bench.main_runs(epochs)
        if args.dry_run:
            for job in bench.commands:
                print(job.shell())
            return 0
        out = Path(args.out) if args.out else REPO / "docs" / f"results_{args.dataset}.md"
        with exclusive_lock(out, "report"):
            write_report(bench, per_epoch, epochs, out)
        print(f"total {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
