"""nnU-Net's ResEnc-M preset as a baseline, end to end through the stock commands: ``demo --baselines resenc`` and
``compare`` on its results, and the Hippocampus benchmark's ``--resenc`` rows (real data, skipped when absent)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import requires_shared_data, shared_data

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
REF = "nnUNetTrainerMedNeXtRefUNet_budget"
RESENC = "nnUNetResEncUNetMPlans"
HIPPOCAMPUS = shared_data("msd_hippocampus")


def _run(cmd: list[str], timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _network_params(plans_file: Path) -> int:
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    cfg = PlansManager(str(plans_file)).get_configuration("2d")
    net = get_network_from_plans(cfg.network_arch_class_name, cfg.network_arch_init_kwargs,
                                 cfg.network_arch_init_kwargs_req_import, 1, 3, deep_supervision=True)
    return sum(p.numel() for p in net.parameters())


def test_demo_resenc_row_and_compare_on_its_results(tmp_path: Path) -> None:
    _run([sys.executable, "-m", "nnunetv2_mednext", "demo", "--workdir", str(tmp_path), "--epochs", "1", "--iters",
          "3", "--val-iters", "1", "--n-train", "6", "--trainers", REF, "--baselines", "resenc"])
    rows = json.loads((tmp_path / "demo_results.json").read_text())
    assert [(r["trainer"], r["plans"]) for r in rows] == [(REF, "nnUNetPlans"), (REF, RESENC)]
    pre = next((tmp_path / "nnUNet_preprocessed").glob("Dataset990_*"))
    plans = json.loads((pre / f"{RESENC}.json").read_text())["configurations"]["2d"]
    assert plans["architecture"]["network_class_name"].endswith("ResidualEncoderUNet")
    for r, identifier in zip(rows, ("nnUNetPlans", RESENC)):  # each row's network is the one its plans name
        assert r["params_M"] == round(_network_params(pre / f"{identifier}.json") / 1e6, 3)
    assert f"| {REF} | {RESENC} |" in (tmp_path / "demo_results.md").read_text()

    out = tmp_path / "cmp"
    _run([sys.executable, "-m", "nnunetv2_mednext", "compare", "-d", "990", "--results",
          str(tmp_path / "nnUNet_results"), "-m", f"{REF}__nnUNetPlans__2d", f"{REF}__{RESENC}__2d", "-f", "0",
          "--names", "U-Net", "ResEnc-M", "-o", str(out)])
    entries = json.loads((out / "comparison.json").read_text())["models"]
    assert [e["plans"] for e in entries] == ["nnUNetPlans", RESENC]
    for e, r in zip(entries, rows):
        assert round(e["params"] / 1e6, 3) == r["params_M"] and e["epochs_logged"] == 1 and not e["missing"]
    assert f"| ResEnc-M | `{REF}` | `{RESENC}` | 2d |" in (out / "comparison.md").read_text()


@pytest.mark.shared_data
@requires_shared_data("msd_hippocampus")
def test_hippocampus_benchmark_resenc_rows(tmp_path: Path) -> None:
    _run([sys.executable, str(REPO / "benchmarks" / "hippocampus_budget.py"), "--src", str(HIPPOCAMPUS), "--out",
          str(tmp_path), "--cases", "8", "--budget", "1,2,1", "--configs", "2d", "--trainers", REF, "--resenc"])
    res = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert [(r["trainer"], r["plans"], r["network"]) for r in res] == [
        (REF, "nnUNetPlans", "PlainConvUNet"), (REF, RESENC, "ResidualEncoderUNet"),
        ("nnUNetTrainerMedNeXtRecipeUNet_budget", RESENC, "ResidualEncoderUNet")]
    assert res[1]["params_M"] == res[2]["params_M"] > res[0]["params_M"]  # same ResEnc-M network, two recipes
    md = (tmp_path / "results.md").read_text()
    assert f"| 2d | nnUNetTrainerMedNeXtRecipeUNet_budget | {RESENC} | ResidualEncoderUNet |" in md
