"""BUSI (breast ultrasound, 3 classes) 5-fold cross-validation: MedNeXt-T against timm baselines from scratch.

Default models: ``mednext_cls_t``, ``resnet18`` (timm; same layers as torchvision's) and ``convnext_atto`` (timm,
3.4 M parameters: a modern ConvNet of MedNeXt-T's size and family -- depthwise convolutions + MLP). ``--models``
takes any list of MedNeXt classifiers and timm names. Same loop, same leakage-safe splits (exact duplicates dropped
first, near duplicates grouped), same hyper-parameters for every model. Length: ``--epochs`` (equal epochs) or
``--time-budget SECONDS`` (equal wall-clock: each model trains every fold for about SECONDS, its epochs fixed by a
short timed pilot, see ``docs/classification.md``). Writes OUT/results.json and OUT/results.md (per-fold and
mean ± std accuracy, macro F1, macro AUC, epochs, training time; the last epoch's losses and the validation accuracy
along the budget) and OUT/curves.png (validation accuracy against training seconds); each model's run folder is
OUT/<model>/.

    # equal wall-clock, 6 min of training per fold and model (about 95 minutes on 2 CPU cores):
    OMP_NUM_THREADS=1 python benchmarks/classification_busi.py --input-size 64 --time-budget 360 --warmup-epochs 2 \
        --threads 1 --out runs/busi_budget
    # the earlier equal-epochs run (MedNeXt-T and ResNet-18, about 39 minutes on one core):
    OMP_NUM_THREADS=1 python benchmarks/classification_busi.py --input-size 64 --epochs 18 --warmup-epochs 2 \
        --threads 1 --models mednext_cls_t resnet18
    # --resume continues an interrupted run; a pilot to time settings (fold 0, one epoch):
    python benchmarks/classification_busi.py --epochs 1 --run-folds 0 --threads 1 --out runs/busi_pilot

``--jobs N`` trains N models at once, each in its own process pinned to its own core (``taskset``) with one thread,
so that each model's time budget is measured under the same load; every process reads the fingerprint and split
that the parent wrote to OUT/common (one split for all models), and the report merges the processes' results.

The data folder defaults to ../shared/data/busi_256 (override with --data or NNUNETV2_MEDNEXT_SHARED); any
class-per-folder set or CSV works (the tests run this script on a synthetic one).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from runner import Task, run_pinned  # noqa: E402

DEFAULT_MODELS = ("mednext_cls_t", "resnet18", "convnext_atto")


def default_data() -> Path:
    shared = Path(os.environ.get("NNUNETV2_MEDNEXT_SHARED", REPO.parent / "shared"))
    return shared / "data" / "busi_256"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=default_data())
    p.add_argument("--out", type=Path, default=REPO / "runs" / "busi")
    p.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS),
                   help="MedNeXt classifiers and/or timm model names (default: %(default)s)")
    p.add_argument("--input-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=18)
    p.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                   help="equal wall-clock: train every fold of every model for about SECONDS (replaces --epochs)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup-epochs", type=int, default=2)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=12345)
    p.add_argument("--run-folds", type=int, nargs="+", default=None,
                   help="train only these folds (a pilot to time the settings); default all")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads, intra- and inter-op (0: torch's default, which follows OMP_NUM_THREADS)")
    p.add_argument("--device", default="auto")
    p.add_argument("--jobs", type=int, default=1,
                   help="models trained at once, one process each, pinned to its own core (default 1)")
    p.add_argument("--resume", action="store_true")
    # --jobs: the parent's prepared folder (fingerprint, split), read by every child process, which writes nothing there
    p.add_argument("--common", type=Path, default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def train_model(args: argparse.Namespace, prepared, model: str) -> dict:
    """Train every fold of one model; its entry of ``results.json``."""
    from nnunetv2_mednext.classification.config import TrainConfig
    from nnunetv2_mednext.classification.console import Console
    from nnunetv2_mednext.classification.trainer import train_folds

    cfg = TrainConfig(model=model, input_size=args.input_size, epochs=args.epochs, time_budget=args.time_budget,
                      batch_size=args.batch_size, lr=args.lr, warmup_epochs=args.warmup_epochs, seed=args.seed,
                      device=args.device)
    t0 = time.time()
    run = train_folds(prepared, args.out / model, cfg, folds=args.run_folds, resume=args.resume,
                      console=Console())
    wall = time.time() - t0
    s = run["summary"]
    first = next(iter(run["folds"].values()))
    run_config = json.loads((args.out / model / "config.json").read_text())
    return {
        "wall_time_s": round(wall, 1),
        "params": first["params"],
        "source": run_config["meta"].get("model_source"),
        "epochs": {str(f): m["epochs"] for f, m in run["folds"].items()},
        "time_budget": run_config.get("time_budget"),
        "per_fold": s["per_fold"],
        "mean": {k: s["aggregate"]["mean"][k] for k in ("accuracy", "balanced_accuracy", "macro.f1", "macro.auc")},
        "std": {k: s["aggregate"]["std"][k] for k in ("accuracy", "balanced_accuracy", "macro.f1", "macro.auc")},
        "pooled": {"accuracy": s["pooled"]["accuracy"], "balanced_accuracy": s["pooled"]["balanced_accuracy"],
                   "macro.f1": s["pooled"]["macro"]["f1"], "macro.auc": s["pooled"]["macro"]["auc"],
                   "confusion_matrix": s["pooled"]["confusion_matrix"]} if s.get("pooled") else None,
    }


def run_in_processes(args: argparse.Namespace, argv: list[str] | None) -> dict:
    """``--jobs``: each model in its own process (this script, ``--models M --jobs 1``, output ``OUT/parts/M``),
    at most ``args.jobs`` at once, each pinned to a free core with one thread, all on the fingerprint and split this
    process prepared in ``OUT/common``; their ``results.json`` merged."""
    base = list(sys.argv[1:] if argv is None else argv)
    for name in ("--models", "--out", "--jobs", "--threads", "--common"):
        base = _drop_option(base, name)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}  # logs show progress as it happens
    tasks = [Task(model, [sys.executable, str(Path(__file__).resolve()), *base, "--models", model, "--jobs", "1",
                          "--threads", "1", "--out", str(args.out / "parts" / model), "--common",
                          str(args.out / "common")], env, args.out / f"{model}.log") for model in args.models]
    run_pinned(tasks, args.jobs)
    return {m: json.loads((args.out / "parts" / m / "results.json").read_text())["models"][m] for m in args.models}


def _drop_option(argv: list[str], name: str) -> list[str]:
    """``argv`` without ``name`` and the values that follow it (up to the next option)."""
    out, skip = [], False
    for a in argv:
        if a == name or a.startswith(name + "="):
            skip = a == name
            continue
        if skip and not a.startswith("--"):
            continue
        skip = False
        out.append(a)
    return out


def run_folder(args: argparse.Namespace, model: str) -> Path:
    """The folder of ``model``'s run (``config.json``, ``fold_K/history.json``)."""
    return args.out / "parts" / model / model if args.jobs > 1 and len(args.models) > 1 else args.out / model


def fold_histories(folder: Path) -> dict[str, list[dict]]:
    """Per trained fold (``"0"``, ``"1"``, ...), its epoch records (losses, validation accuracy, seconds)."""
    out = {}
    for path in sorted(folder.glob("fold_*/history.json"), key=lambda p: int(p.parent.name.split("_")[1])):
        out[path.parent.name.split("_")[1]] = json.loads(path.read_text())["history"]
    return out


def training_fit(folder: Path, prepared, folds: list[str], device: str) -> dict[str, float]:
    """Per fold, the accuracy of its final checkpoint on the fold's own training images, without augmentation:
    how closely the network fits what it learned from (next to how well it does on the held-out part)."""
    from nnunetv2_mednext.classification.predict import Predictor

    by_id = {s.id: s for s in prepared.index.samples}
    fit = {}
    for fold in folds:
        ckpt = folder / f"fold_{fold}" / "checkpoint_final.pt"
        if not ckpt.is_file():
            continue
        predictor = Predictor([ckpt], device=device)
        samples = [by_id[i] for i in prepared.splits["folds"][int(fold)]["train"]]
        probs = predictor.predict([s.path for s in samples], progress=False)
        hits = [predictor.class_names[int(k)] == s.label for k, s in zip(probs.argmax(1), samples)]
        fit[fold] = sum(hits) / len(hits)
    return fit


def learning_rows(histories: dict[str, dict[str, list[dict]]], fits: dict[str, dict[str, float]]) -> list[str]:
    """Markdown rows: per model (means over folds), the accuracy of the final checkpoint on its training images,
    the last epoch's training and validation loss and the validation accuracy after each quarter of the budget:
    whether a model under-fits, over-fits or is still learning."""
    from statistics import fmean as mean

    rows = ["| model | train acc. % (final, no aug.) | last train loss | last val loss | "
            "val acc. % at 25 / 50 / 75 / 100 % of the budget |", "|---|---:|---:|---:|---|"]
    for model, folds in histories.items():
        runs = [h for h in folds.values() if h]
        if not runs:
            continue
        fit = fits.get(model, {})
        train_acc = f"{100 * mean(fit.values()):.1f}" if fit else "-"
        last_train = mean([h[-1]["train_loss"] for h in runs])
        last_val = mean([h[-1]["val_loss"] for h in runs if h[-1].get("val_loss") is not None] or [float("nan")])
        quarters = [mean([100 * h[max(0, round(q * len(h)) - 1)]["val_accuracy"] for h in runs])
                    for q in (0.25, 0.5, 0.75, 1.0)]
        rows.append(f"| {model} | {train_acc} | {last_train:.3f} | {last_val:.3f} | "
                    f"{' / '.join(f'{v:.1f}' for v in quarters)} |")
    return rows


def plot_curves(histories: dict[str, dict[str, list[dict]]], path: Path, title: str) -> None:
    """Validation accuracy against training seconds: one thin line per fold, the mean over folds in bold."""
    from nnunetv2_mednext.classification.plots import new_figure

    fig = new_figure(6.4, 3.8)
    ax = fig.add_subplot(1, 1, 1)
    for i, (model, folds) in enumerate(histories.items()):
        color = f"C{i}"
        runs = [h for h in folds.values() if h]
        for h in runs:
            t = [sum(r["time_s"] for r in h[: k + 1]) for k in range(len(h))]
            ax.plot(t, [100 * r["val_accuracy"] for r in h], color=color, lw=0.6, alpha=0.35)
        n = min(len(h) for h in runs) if runs else 0
        if n:
            t = [sum(sum(r["time_s"] for r in h[: k + 1]) for h in runs) / len(runs) for k in range(n)]
            acc = [sum(100 * h[k]["val_accuracy"] for h in runs) / len(runs) for k in range(n)]
            ax.plot(t, acc, color=color, lw=2, label=f"{model} (mean of {len(runs)} folds)")
    ax.set_xlabel("training seconds per fold (validation included)")
    ax.set_ylabel("validation accuracy %")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.data.exists():
        print(f"BUSI not found at {args.data}; pass --data", file=sys.stderr)
        return 2
    import torch

    from nnunetv2_mednext.classification.metrics import fmt_pct
    from nnunetv2_mednext.classification.models import model_source
    from nnunetv2_mednext.classification.prepare import prepare

    for model in args.models:  # an unknown name stops here, before any training
        model_source(model)
    if args.threads:
        torch.set_num_threads(args.threads)
        torch.set_num_interop_threads(args.threads)
    t_start = time.time()
    # one fingerprint + one split for every model: exact duplicates dropped (the cross-class pair entirely)
    prepared = prepare(args.data, args.common or args.out / "common", n_folds=args.folds, seed=args.seed,
                       duplicates="drop", write=args.common is None)
    results = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "data": str(args.data),
               "n_images": len(prepared.index), "dropped": prepared.dropped, "settings": {
                   k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},  # paths as JSON strings
               "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, "
                          f"torch {torch.__version__}, " + (
                              f"{args.jobs} models at once, each pinned to one core with 1 thread" if args.jobs > 1
                              else f"{torch.get_num_threads()} threads"),
               "models": {}}
    if args.jobs > 1 and len(args.models) > 1:
        results["models"] = run_in_processes(args, argv)
    else:
        for model in args.models:
            results["models"][model] = train_model(args, prepared, model)
    results["total_wall_time_s"] = round(time.time() - t_start, 1)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))

    length = (f"equal wall-clock: about {args.time_budget:g} s of training per fold and model (epochs from a timed "
              "pilot)" if args.time_budget else f"{args.epochs} epochs")
    lines = [f"BUSI {len(prepared.index)} images ({len(prepared.dropped)} exact duplicates dropped), "
             f"{args.folds}-fold CV, {args.input_size}x{args.input_size}, {length}, batch "
             f"{args.batch_size}, AdamW lr {args.lr}, {results['machine']}", "",
             "| model | source | params | fold | epochs | accuracy % | balanced acc. % | macro F1 % | macro AUC % | "
             "train time s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for model, r in results["models"].items():
        for fold, f in r["per_fold"].items():
            lines.append(f"| {model} | {r['source']} | {r['params'] / 1e6:.2f} M | {fold} | {r['epochs'].get(fold, '')} | "
                         f"{fmt_pct(f['accuracy'])} | {fmt_pct(f['balanced_accuracy'])} | {fmt_pct(f['macro_f1'])} | "
                         f"{fmt_pct(f['macro_auc'])} | {f['train_time_s']} |")
        m, sd = r["mean"], r["std"]
        lines.append(f"| **{model}** | | | **mean ± std** | | **{fmt_pct(m['accuracy'], sd['accuracy'])}** | "
                     f"**{fmt_pct(m['balanced_accuracy'], sd['balanced_accuracy'])}** | "
                     f"**{fmt_pct(m['macro.f1'], sd['macro.f1'])}** | **{fmt_pct(m['macro.auc'], sd['macro.auc'])}** | "
                     f"wall {r['wall_time_s']} |")
    budgets = [(model, r["time_budget"]) for model, r in results["models"].items() if r["time_budget"]]
    if budgets:
        lines += ["", "Pilot timing (fold {}): seconds per training step and per validation pass, the epoch estimate "
                  "and the epochs it gave:".format(budgets[0][1]["pilot_fold"]), "",
                  "| model | s / step | steps / epoch | validation s | epoch s (est.) | epochs |", "|---|---|---|---|---|---|",
                  *[f"| {model} | {b['step_s']:.3f} | {b['steps_per_epoch']} | {b['validation_s']:.2f} | "
                    f"{b['estimated_epoch_s']:.1f} | {b['epochs']} |" for model, b in budgets]]
    histories = {model: {f: h for f, h in fold_histories(run_folder(args, model)).items() if f in r["per_fold"]}
                 for model, r in results["models"].items()}  # reported folds only (not one still in training)
    fits = {model: training_fit(run_folder(args, model), prepared, list(h), args.device)
            for model, h in histories.items()}
    lines += ["", "End of training and the validation curve (means over folds; `curves.png` plots it against "
              "seconds):", "", *learning_rows(histories, fits)]
    plot_curves(histories, args.out / "curves.png", f"BUSI {args.input_size} px, {length}")
    lines.append(f"\ntotal wall time {results['total_wall_time_s']} s")
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
