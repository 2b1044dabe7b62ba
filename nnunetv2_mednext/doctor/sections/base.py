"""What every section of the device check is (:class:`Section`) and what it is given (:class:`Context`), with the
helpers the sections share: the per-item time budget, a row's one-line summary and the markdown table."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch

from ..findings import Report
from ..profiles import Profile

T = TypeVar("T")
Skip = tuple[str, str]  # (what, why) for the report's Skipped list


def _never(ctx: Context) -> Skip | None:
    return None


def _nothing(report: Report) -> list[str]:
    return []


@dataclass(frozen=True)
class Section:
    """One section of the check.

    ``run(ctx)`` adds its rows to ``ctx.report`` (field ``name``) within ``ctx.section_end``; ``skip_reason(ctx)``
    says why it cannot run here (``None``: it runs); ``render(report)`` is its part of ``device_check.md`` (empty
    when it has no rows); ``attention(report)`` lists what needs a look without being a failure. ``skip_label`` is
    what the Skipped list says for ``--skip NAME`` (default: the name).
    """

    name: str
    run: Callable[[Context], None]
    render: Callable[[Report], list[str]]
    skip_reason: Callable[[Context], Skip | None] = _never
    attention: Callable[[Report], list[str]] = _nothing
    skip_label: str = ""

    @property
    def label(self) -> str:
        return self.skip_label or self.name


@dataclass
class Context:
    """What a section runs with: the profile, the device, the report it fills, and its time budget."""

    profile: Profile
    device: torch.device
    out_dir: Path
    report: Report
    nets: list[str]
    compile_request: str = "try"
    log: Callable[[str], None] = print
    shares: dict[str, float] = field(default_factory=dict)  # seconds per section
    t_start: float = field(default_factory=time.monotonic)
    deadline: float = float("inf")  # the whole run's
    section_end: float = float("inf")  # the running section's (set by check.run_check)
    _plans: tuple[Any, dict] | None = None

    @property
    def cap(self) -> tuple[int, int] | None:
        from ..amp import cuda_capability

        return cuda_capability(self.device) if self.device.type == "cuda" else None

    @property
    def plans(self) -> tuple[Any, dict]:
        """nnU-Net's ``PlansManager`` over the profile's synthetic plans, and the dataset.json (built once)."""
        if self._plans is None:
            from ..cases import plans_manager

            self._plans = plans_manager(self.profile)
        return self._plans

    def elapsed(self) -> str:
        return f"[{time.monotonic() - self.t_start:6.1f}s]"

    def left(self) -> float:
        """Seconds left to the running section."""
        return self.section_end - time.monotonic()

    def within_budget(self, section: str, items: Iterable[T], label: Callable[[T], str]) -> Iterator[T]:
        """The items while the section has time; each one after that is listed as skipped."""
        for item in items:
            if self.left() < 0:
                self.report.skip(f"{section} {label(item)}", f"{section} time budget spent")
                continue
            yield item

    def add(self, rows: list[dict], row: dict, prefix: str = "") -> None:
        """Append ``row`` to a section's rows and log its summary."""
        rows.append(row)
        self.log(f"{self.elapsed()}   -> {prefix}{summary(row)}")


_SUMMARY: tuple[tuple[str, Callable[[dict], str]], ...] = (  # (key, text) for the log, in this order
    ("it_per_s", lambda r: f"{r['it_per_s']} it/s"),
    ("peak_bytes", lambda r: f"peak {r['peak_bytes'] / 2**30:.2f} GiB"),
    ("activation_bytes", lambda r: f"saved {r['activation_bytes'] / 2**20:.1f} MiB"),
    ("mem_bytes", lambda r: f"step peak {r['mem_bytes'] / 2**20:.1f} MiB"),
    ("seconds", lambda r: f"{r['seconds']} s"),
    ("images_per_s", lambda r: f"{r['images_per_s']} images/s"),
    ("seconds_per_case", lambda r: f"{r['seconds_per_case']} s/case, {r['forward_passes']} forward passes"),
)
_MEMORY = ("peak_bytes", "activation_bytes", "mem_bytes")  # the first of these a row has is its memory


def summary(r: dict) -> str:
    """One line for the log: status, speed, memory, seconds."""
    if r.get("status") != "ok":
        return f"{r.get('status')}: {r.get('reason', '')}"
    memory = next((k for k in _MEMORY if k in r), None)
    return "ok " + ", ".join(text(r) for key, text in _SUMMARY if key in r and (key not in _MEMORY or key == memory))


def gib(v: float | None) -> str:
    return "-" if v is None else f"{v / 2**30:.2f} GiB" if v >= 2**30 else f"{v / 2**20:.1f} MiB"


def status_cell(r: dict) -> str:
    return f"{r['status']}{': ' + r['reason'] if r.get('reason') else ''}"


def shape(r: dict, key: str = "patch") -> str:
    return "x".join(map(str, r.get(key, [])))


def table(title: str, intro: Sequence[str], columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    """A markdown section: ``## title``, the intro paragraphs, and a table; a column named ``>x`` is right-aligned."""
    out = ["", f"## {title}", ""]
    for paragraph in intro:
        out += [paragraph, ""]
    out.append("| " + " | ".join(c.lstrip(">") for c in columns) + " |")
    out.append("|" + "|".join("---:" if c.startswith(">") else "---" for c in columns) + "|")
    out += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return out
