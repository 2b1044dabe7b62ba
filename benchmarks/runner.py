"""What the benchmark scripts share: running commands on pinned cores, and writing reports that keep hand notes.

* :func:`run_pinned` runs commands at most ``jobs`` at once, each pinned to its own free core with ``taskset``
  (when ``jobs > 1`` and ``taskset`` exists), one log file each. A failing command stops the others and ends the
  script with its log's tail (``equal_time.py`` and ``classification_study.py``).
* :func:`write_keeping` writes a generated report and keeps whatever follows :data:`KEEP_MARKER` in the file it
  replaces (readings written by hand below a generated table survive its regeneration).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

KEEP_MARKER = "<!-- kept when the table above is regenerated -->"


@dataclass
class Task:
    """One command: its name, argv, environment (complete, not added to ours), log file; ``seconds`` once it ran."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    cwd: Path | None = None
    seconds: float | None = None


def run_pinned(tasks: Sequence[Task], jobs: int, poll_s: float = 1.0) -> None:
    """Run ``tasks`` in order, at most ``jobs`` at once, each on its own core.

    Pinning happens only with ``jobs > 1`` (one job alone may use any core). A task that exits non-zero kills the
    others still running and raises ``SystemExit`` naming it, with the last 20 lines of its log."""
    n = max(1, jobs)
    pin = n > 1 and shutil.which("taskset") is not None
    cores = list(range(min(n, os.cpu_count() or 1))) if pin else list(range(n))
    pending, running = list(tasks), {}
    try:
        while pending or running:
            for core in cores:
                if core in running or not pending:
                    continue
                task = pending.pop(0)
                task.log.parent.mkdir(parents=True, exist_ok=True)
                print(f"[{datetime.now():%H:%M:%S}] start {task.name}" + (f" (core {core})" if pin else ""),
                      flush=True)
                with open(task.log, "w") as log:
                    task.seconds = -time.perf_counter()
                    running[core] = (task, subprocess.Popen(
                        (["taskset", "-c", str(core)] if pin else []) + task.argv, env=task.env, cwd=task.cwd,
                        stdout=log, stderr=subprocess.STDOUT))
            for core, (task, proc) in list(running.items()):
                if proc.poll() is None:
                    continue
                del running[core]
                task.seconds += time.perf_counter()
                if proc.returncode != 0:
                    tail = task.log.read_text(errors="replace").splitlines()[-20:]
                    raise SystemExit(f"{task.name} failed (exit {proc.returncode}; log {task.log}):\n"
                                     + "\n".join(tail))
                print(f"[{datetime.now():%H:%M:%S}] done {task.name} ({task.seconds:.0f} s)", flush=True)
            if running:
                time.sleep(poll_s)
    finally:
        for _, proc in running.values():  # a failure (or Ctrl-C) leaves no orphan training behind
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def write_keeping(path: Path, text: str, before: str | None = None) -> None:
    """Write ``text`` to ``path`` with the hand-written block of the file it replaces: everything from
    :data:`KEEP_MARKER` on, up to ``before`` (a heading of the generated text, e.g. ``"## Commands"``) when given.
    The block goes before ``before`` in ``text`` (at the end when ``before`` is ``None`` or absent); a new report gets
    the marker alone, so that it shows where hand notes go."""
    old = path.read_text(encoding="utf-8") if path.is_file() else ""
    if KEEP_MARKER in old:
        kept = old[old.index(KEEP_MARKER):]
        if before and "\n" + before in kept:
            kept = kept[: kept.index("\n" + before)]
        kept = kept.rstrip("\n") + "\n"
    else:
        kept = KEEP_MARKER + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    if before and "\n" + before in text:
        at = text.index("\n" + before) + 1
        out = text[:at].rstrip("\n") + "\n\n" + kept + "\n" + text[at:]
    else:
        out = text.rstrip("\n") + "\n\n" + kept
    path.write_text(out, encoding="utf-8")
