"""BUSI (breast ultrasound, 3 classes) 5-fold cross-validation: MedNeXt-T vs torchvision ResNet-18 from scratch.

Same loop, same leakage-safe splits (exact duplicates dropped first, near duplicates grouped), same epochs and
hyper-parameters for both models. Writes OUT/results.json and OUT/results.md (per-fold and mean ± std accuracy,
macro F1, macro AUC, wall time); each model's run folder is OUT/<model>/ (checkpoints, curves, confusion matrices).

    # the documented CPU run (about 39 minutes on one core):
    OMP_NUM_THREADS=1 python benchmarks/classification_busi.py --input-size 64 --epochs 18 --warmup-epochs 2 --threads 1
    # the same with --resume continues an interrupted run; a pilot to time settings (fold 0, one epoch):
    python benchmarks/classification_busi.py --epochs 1 --run-folds 0 --threads 1 --out runs/busi_pilot

The data folder defaults to ../shared/data/busi_256 (override with --data or NNUNETV2_MEDNEXT_SHARED).
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


def default_data() -> Path:
    shared = Path(os.environ.get("NNUNETV2_MEDNEXT_SHARED", REPO.parent / "shared"))
    return shared / "data" / "busi_256"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=default_data())
    p.add_argument("--out", type=Path, default=REPO / "runs" / "busi")
    p.add_argument("--models", nargs="+", default=["mednext_cls_t", "resnet18"])
    p.add_argument("--input-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=18)
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
    p.add_argument("--resume", action="store_true")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if not (args.data / "benign").is_dir():
        print(f"BUSI not found at {args.data}; pass --data", file=sys.stderr)
        return 2
    import torch

    from nnunetv2_mednext.classification.config import TrainConfig
    from nnunetv2_mednext.classification.console import Console
    from nnunetv2_mednext.classification.metrics import fmt_pct
    from nnunetv2_mednext.classification.prepare import prepare
    from nnunetv2_mednext.classification.trainer import train_folds

    if args.threads:
        torch.set_num_threads(args.threads)
        torch.set_num_interop_threads(args.threads)
    t_start = time.time()
    # one fingerprint + one split for every model: exact duplicates dropped (the cross-class pair entirely)
    prepared = prepare(args.data, args.out / "common", n_folds=args.folds, seed=args.seed, duplicates="drop")
    results = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "data": str(args.data),
               "n_images": len(prepared.index), "dropped": prepared.dropped, "settings": vars(args) | {
                   "data": str(args.data), "out": str(args.out)},
               "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, "
                          f"torch {torch.__version__}, {torch.get_num_threads()} threads",
               "models": {}}
    for model in args.models:
        cfg = TrainConfig(model=model, input_size=args.input_size, epochs=args.epochs, batch_size=args.batch_size,
                          lr=args.lr, warmup_epochs=args.warmup_epochs, seed=args.seed, device=args.device)
        t0 = time.time()
        run = train_folds(prepared, args.out / model, cfg, folds=args.run_folds, resume=args.resume,
                          console=Console())
        wall = time.time() - t0
        s = run["summary"]
        results["models"][model] = {
            "wall_time_s": round(wall, 1),
            "params": run["folds"][0]["params"],
            "per_fold": s["per_fold"],
            "mean": {k: s["aggregate"]["mean"][k] for k in ("accuracy", "balanced_accuracy", "macro.f1", "macro.auc")},
            "std": {k: s["aggregate"]["std"][k] for k in ("accuracy", "balanced_accuracy", "macro.f1", "macro.auc")},
            "pooled": {"accuracy": s["pooled"]["accuracy"], "balanced_accuracy": s["pooled"]["balanced_accuracy"],
                       "macro.f1": s["pooled"]["macro"]["f1"], "macro.auc": s["pooled"]["macro"]["auc"],
                       "confusion_matrix": s["pooled"]["confusion_matrix"]} if s.get("pooled") else None,
        }
    results["total_wall_time_s"] = round(time.time() - t_start, 1)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))

    lines = [f"BUSI {len(prepared.index)} images ({len(prepared.dropped)} exact duplicates dropped), "
             f"{args.folds}-fold CV, {args.input_size}x{args.input_size}, {args.epochs} epochs, batch "
             f"{args.batch_size}, AdamW lr {args.lr}, {results['machine']}", "",
             "| model | params | fold | accuracy % | balanced acc. % | macro F1 % | macro AUC % | train time s |",
             "|---|---|---|---|---|---|---|---|"]
    for model, r in results["models"].items():
        for fold, f in r["per_fold"].items():
            lines.append(f"| {model} | {r['params'] / 1e6:.2f} M | {fold} | {fmt_pct(f['accuracy'])} | "
                         f"{fmt_pct(f['balanced_accuracy'])} | {fmt_pct(f['macro_f1'])} | {fmt_pct(f['macro_auc'])} | "
                         f"{f['train_time_s']} |")
        m, sd = r["mean"], r["std"]
        lines.append(f"| **{model}** | | **mean ± std** | **{fmt_pct(m['accuracy'], sd['accuracy'])}** | "
                     f"**{fmt_pct(m['balanced_accuracy'], sd['balanced_accuracy'])}** | "
                     f"**{fmt_pct(m['macro.f1'], sd['macro.f1'])}** | **{fmt_pct(m['macro.auc'], sd['macro.auc'])}** | "
                     f"wall {r['wall_time_s']} |")
    lines.append(f"\ntotal wall time {results['total_wall_time_s']} s")
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
