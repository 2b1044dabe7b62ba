"""``nnunetv2-mednext classify ACTION``: the 2D classification trainer (independent of nnU-Net).

  fingerprint DATA        class counts, sizes, channels, intensities, exact/near duplicates (JSON)
  split DATA -o OUT       leakage-safe stratified k-fold (or 70/10/20 hold-out) -> OUT/splits.json
  train DATA -o OUT       fingerprint + splits + training of every fold, metrics mean ± std
  predict INPUT -m CKPT   class probabilities CSV for a folder / CSV / image (several -m: ensemble)
  evaluate PRED.csv|OUT   metrics (JSON + confusion-matrix PNG) of predictions or of a whole run
  convert LAYOUT SRC -o   SARS-CoV-2 CT, MSLD, Large COVID-19 CT downloads -> dataset.csv (+ splits.json)

DATA is a folder with one sub-folder per class, or a CSV with columns path,label[,group] (group = patient id).
Multi-GPU / multi-process: torchrun --nproc_per_node N -m nnunetv2_mednext classify train ...
"""

from __future__ import annotations

import argparse
import json
import sys

NAME = "classify"
HELP = "2D image classification: fingerprint, leakage-safe splits, train (CV), predict, evaluate, convert datasets"
DESCRIPTION = __doc__
ORDER = 40

LAYOUT_CHOICES = ("sarscov2", "msld", "msld-folds", "largecovid", "largecovid-2class")


def _data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", help="class-per-folder directory, CSV (path,label[,group]), or a download with --layout")
    p.add_argument("--layout", choices=LAYOUT_CHOICES,
                   help="DATA is this published dataset's download: convert it into OUT/data/ first")
    p.add_argument("--near-dup-threshold", type=int, default=None, metavar="BITS",
                   help="near duplicates: 256-bit dHash within BITS (default 44) and correlated 16x16 thumbnails; "
                        "-1: exact duplicates only")


def _split_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--folds", type=int, default=None,
                   help="number of CV folds (default 5, or what an existing OUT/splits.json holds)")
    p.add_argument("--split", choices=("cv", "cv-test", "holdout", "image-cv"), default=None,
                   help="cv: stratified group k-fold, train/val (default); cv-test: the same with a test part per "
                        "fold and validation carved from training (70:10:20 at 5 folds); holdout: one 70/10/20 "
                        "train/val/test split; image-cv: image-level stratified k-fold, LEAKY (ignores patients and "
                        "duplicates: for comparison with published image-level results only)")
    p.add_argument("--splits", metavar="FILE", help="use this split file (ours or nnU-Net's splits_final.json)")
    p.add_argument("--seed", type=int, default=None, help="seed of splits and training (default 12345)")
    p.add_argument("--duplicates", choices=("group", "drop"), default="group",
                   help="group: keep duplicates in one fold (default); drop: keep one copy of exact duplicates and "
                        "drop those with conflicting labels")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    f = sub.add_parser("fingerprint", help="summarise a dataset and find duplicates (writes fingerprint.json)")
    _data_options(f)
    f.add_argument("-o", "--out", help="folder for fingerprint.json (default: print only)")
    f.add_argument("--json", action="store_true", help="print the JSON (without per-image records) instead of a summary")

    s = sub.add_parser("split", help="make leakage-safe splits (writes OUT/splits.json)")
    _data_options(s)
    _split_options(s)
    s.add_argument("-o", "--out", required=True, help="output folder")

    t = sub.add_parser("train", help="train and cross-validate a classifier")
    _data_options(t)
    _split_options(t)
    t.add_argument("-o", "--out", required=True, help="output folder of the run")
    t.add_argument("--fold", type=int, action="append", help="train only this fold (repeatable; default all)")
    t.add_argument("--model", default="mednext_cls_t",
                   help="mednext_cls_t|s|b, or any timm model name (resnet18, convnext_atto, efficientnet_b0, ...), "
                        "randomly initialised; default mednext_cls_t")
    t.add_argument("--model-kwargs", default="{}", metavar="JSON",
                   help='network keyword arguments, e.g. \'{"dims": [16, 32, 64, 128], "depths": [1, 1, 1, 1]}\' '
                        'or \'{"drop_path_rate": 0.1}\' for timm models ({"pretrained": true} needs timm\'s download); '
                        'default: none')
    t.add_argument("--input-size", type=int, default=224, help="square input side in pixels (default 224)")
    t.add_argument("--channels", choices=("auto", "grey", "rgb"), default="auto",
                   help="network input: auto (default) = grey when every image is grey (also grey stored as RGB)")
    t.add_argument("--epochs", type=int, default=100, help="training epochs per fold (default 100)")
    t.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                   help="train each fold for about SECONDS instead of --epochs: the epochs are fixed from a short "
                        "timed pilot (equal wall-clock comparisons of models)")
    t.add_argument("--batch-size", type=int, default=32, help="images per step and process (default 32)")
    t.add_argument("--lr", type=float, default=5e-4, help="peak learning rate of AdamW (default 5e-4)")
    t.add_argument("--min-lr", type=float, default=1e-6, help="learning rate at the end of the cosine (default 1e-6)")
    t.add_argument("--weight-decay", type=float, default=0.05, help="AdamW weight decay (default 0.05)")
    t.add_argument("--warmup-epochs", type=int, default=5, help="epochs of linear warm-up (at most half the run), then cosine (default 5)")
    t.add_argument("--label-smoothing", type=float, default=0.1, help="cross-entropy label smoothing (default 0.1)")
    t.add_argument("--balance", choices=("weights", "sampler", "none"), default="weights",
                   help="class imbalance: inverse-frequency loss weights (default), class-balanced sampling, or none")
    t.add_argument("--augment", choices=("default", "light", "none"), default="default",
                   help="default (default): resized crop, h-flip, +-15 deg affine, brightness/contrast; light: h-flip, "
                        "+-10 deg; none")
    t.add_argument("--color-jitter", action="store_true", help="also saturation/hue jitter (colour images only)")
    t.add_argument("--grad-clip", type=float, default=None, help="clip the gradient norm to this value (default: no clipping)")
    t.add_argument("--device", default="auto", help="auto (default: cuda when available), cpu, cuda or cuda:N")
    t.add_argument("--amp", choices=("auto", "on", "off"), default="auto", help="mixed precision, CUDA only (default auto: on with CUDA)")
    t.add_argument("--channels-last", choices=("auto", "on", "off"), default="auto", help="NHWC memory format, CUDA only (default auto: on with CUDA)")
    t.add_argument("--workers", type=int, default=-1, help="data-loader workers (default -1: 0 on CPU, up to 4 on CUDA)")
    t.add_argument("--val-every", type=int, default=1, help="validate every N epochs and at the end (default 1)")
    t.add_argument("--report-checkpoint", choices=("auto", "final", "best"), default="auto",
                   help="checkpoint whose metrics are reported: auto = best (chosen on val) when the split has a "
                        "test part, else final (best chosen on the reported images would be optimistic)")
    t.add_argument("--cache-images", choices=("auto", "on", "off"), default="auto",
                   help="keep resized images in memory (default auto: when they take under 8 GiB)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out (finished folds are kept)")
    t.add_argument("-q", "--quiet", action="store_true", help="no per-epoch lines and no progress bars")

    p = sub.add_parser("predict", help="class probabilities (CSV) for images, from checkpoints")
    p.add_argument("input", help="folder of images (recursive), CSV with a path column, or one image")
    p.add_argument("-m", "--model", action="append", required=True, metavar="CKPT",
                   help="checkpoint file or training folder (all its folds: ensemble); repeatable")
    p.add_argument("-o", "--out", required=True, help="output CSV")
    p.add_argument("--checkpoint", choices=("final", "best"), default="final",
                   help="which checkpoint of each fold when -m is a folder")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default 64)")
    p.add_argument("--device", default="auto", help="auto (default: cuda when available), cpu, cuda or cuda:N")
    p.add_argument("-q", "--quiet", action="store_true")

    e = sub.add_parser("evaluate", help="metrics of a predictions CSV, or of every fold of a training folder")
    e.add_argument("source", help="predictions CSV (from predict) or a training output folder")
    e.add_argument("--labels", metavar="DATA", help="labelled dataset to take labels from when the CSV has none")
    e.add_argument("-o", "--out", help="folder for metrics.json and confusion_matrix.png (default: next to a CSV)")
    e.add_argument("-q", "--quiet", action="store_true")

    c = sub.add_parser("convert", help="a published dataset's download -> dataset.csv (+ splits.json)")
    c.add_argument("layout", choices=LAYOUT_CHOICES)
    c.add_argument("src", help="the unzipped download")
    c.add_argument("-o", "--out", required=True, help="output folder")


def _near(args: argparse.Namespace) -> int:
    from nnunetv2_mednext.classification.fingerprint import DEFAULT_NEAR_THRESHOLD

    return DEFAULT_NEAR_THRESHOLD if args.near_dup_threshold is None else args.near_dup_threshold


def _print_conversion(conv, console) -> None:
    counts = ", ".join(f"{k} {v}" for k, v in conv.class_counts.items())
    console.info(f"wrote {conv.csv_path} ({conv.n_images} images: {counts})")
    if conv.splits_path:
        console.info(f"wrote {conv.splits_path} (the dataset's own folds)")
    for n in conv.notes:
        console.info(f"note: {n}")


def _resolve_data(args: argparse.Namespace, out: str | None, console):
    """DATA, or the CSV converted from a --layout download; plus a split file the layout ships."""
    if not getattr(args, "layout", None):
        return args.data, None, []
    from pathlib import Path

    from nnunetv2_mednext.classification.converters import convert
    from nnunetv2_mednext.errors import MedNeXtUserError

    if out is None:
        raise MedNeXtUserError("--layout needs -o/--out (the converted CSV goes to OUT/data/); fix: add -o DIR")
    conv = convert(args.layout, args.data, Path(out) / "data")
    _print_conversion(conv, console)
    return str(conv.csv_path), (str(conv.splits_path) if conv.splits_path else None), conv.recommended


def _fingerprint(args: argparse.Namespace) -> int:
    from pathlib import Path

    from nnunetv2_mednext.classification import fingerprint as fpmod
    from nnunetv2_mednext.classification.console import Console
    from nnunetv2_mednext.classification.index import discover

    con = Console()
    data, _, _ = _resolve_data(args, args.out, con)
    index = discover(data)
    path = Path(args.out) / "fingerprint.json" if args.out else None
    fp, _ = fpmod.load_or_compute(index, path, _near(args))
    if args.json:
        print(json.dumps({k: v for k, v in fp.items() if k != "per_image"}, indent=1))
    else:
        for line in fpmod.describe(fp):
            print(line)
        if path:
            print(f"wrote {path}")
    for w in fpmod.warnings_for(fp):
        con.warn(w)
    return 0


def _split(args: argparse.Namespace) -> int:
    from nnunetv2_mednext.classification.console import Console
    from nnunetv2_mednext.classification.prepare import prepare

    con = Console()
    with _run_lock(args.out, "split folder"):
        data, layout_splits, _ = _resolve_data(args, args.out, con)
        prepare(data, args.out, n_folds=args.folds, seed=args.seed, split_mode=args.split,
                splits_file=args.splits or layout_splits, near_threshold=_near(args), duplicates=args.duplicates,
                console=con)
    print(f"wrote {args.out}/splits.json")
    return 0


def _train(args: argparse.Namespace) -> int:
    from nnunetv2_mednext.classification.config import TrainConfig
    from nnunetv2_mednext.classification.console import Console
    from nnunetv2_mednext.classification.prepare import DEFAULT_SEED, prepare
    from nnunetv2_mednext.errors import MedNeXtUserError

    try:
        model_kwargs = json.loads(args.model_kwargs)
        if not isinstance(model_kwargs, dict):
            raise ValueError("not a JSON object")
    except ValueError as e:
        raise MedNeXtUserError(f"--model-kwargs is not a JSON object ({e}); fix: e.g. '{{\"dims\": [16, 32, 64, 128]}}'") from None
    config = TrainConfig(
        model=args.model, model_kwargs=model_kwargs, input_size=args.input_size, channels=args.channels,
        epochs=args.epochs, time_budget=args.time_budget, batch_size=args.batch_size, lr=args.lr, min_lr=args.min_lr,
        weight_decay=args.weight_decay, warmup_epochs=args.warmup_epochs, label_smoothing=args.label_smoothing,
        balance=args.balance, augment=args.augment, color_jitter=args.color_jitter, grad_clip=args.grad_clip,
        seed=DEFAULT_SEED if args.seed is None else args.seed,
        workers=args.workers, device=args.device, amp=args.amp, channels_last=args.channels_last,
        val_every=args.val_every, report_checkpoint=args.report_checkpoint, cache_images=args.cache_images,
        quiet=args.quiet,
    ).validate()
    from nnunetv2_mednext.classification.models import check_buildable, model_source

    model_source(config.model)  # an unknown name stops here, with close matches
    check_buildable(config.model, **config.model_kwargs)  # bad --model-kwargs too, before any data is read
    con = Console(quiet=args.quiet)
    with _run_lock(args.out, "classification run"):
        data, layout_splits, _ = _resolve_data(args, args.out, con)
        # everything that can fail on the data happens here, before any training starts (and before any write)
        prepared = prepare(data, args.out, n_folds=args.folds, seed=args.seed, split_mode=args.split,
                           splits_file=args.splits or layout_splits, near_threshold=_near(args),
                           duplicates=args.duplicates, console=con)
        if args.seed is None:  # the seed the reused split was made with
            config.seed = int(prepared.splits.get("seed", DEFAULT_SEED))
        from nnunetv2_mednext.classification.trainer import train_folds

        train_folds(prepared, args.out, config, folds=args.fold, resume=args.resume, console=con)
    return 0


def _run_lock(out: str, what: str):  # type: ignore[no-untyped-def]
    """Exclusive lock on the output folder (one writer per run); under torchrun only rank 0 takes it."""
    import contextlib
    import os

    from nnunetv2_mednext.fsutil import ensure_writable, exclusive_lock

    if int(os.environ.get("RANK", "0")) != 0:
        return contextlib.nullcontext()
    ensure_writable(out, "output folder")
    return exclusive_lock(out, what)


def _predict(args: argparse.Namespace) -> int:
    from nnunetv2_mednext.classification.predict import Predictor, find_checkpoints, gather_inputs
    from nnunetv2_mednext.classification.trainer import write_predictions

    ckpts = [c for spec in args.model for c in find_checkpoints(spec, args.checkpoint)]
    predictor = Predictor(ckpts, args.device)
    samples = gather_inputs(args.input, predictor.class_names)
    probs = predictor.predict([s.path for s in samples], args.batch_size, progress=False if args.quiet else None)
    labels = [s.label for s in samples]
    write_predictions(args.out, [s.path for s in samples], probs, predictor.class_names, labels)
    if not args.quiet:
        print(f"wrote {args.out}: {len(samples)} images, {len(ckpts)} checkpoint(s), classes {predictor.class_names}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from nnunetv2_mednext.classification.evaluate import evaluate_csv, evaluate_run
    from nnunetv2_mednext.classification.fingerprint import save_json
    from nnunetv2_mednext.classification.metrics import fmt_pct

    src = Path(args.source)
    if src.is_dir():
        summary = evaluate_run(src)
        out = Path(args.out) if args.out else src
        save_json(summary, out / "evaluation.json")
        if not args.quiet:
            agg = summary["aggregate"]
            for key in ("accuracy", "balanced_accuracy", "macro.f1", "macro.auc", "macro.specificity"):
                print(f"{key:<20} {fmt_pct(agg['mean'][key], agg['std'][key])} %")
            print(f"wrote {out / 'evaluation.json'} ({agg['n_folds']} folds)")
        return 0
    out = Path(args.out) if args.out else src.parent
    m = evaluate_csv(src, out, args.labels)
    if not args.quiet:
        print(f"accuracy {fmt_pct(m['accuracy'])} %  balanced {fmt_pct(m['balanced_accuracy'])} %  "
              f"macro F1 {fmt_pct(m['macro']['f1'])} %  macro AUC {fmt_pct(m['macro']['auc'])} %  (n={m['n']})")
        print(f"wrote {out / 'metrics.json'} and {out / 'confusion_matrix.png'}")
    return 0


def _convert(args: argparse.Namespace) -> int:
    from nnunetv2_mednext.classification.console import Console
    from nnunetv2_mednext.classification.converters import convert

    con = Console()
    conv = convert(args.layout, args.src, args.out)
    _print_conversion(conv, con)
    extra = " ".join(conv.recommended + ([f"--splits {conv.splits_path}"] if conv.splits_path else []))
    print(f"next: nnunetv2-mednext classify train {conv.csv_path} -o RUN_DIR {extra}".rstrip())
    return 0


def run(args: argparse.Namespace) -> int:
    actions = {"fingerprint": _fingerprint, "split": _split, "train": _train, "predict": _predict,
               "evaluate": _evaluate, "convert": _convert}
    rc = actions[args.action](args)
    sys.stdout.flush()
    return rc
