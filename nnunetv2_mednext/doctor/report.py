"""The two files written from the device check's findings (:class:`~.findings.Report`): ``device_check.json`` and
``device_check.md`` (a header, then each section's own part, then what was skipped)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from .findings import Report
from .sections import ALL
from .sections.base import gib

ENVIRONMENT_KEYS = ("gpu", "capability", "n_gpus", "gpu_memory_bytes", "cuda", "cudnn", "torch", "nnunetv2",
                    "nnunetv2_mednext", "python", "machine", "load_average", "cxx", "amp_auto", "amp_nnunet")


def attention(report: Report) -> list[str]:
    """What each section asks a human to look at (:attr:`Section.attention`)."""
    return [line for s in ALL for line in s.attention(report)]


def render_markdown(report: Report) -> str:
    """``device_check.md``: verdict and environment, then every section's part (:attr:`Section.render`)."""
    m = report.meta
    fails, attn = report.failures(), attention(report)
    out = [f"# nnunetv2-mednext device check: {m['subset']}", "",
           f"`{m['command']}`, {m['date']}, {m['seconds']} s of a {m['budget_s']:.0f} s budget.", ""]
    if not m.get("complete"):
        out += [f"**Partial report**: written after section '{m.get('last_section')}'; the run did not finish.", ""]
    if m["device"] != "cuda":
        out += ["**CPU subset.** No CUDA device: fp16 + GradScaler, `torch.cuda.max_memory_allocated`, the CUDA "
                "compile backend and DDP did not run (listed under *Skipped*). Timings on a shared CPU are "
                "indicative only.", ""]
    out += [f"**Verdict: {'FAIL' if fails else 'PASS'}** ({len(fails)} failure(s), {len(attn)} item(s) needing "
            f"attention, {len(report.skipped)} skipped).", ""]
    out += [f"* failure: {f}" for f in fails] + [f"* attention: {a}" for a in attn]
    out += ["", "## Environment", ""]
    out += [f"* {k}: {m[k] if k != 'gpu_memory_bytes' else gib(m[k])}" for k in ENVIRONMENT_KEYS if k in m]
    out.append(f"* nnU-Net compiles here: {m['nnunet_compiles']['compiles']} ({m['nnunet_compiles']['why']})")
    for section in ALL:
        out += section.render(report)
    if report.skipped:
        out += ["", "## Skipped", ""] + [f"* {s['what']}: {s['why']}" for s in report.skipped]
    return "\n".join(out) + "\n"


def write_report(report: Report, out_dir: Path) -> tuple[Path, Path]:
    """Write ``device_check.json`` and ``device_check.md`` to ``out_dir``; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    data = asdict(report)
    data["verdict"] = "fail" if report.failures() else "pass"
    data["failures"], data["attention"] = report.failures(), attention(report)
    js, md = out_dir / "device_check.json", out_dir / "device_check.md"
    js.write_text(json.dumps(data, indent=2, default=str) + "\n")
    md.write_text(render_markdown(report))
    return js, md
