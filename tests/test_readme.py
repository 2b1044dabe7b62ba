"""README examples: the networks code block runs, and every command and trainer name it mentions exists."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from nnunetv2_mednext.cli import build_parser
from nnunetv2_mednext.nnunet.trainers.variants import TRAINERS

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
REF = "nnUNetTrainerMedNeXtRefUNet_budget"
RESENC = "nnUNetResEncUNetMPlans"


def _section(tag: str) -> str:
    m = re.search(rf"<!-- section:{tag} -->(.*?)<!-- /section:{tag} -->", README, re.S)
    assert m, f"README lacks the {tag} section"
    return m.group(1)


def test_networks_example_runs_and_prints_what_the_comments_say(tmp_path: Path) -> None:
    code = re.search(r"```python\n(.*?)```", _section("networks"), re.S).group(1)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=600,
                          env={"PATH": "", "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "'mednext_t'" in lines[0] and "'mednextv1_l_k5'" in lines[0]
    assert lines[1] == "torch.Size([2, 3, 224, 224])"
    assert lines[2] == "[torch.Size([16, 64, 64]), torch.Size([16, 32, 32]), torch.Size([8, 16, 16])]"
    assert int(lines[3].split()[0]) > 0
    assert lines[4] == "torch.Size([2, 3])"
    assert lines[5] == "['mednext_cls_b', 'mednext_cls_s', 'mednext_cls_t']"  # registered in timm on import
    assert lines[6] == "torch.Size([2, 3])"


def test_every_subcommand_in_readme_exists() -> None:
    parser = build_parser()
    known = set(parser._subparsers._group_actions[0].choices)  # argparse has no public accessor
    used = set(re.findall(r"nnunetv2-mednext ([a-z0-9_-]+)", README))
    assert used and used <= known, used - known


def test_deploy_commands_parse_and_match_ci_install() -> None:
    """README's export-onnx and predict lines parse with the real parsers (predict: nnUNetv2_predict's own plus
    --backend), and README installs the deploy extra exactly as .ci/run does."""
    import shlex

    from nnunetv2_mednext.cli.cmd_predict import full_parser

    lines = [ln for ln in _section("deploy").splitlines() if ln.startswith("nnunetv2-mednext ")]
    assert [ln.split()[1] for ln in lines] == ["export-onnx", "predict"]
    export = build_parser().parse_args(shlex.split(lines[0])[1:])
    assert export.folds == ["0", "1", "2", "3", "4"] and export.model_folder.endswith("__3d_fullres")
    predict = full_parser("nnunetv2-mednext predict").parse_args(shlex.split(lines[1])[2:])
    assert predict.backend == "onnxruntime" and predict.device == "cpu" and predict.c == "3d_fullres"
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    install = re.search(r'pip install "torch==[^\n]*\.\[test,deploy\]"', README)
    assert install and install.group(0).replace("pip install ", "") in ci


def test_every_trainer_named_in_readme_exists() -> None:
    names = {n.split("__")[0] for n in re.findall(r"\bnnUNetTrainerMedNeXt\w*", README)}  # results folders: T__P__C
    expanded = set()
    for n in names:
        if n.endswith("_"):  # brace patterns such as nnUNetTrainerMedNeXtV1_{S,B,M,L}_k{3,5}
            continue
        expanded.add(n)
    expanded |= {f"nnUNetTrainerMedNeXtV1_{s}_k{k}" for s in "SBML" for k in (3, 5)}
    expanded |= {f"nnUNetTrainerMedNeXt_{s}" for s in "TSB"}
    missing = sorted(n for n in expanded if n not in TRAINERS)
    assert not missing


@pytest.mark.slow
def test_quickstart_demo_runs_end_to_end(tmp_path: Path) -> None:
    """The README's demo command (shortened budget): stock plan -> train -> predict -> evaluate for every trainer,
    plus the ResEnc-M baseline row (``--baselines resenc``: nnU-Net's own preset planner) and ``compare`` on the
    results of the two nnU-Net networks."""
    # a relative --workdir, as README shows it (the nnU-Net commands run inside it: paths must not nest)
    cmd = [sys.executable, "-m", "nnunetv2_mednext", "demo", "--workdir", "demo", "--epochs", "1",
           "--iters", "3", "--val-iters", "1", "--n-train", "6", "--baselines", "resenc"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    tmp_path = tmp_path / "demo"
    assert not (tmp_path / "demo").exists()
    rows = json.loads((tmp_path / "demo_results.json").read_text())
    assert [(r["trainer"], r["plans"]) for r in rows] == [
        ("nnUNetTrainerMedNeXt_budget", "nnUNetPlans"), (REF, "nnUNetPlans"),
        ("nnUNetTrainerMedNeXtRecipeUNet_budget", "nnUNetPlans"), (REF, RESENC)]
    steps = [ln for ln in proc.stdout.splitlines() if ln.startswith("[")]
    # 1 dataset + 2 plannings + 4 x (train, predict, evaluate): one count, no restart
    assert [ln.split()[0].lstrip("[") for ln in steps] == [f"{i}/15" for i in range(1, 16)]
    assert any(ln.strip().startswith("train_loss") for ln in proc.stdout.splitlines())  # epochs shown as they run
    log = (tmp_path / "logs" / "train_nnUNetTrainerMedNeXt_budget_2d_0.log").read_text()
    assert "# export nnUNet_raw=" in log and "# export NNUNETV2_MEDNEXT_BUDGET=1,3,1" in log
    for r in rows:
        assert 0.0 <= r["dice_mean"] <= 1.0 and r["params_M"] > 0
    # parameter counts equal the networks rebuilt from the plans (nnU-Net's U-Net state dict lists shared tensors
    # several times: each must be counted once)
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    pre = next((tmp_path / "nnUNet_preprocessed").glob("Dataset990_*"))
    resenc = json.loads((pre / f"{RESENC}.json").read_text())["configurations"]["2d"]
    assert resenc["architecture"]["network_class_name"].endswith("ResidualEncoderUNet")
    nets = []
    for identifier in ("nnUNetPlans", RESENC):
        plans = PlansManager(str(pre / f"{identifier}.json"))
        cfg = plans.get_configuration("2d")
        arch = cfg.network_arch_class_name, cfg.network_arch_init_kwargs, cfg.network_arch_init_kwargs_req_import
        nets.append(get_network_from_plans(*arch, 1, 3, deep_supervision=True))
        if identifier == "nnUNetPlans":
            nets.append(TRAINERS["nnUNetTrainerMedNeXt_budget"].build_network_architecture(plans, cfg, 1, 3, True))
    unet, mednext, resenc_net = nets
    for r, net in zip(rows, (mednext, unet, unet, resenc_net)):  # each row's network is the one its plans name
        assert r["params_M"] == round(sum(p.numel() for p in net.parameters()) / 1e6, 3)
    table = (tmp_path / "demo_results.md").read_text()
    assert "| nnUNetTrainerMedNeXt_budget |" in table and f"| {REF} | {RESENC} |" in table

    out = tmp_path / "cmp"
    cmp = subprocess.run([sys.executable, "-m", "nnunetv2_mednext", "compare", "-d", "990", "--results",
                          str(tmp_path / "nnUNet_results"), "-m", f"{REF}__nnUNetPlans__2d", f"{REF}__{RESENC}__2d",
                          "-f", "0", "--names", "U-Net", "ResEnc-M", "-o", str(out)],
                         capture_output=True, text=True, timeout=600)
    assert cmp.returncode == 0, cmp.stdout[-3000:] + cmp.stderr[-3000:]
    entries = json.loads((out / "comparison.json").read_text())["models"]
    assert [e["plans"] for e in entries] == ["nnUNetPlans", RESENC]
    for e, r in zip(entries, (rows[1], rows[3])):
        assert round(e["params"] / 1e6, 3) == r["params_M"] and e["epochs_logged"] == 1 and not e["missing"]
    assert f"| ResEnc-M | `{REF}` | `{RESENC}` | 2d |" in (out / "comparison.md").read_text()
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path.parent)  # never overwritten
    assert again.returncode == 2 and "already holds demo results" in again.stderr and "Traceback" not in again.stderr
