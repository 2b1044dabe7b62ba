"""Differential conformance, stock nnU-Net vs the package: every raw format nnU-Net reads, through the real commands.

For each format of ``conformance_data.FORMATS`` (NIfTI 3D with 1 and 2 channels, 2D NIfTI, mha, PNG grey, PNG RGB,
TIFF + JSON) one test plans the tiny dataset once with the stock ``nnUNetv2_plan_and_preprocess`` (package installed),
then trains fold 0, predicts ``imagesTs`` and evaluates against ``labelsTs`` with the stock ``nnUNetv2_train``,
``nnUNetv2_predict`` and ``nnUNetv2_evaluate_folder`` for

* nnU-Net's own ``nnUNetTrainer`` (a test-only subclass that only shortens the run, found through
  ``nnUNet_extTrainer``) with ``NNUNETV2_MEDNEXT_NO_AUTOREGISTER=1``: stock nnU-Net, no hook, no MedNeXt trainers;
* ``nnUNetTrainerMedNeXt_tiny`` with the package installed;
* on PNG RGB only (the format the package used to refuse), also a Roy V1 ``_tiny`` trainer and the stock trainer with
  the package installed, nnU-Net's end-of-training validation and its multi-process predictor (``-npp 1 -nps 1``).
  Elsewhere the validation is skipped (``NNUNETV2_MEDNEXT_FINAL_VALIDATION=0``) and ``-npp 0 -nps 0`` selects
  nnU-Net's sequential predictor: the same reader, preprocessing and export without spawning processes, which cost
  more than the tiny runs themselves (CI budget).

Wherever stock nnU-Net succeeds the package's trainers must succeed; wherever it fails, the package's run must fail at
the same step and print nnU-Net's own exception. ``NNUNETV2_MEDNEXT_CONFORMANCE_REPORT=FILE`` appends one JSON line
per run (format, trainer, outcome, Dice, seconds) for the record in ``docs/nnunet.md``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conformance_data import FORMATS, STOCK_TRAINER, Format, make_format_dataset, write_stock_trainer

from nnunetv2_mednext.nnunet.pipeline import NnUNetRunner, nnunet_command

pytestmark = pytest.mark.slow

FULL = ("png_rgb",)  # formats that get every trainer and the end-of-training validation
V1_TRAINER = "nnUNetTrainerMedNeXtV1_S_k3_tiny"
_NNUNET_LINE = re.compile(r"nnunetv2-mednext: nnU-Net failed with (.*) \(traceback: rerun with")
_PYTHON_ERROR = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b:?.*$")


@dataclass
class Run:
    """One trainer of the matrix: name, environment, and what happened."""

    label: str
    trainer: str
    env: dict[str, str]
    failed_step: str | None = None
    reason: str | None = None
    output: str = ""
    dice: float | None = None
    seconds: dict[str, float] = field(default_factory=dict)


def nnunet_reason(output: str) -> str | None:
    """nnU-Net's own exception ``Type: message`` in a command's output: the hook's "nnU-Net failed with" line, else
    the last line of the traceback."""
    found = _NNUNET_LINE.findall(output)
    if found:
        return found[-1]
    lines = [ln for ln in output.strip().splitlines() if _PYTHON_ERROR.match(ln)]
    return " ".join(lines[-1].split()) if lines else None


def _command(runner: NnUNetRunner, name: str, args: list[object], env: dict[str, str]) -> tuple[subprocess.CompletedProcess, float]:
    start = time.perf_counter()
    proc = subprocess.run([nnunet_command(name), *map(str, args)], capture_output=True, text=True, env=runner.env(env),
                          timeout=600, cwd=runner.workdir)
    return proc, time.perf_counter() - start


def run_matrix_row(runner: NnUNetRunner, ds: int, fmt: Format, run: Run, out: Path) -> Run:
    """Train fold 0, predict imagesTs, evaluate: stops at the first failing step (recorded in ``run``)."""
    raw = runner.raw / runner.dataset_name(ds)
    workers = 1 if fmt.key in FULL else 0  # 0 and 0: nnU-Net's own sequential predictor (same reader and export)
    steps = [
        ("train", "nnUNetv2_train", [ds, fmt.configuration, 0, "-tr", run.trainer, "-device", "cpu"],
         {"nnUNet_n_proc_DA": "0"}),
        ("predict", "nnUNetv2_predict", ["-i", raw / "imagesTs", "-o", out, "-d", ds, "-c", fmt.configuration, "-tr",
                                         run.trainer, "-f", 0, "-device", "cpu", "-npp", workers, "-nps", workers,
                                         "--disable_progress_bar"], {}),
        ("evaluate", "nnUNetv2_evaluate_folder", [raw / "labelsTs", out, "-djfile", out / "dataset.json", "-pfile",
                                                  out / "plans.json", "-np", 1], {}),
    ]
    for step, name, args, env in steps:
        proc, seconds = _command(runner, name, args, {**run.env, **env})
        run.seconds[step] = round(seconds, 1)
        run.output = proc.stdout + proc.stderr
        if proc.returncode != 0:
            run.failed_step, run.reason = step, nnunet_reason(run.output)
            return run
    run.dice = json.loads((out / "summary.json").read_text())["foreground_mean"]["Dice"]
    return run


def _report(fmt: Format, runs: list[Run]) -> None:
    target = os.environ.get("NNUNETV2_MEDNEXT_CONFORMANCE_REPORT")
    if not target:
        return
    with open(target, "a") as fh:
        for r in runs:
            fh.write(json.dumps({"format": fmt.key, "run": r.label, "trainer": r.trainer, "failed_step": r.failed_step,
                                 "reason": r.reason, "dice": r.dice, "seconds": r.seconds}) + "\n")


@pytest.mark.parametrize("key", list(FORMATS))
def test_package_trainers_pass_wherever_stock_nnunet_passes(tmp_path: Path, key: str) -> None:
    from nnunetv2_mednext.nnunet.dataset_check import check_prediction_inputs, check_raw_dataset

    fmt = FORMATS[key]
    ds = 700 + list(FORMATS).index(key)
    runner = NnUNetRunner(tmp_path / "work")
    folder = make_format_dataset(runner.raw, ds, fmt)
    ext = write_stock_trainer(tmp_path / "ext")
    verify = ["--verify_dataset_integrity"] if key in FULL else []
    plan, plan_s = _command(runner, "nnUNetv2_plan_and_preprocess",
                            ["-d", ds, "-c", fmt.configuration, "-npfp", 1, "-np", 1, *verify], {})
    assert plan.returncode == 0, (plan.stdout + plan.stderr)[-3000:]
    check_raw_dataset(folder, full=True)  # the package's own checks accept what nnU-Net accepted

    validation = {} if key in FULL else {"NNUNETV2_MEDNEXT_FINAL_VALIDATION": "0"}
    runs = [Run("stock", STOCK_TRAINER, {"NNUNETV2_MEDNEXT_NO_AUTOREGISTER": "1", "nnUNet_extTrainer": str(ext),
                                         **validation}),
            Run("mednext", "nnUNetTrainerMedNeXt_tiny", validation)]
    if key in FULL:
        runs += [Run("stock+package", STOCK_TRAINER, {"nnUNet_extTrainer": str(ext)}), Run("v1", V1_TRAINER, {})]
    for r in runs:
        run_matrix_row(runner, ds, fmt, r, tmp_path / f"pred_{r.label}")
    _report(fmt, [Run("plan", "-", {}, seconds={"plan": round(plan_s, 1)}), *runs])

    stock = runs[0]
    for r in runs[1:]:
        if stock.failed_step is None:
            assert r.failed_step is None, f"{key}: {r.label} failed at {r.failed_step} where stock passed:\n" \
                                          f"{r.output[-4000:]}"
        else:  # the same failure, and nnU-Net's own reason is still printed
            assert r.failed_step == stock.failed_step and stock.reason and stock.reason in r.output, (stock.reason,
                                                                                                    r.output[-3000:])
    assert stock.failed_step is None, f"stock nnU-Net failed on {key} at {stock.failed_step}: {stock.reason}"
    model = runner.results / runner.dataset_name(ds) / f"nnUNetTrainerMedNeXt_tiny__nnUNetPlans__{fmt.configuration}"
    for r in runs:
        preds = sorted(p.name for p in (tmp_path / f"pred_{r.label}").glob(f"*{fmt.ending}"))
        assert preds == [f"case_{i:03d}{fmt.ending}" for i in (5, 6)], (r.label, preds)
        assert 0.0 <= r.dice <= 1.0
    check_prediction_inputs(folder / "imagesTs", json.loads((model / "dataset.json").read_text()),
                            json.loads((model / "plans.json").read_text()))
    if key in FULL:  # the end-of-training validation ran (and nnU-Net wrote its summary) for every trainer
        for r in runs:
            fold = runner.results / runner.dataset_name(ds) / f"{r.trainer}__nnUNetPlans__{fmt.configuration}" / "fold_0"
            assert (fold / "validation" / "summary.json").is_file(), r.label


def test_stock_failure_keeps_nnunets_reason_planning_with_n_proc_da_0(tmp_path: Path) -> None:
    """``nnUNet_n_proc_DA=0`` at planning fails inside stock nnU-Net; with the package the same error is printed
    (plus the fix), never a data diagnosis -- the RGB set is fine."""
    runner = NnUNetRunner(tmp_path)
    make_format_dataset(runner.raw, 790, FORMATS["png_rgb"])
    args = ["-d", 790, "-c", "2d", "-npfp", 1, "-np", 1]
    package, _ = _command(runner, "nnUNetv2_plan_and_preprocess", args, {"nnUNet_n_proc_DA": "0"})
    # the second run reuses the fingerprint the first one extracted before failing
    stock, _ = _command(runner, "nnUNetv2_plan_and_preprocess", args,
                        {"nnUNet_n_proc_DA": "0", "NNUNETV2_MEDNEXT_NO_AUTOREGISTER": "1"})
    reason = "RuntimeError: set_num_threads expects a positive integer"
    assert stock.returncode != 0 and nnunet_reason(stock.stderr) == reason, stock.stderr[-2000:]
    assert package.returncode != 0 and nnunet_reason(package.stderr) == reason, package.stderr[-2000:]
    last = package.stderr.strip().splitlines()[-1]
    assert last.startswith("nnunetv2-mednext: error:") and "nnUNet_n_proc_DA=0" in last and "fix" in last, last
    assert "channel" not in package.stderr


def test_unexplained_failure_keeps_nnunets_traceback_untouched(tmp_path: Path) -> None:
    """A failure no diagnosis explains (unreadable plans) shows exactly stock nnU-Net's traceback, although the raw
    data has a problem of its own (a file without channel suffix): the hook says nothing."""
    runner = NnUNetRunner(tmp_path)
    make_format_dataset(runner.raw, 791, FORMATS["png_grey"])
    name = runner.dataset_name(791)
    images = runner.raw / name / "imagesTr"
    (images / "case_000_0000.png").rename(images / "case_000.png")
    (runner.preprocessed / name).mkdir(parents=True)
    (runner.preprocessed / name / "nnUNetPlans.json").write_text("{ not json")
    (runner.preprocessed / name / "dataset.json").write_text((runner.raw / name / "dataset.json").read_text())
    args = [791, "2d", 0, "-tr", "nnUNetTrainer", "-device", "cpu"]
    stock, _ = _command(runner, "nnUNetv2_train", args, {"NNUNETV2_MEDNEXT_NO_AUTOREGISTER": "1"})
    package, _ = _command(runner, "nnUNetv2_train", args, {})
    for proc in (stock, package):
        assert proc.returncode != 0 and "Traceback" in proc.stderr, proc.stderr[-2000:]
        assert "JSONDecodeError" in nnunet_reason(proc.stderr), proc.stderr[-2000:]
    # the hook's own lines start with "nnunetv2-mednext:" (a venv path may contain the bare package name)
    assert "nnunetv2-mednext:" not in package.stderr and "nnunetv2_mednext" not in package.stderr
    assert package.stderr.strip().splitlines()[-1] == stock.stderr.strip().splitlines()[-1]


# ----------------------------------------------------------------------------------- fine-tuning route, side by side
FT_SOURCE, FT_TARGET, FT_PLANS = 795, 796, "nnUNetPlans_from795"


def _relabel_with_a_second_class(folder: Path) -> None:
    """The target dataset has other labels than the source: the blob's left half becomes label 2."""
    import numpy as np
    from PIL import Image

    for sub in ("labelsTr", "labelsTs"):
        for f in (folder / sub).glob("*.png"):
            lab = np.array(Image.open(f))
            left = lab[:, : lab.shape[1] // 2]
            left[left == 1] = 2
            Image.fromarray(lab).save(f)
    info = json.loads((folder / "dataset.json").read_text())
    info["labels"] = {"background": 0, "blob": 1, "left": 2}
    (folder / "dataset.json").write_text(json.dumps(info, indent=2))


def _side_by_side(runner: NnUNetRunner, name: str, args: list[object], stock_env: dict[str, str]
                  ) -> tuple[subprocess.CompletedProcess, subprocess.CompletedProcess]:
    """The same command, stock nnU-Net (no hook) first, then with the package installed."""
    return _command(runner, name, args, stock_env)[0], _command(runner, name, args, {})[0]


def _hook_fix(stock: subprocess.CompletedProcess, package: subprocess.CompletedProcess) -> str:
    """Both failed with the same nnU-Net reason, which the package prints too; the package's explanation line."""
    reason = nnunet_reason(stock.stderr)
    assert stock.returncode != 0 and package.returncode != 0 and reason, stock.stderr[-2000:]
    assert nnunet_reason(package.stderr) == reason, (reason, package.stderr[-2000:])
    last = package.stderr.strip().splitlines()[-1]
    assert last.startswith("nnunetv2-mednext: error:") and "fix:" in last, package.stderr[-2000:]
    return last


def _loaded_keys(output: str) -> set[str]:
    """The keys nnU-Net's ``load_pretrained_weights`` lists as transferred (it prints them with ``verbose``)."""
    body = output.split("Below is the list of overlapping blocks", 1)[1].split("###################", 1)[0]
    return {ln.split(" shape ")[0] for ln in body.splitlines()[1:] if " shape " in ln}


def assert_all_but_heads_loaded(output: str, weights: Path, label: str = "") -> tuple[set[str], set[str]]:
    """``-pretrained_weights`` transferred every key of ``weights`` but the heads (nnU-Net's ``.seg_layers.`` rule);
    returns (loaded keys, head keys)."""
    import torch

    saved = torch.load(weights, map_location="cpu", weights_only=False)["network_weights"]
    heads = {k for k in saved if ".seg_layers." in k}
    assert heads, (label, "no head found by nnU-Net's '.seg_layers.' rule")
    loaded = _loaded_keys(output)
    assert loaded == set(saved) - heads, label  # everything but the heads
    return loaded, heads


def test_finetuning_route_stock_and_package_side_by_side(tmp_path: Path) -> None:
    """nnU-Net's fine-tuning guide (extract_fingerprint -> move_plans_between_datasets -> preprocess ->
    ``-pretrained_weights``) onto a dataset with other labels, for stock nnU-Net and the package's trainers.

    Where stock nnU-Net fails (moving plans before the fingerprint; 2.8.1's preprocess without ``dataset.json`` in the
    preprocessed folder) the package fails the same way, prints nnU-Net's reason and names the fix that works (the
    test applies exactly that fix and goes on); then every trainer fine-tunes with all weights but the heads loaded.
    """
    import shutil

    import torch

    runner = NnUNetRunner(tmp_path / "work")
    make_format_dataset(runner.raw, FT_SOURCE, FORMATS["png_grey"])
    target = make_format_dataset(runner.raw, FT_TARGET, FORMATS["png_grey"], seed=1)
    _relabel_with_a_second_class(target)
    ext = write_stock_trainer(tmp_path / "ext")
    stock_env = {"NNUNETV2_MEDNEXT_NO_AUTOREGISTER": "1", "nnUNet_extTrainer": str(ext)}
    plan, _ = _command(runner, "nnUNetv2_plan_and_preprocess", ["-d", FT_SOURCE, "-c", "2d", "-npfp", 1, "-np", 1], {})
    assert plan.returncode == 0, plan.stderr[-2000:]

    move = ["-s", FT_SOURCE, "-t", FT_TARGET, "-sp", "nnUNetPlans", "-tp", FT_PLANS]
    fix = _hook_fix(*_side_by_side(runner, "nnUNetv2_move_plans_between_datasets", move, stock_env))
    assert f"fix: nnUNetv2_extract_fingerprint -d {FT_TARGET}" in fix and "plan_and_preprocess" not in fix, fix
    for name, args in (("nnUNetv2_extract_fingerprint", ["-d", FT_TARGET, "-np", 1]),
                       ("nnUNetv2_move_plans_between_datasets", move)):
        proc, _ = _command(runner, name, args, {})
        assert proc.returncode == 0, (name, proc.stderr[-2000:])

    preprocess = ["-d", FT_TARGET, "-plans_name", FT_PLANS, "-c", "2d", "-np", 1]
    fix = _hook_fix(*_side_by_side(runner, "nnUNetv2_preprocess", preprocess, stock_env))
    name = runner.dataset_name(FT_TARGET)
    copy = re.search(r"fix: cp (\S+) (\S+)/ and rerun", fix)
    assert copy and Path(copy[1]) == target / "dataset.json" and Path(copy[2]) == runner.preprocessed / name, fix
    shutil.copy(copy[1], copy[2])
    proc, _ = _command(runner, "nnUNetv2_preprocess", preprocess, {})
    assert proc.returncode == 0, proc.stderr[-2000:]

    no_validation = {"NNUNETV2_MEDNEXT_FINAL_VALIDATION": "0", "nnUNet_n_proc_DA": "0"}
    for label, trainer, env in (("stock", STOCK_TRAINER, stock_env), ("mednext", "nnUNetTrainerMedNeXt_tiny", {}),
                                ("v1", V1_TRAINER, {}), ("v2", "nnUNetTrainerMedNeXtV2_S_tiny", {})):
        env = {**env, **no_validation}
        source = runner.results / runner.dataset_name(FT_SOURCE) / f"{trainer}__nnUNetPlans__2d" / "fold_0"
        proc, _ = _command(runner, "nnUNetv2_train", [FT_SOURCE, "2d", 0, "-tr", trainer, "-device", "cpu"], env)
        assert proc.returncode == 0, (label, proc.stderr[-2000:])
        weights = source / "checkpoint_final.pth"
        proc, _ = _command(runner, "nnUNetv2_train", [FT_TARGET, "2d", 0, "-tr", trainer, "-p", FT_PLANS, "-device",
                                                      "cpu", "-pretrained_weights", weights], env)
        assert proc.returncode == 0, (label, proc.stderr[-3000:])
        _, heads = assert_all_but_heads_loaded(proc.stdout, weights, label)
        tuned = runner.results / name / f"{trainer}__{FT_PLANS}__2d" / "fold_0" / "checkpoint_final.pth"
        out = torch.load(tuned, map_location="cpu", weights_only=False)["network_weights"]
        assert all(out[k].shape[0] == 3 for k in heads if k.endswith("weight")), label  # 3 classes now
