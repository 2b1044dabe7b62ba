"""nnU-Net's ResEnc-M preset as a baseline in the Hippocampus benchmark's ``--resenc`` rows, end to end through the
stock commands (real data, skipped when absent). ``demo --baselines resenc`` and ``compare`` on its results run in
``test_readme.py``'s demo test."""

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
