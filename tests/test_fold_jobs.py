"""Folds as independent jobs (``scripts/cluster``): the shell fallback trains nnU-Net's 5 folds as separate
processes and runs ``nnUNetv2_find_best_configuration`` once all are done; the SLURM script submits the same
``fold_job.sh`` as an array and find_best as a job that depends on it (``sbatch`` replaced by a recorder; the
recorded array task and the dependent job are then run as SLURM would run them)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest

from nnunetv2_mednext.nnunet.pipeline import NnUNetRunner
from nnunetv2_mednext.nnunet.synthetic import make_synthetic_2d

pytestmark = pytest.mark.slow

DS = 995
TRAINER = "nnUNetTrainerMedNeXt_tiny"
SCRIPTS = Path(__file__).resolve().parents[1] / "scripts" / "cluster"

FAKE_SBATCH = """#!/usr/bin/env bash
# records its arguments (one JSON list per line) and answers a job id, as `sbatch --parsable` does
n=$(( $(wc -l < "$SBATCH_RECORD" 2>/dev/null || echo 0) + 1 ))
python3 -c 'import json, sys; print(json.dumps(sys.argv[1:]))' "$@" >> "$SBATCH_RECORD"
echo "$((1000 + n))"
"""


def _bash(script: str, args: list[object], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPTS / script), *map(str, args)], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=900)


def test_folds_as_independent_jobs_then_find_best_configuration(tmp_path: Path) -> None:
    runner = NnUNetRunner(tmp_path / "work")
    make_synthetic_2d(runner.raw, DS, n_train=10, n_test=1, size=32)
    runner.plan_and_preprocess(DS, ("2d",))
    env = runner.env({"nnUNet_n_proc_DA": "0", "OMP_NUM_THREADS": "1"})
    logs = tmp_path / "logs"
    args = ["-d", DS, "-c", "2d", "-tr", TRAINER, "-j", 2, "-l", logs, "--", "-device", "cpu"]

    proc = _bash("train_folds_local.sh", args, env, runner.workdir)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    model = runner.results / runner.dataset_name(DS) / f"{TRAINER}__nnUNetPlans__2d"
    for fold in range(5):
        assert (model / f"fold_{fold}" / "checkpoint_final.pth").is_file(), fold
        assert (model / f"fold_{fold}" / "validation" / "summary.json").is_file(), fold
        assert "nnUNetv2_train 995 2d" in (logs / f"2d_fold_{fold}.log").read_text()
    info = runner.results / runner.dataset_name(DS) / "inference_information.json"
    best = json.loads(info.read_text())["best_model_or_ensemble"]["selected_model_or_models"][0]
    assert best["trainer"] == TRAINER and best["configuration"] == "2d"
    finished = {f: (model / f"fold_{f}" / "checkpoint_final.pth").stat().st_mtime for f in range(5)}

    again = _bash("train_folds_local.sh", args, env, runner.workdir)  # a rerun trains nothing twice
    assert again.returncode == 0, again.stderr[-2000:]
    for fold in range(5):
        assert "is done" in (logs / f"2d_fold_{fold}.log").read_text()
        assert (model / f"fold_{fold}" / "checkpoint_final.pth").stat().st_mtime == finished[fold]

    bad = _bash("train_folds_local.sh", ["-d", DS, "-c", "2d", "-tr", "nnUNetTrainerNoSuchThing", "-f", "0 1", "-l",
                                         logs, "-j", 2, "--", "-device", "cpu"], env, runner.workdir)
    assert bad.returncode == 1 and "failed: 2d_fold_0" in bad.stderr and "2d_fold_1" in bad.stderr, bad.stderr
    assert "find_best" not in bad.stdout + bad.stderr

    # SLURM: what is submitted, then the array task and the dependent job run as SLURM would run them
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "sbatch").write_text(FAKE_SBATCH)
    (fake / "sbatch").chmod(0o755)
    record = tmp_path / "sbatch.jsonl"
    slurm_env = {**env, "PATH": f"{fake}{os.pathsep}{env['PATH']}", "SBATCH_RECORD": str(record)}
    sub = _bash("train_folds_slurm.sh", ["-d", DS, "-c", "2d", "-tr", TRAINER, "-s", "--gres=gpu:1 --time=1:00:00",
                                         "--", "-device", "cpu"], slurm_env, runner.workdir)
    assert sub.returncode == 0, sub.stderr
    array, final = (json.loads(line) for line in record.read_text().splitlines())
    assert "--array=0-4" in array and "--gres=gpu:1" in array and "--time=1:00:00" in array
    script = array.index(str(SCRIPTS / "fold_job.sh"))
    assert array[script + 1:] == [str(DS), "2d", TRAINER, "nnUNetPlans", "--", "-device", "cpu"]
    assert "--dependency=afterok:1001" in final
    wrap = next(a for a in final if a.startswith("--wrap="))[len("--wrap="):]
    assert wrap == f"nnUNetv2_find_best_configuration {DS} -c 2d -tr {TRAINER} -p nnUNetPlans -f 0 1 2 3 4"
    task = subprocess.run(array[script:], env={**env, "SLURM_ARRAY_TASK_ID": "3"}, capture_output=True, text=True,
                          cwd=runner.workdir, timeout=300)
    assert task.returncode == 0 and "fold 3 of" in task.stdout and "is done" in task.stdout, task.stderr
    info.unlink()
    job = subprocess.run(shlex.split(wrap), env=env, capture_output=True, text=True, cwd=runner.workdir, timeout=300)
    assert job.returncode == 0 and info.is_file(), job.stderr[-2000:]

    unset = {k: v for k, v in slurm_env.items() if k != "nnUNet_results"}
    refused = _bash("train_folds_slurm.sh", ["-d", DS, "-c", "2d"], unset, runner.workdir)
    assert refused.returncode == 2 and "nnUNet_results is not set" in refused.stderr
