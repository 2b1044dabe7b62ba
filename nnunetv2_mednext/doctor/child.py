"""The child process of the compile and routes sections (:mod:`.worker` starts it under a timeout)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from .cases import check_amp, free, measure_item, plans_manager
from .profiles import PROFILES
from .sections.routes import measure_route


def _append(result_file: Path, event: dict) -> None:
    with open(result_file, "a") as fh:
        fh.write(json.dumps(event) + "\n")


def worker_main(profile_name: str, device_name: str, result_file: Path, keys: Sequence[str]) -> None:
    """Child side: measure each item, fp16 + GradScaler on CUDA (nnU-Net's path) / bf16 on a CPU."""
    profile = PROFILES[profile_name]
    device = torch.device(device_name)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    pm, _ = plans_manager(profile)
    for key in keys:
        _append(result_file, {"key": key, "event": "start", "t": time.time()})
        net, config, *route = key.split(":")
        torch._dynamo.reset()  # each item compiles afresh, as a training run does
        if route:
            row = measure_route(pm, net, config, device, profile, route[0])
        else:
            row = measure_item(pm, net, config, device, check_amp(device), False, profile.compile_backend, profile)
        _append(result_file, {**row, "key": key, "event": "done"})
        free(device)
