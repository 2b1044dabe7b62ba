"""The seed paper's classification sets (MSLD v1, SARS-CoV-2 CT) through `nnunetv2-mednext classify`, one job per
(model, seed, fold), resumable across sessions; then one report.

Split kinds (``../shared/docs/paper.md`` §7.4), labelled apart everywhere:

* ``b``: leak-safe, ``--split cv-test``: stratified group 5-fold, MSLD grouped by case (file-name prefix), both sets by
  exact and near duplicates; each fold has a test part (20 %) and a validation part carved from its training part
  (10 %): the best checkpoint is chosen on validation, the test part is reported.
* ``a``: ``--split image-cv``: the community image-level stratified 5-fold (leaky by design, for comparison with the
  published 97-99 % figures): the final checkpoint is reported on the held-out fold.

Every row trains from random initialisation with the same recipe (§7.4: 224 px, AdamW lr 5e-4, batch 32, weight
decay 0.05, 5 warm-up epochs then cosine, label smoothing 0.1, drop-path 0.1, RandomResizedCrop/flip/rotation, colour
jitter for MSLD only), as a user would run it::

    nnunetv2-mednext classify train DATA.csv --splits SPLITS.json -o RUN --model M --seed S --fold F \\
        --time-budget 600 --model-kwargs '{"drop_path_rate": 0.1}' [--color-jitter] --quiet

    # equal CPU wall-clock, 10 min per run, 3 seeds on fold 0, two pinned 1-thread jobs at a time
    python benchmarks/classification_study.py run --dataset msld --split b --minutes 10 --seeds 0 1 2 --folds 0 \\
        --models mednext_cls_t mednext_cls_s resnet18 resnet50 convnext_atto efficientnet_b0 --jobs 2
    # the seed's full protocol length on every fold
    python benchmarks/classification_study.py run --dataset msld --split b --epochs 100 --seeds 0 --folds 0 1 2 3 4 \\
        --models mednext_cls_t resnet18 --jobs 2
    python benchmarks/classification_study.py report          # docs/results_classification.md + figures

A finished job leaves ``benchmarks/results/classification/<study>/<model>__s<seed>__f<fold>.json`` (committed: the
metrics, the test predictions and the training history) and is skipped from then on; an interrupted one continues
from its ``checkpoint_latest.pt`` under ``--work`` (``classify train --resume``). ``--max-minutes`` stops starting
new jobs after that many minutes, so a batch fits a session.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from runner import Task, run_pinned  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "classification"
DATASETS = {  # layout, shared folder, positive class, colour jitter
    "msld": ("msld", "msld", "Monkeypox", True),
    "sarscov2": ("sarscov2", "sars_cov2_ct", "COVID", False),
}
SPLITS = {"b": "cv-test", "a": "image-cv"}
SPLIT_NAMES = {"b": "(b) leak-safe: grouped 5-fold, 70:10:20 train:val:test, best-on-val checkpoint, test reported",
               "a": "(a) community image-level 5-fold (LEAKY), final checkpoint on the held-out fold"}
RECIPE = ["--input-size", "224", "--batch-size", "32", "--lr", "5e-4", "--weight-decay", "0.05", "--warmup-epochs",
          "5", "--label-smoothing", "0.1"]
MODEL_KWARGS = {"drop_path_rate": 0.1}
BASELINE = "mednext_cls_t"
# ablation rows: name -> (network, extra model kwargs, extra `classify train` options)
VARIANTS: dict[str, tuple[str, dict, list[str]]] = {
    "mednext_cls_t-compB": ("mednext_cls_t", {"composition": "B"}, []),  # LA-FFN in the last two stages only
    "mednext_cls_t-grey": ("mednext_cls_t", {}, ["--channels", "grey"]),  # one input channel (grey CT)
    "mednext_cls_t-nodp": ("mednext_cls_t", {"drop_path_rate": 0.0}, []),
    "mednext_cls_t-ls0": ("mednext_cls_t", {}, ["--label-smoothing", "0"]),
    "mednext_cls_t-light": ("mednext_cls_t", {}, ["--augment", "light"]),
    "resnet18-grey": ("resnet18", {}, ["--channels", "grey"]),
}


def row_options(row: str) -> list[str]:
    """``--model`` and ``--model-kwargs`` (and any extra options) of a row: a network name or a VARIANTS entry."""
    model, kwargs, extra = VARIANTS.get(row, (row, {}, []))
    return ["--model", model, "--model-kwargs", json.dumps({**MODEL_KWARGS, **kwargs}), *extra]


def shared() -> Path:
    return Path(os.environ.get("NNUNETV2_MEDNEXT_SHARED", REPO.parent / "shared"))


def study_name(dataset: str, split: str, minutes: float | None, epochs: int | None) -> str:
    length = f"t{minutes:g}min" if minutes else f"e{epochs}"
    return f"{dataset}_{split}_{length}"


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "nnunetv2_mednext", "classify", *args]


def prepare_common(dataset: str, split: str, work: Path, source: Path | None, results: Path) -> tuple[Path, Path]:
    """The converted CSV and the one split file every job of (dataset, split) trains on. The split is kept with
    the results (``<results>/splits/<dataset>_<split>.json``): a later session, on another machine or after a
    change to the split code, trains on the very split the earlier jobs had."""
    import subprocess

    layout, folder, _, _ = DATASETS[dataset]
    data = work / "data" / dataset
    if not (data / "dataset.csv").is_file():
        subprocess.run(cli("convert", layout, str(source or shared() / "data" / folder), "-o", str(data)), check=True)
    kept = results / "splits" / f"{dataset}_{split}.json"
    split_file = work / "common" / f"{dataset}_{split}" / "splits.json"
    with open(data / "dataset.csv", newline="") as f:
        csv_ids = [row["path"] for row in csv.DictReader(f)]
    if kept.is_file():  # ids as <class folder>/<file>, unique in both sets: mapped back to this CSV's paths
        by_name = {portable_id(i): i for i in csv_ids}
        raw = json.loads(kept.read_text())
        raw["folds"] = [{part: [by_name[i] for i in ids] for part, ids in fold.items()} for fold in raw["folds"]]
        split_file.parent.mkdir(parents=True, exist_ok=True)
        split_file.write_text(json.dumps(raw, indent=1))
    elif not split_file.is_file():
        subprocess.run(cli("split", str(data / "dataset.csv"), "-o", str(split_file.parent), "--split", SPLITS[split],
                           "--folds", "5", "--seed", "12345"), check=True)
    if not kept.is_file():
        raw = json.loads(split_file.read_text())
        raw["folds"] = [{part: [portable_id(i) for i in ids] for part, ids in fold.items()} for fold in raw["folds"]]
        kept.parent.mkdir(parents=True, exist_ok=True)
        kept.write_text(json.dumps(raw, indent=1) + "\n")
    return data / "dataset.csv", split_file


def portable_id(sample_id: str) -> str:
    """``../../shared/data/msld/original_images/Others/19_1.jpg`` -> ``Others/19_1.jpg``."""
    return "/".join(sample_id.replace("\\", "/").split("/")[-2:])


TINY = ["--input-size", "32", "--batch-size", "8", "--warmup-epochs", "1"]  # --tiny: proves the script (CI)


def result_path(study: str, model: str, seed: int, fold: int, results: Path = RESULTS) -> Path:
    return results / study / f"{model}__s{seed}__f{fold}.json"


def collect(run: Path, fold: int, dataset: str) -> dict:
    """What a finished job leaves for the report: metrics, test predictions (label, P(positive)), history."""
    fdir = run / f"fold_{fold}"
    metrics = json.loads((fdir / "metrics.json").read_text())
    config = json.loads((run / "config.json").read_text())
    history = json.loads((fdir / "history.json").read_text())["history"]
    positive = DATASETS[dataset][2]
    with open(fdir / "predictions.csv", newline="") as f:
        preds = [[row["path"].split("/")[-2] + "/" + row["path"].split("/")[-1], row["label"],
                  round(float(row[f"prob_{positive}"]), 6)] for row in csv.DictReader(f)]
    return {"metrics": metrics, "epochs": len(history), "train_time_s": round(sum(h["time_s"] for h in history), 1),
            "time_budget": config.get("time_budget"), "model_source": config["meta"].get("model_source"),
            "params": config["meta"].get("params"), "history": [
                {k: h.get(k) for k in ("epoch", "time_s", "train_loss", "val_loss", "val_accuracy",
                                       "val_balanced_accuracy")} for h in history],
            "predictions": preds, "config": {k: config.get(k) for k in ("seed", "input_size", "channels")}}


def run(args: argparse.Namespace) -> int:
    study = study_name(args.dataset, args.split, args.minutes, args.epochs)
    work = args.work.resolve()
    data_csv, splits = prepare_common(args.dataset, args.split, work, args.data, args.results)
    jitter = ["--color-jitter"] if DATASETS[args.dataset][3] else []
    length = ["--time-budget", str(60 * args.minutes)] if args.minutes else ["--epochs", str(args.epochs)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
           "PYTHONWARNINGS": "ignore", "MPLBACKEND": "Agg"}
    recipe = RECIPE + TINY if args.tiny else RECIPE
    todo = [(m, s, f) for s in args.seeds for f in args.folds for m in args.models
            if not result_path(study, m, s, f, args.results).is_file()]
    print(f"{study}: {len(todo)} jobs to run", flush=True)
    t0 = time.time()
    while todo:
        if args.max_minutes and time.time() - t0 > 60 * args.max_minutes:
            print(f"--max-minutes {args.max_minutes:g} reached: {len(todo)} jobs left for the next call", flush=True)
            break
        batch, todo = todo[: max(1, args.jobs)], todo[max(1, args.jobs):]
        tasks = []
        for model, seed, fold in batch:
            out = work / study / model / f"s{seed}"
            resume = ["--resume"] if (out / "config.json").is_file() else []
            tasks.append(Task(f"{study}/{model}/s{seed}/f{fold}", cli(
                "train", str(data_csv), "--splits", str(splits), "-o", str(out), *row_options(model), "--seed",
                str(seed), "--fold", str(fold), "--device", args.device, "--quiet", *recipe, *length, *jitter, *resume),
                env, work / "logs" / study / f"{model}__s{seed}__f{fold}.log"))
        run_pinned(tasks, args.jobs)
        for model, seed, fold in batch:
            res = collect(work / study / model / f"s{seed}", fold, args.dataset)
            res["command"] = "nnunetv2-mednext classify train DATA.csv --splits SPLITS.json -o RUN " + " ".join(
                a if " " not in a else f"'{a}'" for a in [
                    *row_options(model), "--seed", str(seed), "--fold", str(fold), "--device", args.device, "--quiet",
                    *recipe, *length, *jitter])
            res["machine"] = (f"{platform.machine()}, {os.cpu_count()} logical CPUs, {args.jobs} job(s) at once, "
                              "each pinned to one core with 1 thread")
            path = result_path(study, model, seed, fold, args.results)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(res, indent=1) + "\n")
            print(f"  {path.name}: accuracy {100 * res['metrics']['accuracy']:.2f} %, balanced "
                  f"{100 * res['metrics']['balanced_accuracy']:.2f} %, {res['epochs']} epochs", flush=True)
    return 0


# ---------------------------------------------------------------------------------------------------- report
def binary_metrics(res: dict, positive: str) -> dict[str, float | None]:
    m = res["metrics"]
    pc = m["per_class"][positive]
    return {"accuracy": m["accuracy"], "balanced_accuracy": m["balanced_accuracy"], "precision": pc["precision"],
            "recall": pc["recall"], "f1": pc["f1"], "specificity": pc["specificity"], "auc": pc["auc"]}


def _ms(values: list[float | None]) -> str:
    v = [x for x in values if x is not None]
    if not v:
        return "n/a"
    sd = statistics.stdev(v) if len(v) > 1 else 0.0
    return f"{100 * statistics.fmean(v):.2f} ± {100 * sd:.2f}"


def load_study(folder: Path) -> dict[str, dict[tuple[int, int], dict]]:
    out: dict[str, dict[tuple[int, int], dict]] = {}
    for p in sorted(folder.glob("*.json")):
        model, s, f = p.stem.split("__")
        out.setdefault(model, {})[(int(s[1:]), int(f[1:]))] = json.loads(p.read_text())
    return out


KEYS = ("accuracy", "balanced_accuracy", "precision", "recall", "f1", "specificity", "auc")


def split_kind(study: str) -> str:
    return study.split("_")[1]


def study_table(study: str, runs: dict[str, dict[tuple[int, int], dict]], positive: str) -> list[str]:
    lines = ["| model | runs | epochs | s / step (pilot) | train s | val. balanced acc. % (best epoch) | accuracy % | "
             "balanced acc. % | precision % | recall % | F1 % | specificity % | ROC AUC % | "
             "Δ balanced acc. vs mednext_cls_t, paired (pp) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    base = runs.get(BASELINE, {})
    order = sorted(runs, key=lambda m: (m != BASELINE, not m.startswith("mednext"), m))
    for model in order:
        rs = runs[model]
        bm = [binary_metrics(r, positive) for r in rs.values()]
        paired = [100 * (rs[k]["metrics"]["balanced_accuracy"] - base[k]["metrics"]["balanced_accuracy"])
                  for k in sorted(rs) if k in base]
        diff = "-" if model == BASELINE or not paired else (
            f"{statistics.fmean(paired):+.2f} ({', '.join(f'{d:+.1f}' for d in paired)})")
        epochs = sorted({r["epochs"] for r in rs.values()})
        steps = [r["time_budget"]["step_s"] for r in rs.values() if r.get("time_budget")]
        val = [max((h["val_balanced_accuracy"] or 0) for h in r["history"]) for r in rs.values()
               if any(h.get("val_balanced_accuracy") is not None for h in r["history"])]
        lines.append(f"| `{model}` | {len(rs)} | {'/'.join(map(str, epochs))} | "
                     f"{'/'.join(f'{x:.1f}' for x in steps) if steps else '-'} | "
                     f"{statistics.fmean(r['train_time_s'] for r in rs.values()):.0f} | "
                     f"{_ms(val) if split_kind(study) == 'b' else '-'} | "
                     + " | ".join(_ms([b[k] for b in bm]) for k in KEYS) + f" | {diff} |")
    return lines


PUBLISHED = {  # ../shared/docs/paper.md §7.2, beside our numbers with their protocols
    "msld": "Published: the seed paper 98.12 % (metric and split not stated); the dataset paper's ResNet-50 "
            "82.96 ± 4.57 % and VGG-16 81.48 ± 6.87 % accuracy (patient-independent 3-fold, "
            "trained on augmented copies, originals as test); image-level or unverified figures of 95-99 % elsewhere.",
    "sarscov2": "Published: the seed paper 98.39 % (metric and split not stated); the dataset paper's xDNN F1 97.31 % "
                "(image-level split); later papers 97.8-99 % accuracy (image-level, unverified). No patient ids "
                "exist, so no published figure is patient-independent; at full resolution, not this <= 224 px copy.",
}


def ranking(runs: dict[str, dict[tuple[int, int], dict]]) -> str:
    """Rows by mean test balanced accuracy, best first, and where the default stands."""
    means = {m: statistics.fmean(r["metrics"]["balanced_accuracy"] for r in rs.values()) for m, rs in runs.items()
             if m not in VARIANTS}  # ablation rows are read beside the default, not ranked
    order = sorted(means, key=lambda m: -means[m])
    rank = f"`{BASELINE}` ranks {order.index(BASELINE) + 1} of {len(order)}" if BASELINE in order else ""
    return ("Ranking by mean test balanced accuracy (ablation rows left out): " + ", ".join(f"`{m}` {100 * means[m]:.2f}" for m in order)
            + (f"; {rank}." if rank else "."))


def plot_study(study: str, runs: dict, positive: str, path: Path) -> None:
    """Per model: pooled confusion matrix, ROC curve, validation accuracy against training seconds."""
    import numpy as np
    from sklearn.metrics import roc_curve

    from nnunetv2_mednext.classification.plots import new_figure

    models = sorted(runs, key=lambda m: (m != BASELINE, not m.startswith("mednext"), m))
    fig = new_figure(3.0 * len(models), 8.4)
    axes = fig.subplots(3, len(models), squeeze=False)
    for j, model in enumerate(models):
        rs = list(runs[model].values())
        labels = rs[0]["metrics"]["confusion_matrix"]["labels"]
        cm = sum(np.array(r["metrics"]["confusion_matrix"]["matrix"]) for r in rs)
        ax = axes[0][j]
        ax.imshow(cm, cmap="Blues")
        for (a, b), v in np.ndenumerate(cm):
            ax.text(b, a, str(v), ha="center", va="center", fontsize=9)
        ax.set_xticks(range(len(labels)), labels, fontsize=7)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        ax.set_title(f"{model}\n(pooled over {len(rs)} runs)", fontsize=8)
        ax = axes[1][j]
        for r in rs:
            y = [1 if p[1] == positive else 0 for p in r["predictions"]]
            s = [p[2] for p in r["predictions"]]
            if 0 < sum(y) < len(y):
                fpr, tpr, _ = roc_curve(y, s)
                ax.plot(fpr, tpr, lw=1)
        ax.plot([0, 1], [0, 1], "k:", lw=0.5)
        ax.set_xlabel("1 - specificity", fontsize=7)
        ax.set_ylabel(f"sensitivity ({positive})", fontsize=7)
        ax = axes[2][j]
        for r in rs:
            t = np.cumsum([h["time_s"] for h in r["history"]])
            ax.plot(t, [100 * (h["val_accuracy"] or 0) for h in r["history"]], lw=1)
        ax.set_xlabel("training s", fontsize=7)
        ax.set_ylabel("val. accuracy %", fontsize=7)
        ax.set_ylim(40, 100)
    fig.suptitle(study, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def report(args: argparse.Namespace) -> int:
    sections = []
    for folder in sorted(p for p in args.results.glob("*") if p.is_dir() and p.name != "splits"):
        study = folder.name
        dataset, split, length = study.split("_", 2)
        runs = load_study(folder)
        if not runs:
            continue
        positive = DATASETS[dataset][2]
        any_run = next(iter(runs.get(BASELINE, next(iter(runs.values()))).values()))
        size = "224 px" + (" (the shared copy's slices are stored with the longest side <= 224 px)"
                           if dataset == "sarscov2" else "")
        what = (f"{length[1:-3]} CPU-minutes per run (`--time-budget`)" if length.startswith("t")
                else f"{length[1:]} epochs per run")
        png = args.out.parent / f"results_classification_{study}.png"
        plot_study(study, runs, positive, png)
        sections += [f"## {dataset.upper() if dataset == 'msld' else 'SARS-CoV-2 CT'}: split {SPLIT_NAMES[split]}; "
                     f"{what}", "", f"Input {size}; positive class {positive}; mean ± std over runs (seeds x folds; "
                     f"runs listed by `(seed, fold)` in `benchmarks/results/classification/{study}/`); machine: "
                     f"{any_run['machine']}. One job's command (every row the same but `--model`/`--model-kwargs`): "
                     f"`{any_run['command']}`.", "",
                     *study_table(study, runs, positive), "", ranking(runs), "", PUBLISHED[dataset], "",
                     f"![{study}]({png.name})", ""]
    text = ["# Classification on the seed paper's datasets (generated by `benchmarks/classification_study.py report`)",
            "", "Every table is one study: one dataset, one split kind, one length. Rows train from random "
            "initialisation with the same recipe; see the script's docstring for the commands.", "", *sections]
    args.out.write_text("\n".join(text) + "\n")
    print(f"wrote {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="action", required=True)
    r = sub.add_parser("run", help="run the jobs of one study that have no result yet")
    r.add_argument("--dataset", choices=list(DATASETS), required=True)
    r.add_argument("--split", choices=list(SPLITS), required=True)
    g = r.add_mutually_exclusive_group(required=True)
    g.add_argument("--minutes", type=float, help="equal wall-clock: training minutes per run (--time-budget)")
    g.add_argument("--epochs", type=int, help="equal epochs")
    r.add_argument("--models", nargs="+", default=[BASELINE, "resnet18"])
    r.add_argument("--seeds", type=int, nargs="+", default=[0])
    r.add_argument("--folds", type=int, nargs="+", default=[0])
    r.add_argument("--jobs", type=int, default=2)
    r.add_argument("--work", type=Path, default=REPO.parent / "runs" / "classification_study")
    r.add_argument("--data", type=Path, default=None, help="the dataset's folder (default: the shared copy)")
    r.add_argument("--max-minutes", type=float, default=None, help="start no new job after this many minutes")
    r.add_argument("--device", default="cpu", help="classify train --device (default cpu; cuda for a GPU study)")
    r.add_argument("--tiny", action="store_true", help="32 px, batch 8: proves the script works (CI)")
    for q in (r, rep := sub.add_parser("report", help="tables and figures of every study with results")):
        q.add_argument("--results", type=Path, default=RESULTS, help="folder of the per-job result files")
    rep.add_argument("--out", type=Path, default=REPO / "docs" / "results_classification.md")
    args = p.parse_args(argv)
    return run(args) if args.action == "run" else report(args)


if __name__ == "__main__":
    sys.exit(main())
