"""Run the stock ``nnUNetv2_*`` commands in subprocesses with CPU-friendly settings (demo, benchmarks, tests)."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from nnunetv2_mednext.errors import MedNeXtUserError

# plans identifier -> the planner that writes it (None: nnU-Net's default ExperimentPlanner). A comparison row is a
# trainer on one of these plans; nnU-Net recommends the ResEnc presets as its default since 2.4.
PLANNER_FOR_PLANS: dict[str, str | None] = {
    "nnUNetPlans": None,
    "nnUNetResEncUNetMPlans": "nnUNetPlannerResEncM",
    "nnUNetResEncUNetLPlans": "nnUNetPlannerResEncL",
    "nnUNetMedNeXtPlans": "nnUNetPlannerMedNeXt",
}


def nnunet_command(name: str) -> str:
    """Absolute path of an ``nnUNetv2_*`` console script of this interpreter's environment."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise MedNeXtUserError(f"{name} not found; install nnunetv2 in this environment (pip install nnunetv2)")
    return found


#: environment variables a rerun of a logged command needs (besides the nnUNet_* folders)
RERUN_VARS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_def_n_proc", "nnUNet_compile",
              "nnUNet_n_proc_DA", "OMP_NUM_THREADS", "NNUNETV2_MEDNEXT_BUDGET", "NNUNETV2_MEDNEXT_CHECKPOINTING")
_PROGRESS = ("Epoch ", "train_loss", "val_loss", "Pseudo dice", "Epoch time")


def rerun_header(env: Mapping[str, str], cmd: Sequence[str], cwd: Path) -> str:
    """Shell lines that rerun ``cmd`` by hand: ``cd``, the exports it needs, the command."""
    exports = [f"export {k}={shlex.quote(env[k])}" for k in RERUN_VARS if env.get(k)]
    return "\n".join([f"# rerun: cd {shlex.quote(str(cwd))}", *(f"# {e}" for e in exports),
                      "$ " + " ".join(shlex.quote(c) for c in cmd), ""])


def _report_progress(log: Path, offset: int, progress: Callable[[str], None] | None) -> int:
    """Pass the epoch lines written to ``log`` since ``offset`` to ``progress``; returns the new offset."""
    if progress is None:
        return offset
    with open(log, "rb") as fh:
        fh.seek(offset)
        chunk = fh.read()
    end = chunk.rfind(b"\n") + 1  # complete lines only
    for line in chunk[:end].decode(errors="replace").splitlines():
        text = line.split(": ", 1)[-1].strip() if line[:4].isdigit() else line.strip()  # drop nnU-Net's timestamp
        if text.startswith(_PROGRESS):
            progress(text)
    return offset + end


class NnUNetRunner:
    """Holds the nnU-Net folders of a work directory and runs nnU-Net commands against them."""

    def __init__(self, workdir: str | Path, device: str = "cpu", verbose: bool = False) -> None:
        self.workdir = Path(workdir).resolve()
        self.raw = self.workdir / "nnUNet_raw"
        self.preprocessed = self.workdir / "nnUNet_preprocessed"
        self.results = self.workdir / "nnUNet_results"
        for p in (self.raw, self.preprocessed, self.results):
            p.mkdir(parents=True, exist_ok=True)
        self.device, self.verbose = device, verbose
        self.logs = self.workdir / "logs"
        self.logs.mkdir(exist_ok=True)

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            nnUNet_raw=str(self.raw),
            nnUNet_preprocessed=str(self.preprocessed),
            nnUNet_results=str(self.results),
            nnUNet_def_n_proc="1",
            nnUNet_compile="0",
            PYTHONUNBUFFERED="1",
        )
        env.pop("nnUNet_n_proc_DA", None)
        env.update(extra or {})
        return env

    def run(self, name: str, args: Sequence[str], log_name: str, extra_env: Mapping[str, str] | None = None,
            progress: Callable[[str], None] | None = None) -> float:
        """Run the console script ``name args``; on failure raise with the log's tail. Returns the wall time (s)."""
        return self.run_argv([nnunet_command(name), *map(str, args)], log_name, extra_env, progress=progress)

    def run_argv(self, cmd: Sequence[str], log_name: str, extra_env: Mapping[str, str] | None = None,
                 what: str | None = None, progress: Callable[[str], None] | None = None) -> float:
        """Run ``cmd`` in the work dir with :meth:`env`, output to ``logs/<log_name>.log``; raise with the tail.

        The log starts with the environment and command needed to rerun it by hand. ``progress`` receives the
        log's epoch lines while the command runs.
        """
        cmd = [str(c) for c in cmd]
        log = self.logs / f"{log_name}.log"
        env = self.env(extra_env)
        start = time.perf_counter()
        with open(log, "w") as fh:
            fh.write(rerun_header(env, cmd, self.workdir))
            fh.flush()
            body_start = fh.tell()
            proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, cwd=self.workdir)
            seen = body_start
            while proc.poll() is None:
                time.sleep(0.5)
                seen = _report_progress(log, seen, progress)
            _report_progress(log, seen, progress)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-15:])
            raise MedNeXtUserError(f"{what or Path(cmd[0]).name} failed (exit {proc.returncode}); log {log}:\n{tail}")
        if self.verbose:
            print(log.read_text())
        return wall

    def dataset_name(self, dataset_id: int) -> str:
        hits = sorted(self.raw.glob(f"Dataset{dataset_id:03d}_*"))
        if not hits:
            raise MedNeXtUserError(f"dataset {dataset_id} not found in {self.raw}")
        return hits[0].name

    def plan_and_preprocess(self, dataset_id: int, configs: Sequence[str] = ("2d",), planner: str | None = None) -> float:
        """Stock ``nnUNetv2_plan_and_preprocess`` for nnU-Net's planners (``None``: its default; e.g.
        ``nnUNetPlannerResEncM``), our wrapper for the ``nnUNetPlannerMedNeXt*`` planners nnU-Net cannot find."""
        args = ["-d", dataset_id, "-c", *configs, "-npfp", "1", "-np", *(["1"] * len(configs)), "--verify_dataset_integrity"]
        if planner is None:
            return self.run("nnUNetv2_plan_and_preprocess", args, f"plan_{dataset_id}")
        if not planner.startswith("nnUNetPlannerMedNeXt"):
            return self.run("nnUNetv2_plan_and_preprocess", [*args, "-pl", planner], f"plan_{dataset_id}_{planner}")
        cmd = [sys.executable, "-m", "nnunetv2_mednext", "plan_and_preprocess", *args, "-pl", planner]
        return self.run_argv(cmd, f"plan_{dataset_id}_{planner}", what="nnunetv2-mednext plan_and_preprocess")

    def train(self, dataset_id: int, config: str, fold: int | str, trainer: str, plans: str = "nnUNetPlans",
              extra_args: Sequence[str] = (), extra_env: Mapping[str, str] | None = None,
              progress: Callable[[str], None] | None = None) -> float:
        env = {"nnUNet_n_proc_DA": "0", **(extra_env or {})}
        args = [dataset_id, config, fold, "-tr", trainer, "-p", plans, "-device", self.device, *extra_args]
        return self.run("nnUNetv2_train", args, f"train_{trainer}_{config}_{fold}", env, progress)

    def predict(self, dataset_id: int, config: str, trainer: str, inputs: Path, output: Path,
                folds: Sequence[int | str] = (0,), plans: str = "nnUNetPlans", checkpoint: str = "checkpoint_final.pth") -> float:
        args = ["-i", inputs, "-o", output, "-d", dataset_id, "-c", config, "-tr", trainer, "-p", plans,
                "-f", *folds, "-device", self.device, "-npp", "1", "-nps", "1", "--disable_progress_bar", "-chk", checkpoint]
        return self.run("nnUNetv2_predict", args, f"predict_{trainer}_{config}")

    def evaluate(self, gt: Path, pred: Path) -> dict:
        """nnU-Net's own evaluator; returns the summary dict."""
        import json

        args = [gt, pred, "-djfile", pred / "dataset.json", "-pfile", pred / "plans.json", "-np", "1"]
        self.run("nnUNetv2_evaluate_folder", args, f"evaluate_{pred.name}")
        return json.loads((pred / "summary.json").read_text())
