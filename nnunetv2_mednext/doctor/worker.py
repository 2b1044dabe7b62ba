"""Compiled training steps in a child process under a timeout (the compile and routes sections): the parent side.

The parent starts ``python -m nnunetv2_mednext.doctor --compile-worker PROFILE DEVICE RESULTS ITEM ...`` in its own
process group (:func:`~.amp.run_guarded` kills the group, inductor's compile workers too, at the timeout). Each item
is ``net:config`` (the compile section: compiled as nnU-Net does) or ``net:config:route`` (one route of the routes
section); the child appends a ``start`` and a ``done`` JSON line per item, so the parent can tell an item that ran
out of time from one never reached. The child side is :mod:`.child`.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from . import amp as gpu
from .profiles import WORKER_FLAG, Profile


def item_key(net: str, config: str, route: str | None = None) -> str:
    return f"{net}:{config}" if route is None else f"{net}:{config}:{route}"


def run_in_child(name: str, profile: Profile, keys: Sequence[str], device: torch.device, out_dir: Path,
                 budget_s: float, warn_only: bool, section: str = "compile") -> dict[str, dict]:
    """Run ``keys`` in a child killed after ``budget_s``; a row per key (``{name}_results.jsonl`` and
    ``{name}_worker.log`` in ``out_dir``). Items it did not finish get status ``timeout``, ``skipped`` or ``fail``;
    with ``warn_only`` a failure is reported as a warning (CPU)."""
    result = out_dir / f"{name}_results.jsonl"
    result.unlink(missing_ok=True)
    env = dict(os.environ)
    if device.type == "cpu":
        env.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")
    argv = [sys.executable, "-m", "nnunetv2_mednext.doctor", WORKER_FLAG, profile.name, device.type, str(result),
            *keys]
    run = gpu.run_guarded(argv, budget_s, env=env, log_path=out_dir / f"{name}_worker.log")
    events = [json.loads(line) for line in result.read_text().splitlines()] if result.exists() else []
    done = {e["key"]: e for e in events if e.get("event") == "done"}
    started = {e["key"] for e in events if e.get("event") == "start"}
    rows = {}
    for key in keys:
        row = done.get(key)
        if row is None:
            row = {"compile": True}
            if key in started and run.status == "timeout":
                row.update(status="timeout", reason=f"still compiling/running when the {budget_s:.0f} s {section} "
                           "budget ran out")
            elif run.status == "timeout":
                row.update(status="skipped", reason=f"{section} budget spent before this item")
            else:
                row.update(status="fail", reason=f"compile worker {run.status} (exit {run.returncode}): "
                           + (run.tail.splitlines()[-1] if run.tail else "no output"))
        for k in ("event", "key", "t"):
            row.pop(k, None)
        if row.get("status") == "fail" and warn_only:
            row["warn_only"] = True
        rows[key] = row
    return rows
