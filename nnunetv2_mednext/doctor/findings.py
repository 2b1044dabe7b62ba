"""The device check's findings (:class:`Report`): what each section measured, what was skipped, what failed.

Knows nothing of the sections themselves (they write into it); :mod:`.report` renders it."""

from __future__ import annotations

from dataclasses import dataclass, field

# sections whose rows carry a ``status``: a ``fail`` there is a failure of the check (unless ``warn_only``)
ROW_SECTIONS = ("matrix", "stability", "compile", "routes", "predictor", "classify", "nnunet_train")


@dataclass
class Report:
    """Everything the check found; written as JSON and markdown."""

    meta: dict = field(default_factory=dict)
    matrix: list[dict] = field(default_factory=list)
    stability: list[dict] = field(default_factory=list)
    planner: list[dict] = field(default_factory=list)
    refit: list[str] = field(default_factory=list)
    compile: list[dict] = field(default_factory=list)
    routes: list[dict] = field(default_factory=list)
    routes_best: list[dict] = field(default_factory=list)
    predictor: list[dict] = field(default_factory=list)
    classify: list[dict] = field(default_factory=list)
    nnunet_train: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)

    def skip(self, what: str, why: str) -> None:
        self.skipped.append({"what": what, "why": why})

    def failures(self) -> list[str]:
        out = []
        for section in ROW_SECTIONS:
            for r in getattr(self, section):
                if r.get("status") == "fail" and not r.get("warn_only"):
                    label = " ".join(str(r.get(k)) for k in ("net", "config", "route", "amp") if r.get(k) is not None)
                    out.append(f"{section}: {label}: {r.get('reason', 'failed')}")
        return out
