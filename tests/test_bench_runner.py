"""``benchmarks/runner.py``: the pinned job runner and the report writer that keeps hand notes."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from runner import KEEP_MARKER, Task, run_pinned, write_keeping


def _py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_run_pinned_runs_every_task_at_most_jobs_at_once(tmp_path: Path) -> None:
    """Four tasks, two at a time: each writes its start/end times; no three overlap, and all ran in order."""
    code = ("import sys, time, pathlib; t0 = time.time(); time.sleep(0.5); "
            "pathlib.Path(sys.argv[1]).write_text(f'{t0} {time.time()}')")
    tasks = [Task(f"t{i}", [*_py(code), str(tmp_path / f"t{i}.txt")], dict(os.environ), tmp_path / "logs" / f"t{i}.log")
             for i in range(4)]
    run_pinned(tasks, 2, poll_s=0.05)
    spans = [tuple(map(float, (tmp_path / f"t{i}.txt").read_text().split())) for i in range(4)]  # every task ran
    assert all(t.seconds and t.seconds >= 0.5 for t in tasks)
    for t, _ in spans:  # at any task's start, at most two tasks are running
        assert sum(s <= t < e for s, e in spans) <= 2
    assert spans[2][0] >= min(spans[0][1], spans[1][1]) - 0.05  # the third waited for a free slot


def test_run_pinned_failure_names_the_task_shows_its_log_and_stops_the_others(tmp_path: Path) -> None:
    slow = Task("slow", _py("import time; time.sleep(60)"), dict(os.environ), tmp_path / "slow.log")
    bad = Task("bad", _py("print('the reason it failed'); raise SystemExit(3)"), dict(os.environ),
               tmp_path / "bad.log")
    t0 = time.perf_counter()
    with pytest.raises(SystemExit) as err:
        run_pinned([slow, bad], 2, poll_s=0.05)
    assert "bad failed (exit 3" in str(err.value) and "the reason it failed" in str(err.value)
    assert time.perf_counter() - t0 < 30  # the slow task was killed, not waited for


def test_write_keeping_keeps_hand_notes_and_marks_a_new_report(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "report.md"
    write_keeping(out, "# table v1\n")
    assert out.read_text() == "# table v1\n\n" + KEEP_MARKER + "\n"  # a new report shows where notes go
    out.write_text(out.read_text() + "\n## Reading\n\nwritten by hand\n")
    write_keeping(out, "# table v2\n\n| new |\n")
    assert out.read_text() == "# table v2\n\n| new |\n\n" + KEEP_MARKER + "\n\n## Reading\n\nwritten by hand\n"


def test_write_keeping_puts_the_hand_block_before_a_generated_heading(tmp_path: Path) -> None:
    """Readings sit between the tables and the long command list, and stay there when the report is regenerated."""
    out = tmp_path / "results.md"
    write_keeping(out, "# r\n\n| t1 |\n\n## Commands\n\ncmd1\n", before="## Commands")
    assert out.read_text() == "# r\n\n| t1 |\n\n" + KEEP_MARKER + "\n\n## Commands\n\ncmd1\n"
    out.write_text(out.read_text().replace(KEEP_MARKER + "\n", KEEP_MARKER + "\n\n## Reading\n\nby hand\n"))
    write_keeping(out, "# r\n\n| t2 |\n\n## Commands\n\ncmd2\n", before="## Commands")
    assert out.read_text() == "# r\n\n| t2 |\n\n" + KEEP_MARKER + "\n\n## Reading\n\nby hand\n\n## Commands\n\ncmd2\n"
