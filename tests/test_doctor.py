"""The doctor package: every section module has the same interface, ``run_check`` is one loop over them (budget,
skips, partial reports), the routes section's logic on synthetic numbers and one tiny real route, and ``-o``."""

from __future__ import annotations

import importlib
import inspect
import json
import os
import pkgutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from nnunetv2_mednext.doctor import cases, check, profiles, sections
from nnunetv2_mednext.doctor.report import Report, attention, render_markdown
from nnunetv2_mednext.doctor.sections import routes
from nnunetv2_mednext.doctor.sections.base import Context, Section
from nnunetv2_mednext.networks.fastops import CHANNELS_LAST_ENV
from nnunetv2_mednext.networks.recompute import RECOMPUTE_ENV, recompute_enabled

PACKAGE = Path(sections.__file__).resolve().parents[1]
CPU = torch.device("cpu")


def _meta(device: str = "cpu") -> dict:
    return {"subset": "CPU subset" if device == "cpu" else "GPU", "device": device, "command": "x", "date": "d",
            "seconds": 1, "budget_s": 10, "warmup": 1, "repeats": 1, "complete": True,
            "nnunet_compiles": {"compiles": device == "cuda", "why": "w"}}


def _ctx(tmp_path: Path, **kw: object) -> Context:
    return Context(profiles.PROFILES["quick"], CPU, tmp_path, Report(meta=_meta()), list(profiles.NETS), **kw)


# ----------------------------------------------------------------------------------------------------------------
# structure
# ----------------------------------------------------------------------------------------------------------------


def test_every_section_module_honours_the_interface(tmp_path: Path) -> None:
    modules = [m.name for m in pkgutil.iter_modules(sections.__path__) if m.name != "base"]
    exposed = [importlib.import_module(f"{sections.__name__}.{m}").SECTION for m in modules]
    assert sorted(s.name for s in exposed) == sorted(profiles.SECTIONS)  # one module per section, each listed
    assert [s.name for s in sections.ALL] == list(profiles.SECTIONS)
    empty, ctx = Report(meta=_meta()), _ctx(tmp_path, compile_request="off")
    for s in sections.ALL:
        assert isinstance(s, Section)
        for fn in (s.run, s.render, s.skip_reason, s.attention):
            assert len(inspect.signature(fn).parameters) == 1, (s.name, fn)
        assert s.render(empty) == [] and s.attention(empty) == []  # nothing to say without rows
        why = s.skip_reason(ctx)
        assert why is None or (isinstance(why, tuple) and len(why) == 2 and all(isinstance(w, str) for w in why))
    assert sections.ALL[3].skip_reason(ctx) == ("compile", "compile not requested (--compile off)")
    assert sections.ALL[-1].label == "nnUNetv2_train" and sections.ALL[0].label == "matrix"


def test_package_layout_small_modules_and_no_old_paths() -> None:
    sizes = {p.relative_to(PACKAGE).as_posix(): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    assert max(sizes.values()) <= 400, sizes
    for old in ("device_check", "gpu", "plan_networks", "classification.gpu_check"):
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module(f"nnunetv2_mednext.{old}")


def test_run_check_is_one_loop_with_budget_skips_and_partial_reports(monkeypatch: pytest.MonkeyPatch,
                                                                     tmp_path: Path) -> None:
    ran: list[tuple[str, float]] = []

    def section(name: str, why: tuple[str, str] | None = None) -> Section:
        def run(ctx: Context) -> None:
            ran.append((name, ctx.section_end - time.monotonic()))
            ctx.report.matrix.append({"net": name, "status": "ok"})

        return Section(name, run, lambda r: [], (lambda ctx: why), skip_label=f"label {name}")

    fake = (section("a"), section("b"), section("c", ("c on this device", "not here")), section("d"))
    monkeypatch.setattr(check, "ALL", fake)
    profile = replace(profiles.PROFILES["quick"], budget_s=30.0, sections={"a": 5.0, "d": 1000.0})
    progress: list[tuple[str, bool, int]] = []
    report = check.run_check(profile, CPU, tmp_path, skip=["b"], log=lambda s: None,
                             progress=lambda r: progress.append((r.meta["last_section"], bool(r.meta.get("complete")),
                                                                 len(r.matrix))))
    assert [n for n, _ in ran] == ["a", "d"]
    assert ran[0][1] == pytest.approx(5.0, abs=1.0)  # its share
    assert ran[1][1] == pytest.approx(30.0, abs=3.0)  # its share, capped at the run's deadline
    assert {"what": "label b", "why": "--skip b"} in report.skipped
    assert {"what": "c on this device", "why": "not here"} in report.skipped
    assert progress == [("a", False, 1), ("b", False, 1), ("c", False, 1), ("d", True, 2)]
    assert list(report.meta["section_seconds"]) == ["a", "b", "c", "d"]


# ----------------------------------------------------------------------------------------------------------------
# routes: logic on synthetic numbers
# ----------------------------------------------------------------------------------------------------------------


def test_route_settings_baseline_and_plan() -> None:
    r = routes.ROUTES
    assert r["default"].setting("cpu") == "none (the defaults)"
    assert r["default"].setting("cuda") == "`nnUNet_compile=0`"
    assert r["recompute_off"].setting("cuda") == "`NNUNETV2_MEDNEXT_RECOMPUTE=0` + `nnUNet_compile=0`"
    assert r["channels_last"].setting("cpu") == "`NNUNETV2_MEDNEXT_CHANNELS_LAST=1`"
    assert r["compiled"].setting("cuda") == "`nnUNet_compile` unset (nnU-Net's default on CUDA)"
    assert r["compiled_recompute_off"].setting("cuda") == ("`NNUNETV2_MEDNEXT_RECOMPUTE=0` + `nnUNet_compile` unset "
                                                          "(nnU-Net's default on CUDA)")
    assert r["compiled"].setting("cpu") == "none: nnU-Net never compiles on a CPU"
    assert routes.baseline_route("cuda") == "compiled" and routes.baseline_route("cpu") == "default"
    assert [x.unet_route for x in r.values()] == ["default", "default", "channels_last", "compiled", "compiled"]

    items = routes.plan(profiles.PROFILES["quick"], list(profiles.NETS))
    assert items[:3] == [("mednext_t", "3d_fullres", "default"), ("mednextv1_s_k3", "3d_fullres", "default"),
                         ("PlainConvUNet", "3d_fullres", "default")]
    assert ("PlainConvUNet", "3d_fullres", "recompute_off") not in items  # the U-Net has no recompute
    assert [i for i in items if "compiled" in i[2]] == [  # quick: compiled routes of mednext_t and the U-Net
        ("mednext_t", "3d_fullres", "compiled"), ("PlainConvUNet", "3d_fullres", "compiled"),
        ("mednext_t", "3d_fullres", "compiled_recompute_off")]
    gpu_items = routes.plan(profiles.PROFILES["gpu"], ["mednext_t", "mednextv1_s_k3"])
    assert len(gpu_items) == 2 * 5 * 2 and gpu_items[0][1] == "3d_fullres" and gpu_items[-1][1] == "2d"


def _row(net: str, route: str, it_per_s: float, mem: int | None, status: str = "ok") -> dict:
    row = {"net": net, "config": "3d_fullres", "route": route, "status": status}
    if status == "ok":
        row.update(it_per_s=it_per_s, s_per_it=1 / it_per_s, mem_bytes=mem)
    return row


def _gpu_rows() -> list[dict]:
    return [_row("mednext_t", "default", 2.0, 400), _row("mednext_t", "recompute_off", 2.4, 900),
            _row("mednext_t", "channels_last", 3.0, 380), _row("mednext_t", "compiled", 2.5, 300),
            _row("mednext_t", "compiled_recompute_off", 2.9, 700),
            _row("PlainConvUNet", "default", 4.0, 200), _row("PlainConvUNet", "channels_last", 5.0, 200),
            _row("PlainConvUNet", "compiled", 5.0, 100)]


def test_ratios_to_the_unet_on_the_same_route() -> None:
    rows = _gpu_rows()
    routes.add_ratios(rows)
    by = {r["route"]: r for r in rows if r["net"] == "mednext_t"}
    assert by["default"]["time_vs_unet"] == pytest.approx(2.0) and by["default"]["memory_vs_unet"] == 2.0
    assert by["recompute_off"]["time_vs_unet"] == pytest.approx(4.0 / 2.4, abs=1e-3)  # vs the U-Net's default
    assert by["channels_last"]["time_vs_unet"] == pytest.approx(5.0 / 3.0, abs=1e-3)
    assert by["compiled_recompute_off"]["memory_vs_unet"] == 7.0  # vs the U-Net compiled
    assert all("time_vs_unet" not in r for r in rows if r["net"] == "PlainConvUNet")
    lone = [_row("mednext_t", "default", 2.0, 400), _row("PlainConvUNet", "default", 4.0, 0, status="fail")]
    routes.add_ratios(lone)
    assert "time_vs_unet" not in lone[0]


def test_fastest_route_choice() -> None:
    mt = [r for r in _gpu_rows() if r["net"] == "mednext_t"]
    # channels-last ran fastest, but the setting does not reach the network yet: the fastest takeable is compiled
    # + recompute off, 2.9 / 2.5 = 1.16x what a run gets without settings (compiled)
    best = routes.choose(mt, "cuda", cl_honoured=False)
    assert best["choice"] == "compiled_recompute_off" and best["baseline"] == "compiled"
    assert best["speedup"] == pytest.approx(1.16) and best["memory_ratio"] == pytest.approx(700 / 300, abs=1e-3)
    assert best["setting"] == routes.ROUTES["compiled_recompute_off"].setting("cuda")
    assert any("`channels_last` ran fastest" in n for n in best["notes"])
    assert any("Plan with `NNUNETV2_MEDNEXT_RECOMPUTE=0`" in n for n in best["notes"])
    assert "1.16x the speed of `compiled`" in best["verdict"]
    # once the setting reaches the network, channels-last is the choice
    best = routes.choose(mt, "cuda", cl_honoured=True)
    assert best["choice"] == "channels_last" and best["setting"] == "`NNUNETV2_MEDNEXT_CHANNELS_LAST=1` + `nnUNet_compile=0`"
    assert best["notes"] == []
    # under the margin the defaults stay
    close = [_row("mednext_t", "compiled", 2.5, 300), _row("mednext_t", "recompute_off", 2.6, 900)]
    best = routes.choose(close, "cuda", cl_honoured=True)
    assert best["choice"] == "compiled" and best["verdict"].startswith("keep the defaults")
    # what a run gets without settings failed: the fastest that ran is named
    failed = [_row("mednext_t", "compiled", 0, None, status="timeout"), _row("mednext_t", "default", 2.0, 400)]
    best = routes.choose(failed, "cuda", cl_honoured=True)
    assert best["choice"] == "default" and "did not finish" in best["verdict"] and "speedup" not in best
    # on a CPU the compiled routes cannot be taken (nnU-Net never compiles there)
    best = routes.choose([r for r in mt if r["route"] != "channels_last"], "cpu", cl_honoured=False)
    assert best["baseline"] == "default" and best["choice"] == "recompute_off"
    assert any("nnU-Net never compiles on a CPU" in n for n in best["notes"])
    assert any("CPU" in n and "GPU run decides" in n for n in best["notes"])
    assert routes.choose([_row("mednext_t", "default", 0, None, status="fail")], "cuda", True)["choice"] is None


def test_routes_markdown_and_attention_on_gpu_numbers() -> None:
    rows = _gpu_rows()
    routes.add_ratios(rows)
    report = Report(meta=_meta("cuda"), routes=rows, routes_best=[
        routes.choose([r for r in rows if r["net"] == "mednext_t"], "cuda", cl_honoured=False)])
    report.meta["routes"] = {"amp": "fp16", "baseline": "compiled", "channels_last_honoured": False,
                             "compile_backend": "inductor"}
    md = render_markdown(report)
    assert "## GPU routes ready to prove" in md and "**Defaults are unchanged**" in md
    assert ("| mednext_t | 3d_fullres | compiled_recompute_off | `NNUNETV2_MEDNEXT_RECOMPUTE=0` + `nnUNet_compile` "
            "unset (nnU-Net's default on CUDA) | 2.9 | 1.72 |") in md
    assert "| PlainConvUNet | 3d_fullres | default | (reference) | 4.0 | - |" in md
    assert "select `compiled_recompute_off` with `NNUNETV2_MEDNEXT_RECOMPUTE=0`" in md
    assert "does not yet make the network's input channels-last" in md
    assert any(a.startswith("routes: mednext_t 3d_fullres: `channels_last` ran fastest") for a in attention(report))
    report.routes.append(_row("mednextv1_s_k3", "recompute_off", 0, None, status="fail"))
    assert report.failures() == ["routes: mednextv1_s_k3 3d_fullres recompute_off: failed"]


# ----------------------------------------------------------------------------------------------------------------
# routes: applied as a run sees them, on real networks
# ----------------------------------------------------------------------------------------------------------------


def test_applied_sets_and_restores_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CHANNELS_LAST_ENV, "0")  # a user's setting: the default route unsets it, then it is back
    monkeypatch.delenv(RECOMPUTE_ENV, raising=False)
    assert recompute_enabled()
    with routes.applied(routes.ROUTES["compiled_recompute_off"]):
        assert os.environ[RECOMPUTE_ENV] == "0" and not recompute_enabled() and CHANNELS_LAST_ENV not in os.environ
    with routes.applied(routes.ROUTES["channels_last"]):
        assert os.environ[CHANNELS_LAST_ENV] == "1" and recompute_enabled() and RECOMPUTE_ENV not in os.environ
    assert os.environ[CHANNELS_LAST_ENV] == "0" and RECOMPUTE_ENV not in os.environ and recompute_enabled()


def test_measure_route_applies_recompute_and_channels_last() -> None:
    profile = profiles.PROFILES["quick"]
    pm, _ = cases.plans_manager(profile)
    rows = {name: routes.measure_route(pm, "mednext_t", "3d_fullres", CPU, profile, name)
            for name in ("default", "recompute_off", "channels_last")}
    assert all(r["status"] == "ok" and r["amp"] == "bf16" and r["mem_bytes"] > 0 for r in rows.values()), rows
    # recompute keeps each residual branch's input only: several times fewer bytes saved for backward
    assert rows["recompute_off"]["saved_bytes"] > 2 * rows["default"]["saved_bytes"]
    assert rows["channels_last"]["channels_last"] and not rows["default"]["channels_last"]
    assert [r["recompute"] for r in rows.values()] == [True, False, True]
    assert recompute_enabled()


def test_worker_reports_items_it_never_reached(tmp_path: Path) -> None:
    from nnunetv2_mednext.doctor.worker import item_key, run_in_child

    keys = [item_key("mednext_t", "3d_fullres", "compiled"), item_key("PlainConvUNet", "3d_fullres", "compiled")]
    rows = run_in_child("routes", profiles.PROFILES["quick"], keys, CPU, tmp_path, 0.5, warn_only=True,
                        section="routes")
    assert list(rows) == keys
    assert all(r["status"] in ("skipped", "timeout") and "routes budget" in r["reason"] for r in rows.values())


def test_doctor_takes_o_like_every_subcommand(tmp_path: Path) -> None:
    from nnunetv2_mednext.cli import build_parser

    assert build_parser().parse_args(["doctor", "-o", "x"]).out == "x"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "nnunetv2_mednext", "doctor", "--quick", "-o", "rep", "--skip",
                           *profiles.SECTIONS], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads((tmp_path / "rep" / "device_check.json").read_text())
    assert data["verdict"] == "pass" and data["meta"]["complete"] and data["routes"] == []
    assert "--skip routes" in (tmp_path / "rep" / "device_check.md").read_text()


def test_channels_last_setting_is_honoured_under_autocast() -> None:
    """The routes section names the channels-last route only when the setting reaches the network: it does."""
    cpu = torch.device("cpu")
    assert routes.channels_last_honoured(cpu, cases.check_amp(cpu))
