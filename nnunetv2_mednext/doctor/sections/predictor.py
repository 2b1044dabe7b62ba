"""Section ``predictor``: nnU-Net's ``nnUNetPredictor`` (sliding window, Gaussian weighting, mirroring) on a
synthetic volume."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..cases import failure, free, sync, trainer_class
from ..findings import Report
from ..profiles import NUM_CLASSES
from .base import Context, Section, shape, status_cell, table


def predictor_run(pm: Any, dataset_json: dict, net_name: str, config: str, volume: Sequence[int],
                  device: torch.device) -> dict:
    """nnU-Net's predictor (sliding window 0.5, Gaussian, mirroring on every axis) on a synthetic volume."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.inference.sliding_window_prediction import compute_steps_for_sliding_window

    cm = pm.get_configuration(config)
    cls = trainer_class(net_name)
    torch.manual_seed(0)
    net = cls.build_network_architecture(pm, cm, 1, NUM_CLASSES, False).to(device)
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=True,
                                perform_everything_on_device=device.type == "cuda", device=device, verbose=False,
                                verbose_preprocessing=False, allow_tqdm=False)
    axes = tuple(range(len(cm.patch_size)))
    predictor.manual_initialization(net, pm, cm, [net.state_dict()], dataset_json, cls.__name__, axes)
    steps = compute_steps_for_sliding_window(list(volume), cm.patch_size, 0.5)
    windows = int(np.prod([len(s) for s in steps]))
    gen = torch.Generator().manual_seed(0)
    if device.type == "cuda":  # warm-up (cuDNN autotuning) on one window
        predictor.predict_logits_from_preprocessed_data(torch.randn((1, *cm.patch_size), generator=gen))
    data = torch.randn((1, *volume), generator=gen)
    sync(device)
    t0 = time.perf_counter()
    logits = predictor.predict_logits_from_preprocessed_data(data)
    sync(device)
    seconds = time.perf_counter() - t0
    ok_shape = tuple(logits.shape) == (NUM_CLASSES, *volume)
    finite = bool(torch.isfinite(logits).all())
    row = {"net": net_name, "config": config, "volume": list(volume), "patch": list(cm.patch_size), "windows": windows,
           "forward_passes": windows * 2 ** len(axes), "seconds_per_case": round(seconds, 3),
           "logits_shape_ok": ok_shape, "logits_finite": finite, "status": "ok" if ok_shape and finite else "fail"}
    if not (ok_shape and finite):
        row["reason"] = f"logits shape {tuple(logits.shape)} finite={finite}"
    return row


def run(ctx: Context) -> None:
    pm, dataset_json = ctx.plans
    p = ctx.profile
    nets = [n for n in p.predictor_nets if n in ctx.nets]
    for net_name in ctx.within_budget("predictor", nets, str):
        ctx.log(f"{ctx.elapsed()} predictor {net_name} on a {'x'.join(map(str, p.predictor_volume))} volume")
        try:
            row = predictor_run(pm, dataset_json, net_name, p.predictor_config, p.predictor_volume, ctx.device)
        except Exception as e:
            row = {"net": net_name, "config": p.predictor_config, **failure(e)}
        free(ctx.device)
        ctx.add(ctx.report.predictor, row)


def render(report: Report) -> list[str]:
    if not report.predictor:
        return []
    return table("nnU-Net predictor",
                 ["`nnUNetPredictor`, tile step 0.5, Gaussian weighting, mirroring on every axis, synthetic volume."],
                 ["net", "volume", "patch", ">windows", ">forward passes", ">s / case", "status"],
                 ([r["net"], shape(r, "volume"), shape(r), r.get("windows", "-"), r.get("forward_passes", "-"),
                   r.get("seconds_per_case", "-"), status_cell(r)] for r in report.predictor))


SECTION = Section("predictor", run, render)
