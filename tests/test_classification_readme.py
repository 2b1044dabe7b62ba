"""The README's classification quick start runs as written (in a temporary folder)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def quickstart_commands() -> list[list[str]]:
    text = README.read_text()
    section = text.split("<!-- section:classification -->", 1)[1].split("<!-- /section:classification -->", 1)[0]
    block = section.split("```bash", 1)[1].split("```", 1)[0]
    cmds = []
    for line in block.strip().splitlines():
        argv = shlex.split(line)
        if argv[0] == "nnunetv2-mednext":
            argv = [sys.executable, "-m", "nnunetv2_mednext", *argv[1:]]
        elif argv[0] == "python":
            argv = [sys.executable, *argv[1:]]
        cmds.append(argv)
    return cmds


def test_readme_quickstart(tmp_path: Path):
    cmds = quickstart_commands()
    assert any("train" in c for c in cmds) and any("predict" in c for c in cmds)
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONWARNINGS": "ignore"}
    for argv in cmds:
        proc = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
        assert proc.returncode == 0, (argv, proc.stdout[-2000:], proc.stderr[-2000:])
    run = tmp_path / "runs" / "shapes"
    assert json.loads((run / "summary.json").read_text())["aggregate"]["n_folds"] == 2
    assert (run / "metrics.json").is_file() and (run / "evaluation.json").is_file()
    assert len((run / "new_predictions.csv").read_text().splitlines()) == 13  # 12 unseen images + header
    timm_run = json.loads((tmp_path / "runs" / "shapes_convnext" / "config.json").read_text())
    assert timm_run["meta"]["model_source"].startswith("timm ") and timm_run["meta"]["in_chans"] == 1
    assert timm_run["time_budget"]["budget_s"] == 3 and timm_run["config"]["epochs"] == timm_run["time_budget"]["epochs"]
    b = json.loads((tmp_path / "runs" / "shapes_b" / "splits.json").read_text())
    assert b["mode"] == "cv-test" and all(set(f) == {"train", "val", "test"} for f in b["folds"])
    a = json.loads((tmp_path / "runs" / "shapes_a" / "splits.json").read_text())
    assert a["mode"] == "image-cv" and a["leaky"] is True
