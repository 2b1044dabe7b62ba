"""The training loop: one fold at a time, resumable, single process or DDP under ``torchrun``.

Per fold ``out/fold_K/``: ``checkpoint_latest.pt`` (every epoch, removed at the end), ``checkpoint_best.pt``
(best balanced accuracy on the validation part), ``checkpoint_final.pt``, ``history.json``,
``training_curve.png``, and for the evaluated part (``test`` if the split has one, else ``val``):
``eval_set.csv``, ``predictions.csv``, ``metrics.json``, ``confusion_matrix.png``.

Randomness is re-seeded from (seed, fold, epoch, and the rank under DDP) at every epoch, so a resumed run repeats
exactly what an uninterrupted one would have done.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from nnunetv2_mednext import __version__
from nnunetv2_mednext.errors import MedNeXtUserError

from . import checkpoint as ckpt_io
from .config import RESUME_KEYS, TrainConfig
from .console import Console
from .datasets import BalancedEpochSampler, FoldDataset, ImageCache, class_weights
from .distributed import DistContext
from .fingerprint import save_json
from .index import DatasetIndex
from .metrics import aggregate, compute_metrics, fmt_pct
from .models import build_classifier, check_input, count_parameters, model_source
from .plots import plot_confusion_matrix, plot_training_curve
from .prepare import Prepared
from .schedule import lr_at
from .transforms import build_augmentation, normalize_batch

EpochCallback = Callable[[int, int, dict], None]  # (fold, epochs done, history record)
PILOT_WARMUP_STEPS, PILOT_STEPS = 2, 5  # --time-budget: untimed and timed training steps of the pilot


def seed_everything(*parts: int) -> None:
    seed = 0
    for p in parts:
        seed = (seed * 1000003 + int(p)) % (2**31 - 1)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def model_meta(prepared: Prepared, config: TrainConfig) -> dict:
    """What a checkpoint must carry for ``predict``: recipe, classes, input size, channels, normalisation."""
    fp = prepared.fingerprint
    mode = fp["color_mode"] if config.channels == "auto" else config.channels
    norm = fp["normalization"][mode]
    return {
        "model": config.model,
        "model_source": _library(config.model),
        "model_kwargs": dict(config.model_kwargs),
        "class_names": list(prepared.index.class_names),
        "input_size": int(config.input_size),
        "in_chans": 1 if mode == "grey" else 3,
        "color_mode": mode,
        "normalization": {"mean": list(norm["mean"]), "std": list(norm["std"])},
        "intensity": "uint8 /255; other dtypes per-image 0.5-99.5 percentile rescale; resized (bilinear) to a square",
        "package_version": __version__,
    }


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _library(model: str) -> str:
    """Where the network comes from, with the version: ``nnunetv2_mednext 0.1.0`` or ``timm 1.0.22``."""
    if model_source(model) == "mednext":
        return f"nnunetv2_mednext {__version__}"
    import timm

    return f"timm {timm.__version__}"


def cuda_amp_dtype() -> torch.dtype:
    """The autocast dtype of training on CUDA: bf16 where the GPU supports it, else fp16 (with a GradScaler)."""
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


class FoldTrainer:
    def __init__(self, prepared: Prepared, cache: ImageCache, config: TrainConfig, meta: dict, out_dir: Path,
                 ctx: DistContext, console: Console) -> None:
        self.p, self.cache, self.cfg, self.meta, self.out, self.ctx, self.console = (
            prepared, cache, config, meta, out_dir, ctx, console)
        self.labels = prepared.index.labels()
        self.device = ctx.device
        cuda = self.device.type == "cuda"
        self.amp = config.amp == "on" or (config.amp == "auto" and cuda)
        if self.amp and not cuda:
            console.warn("--amp on needs CUDA; training in float32")
            self.amp = False
        self.amp_dtype = cuda_amp_dtype() if cuda else torch.float16
        self.channels_last = config.channels_last == "on" or (config.channels_last == "auto" and cuda)
        self.workers = config.workers if config.workers >= 0 else (min(4, os.cpu_count() or 1) if cuda else 0)
        if cuda:
            torch.backends.cudnn.benchmark = True

    # ------------------------------------------------------------------ helpers
    def _to_input(self, x: torch.Tensor) -> torch.Tensor:
        x = normalize_batch(x.to(self.device, non_blocking=True), self.meta["normalization"]["mean"],
                            self.meta["normalization"]["std"])
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _autocast(self):
        if self.amp:
            return torch.autocast(device_type="cuda", dtype=self.amp_dtype)
        return contextlib.nullcontext()

    def _sync_buffers(self, model: nn.Module) -> None:
        """BatchNorm running statistics from rank 0 on every rank (what the saved checkpoint holds)."""
        if self.ctx.enabled:
            for b in ckpt_io.unwrap(model).buffers():
                torch.distributed.broadcast(b.data, 0)

    @torch.no_grad()
    def predict_positions(self, model: nn.Module, positions: Sequence[int]) -> tuple[np.ndarray, float]:
        """Class probabilities (rows in ``positions`` order) and the mean cross-entropy over them."""
        net = ckpt_io.unwrap(model)
        net.eval()
        self._sync_buffers(model)
        ds = FoldDataset(self.cache, positions, self.labels)
        sampler = DistributedSampler(ds, self.ctx.world, self.ctx.rank, shuffle=False) if self.ctx.enabled else None
        loader = DataLoader(ds, batch_size=max(self.cfg.batch_size, 1) * 2, sampler=sampler, shuffle=False,
                            num_workers=self.workers, pin_memory=self.device.type == "cuda")
        rows: dict[int, np.ndarray] = {}
        for x, _, pos in loader:
            with self._autocast():
                logits = net(self._to_input(x))
            probs = torch.softmax(logits.float(), 1).cpu().numpy()
            for p, pr in zip(pos.tolist(), probs):
                rows[p] = pr
        if self.ctx.enabled:
            merged: dict[int, np.ndarray] = {}
            for part in self.ctx.all_gather_object(rows):
                merged.update(part)
            rows = merged
        probs = np.stack([rows[p] for p in positions]).astype(np.float64)
        y = self.labels[list(positions)]
        nll = float(-np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, None)).mean())
        return probs, nll

    # ------------------------------------------------------------------ model, data, one step
    def _setup(self, fold: int, train_pos: list[int]) -> tuple:
        """Seeded network, optimiser, scaler, loss, sampler and loader of a fold's training part."""
        cfg, ctx = self.cfg, self.ctx
        train_labels = self.labels[train_pos]
        k = len(self.meta["class_names"])
        seed_everything(cfg.seed, fold)
        model = build_classifier(cfg.model, self.meta["in_chans"], k, **cfg.model_kwargs).to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        check_input(model, cfg.model, self.meta["in_chans"], cfg.input_size)
        n_params = count_parameters(model)
        if ctx.enabled:
            model = nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        opt = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr)
        scaler = torch.amp.GradScaler("cuda", enabled=self.amp and self.amp_dtype == torch.float16)
        weight = class_weights(train_labels, k).to(self.device) if cfg.balance == "weights" else None
        criterion = nn.CrossEntropyLoss(weight=weight, label_smoothing=cfg.label_smoothing)

        colour = self.meta["in_chans"] == 3 and self.p.fingerprint["color_mode"] == "rgb"
        aug = build_augmentation(cfg.input_size, cfg.augment, colour, cfg.color_jitter)
        train_ds = FoldDataset(self.cache, train_pos, self.labels, aug)
        if cfg.balance == "sampler":
            sampler = BalancedEpochSampler(train_labels, len(train_pos), cfg.seed + fold, ctx.rank, ctx.world)
        else:
            sampler = DistributedSampler(train_ds, ctx.world, ctx.rank, shuffle=True, seed=cfg.seed + fold)
        per_rank = len(sampler)
        loader = DataLoader(train_ds, batch_size=cfg.batch_size, sampler=sampler, num_workers=self.workers,
                            drop_last=per_rank > cfg.batch_size, pin_memory=self.device.type == "cuda")
        return model, opt, scaler, criterion, sampler, loader, n_params

    def _train_step(self, model: nn.Module, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                    criterion: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        y = y.to(self.device, non_blocking=True)
        with self._autocast():
            logits = model(self._to_input(x))
        loss = criterion(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if self.cfg.grad_clip:
            scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(model.parameters(), self.cfg.grad_clip)
        scaler.step(opt)
        scaler.update()
        return loss

    def pilot(self, fold: int, parts: dict[str, list[int]], budget_s: float) -> dict:
        """Epochs that fit ``budget_s`` seconds of one fold's training, from a short timed pilot on that fold.

        The pilot trains a throw-away copy of the fold's network for ``PILOT_WARMUP_STEPS`` untimed and
        ``PILOT_STEPS`` timed steps (median) and times one validation pass; an epoch is estimated as
        ``steps_per_epoch x step + validation / val_every``, the same span as the epoch times (``time_s``) summed
        into a fold's ``train_time_s``. The real run re-seeds, so the pilot leaves no trace in it. Under DDP every
        rank uses the mean over ranks, so all ranks agree on the epochs.
        """
        cfg, ctx = self.cfg, self.ctx
        t_start = time.time()
        train_pos, val_pos = list(parts["train"]), list(parts.get("val", []))
        model, opt, scaler, criterion, sampler, loader, _ = self._setup(fold, train_pos)
        model.train()
        sampler.set_epoch(0)
        batches = iter(())
        step_times: list[float] = []
        for i in range(PILOT_WARMUP_STEPS + PILOT_STEPS):
            t0 = time.perf_counter()
            try:
                x, y, _ = next(batches)
            except StopIteration:
                batches = iter(loader)
                x, y, _ = next(batches)
            self._train_step(model, opt, scaler, criterion, x, y)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            if i >= PILOT_WARMUP_STEPS:
                step_times.append(time.perf_counter() - t0)
        step = float(np.median(step_times))
        val = 0.0
        if val_pos:
            t0 = time.perf_counter()
            self.predict_positions(model, val_pos)
            val = time.perf_counter() - t0
        step, val = (v / ctx.world for v in ctx.all_reduce_sum([step, val]))
        steps_per_epoch = len(loader)
        epoch_s = steps_per_epoch * step + val / cfg.val_every
        epochs = max(1, int(budget_s // epoch_s))
        return {"budget_s": budget_s, "epochs": epochs, "estimated_epoch_s": round(epoch_s, 3),
                "step_s": round(step, 4), "steps_per_epoch": steps_per_epoch, "validation_s": round(val, 3),
                "pilot_fold": fold, "pilot_wall_s": round(time.time() - t_start, 1),
                "fits": epoch_s <= budget_s}

    # ------------------------------------------------------------------ one fold
    def run(self, fold: int, parts: dict[str, list[int]], resume: bool,
            callbacks: Sequence[EpochCallback] = ()) -> dict:
        cfg, ctx, con = self.cfg, self.ctx, self.console
        fdir = self.out / f"fold_{fold}"
        metrics_path = fdir / "metrics.json"
        if resume and metrics_path.is_file():
            con.info(f"fold {fold}: already finished, reading {metrics_path}")
            return json.loads(metrics_path.read_text())
        if ctx.main:
            fdir.mkdir(parents=True, exist_ok=True)
        ctx.barrier()
        train_pos = list(parts["train"])
        val_pos = list(parts.get("val", []))
        eval_part = "test" if parts.get("test") else "val"
        report_pos = list(parts.get(eval_part, []))
        if not train_pos or not report_pos:
            raise MedNeXtUserError(f"fold {fold} has an empty train or {eval_part} part; fix: check the split file")
        model, opt, scaler, criterion, sampler, loader, n_params = self._setup(fold, train_pos)
        steps_per_epoch = len(loader)
        total_steps = cfg.epochs * steps_per_epoch
        warmup_steps = cfg.warmup_epochs * steps_per_epoch

        history: list[dict] = []
        best: dict | None = None
        start = 0
        latest = fdir / "checkpoint_latest.pt"
        final = fdir / "checkpoint_final.pt"
        if resume and final.is_file():
            state = ckpt_io.load(final)
            ckpt_io.unwrap(model).load_state_dict(state["state_dict"])
            history, best, start = state.get("history", []), state.get("best"), cfg.epochs
            con.info(f"fold {fold}: training finished earlier, evaluating {final}")
        elif resume and latest.is_file():
            state = ckpt_io.load(latest)
            ckpt_io.unwrap(model).load_state_dict(state["state_dict"])
            opt.load_state_dict(state["optimizer"])
            if state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            history, best, start = state["history"], state.get("best"), int(state["epoch"])
            con.info(f"fold {fold}: resuming from {latest.name} after epoch {start}/{cfg.epochs}")
        con.info(
            f"fold {fold}: {len(train_pos)} train / {len(val_pos)} val"
            + (f" / {len(report_pos)} test" if eval_part == "test" else "")
            + f" images; {cfg.model} ({n_params / 1e6:.2f} M params, {self.meta['in_chans']} ch, "
            f"{cfg.input_size}px) on {self.device}{' x' + str(ctx.world) if ctx.enabled else ''}"
            + (f", AMP {str(self.amp_dtype).replace('torch.', '')}" if self.amp else "")
        )

        from tqdm import tqdm

        t_fold = time.time()
        for epoch in range(start, cfg.epochs):
            t0 = time.time()
            # per-rank streams under DDP (each process augments its own shard differently); a single process keeps
            # the (seed, fold, epoch) stream
            seed_everything(cfg.seed, fold, epoch + 1, *([ctx.rank] if ctx.enabled else []))
            sampler.set_epoch(epoch)
            model.train()
            loss_sum = n_seen = 0.0
            lr = cfg.lr
            bar = tqdm(loader, desc=f"fold {fold} epoch {epoch + 1}/{cfg.epochs}", unit="batch", leave=False,
                       disable=con.progress_disabled())
            for i, (x, y, _) in enumerate(bar):
                lr = lr_at(epoch * steps_per_epoch + i, total_steps, warmup_steps, cfg.lr, cfg.min_lr)
                for g in opt.param_groups:
                    g["lr"] = lr
                loss = self._train_step(model, opt, scaler, criterion, x, y)
                loss_sum += float(loss.detach()) * len(y)
                n_seen += len(y)
                bar.set_postfix(loss=f"{float(loss.detach()):.3f}", refresh=False)
            loss_sum, n_seen = ctx.all_reduce_sum([loss_sum, n_seen])
            rec = {"epoch": epoch + 1, "lr": lr, "train_loss": loss_sum / max(n_seen, 1)}
            last = epoch + 1 == cfg.epochs
            if val_pos and ((epoch + 1) % cfg.val_every == 0 or last):
                probs, vloss = self.predict_positions(model, val_pos)
                m = compute_metrics(self.labels[val_pos], probs, self.meta["class_names"])
                rec.update(val_loss=vloss, val_accuracy=m["accuracy"], val_balanced_accuracy=m["balanced_accuracy"])
                score = (m["balanced_accuracy"] or 0.0, -vloss)
                if best is None or score > (best["val_balanced_accuracy"], -best["val_loss"]):
                    best = {"epoch": epoch + 1, "val_balanced_accuracy": score[0], "val_loss": vloss}
                    if ctx.main:
                        ckpt_io.save(fdir / "checkpoint_best.pt", model, {**self.meta, "fold": fold},
                                     epoch=epoch + 1, best=best)
            rec["time_s"] = round(time.time() - t0, 3)
            history.append(rec)
            con.info(
                f"fold {fold} epoch {epoch + 1}/{cfg.epochs}  lr {lr:.2e}  train_loss {rec['train_loss']:.4f}"
                + (f"  val_loss {rec['val_loss']:.4f}  val_acc {rec['val_accuracy']:.4f}  "
                   f"val_bacc {rec['val_balanced_accuracy']:.4f}" if "val_loss" in rec else "")
                + f"  ({rec['time_s']:.1f} s)"
            )
            if ctx.main:
                ckpt_io.save(latest, model, {**self.meta, "fold": fold}, epoch=epoch + 1, history=history, best=best,
                             optimizer=opt.state_dict(), scaler=scaler.state_dict() if scaler.is_enabled() else None,
                             config=cfg.to_dict())
                save_json({"history": history, "best": best}, fdir / "history.json")
            ctx.barrier()
            for cb in callbacks:
                cb(fold, epoch + 1, rec)
        train_time = time.time() - t_fold

        if start < cfg.epochs and ctx.main:
            ckpt_io.save(final, model, {**self.meta, "fold": fold}, epoch=cfg.epochs, history=history, best=best,
                         config=cfg.to_dict())
            latest.unlink(missing_ok=True)
        ctx.barrier()

        which = "final"
        want = cfg.report_checkpoint if cfg.report_checkpoint != "auto" else ("best" if eval_part == "test" else "final")
        if want == "best" and (fdir / "checkpoint_best.pt").is_file():
            ckpt_io.unwrap(model).load_state_dict(ckpt_io.load(fdir / "checkpoint_best.pt")["state_dict"])
            which = "best"
        probs, loss = self.predict_positions(model, report_pos)
        metrics = compute_metrics(self.labels[report_pos], probs, self.meta["class_names"])
        metrics.update(
            fold=fold, evaluated_on=eval_part, checkpoint=f"checkpoint_{which}.pt", loss=loss,
            n_train=len(train_pos), n_val=len(val_pos), epochs=cfg.epochs, time_budget_s=cfg.time_budget,
            model=cfg.model, params=n_params,
            train_time_s=round(sum(h.get("time_s", 0.0) for h in history), 1) if history else round(train_time, 1),
            best=best,
        )
        if ctx.main:
            self._write_fold_outputs(fdir, fold, report_pos, probs, metrics, history)
        ctx.barrier()
        con.info(
            f"fold {fold} ({eval_part}, {which}): accuracy {fmt_pct(metrics['accuracy'])}  "
            f"balanced {fmt_pct(metrics['balanced_accuracy'])}  macro F1 {fmt_pct(metrics['macro']['f1'])}  "
            f"macro AUC {fmt_pct(metrics['macro']['auc'])}"
        )
        return metrics

    def _write_fold_outputs(self, fdir: Path, fold: int, positions: list[int], probs: np.ndarray, metrics: dict,
                            history: list[dict]) -> None:
        names = self.meta["class_names"]
        samples = [self.p.index.samples[i] for i in positions]
        write_eval_set(fdir / "eval_set.csv", samples)
        write_predictions(fdir / "predictions.csv", [s.path for s in samples], probs, names,
                          labels=[s.label for s in samples])
        save_json(metrics, fdir / "metrics.json")
        plot_confusion_matrix(metrics["confusion_matrix"]["matrix"], names, fdir / "confusion_matrix.png",
                              f"fold {fold} ({metrics['evaluated_on']}): accuracy {100 * metrics['accuracy']:.1f}%")
        if history:
            plot_training_curve(history, fdir / "training_curve.png", f"{self.cfg.model}, fold {fold}")


def write_eval_set(path: Path, samples) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "group"])
        for s in samples:
            w.writerow([s.path, s.label, s.group or ""])


def write_predictions(path: str | os.PathLike, paths: Sequence[str], probs: np.ndarray, class_names: Sequence[str],
                      labels: Sequence[str | None] | None = None) -> None:
    """CSV ``path[,label],prediction,prob_<class>...`` (probabilities with 8 decimals)."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        has_labels = labels is not None and any(lab is not None for lab in labels)
        w.writerow(["path"] + (["label"] if has_labels else []) + ["prediction"] + [f"prob_{c}" for c in class_names])
        for i, (p, pr) in enumerate(zip(paths, probs)):
            row = [p] + ([labels[i] or ""] if has_labels else []) + [class_names[int(np.argmax(pr))]]
            w.writerow(row + [f"{v:.8f}" for v in pr])


def _earlier_budget(out_dir: Path, config: TrainConfig) -> dict | None:
    """The pilot result of an earlier ``--time-budget`` run in ``out_dir`` with the same settings (``config.json``),
    so ``--resume`` and later ``--fold`` runs train the epochs chosen before instead of timing again."""
    path = out_dir / "config.json"
    if not path.is_file():
        return None
    stored = json.loads(path.read_text())
    now = json.loads(json.dumps(config.to_dict()))  # tuples -> lists, as stored
    same = all(stored.get("config", {}).get(k) == v for k, v in now.items() if k not in ("epochs", "quiet"))
    budget = stored.get("time_budget")
    return budget if same and budget else None


def splits_digest(splits: dict) -> str:
    """Fingerprint of the folds themselves (ids per part), so a resumed run never mixes two splits."""
    import hashlib

    folds = [{part: sorted(f[part]) for part in sorted(f)} for f in splits["folds"]]
    return hashlib.sha1(json.dumps(folds, sort_keys=True).encode()).hexdigest()


def check_same_splits(out_dir: Path, digest: str) -> None:
    """Folds already trained in ``out_dir`` must come from the same split as the ones about to be trained."""
    path = out_dir / "config.json"
    if path.is_file() and json.loads(path.read_text()).get("splits_digest") not in (None, digest):
        raise MedNeXtUserError(
            f"{str(out_dir)!r} holds folds trained on another split (its splits.json changed since); fix: train into "
            "a new -o (folds of two splits cannot be averaged)"
        )


def check_resume_config(out_dir: Path, config: TrainConfig, class_names: list[str]) -> None:
    path = out_dir / "config.json"
    if not path.is_file():
        return
    old = json.loads(path.read_text())
    now = json.loads(json.dumps(config.to_dict()))  # tuples -> lists, as stored
    for key in RESUME_KEYS:
        if old.get("config", {}).get(key) != now.get(key):
            raise MedNeXtUserError(
                f"--resume with {key}={now.get(key)!r} but the run in {str(out_dir)!r} used "
                f"{old['config'].get(key)!r}; fix: use the same settings, or a new --out"
            )
    if old.get("class_names") and old["class_names"] != class_names:
        raise MedNeXtUserError(f"--resume on a dataset with other classes than {old['class_names']}; fix: a new --out")


def train_folds(
    prepared: Prepared,
    out_dir: str | os.PathLike,
    config: TrainConfig,
    folds: Sequence[int] | None = None,
    resume: bool = False,
    ctx: DistContext | None = None,
    console: Console | None = None,
    callbacks: Sequence[EpochCallback] = (),
) -> dict:
    """Train and evaluate the requested folds (default all); write ``summary.json`` over the finished folds."""
    from .distributed import setup
    from .prepare import existing_run

    config.validate()
    out = Path(out_dir)
    own_ctx = ctx is None
    ctx = ctx or setup(config.device)
    console = console or Console(config.quiet, ctx.main)
    try:
        n = prepared.splits["n_folds"]
        folds = list(range(n)) if folds is None else list(folds)
        bad = [f for f in folds if not 0 <= f < n]
        if bad:
            raise MedNeXtUserError(f"fold {bad[0]} does not exist ({n} folds in the split); fix: --fold 0..{n - 1}")
        existing = existing_run(out)
        if existing:
            check_same_splits(out, splits_digest(prepared.splits))
        if not resume:
            done = [d for d in existing if int(d.split("_")[1]) in folds]
            if done:
                raise MedNeXtUserError(
                    f"{str(out)!r} already holds a run ({', '.join(done)}); fix: --resume to continue it, or another --out"
                )
        else:
            check_resume_config(out, config, prepared.index.class_names)
        meta = model_meta(prepared, config)
        if ctx.main:
            out.mkdir(parents=True, exist_ok=True)
        ctx.barrier()
        needed = sorted({p for f in folds for part in prepared.splits["_positions"][f].values() for p in part})
        cache = _SubsetCache(prepared.index, needed, config, meta, console)
        trainer = FoldTrainer(prepared, cache, config, meta, out, ctx, console)
        budget = None
        if config.time_budget:
            budget = _earlier_budget(out, config)
            if budget is None:
                budget = trainer.pilot(folds[0], prepared.splits["_positions"][folds[0]], config.time_budget)
            config = replace(config, epochs=int(budget["epochs"]))
            trainer.cfg = config
            console.info(f"time budget {config.time_budget:g} s per fold: about {budget['estimated_epoch_s']:.1f} s "
                         f"per epoch (pilot on fold {budget['pilot_fold']}) -> {config.epochs} epochs")
            if not budget["fits"]:
                console.warn(f"--time-budget {config.time_budget:g} s is shorter than one epoch (about "
                             f"{budget['estimated_epoch_s']:.1f} s); training 1 epoch")
        if ctx.main:
            save_json({"config": config.to_dict(), "class_names": meta["class_names"], "meta": meta,
                       "world_size": ctx.world, "folds": folds, "data_signature": prepared.fingerprint["signature"],
                       "splits_digest": splits_digest(prepared.splits), **({"time_budget": budget} if budget else {})},
                      out / "config.json")
        results = {f: trainer.run(f, prepared.splits["_positions"][f], resume, callbacks) for f in folds}
        summary = summarize_run(out, prepared.index.class_names) if ctx.main else {}
        if ctx.main and summary:
            for line in format_summary(summary):
                console.info(line)
        return {"folds": results, "summary": summary}
    finally:
        if own_ctx:
            ctx.close()


class _SubsetCache(ImageCache):
    """Decode only the images the requested folds use; positions stay those of the full index."""

    def __init__(self, index: DatasetIndex, needed: list[int], config: TrainConfig, meta: dict, console: Console):
        self._map = {p: i for i, p in enumerate(needed)}
        super().__init__([index.samples[p] for p in needed], config.input_size, meta["in_chans"],
                         config.cache_images, progress=console.progress_disabled() is None)

    def get(self, i: int) -> np.ndarray:
        return super().get(self._map[i])


def summarize_run(out_dir: str | os.PathLike, class_names: Sequence[str] | None = None) -> dict:
    """Mean +- std over the finished folds of a run folder (``fold_*/metrics.json``), plus pooled out-of-fold
    metrics from their ``predictions.csv``; written to ``summary.json``."""
    from .evaluate import read_predictions

    out = Path(out_dir)
    fold_files = sorted(out.glob("fold_*/metrics.json"), key=lambda p: int(p.parent.name.split("_")[1]))
    if not fold_files:
        return {}
    per_fold = [json.loads(p.read_text()) for p in fold_files]
    names = list(class_names or per_fold[0]["confusion_matrix"]["labels"])
    ys, ps = [], []
    for p in fold_files:
        y, probs, _ = read_predictions(p.parent / "predictions.csv", names)
        ys.append(y)
        ps.append(probs)
    pooled = compute_metrics(np.concatenate(ys), np.concatenate(ps), names) if len(per_fold) > 1 else None
    raw = json.loads((out / "splits.json").read_text()) if (out / "splits.json").is_file() else {}
    summary = {
        "split": {"method": raw.get("method"), "leaky": bool(raw.get("leaky", False))},
        "folds": [m["fold"] for m in per_fold],
        "class_names": names,
        "evaluated_on": sorted({m.get("evaluated_on", "val") for m in per_fold}),
        "per_fold": {str(m["fold"]): {"accuracy": m["accuracy"], "balanced_accuracy": m["balanced_accuracy"],
                                      "macro_f1": m["macro"]["f1"], "macro_auc": m["macro"]["auc"],
                                      "train_time_s": m.get("train_time_s")} for m in per_fold},
        "aggregate": aggregate(per_fold),
        "pooled": pooled,
    }
    save_json(summary, out / "summary.json")
    return summary


def format_summary(summary: dict) -> list[str]:
    agg = summary["aggregate"]
    mean, std = agg["mean"], agg["std"]
    lines = [f"summary over {agg['n_folds']} fold(s) ({'/'.join(summary['evaluated_on'])}), mean ± std:"]
    if summary.get("split", {}).get("leaky"):  # --split image-cv
        lines.insert(0, f"LEAKY split ({summary['split']['method']}): not a patient-independent result")
    for key, label in (("accuracy", "accuracy"), ("balanced_accuracy", "balanced accuracy"),
                       ("macro.precision", "macro precision"), ("macro.recall", "macro recall"),
                       ("macro.specificity", "macro specificity"), ("macro.f1", "macro F1"),
                       ("macro.auc", "macro AUC")):
        lines.append(f"  {label:<18} {fmt_pct(mean[key], std[key])} %")
    for c in summary["class_names"]:
        lines.append(
            f"  {c:<18} recall {fmt_pct(mean[f'per_class.{c}.recall'])}  specificity "
            f"{fmt_pct(mean[f'per_class.{c}.specificity'])}  F1 {fmt_pct(mean[f'per_class.{c}.f1'])}  "
            f"AUC {fmt_pct(mean[f'per_class.{c}.auc'])}"
        )
    return lines
