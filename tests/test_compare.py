"""``compare`` on fake nnU-Net results folders (one fold missing), the benchmark's --dry-run, the documented examples."""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from nnunetv2_mednext.cli import build_parser, main
from nnunetv2_mednext.evaluation.compare import compare_models, count_parameters, epoch_times

REPO = Path(__file__).resolve().parents[1]
DS = "Dataset802_ACDC"
LABELS = {"background": 0, "RV": 1, "MYO": 2, "LV": 3}
REF = "nnUNetTrainer__nnUNetPlans__2d"
MED = "nnUNetTrainerMedNeXt__nnUNetPlans__2d"


def _summary(dices: dict[int, float], per_case: list[dict[int, float]]) -> dict:
    """nnU-Net 2.8's summary.json layout (only the keys we read, plus a few it always has)."""
    def block(d: float) -> dict:
        return {"Dice": d, "IoU": d / (2 - d), "FN": 1, "FP": 1, "TN": 100, "TP": 10, "n_pred": 11, "n_ref": 11}

    return {
        "foreground_mean": {"Dice": float(np.mean(list(dices.values())))},
        "mean": {str(k): block(v) for k, v in dices.items()},
        "metric_per_case": [{"metrics": {str(k): block(v) for k, v in c.items()},
                             "prediction_file": f"p{i}.nii.gz", "reference_file": f"r{i}.nii.gz"}
                            for i, c in enumerate(per_case)],
    }


def _fold(model_dir: Path, fold: int, dices: dict[int, float], params: int, epoch_s: list[float]) -> Path:
    fold_dir = model_dir / f"fold_{fold}"
    (fold_dir / "validation").mkdir(parents=True)
    per_case = [{k: v - 0.01 for k, v in dices.items()}, {k: v + 0.01 for k, v in dices.items()}]
    (fold_dir / "validation" / "summary.json").write_text(json.dumps(_summary(dices, per_case), indent=1))
    w = torch.zeros(params - 10)
    # the encoder appears twice in nnU-Net's U-Net state dicts (encoder.* and decoder.encoder.*): counted once
    weights = OrderedDict([("encoder.w", w), ("b", torch.zeros(10)), ("decoder.encoder.w", w)])
    torch.save({"network_weights": weights, "trainer_name": model_dir.name.split("__")[0]}, fold_dir / "checkpoint_final.pth")
    log = [f"2026-01-01 10:00:{i:02d}.000000: Epoch time: {t} s " for i, t in enumerate(epoch_s)]
    (fold_dir / "training_log_2026_1_1_10_00_00.txt").write_text("\n".join(["start", *log, "end"]) + "\n")
    return fold_dir


@pytest.fixture()
def results(tmp_path: Path) -> Path:
    root = tmp_path / "nnUNet_results"
    for model in (REF, MED):
        (root / DS / model).mkdir(parents=True)
        (root / DS / model / "dataset.json").write_text(json.dumps({"labels": LABELS}))
    _fold(root / DS / REF, 0, {1: 0.80, 2: 0.70, 3: 0.90}, 2000, [10.0, 12.0])
    _fold(root / DS / REF, 1, {1: 0.84, 2: 0.74, 3: 0.94}, 2000, [11.0])
    _fold(root / DS / MED, 0, {1: 0.86, 2: 0.80, 3: 0.92}, 500, [20.0, 22.0])  # fold 1 missing
    return root


def test_compare_reuses_summaries_and_reports_missing(results: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cmp"
    rc = main(["compare", "-d", "802", "-m", REF, MED, "-f", "0", "1", "--results", str(results), "-o", str(out),
               "--names", "U-Net", "MedNeXt"])
    assert rc == 0
    md = (out / "comparison.md").read_text()
    assert "| Model | Folds | Mean | RV | Myo | LV |" in md
    # U-Net: mean ± std over 2 folds; MedNeXt: 1 of 2 folds, the mean only
    assert "| U-Net | 2/2 | 82.00 ± 2.00 | 82.00 ± 2.00 | 72.00 ± 2.00 | 92.00 ± 2.00 |" in md
    assert "| MedNeXt | 1/2 | 86.00 | 86.00 | 80.00 | 92.00 |" in md
    assert "## Missing folds" in md and "- MedNeXt: fold(s) 1" in md
    # 2000 params, mean of 3 epoch times; trainer, plans and configuration from the folder name
    assert "| U-Net | `nnUNetTrainer` | `nnUNetPlans` | 2d | 0.00 | 11.0 | 3 | not recorded |" in md
    assert "| MedNeXt | `nnUNetTrainerMedNeXt` | `nnUNetPlans` | 2d | 0.00 | 21.0 | 2 | not recorded |" in md
    png = (out / "comparison.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    data = json.loads((out / "comparison.json").read_text())
    ref, med = data["models"]
    assert ref["params"] == 2000 and med["params"] == 500 and med["missing"] == [1]
    assert len(ref["per_case_dsc"]) == 4
    assert "Missing folds" in capsys.readouterr().out


def _label(shape: tuple[int, int, int], shift: int) -> np.ndarray:
    lab = np.zeros(shape, np.uint8)
    lab[2:8, 3 + shift:11 + shift, 3:11] = 1
    lab[2:8, 12:14, 12:14] = 3
    return lab


def test_compare_evaluates_predictions_with_hd95(results: Path, tmp_path: Path) -> None:
    gt = tmp_path / "labelsTs"
    gt.mkdir()
    for model, shift in ((REF, 1), (MED, 0)):
        pred = results / DS / model / "fold_0" / "test_predictions"
        pred.mkdir()
        for case in ("c1", "c2"):
            for folder, s in ((gt, 0), (pred, shift)):
                img = sitk.GetImageFromArray(_label((10, 16, 16), s))
                img.SetSpacing((1.0, 0.5, 4.0))  # x, y, z
                sitk.WriteImage(img, str(folder / f"{case}.nii.gz"))
        (pred / "inference_time.json").write_text(json.dumps({"seconds_per_case": 1.5}))
    comp = compare_models(DS, [REF, MED], folds=[0], results=results, subdir="test_predictions", gt=gt, hd95="mm")
    ref, med = comp["models"]
    assert ref["aggregate"]["HD95_mm"]["1"][0] == pytest.approx(0.5)  # one voxel along y at 0.5 mm
    assert med["aggregate"]["HD95_mm"]["mean"][0] == pytest.approx(0.0)
    assert ref["aggregate"]["Dice"]["2"][2] == 0  # MYO absent in both: no value
    assert ref["inference_s_per_case"] == 1.5
    comp_px = compare_models(DS, [REF], folds=[0], results=results, subdir="test_predictions", gt=gt, hd95="transunet")
    agg = comp_px["models"][0]["aggregate"]
    assert agg["HD95_transunet_px"]["1"][0] == pytest.approx(1.0)
    assert agg["DSC_transunet"]["2"][0] == 0.0  # TransUNet rule: empty prediction scores 0
    out = tmp_path / "cmp"
    assert main(["compare", "-d", DS, "-m", REF, MED, "-f", "0", "--results", str(results), "--subdir",
                 "test_predictions", "--gt", str(gt), "--hd95", "mm", "-o", str(out)]) == 0
    md = (out / "comparison.md").read_text()
    assert "## HD95 (mm)" in md and "| 1.50 |" in md


def test_compare_errors(results: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", "-d", "999", "-m", REF, "--results", str(results)]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["compare", "-d", "802", "-m", "nnUNetTrainer_2d", "--results", str(results)]) == 2
    assert "Trainer__Plans__configuration" in capsys.readouterr().err
    # a misspelled model is named as missing (with the close existing one), not listed under "missing folds"
    typo = REF.replace("nnUNetPlans", "nnUNetPlan", 1)
    out = tmp_path / "typo"
    assert main(["compare", "-d", DS, "-m", REF, typo, "--results", str(results), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"model {typo} does not exist" in err[0] and f"did you mean {REF}?" in err[0]
    assert not out.exists()


def test_compare_reads_resenc_runs_like_any_other(results: Path, tmp_path: Path) -> None:
    """A ResEnc-M run (nnU-Net's ``nnUNetResEncUNetMPlans``): plans in the table, parameters of the real network."""
    from dynamic_network_architectures.architectures.unet import ResidualEncoderUNet

    net = ResidualEncoderUNet(1, 4, (8, 16, 32, 64), torch.nn.Conv2d, 3, (1, 2, 2, 2), (1, 3, 4, 6), 4, (1, 1, 1),
                              conv_bias=True, norm_op=torch.nn.InstanceNorm2d, norm_op_kwargs={"affine": True},
                              nonlin=torch.nn.LeakyReLU, deep_supervision=True)
    resenc = "nnUNetTrainer__nnUNetResEncUNetMPlans__2d"
    fold_dir = _fold(results / DS / resenc, 0, {1: 0.88, 2: 0.82, 3: 0.93}, 20, [30.0, 34.0])
    # the real state dict: the decoder holds the encoder again (decoder.encoder.*), counted once
    torch.save({"network_weights": net.state_dict()}, fold_dir / "checkpoint_final.pth")
    assert any(k.startswith("decoder.encoder.") for k in net.state_dict())
    out = tmp_path / "cmp"
    assert main(["compare", "-d", DS, "-m", REF, resenc, "-f", "0", "--results", str(results), "-o", str(out),
                 "--names", "U-Net", "ResEnc-M"]) == 0
    md = (out / "comparison.md").read_text()
    n = sum(p.numel() for p in net.parameters())
    assert f"| ResEnc-M | `nnUNetTrainer` | `nnUNetResEncUNetMPlans` | 2d | {n / 1e6:.2f} | 32.0 | 2 |" in md
    assert "| ResEnc-M | 1/1 | 87.67 |" in md
    entry = json.loads((out / "comparison.json").read_text())["models"][1]
    assert entry["params"] == n and (entry["trainer"], entry["plans"], entry["configuration"]) == (
        "nnUNetTrainer", "nnUNetResEncUNetMPlans", "2d")


def test_epoch_time_parser(tmp_path: Path) -> None:
    (tmp_path / "training_log_a.txt").write_text("x: Epoch time: 3.5 s \ny: Epoch time: 4 s\n")
    (tmp_path / "training_log_b.txt").write_text("z: Epoch time: 10.25 s\n")
    assert epoch_times(tmp_path) == [3.5, 4.0, 10.25]


def test_budget_benchmark_dry_run(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "acdc_budget.py"), "--dry-run", "--work",
                           str(tmp_path / "w"), "--budget", "2,5,1"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    env = next(ln for ln in lines if ln.startswith("export "))
    for var in ("nnUNet_raw=", "nnUNet_preprocessed=", "nnUNet_results=", "nnUNet_def_n_proc=1", "nnUNet_compile=0"):
        assert var in env
    assert "nnUNet_n_proc_DA" not in env  # only on the train commands
    cmds = [ln for ln in lines if not ln.startswith(("#", "export"))]
    assert cmds[0].startswith("nnunetv2-mednext convert acdc") and "--write-splits" in cmds[0]
    assert cmds[1] == "nnUNetv2_plan_and_preprocess -d 802 -c 2d -npfp 1 -np 1 -gpu_memory_target 2.0"
    trainers = ("nnUNetTrainerMedNeXtRefUNet_budget", "nnUNetTrainerMedNeXtRecipeUNet_budget",
                "nnUNetTrainerMedNeXt_budget")
    for tr in trainers:
        assert (f"NNUNETV2_MEDNEXT_BUDGET=2,5,1 nnUNet_n_proc_DA=0 nnUNetv2_train 802 2d 0 -tr {tr} -device cpu"
                in cmds)
        pred = next(c for c in cmds if c.startswith("nnUNetv2_predict") and f"-tr {tr} " in c)
        assert "-device cpu -npp 1 -nps 1" in pred and "imagesTs" in pred
        assert any(c.startswith("nnunetv2-mednext evaluate") and f"--method {tr}" in c for c in cmds)
    assert cmds[-1].startswith("nnunetv2-mednext compare -d 802")
    assert "--names 'nnU-Net 2D U-Net' 'U-Net (MedNeXt recipe)' 'MedNeXt (seed, T)'" in cmds[-1]
    assert [c.count("-tr ") for c in cmds if c.startswith(("nnUNetv2_train", "NNUNETV2"))] == [1, 1, 1]
    assert not (tmp_path / "w").exists()  # nothing run
    short = subprocess.run([sys.executable, str(REPO / "benchmarks" / "acdc_budget.py"), "--dry-run", "--work",
                            str(tmp_path / "w"), "--no-recipe-control"], capture_output=True, text=True, timeout=60)
    assert short.returncode == 0, short.stderr
    assert "RecipeUNet" not in short.stdout and short.stdout.count("nnUNetv2_train 802") == 2


def test_budget_benchmark_resenc_rows_dry_run(tmp_path: Path) -> None:
    """``--resenc``: nnU-Net's ResEnc-M planner once, then both trainers on its plans, each row naming its plans."""
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "acdc_budget.py"), "--dry-run", "--work",
                           str(tmp_path / "w"), "--budget", "2,5,1", "--resenc", "--no-recipe-control"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    cmds = [ln for ln in proc.stdout.splitlines() if not ln.startswith(("#", "export"))]
    plan = [c for c in cmds if c.startswith("nnUNetv2_plan_and_preprocess")]
    assert plan == ["nnUNetv2_plan_and_preprocess -d 802 -c 2d -npfp 1 -np 1 -gpu_memory_target 2.0",
                    "nnUNetv2_plan_and_preprocess -d 802 -c 2d -pl nnUNetPlannerResEncM -npfp 1 -np 1 "
                    "-gpu_memory_target 2.0"]
    for tr in ("nnUNetTrainerMedNeXtRefUNet_budget", "nnUNetTrainerMedNeXtRecipeUNet_budget"):
        assert (f"NNUNETV2_MEDNEXT_BUDGET=2,5,1 nnUNet_n_proc_DA=0 nnUNetv2_train 802 2d 0 -tr {tr} "
                "-p nnUNetResEncUNetMPlans -device cpu") in cmds
        pred = next(c for c in cmds if c.startswith("nnUNetv2_predict") and f"{tr}__nnUNetResEncUNetMPlans__2d" in c)
        assert f"-tr {tr} -p nnUNetResEncUNetMPlans " in pred
    # --no-recipe-control drops only the U-Net control; 4 rows, 4 trainings
    assert sum(c.count("nnUNetv2_train 802") for c in cmds) == 4
    compare = cmds[-1]
    assert ("-m nnUNetTrainerMedNeXtRefUNet_budget__nnUNetPlans__2d nnUNetTrainerMedNeXt_budget__nnUNetPlans__2d "
            "nnUNetTrainerMedNeXtRefUNet_budget__nnUNetResEncUNetMPlans__2d "
            "nnUNetTrainerMedNeXtRecipeUNet_budget__nnUNetResEncUNetMPlans__2d ") in compare
    assert "'nnU-Net ResEnc-M' 'ResEnc-M (MedNeXt recipe)'" in compare
    only = subprocess.run([sys.executable, str(REPO / "benchmarks" / "acdc_budget.py"), "--dry-run", "--work",
                           str(tmp_path / "w"), "--rows", "resenc_m"], capture_output=True, text=True, timeout=60)
    assert only.returncode == 0, only.stderr
    assert only.stdout.count("nnUNetv2_plan_and_preprocess") == 1 and "-pl nnUNetPlannerResEncM" in only.stdout
    assert only.stdout.count("nnUNetv2_train 802") == 1


def _load_budget_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("acdc_budget", REPO / "benchmarks" / "acdc_budget.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_budget_report_per_iteration_and_gpu_sections(tmp_path: Path) -> None:
    mod = _load_budget_script()
    cmp_json = tmp_path / "comparison.json"
    cmp_json.write_text(json.dumps({"models": [{"model": "a", "name": "U-Net", "epoch_time_s": 110.0},
                                               {"model": "b", "name": None, "epoch_time_s": 33.0},
                                               {"model": "c", "epoch_time_s": None}]}))
    lines = mod._per_iteration_lines(cmp_json, 50, 5)
    assert "| U-Net | 2.00 |" in lines and "| b | 0.60 |" in lines  # 110 / 55, 33 / 55
    assert not any(ln.startswith("| c ") for ln in lines)
    assert mod._per_iteration_lines(tmp_path / "missing.json", 50, 5) == []
    args = argparse.Namespace(dataset_id=802, name="ACDC", source="/data/acdc h5")
    gpu = mod._full_length_lines(args)
    cmds = [ln for ln in gpu if ln.startswith(("nnUNetv2_", "nnunetv2-mednext "))]
    assert "nnunetv2-mednext convert acdc '/data/acdc h5' --id 802 --name ACDC --write-splits" in cmds
    assert "nnUNetv2_train 802 2d 0 -tr nnUNetTrainer" in cmds
    assert "nnUNetv2_train 802 2d 0 -tr nnUNetTrainerMedNeXt -p nnUNetMedNeXtPlans" in cmds
    assert not any("-device cpu" in c or "BUDGET" in c for c in cmds)  # full length, default device
    assert not any("ResEnc" in c for c in cmds)
    resenc = [ln for ln in mod._full_length_lines(argparse.Namespace(**vars(args), resenc=True))
              if ln.startswith(("nnUNetv2_", "nnunetv2-mednext "))]
    assert "nnUNetv2_plan_and_preprocess -d 802 -c 2d -pl nnUNetPlannerResEncM" in resenc
    assert "nnUNetv2_train 802 2d 0 -tr nnUNetTrainer -p nnUNetResEncUNetMPlans" in resenc


def test_budget_report_has_no_absolute_paths_and_names_each_rows_plans(tmp_path: Path) -> None:
    mod = _load_budget_script()
    work = tmp_path / "work"
    args = mod.parse_args(["--work", str(work), "--budget", "1,2,1", "--resenc", "--source",
                           str(REPO.parent / "shared" / "data" / "acdc_ssl4mis_h5")])
    steps, base_env, paths = mod.build_steps(args)
    for step in steps:
        step.seconds = 1.0
    pre = work / "nnUNet_preprocessed" / "Dataset802_ACDC"
    pre.mkdir(parents=True)
    for plans, net in (("nnUNetPlans", "PlainConvUNet"), ("nnUNetResEncUNetMPlans", "ResidualEncoderUNet")):
        cfg = {"patch_size": [256, 224], "batch_size": 14, "spacing": [1.5, 1.5],
               "architecture": {"network_class_name": f"dynamic_network_architectures.architectures.unet.{net}"}}
        (pre / f"{plans}.json").write_text(json.dumps({"configurations": {"2d": cfg}}))
    out = tmp_path / "results.md"
    mod.write_results(args, steps, base_env, paths, out)
    text = out.read_text()
    assert str(tmp_path) not in text and str(REPO.parent) not in text
    assert "export nnUNet_raw=$WORK/nnUNet_raw" in text and "../shared/data/acdc_ssl4mis_h5" in text
    assert "`nnUNetResEncUNetMPlans`: patch [256, 224], batch 14, spacing [1.5, 1.5], network ResidualEncoderUNet" in text
    assert "nnU-Net ResEnc-M: `nnUNetTrainerMedNeXtRefUNet_budget` on `nnUNetResEncUNetMPlans`" in text
    assert "| train nnUNetTrainerMedNeXtRecipeUNet_budget__nnUNetResEncUNetMPlans | 1 |" in text


def _readme_commands() -> list[str]:
    text = (REPO / "docs" / "protocols.md").read_text()
    m = re.search(r"<!-- section:protocols -->(.*?)<!-- /section:protocols -->", text, re.S)
    assert m, "docs/protocols.md lacks its commands section"
    cmds, cur = [], ""
    for line in m.group(1).splitlines():
        line = line.strip()
        if cur or line.startswith("nnunetv2-mednext "):
            cur += " " + line.rstrip("\\").strip()
            if not line.endswith("\\"):
                cmds.append(cur.strip())
                cur = ""
    return cmds


def test_readme_protocol_examples_parse() -> None:
    cmds = _readme_commands()
    names = {shlex.split(c)[1] for c in cmds}
    assert {"convert", "evaluate", "compare"} <= names
    parser = build_parser()
    for c in cmds:
        argv = [a for a in shlex.split(c)[1:] if not a.startswith("#")]
        args, rest = parser.parse_known_args(argv)
        assert not rest, f"{c}: unknown arguments {rest}"
        assert getattr(args, "_run", None) is not None


def test_compare_validation_folder_scores_only_predicted_cases(results: Path, tmp_path: Path) -> None:
    gt = tmp_path / "gt_segmentations"  # like nnU-Net's: every training case, while validation/ has one fold's
    gt.mkdir()
    val = results / DS / MED / "fold_0" / "validation"
    for case in ("c1", "c2", "c3"):
        sitk.WriteImage(sitk.GetImageFromArray(_label((10, 16, 16), 0)), str(gt / f"{case}.nii.gz"))
    sitk.WriteImage(sitk.GetImageFromArray(_label((10, 16, 16), 0)), str(val / "c2.nii.gz"))
    comp = compare_models(DS, [MED], folds=[0], results=results, gt=gt, hd95="mm")
    fold = comp["models"][0]["folds"]["0"]
    assert fold["source"].startswith("evaluated") and len(fold["per_case_fg"]["Dice"]) == 1
    assert fold["classes"]["1"]["Dice"] == 1.0 and fold["classes"]["1"]["HD95_mm"] == 0.0


def test_parameter_count_excludes_norm_statistics(tmp_path: Path) -> None:
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3), torch.nn.BatchNorm2d(4))  # 2*4*9 + 4 weights, 4 + 4 BN
    torch.save({"network_weights": net.state_dict()}, tmp_path / "checkpoint_final.pth")
    assert count_parameters(tmp_path) == (2 * 4 * 9 + 4 + 4 + 4, "checkpoint_final.pth")


def test_compare_draws_best_median_and_worst_cases(tmp_path: Path) -> None:
    """2D RGB cases (nnU-Net's natural-image layout): the case pictures pick each model's best, median and worst
    case by the Dice of its own predictions, computed here by hand from the masks."""
    from PIL import Image

    ds = "Dataset601_Photos"
    raw, res = tmp_path / "raw" / ds, tmp_path / "results" / ds
    for sub in ("imagesTr", "labelsTr"):
        (raw / sub).mkdir(parents=True)
    model = res / "nnUNetTrainerMedNeXt__nnUNetPlans__2d"
    pred_dir = model / "fold_0" / "validation"
    pred_dir.mkdir(parents=True)
    (model / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "polyp": 1}, "file_ending": ".png"}))
    gt = np.zeros((24, 24), np.uint8)
    gt[6:18, 6:18] = 1  # 144 pixels
    shifts = {"a": 0, "b": 3, "c": 6, "d": 9}  # the prediction is the square moved right by this many pixels
    cases = []
    for case, dx in shifts.items():
        Image.fromarray(np.full((24, 24, 3), 90, np.uint8)).save(raw / "imagesTr" / f"{case}_0000.png")
        Image.fromarray(gt).save(raw / "labelsTr" / f"{case}.png")
        pred = np.roll(gt, dx, axis=1)
        Image.fromarray(pred).save(pred_dir / f"{case}.png")
        dice = 2 * (12 * (12 - dx)) / 288
        cases.append({"metrics": {"1": {"Dice": dice}}, "prediction_file": f"/elsewhere/{case}.png",
                      "reference_file": f"/elsewhere/{case}.png"})
    (pred_dir / "summary.json").write_text(json.dumps({"foreground_mean": {"Dice": 0.5}, "mean": {"1": {"Dice": 0.5}},
                                                       "metric_per_case": cases}))
    from nnunetv2_mednext.evaluation.compare import write_comparison

    comp = compare_models(ds, [model.name], folds=[0], results=tmp_path / "results", gt=raw / "labelsTr")
    paths = write_comparison(comp, tmp_path / "out", raw=tmp_path / "raw")
    assert paths["cases"].stat().st_size > 5000
    md = paths["md"].read_text()
    row = md.split("## Cases")[1].splitlines()[6]
    # Dice 100 %, 75 %, 50 %, 25 %: best a, median (lower of the middle two) b, worst d
    assert row.split("|")[2:5] == [" a (100.0 %) ", " b (75.0 %) ", " d (25.0 %) "]
    no_raw = write_comparison(comp, tmp_path / "out2", raw=tmp_path / "nowhere")
    assert "cases" not in no_raw and "## Cases" not in no_raw["md"].read_text()  # no images: no pictures, no error
