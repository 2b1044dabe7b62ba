"""ONNX export and ``nnunetv2-mednext predict --backend`` (issue 29), on one tiny 2D dataset per module.

A MedNeXt ``_tiny`` model and nnU-Net's own trainer (shortened, ``conformance_data``) are trained once; a second
fold is the first with perturbed weights (fold ensembling), and a ResEnc model folder is made from nnU-Net's
builder with random weights (export only). Predictions of every backend go through nnU-Net's own predictor and are
compared with stock ``nnUNetv2_predict``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conformance_data import STOCK_TRAINER, write_stock_trainer

from nnunetv2_mednext.nnunet.pipeline import NnUNetRunner, nnunet_command
from nnunetv2_mednext.nnunet.synthetic import make_synthetic_2d

pytestmark = pytest.mark.slow

DS = 975
MEDNEXT = "nnUNetTrainerMedNeXt_tiny"
ENV = {"NNUNETV2_MEDNEXT_FINAL_VALIDATION": "0"}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> NnUNetRunner:
    runner = NnUNetRunner(tmp_path_factory.mktemp("deploy"))
    ext = write_stock_trainer(runner.workdir / "ext")
    runner.ext = ext  # type: ignore[attr-defined]
    make_synthetic_2d(runner.raw, DS, n_train=6, n_test=2, size=32)
    runner.plan_and_preprocess(DS, ("2d",))
    runner.train(DS, "2d", 0, MEDNEXT, extra_env=ENV)
    runner.train(DS, "2d", 0, STOCK_TRAINER, extra_env={**ENV, "nnUNet_extTrainer": str(ext)})
    # fold 1: fold 0 with perturbed weights, so that ensembling two folds differs from either
    fold0 = model_folder(runner, MEDNEXT) / "fold_0"
    ckpt = torch.load(fold0 / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    gen = torch.Generator().manual_seed(1)
    ckpt["network_weights"] = {k: v + 0.05 * v.std().nan_to_num() * torch.randn(v.shape, generator=gen)
                               if v.is_floating_point() and v.numel() > 1 else v
                               for k, v in ckpt["network_weights"].items()}
    (fold0.parent / "fold_1").mkdir()
    torch.save(ckpt, fold0.parent / "fold_1" / "checkpoint_final.pth")
    return runner


def model_folder(runner: NnUNetRunner, trainer: str, plans: str = "nnUNetPlans") -> Path:
    return runner.results / runner.dataset_name(DS) / f"{trainer}__{plans}__2d"


def _env(runner: NnUNetRunner, **extra: str) -> dict[str, str]:
    return runner.env({"nnUNet_extTrainer": str(runner.ext), "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
                       **extra})


def _cli(runner: NnUNetRunner, *args: object, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nnunetv2_mednext", *map(str, args)], capture_output=True,
                          text=True, env=_env(runner, **env), cwd=runner.workdir, timeout=600)


def _predict_args(runner: NnUNetRunner, out: Path, trainer: str, folds=(0,)) -> list[str]:
    return ["-i", str(runner.raw / runner.dataset_name(DS) / "imagesTs"), "-o", str(out), "-d", str(DS), "-c", "2d",
            "-tr", trainer, "-f", *map(str, folds), "-device", "cpu", "-npp", "1", "-nps", "1",
            "--disable_progress_bar", "--save_probabilities"]


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    scores = []
    for label in np.union1d(np.unique(a), np.unique(b)):
        if label == 0:
            continue
        x, y = a == label, b == label
        scores.append(2 * np.sum(x & y) / (np.sum(x) + np.sum(y)))
    return float(np.mean(scores)) if scores else 1.0


def _masks(folder: Path) -> dict[str, np.ndarray]:
    from PIL import Image

    return {p.stem: np.array(Image.open(p)) for p in sorted(folder.glob("*.png"))}


def _set_env(monkeypatch: pytest.MonkeyPatch, runner: NnUNetRunner) -> None:
    for key, value in _env(runner).items():
        if key.startswith("nnUNet") and key != "nnUNet_extTrainer":
            monkeypatch.setenv(key, value)
    # the start-up hook put the package's trainer folder there: keep it, add the stock test trainer's
    current = os.environ.get("nnUNet_extTrainer")
    monkeypatch.setenv("nnUNet_extTrainer", os.pathsep.join(p for p in (current, str(runner.ext)) if p))


# ---------------------------------------------------------------------------------------------------------------
def test_export_mednext_stock_and_resenc(models: NnUNetRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    import onnx

    from nnunetv2_mednext.nnunet.deploy.onnx_export import ATOL, OPSET, export_model, stale_reason

    _set_env(monkeypatch, models)
    for trainer in (MEDNEXT, STOCK_TRAINER):
        folder = model_folder(models, trainer)
        metas = export_model(folder, None, log=lambda s: None)
        assert [m["fold"] for m in metas] == (["0", "1"] if trainer == MEDNEXT else ["0"])
        meta = json.loads((folder / "fold_0" / "checkpoint_final.onnx.json").read_text())
        assert meta["opset"] == OPSET and meta["tile"] == [32, 32] and meta["trainer"] == trainer
        assert set(meta["check"]) == {"random", "real"}  # real tiles from $nnUNet_preprocessed
        for check in meta["check"].values():
            assert check["max_abs_diff"] < ATOL * 10 and check["argmax_agreement"] == 1.0
        model = onnx.load(str(folder / "fold_0" / "checkpoint_final.onnx"))
        props = {p.key: p.value for p in model.metadata_props}
        assert props["opset"] == str(OPSET) and json.loads(props["tile"]) == [32, 32]
        assert model.opset_import[0].version == OPSET
        assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
        assert stale_reason(folder, 0, "checkpoint_final.pth") is None
    # a ResEnc model (nnU-Net's residual encoder U-Net, random weights) exports through the same route
    resenc = _resenc_model_folder(models)
    (meta,) = export_model(resenc, [0], log=lambda s: None)
    assert meta["check"]["random"]["argmax_agreement"] == 1.0


def _resenc_model_folder(runner: NnUNetRunner) -> Path:
    """nnU-Net's ResEnc U-Net on this dataset's plan (the 2D topology, one residual block per stage)."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    src = model_folder(runner, STOCK_TRAINER)
    dst = model_folder(runner, STOCK_TRAINER, "nnUNetResEncUNetMPlans")
    (dst / "fold_0").mkdir(parents=True)
    shutil.copy(src / "dataset.json", dst)
    plans = json.loads((src / "plans.json").read_text())
    plans["plans_name"] = "nnUNetResEncUNetMPlans"
    arch = plans["configurations"]["2d"]["architecture"]
    arch["network_class_name"] = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"
    n = arch["arch_kwargs"].pop("n_conv_per_stage")
    arch["arch_kwargs"]["n_blocks_per_stage"] = [1] * len(n)
    (dst / "plans.json").write_text(json.dumps(plans))
    net = get_network_from_plans(arch["network_class_name"], arch["arch_kwargs"], arch["_kw_requires_import"], 1, 3,
                                 allow_init=True, deep_supervision=False)
    torch.save({"network_weights": net.state_dict(), "trainer_name": STOCK_TRAINER,
                "init_args": {"configuration": "2d"}, "inference_allowed_mirroring_axes": (0, 1)},
               dst / "fold_0" / "checkpoint_final.pth")
    return dst


def test_backends_give_nnunets_masks_with_two_folds(models: NnUNetRunner, tmp_path: Path) -> None:
    """Stock nnUNetv2_predict (folds 0 and 1, mirroring, probabilities) against every backend of ours."""
    args = _predict_args(models, tmp_path / "stock", MEDNEXT, (0, 1))
    stock = subprocess.run([nnunet_command("nnUNetv2_predict"), *args], capture_output=True, text=True,
                           env=_env(models), timeout=600)
    assert stock.returncode == 0, stock.stderr[-3000:]
    reference = _masks(tmp_path / "stock")
    assert len(reference) == 2
    for backend in ("torch", "onnxruntime", "openvino"):
        out = tmp_path / backend
        proc = _cli(models, "predict", *_predict_args(models, out, MEDNEXT, (0, 1)), "--backend", backend)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
        masks = _masks(out)
        assert masks.keys() == reference.keys()
        for case, mask in masks.items():
            assert _dice(reference[case], mask) >= 0.999, (backend, case)
            probs = np.load(out / f"{case}.npz")["probabilities"]
            ref_probs = np.load(tmp_path / "stock" / f"{case}.npz")["probabilities"]
            assert np.abs(probs - ref_probs).max() < 2e-3, backend  # nnU-Net accumulates logits in fp16


def test_stale_export_is_never_used(models: NnUNetRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    from nnunetv2_mednext.nnunet.deploy.onnx_export import export_model, sidecar_path, stale_reason
    from nnunetv2_mednext.nnunet.deploy.predict import ensure_exports

    _set_env(monkeypatch, models)
    folder = model_folder(models, MEDNEXT)
    onnx_file = folder / "fold_0" / "checkpoint_final.onnx"
    export_model(folder, [0], log=lambda s: None)  # a fresh export: the checkpoint is then dated after the file
    ckpt = folder / "fold_0" / "checkpoint_final.pth"
    future = onnx_file.stat().st_mtime + 60
    os.utime(ckpt, (future, future))
    assert "is newer than" in stale_reason(folder, 0, ckpt.name)
    said: list[str] = []
    ensure_exports(folder, [0], ckpt.name, log=said.append)
    assert any("exporting fold 0 first" in s for s in said) and stale_reason(folder, 0, ckpt.name) is None
    side = sidecar_path(onnx_file)
    meta = json.loads(side.read_text())
    side.write_text(json.dumps({**meta, "checkpoint_sha256": "0" * 64}))
    assert "does not match the hash" in stale_reason(folder, 0, ckpt.name)
    ensure_exports(folder, [0], ckpt.name, log=said.append)
    assert stale_reason(folder, 0, ckpt.name) is None


def test_batched_mirroring_equals_nnunets_loop(models: NnUNetRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    from nnunetv2_mednext.nnunet.deploy.fast_torch import mirrored_predict
    from nnunetv2_mednext.nnunet.deploy.model import load_predictor

    _set_env(monkeypatch, models)
    for trainer in (MEDNEXT, STOCK_TRAINER):
        predictor = load_predictor(model_folder(models, trainer), [0], "checkpoint_final.pth")
        predictor.network.eval()
        x = torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(0))
        reference = predictor._internal_maybe_mirror_and_predict(x)
        batched = mirrored_predict(predictor, x, batch=8)
        torch.testing.assert_close(batched, reference, rtol=1e-5, atol=1e-5)
        assert torch.equal(batched.argmax(1), reference.argmax(1))


# ---------------------------------------------------------------------------------------------------- bad input
def _main(capsys: pytest.CaptureFixture, *argv: object) -> tuple[int, str]:
    from nnunetv2_mednext.cli import main

    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    return rc, err[-1] if err else ""


def test_bad_input_is_one_line(models: NnUNetRunner, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch,
                               tmp_path: Path) -> None:
    _set_env(monkeypatch, models)
    folder = model_folder(models, MEDNEXT)
    rc, line = _main(capsys, "export-onnx", "-m", tmp_path / "nope")
    assert rc == 2 and "does not exist" in line and "$nnUNet_results" in line
    rc, line = _main(capsys, "export-onnx", "-m", folder, "-f", 3)
    assert rc == 2 and "fold 3 not found" in line and "0, 1" in line
    rc, line = _main(capsys, "export-onnx", "-m", folder, "-f", 0, "-chk", "checkpoint_latest.pth")
    assert rc == 2 and "no checkpoint checkpoint_latest.pth" in line and "-chk" in line
    base = _predict_args(models, tmp_path / "out", MEDNEXT)
    rc, line = _main(capsys, "predict", *base[:-6], "-f", 4, "-device", "cpu")
    assert rc == 2 and "fold 4 not found" in line
    with pytest.raises(SystemExit) as exc:
        _main(capsys, "predict", *base, "--backend", "tensorrt")
    assert exc.value.code == 2 and "invalid choice: 'tensorrt'" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # the deploy extra not installed
    rc, line = _main(capsys, "predict", *base, "--backend", "onnxruntime")
    assert rc == 2 and "pip install 'nnunetv2-mednext[deploy]'" in line and "onnxruntime" in line
    rc, line = _main(capsys, "export-onnx", "-m", folder)
    assert rc == 2 and "pip install 'nnunetv2-mednext[deploy]'" in line


def test_mismatch_above_tolerance_is_a_clear_error(tmp_path: Path) -> None:
    from nnunetv2_mednext.errors import MedNeXtUserError
    from nnunetv2_mednext.nnunet.deploy.onnx_export import check_agreement, compare

    ref = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    check_agreement("random", compare(ref, ref + 1e-6), tmp_path / "x.onnx")
    with pytest.raises(MedNeXtUserError, match="disagrees with PyTorch on random tiles: max abs logit difference"):
        check_agreement("random", compare(ref, ref + 0.5), tmp_path / "x.onnx")


def test_inference_benchmark_writes_its_table(models: NnUNetRunner) -> None:
    """benchmarks/bench_inference.py on this module's models (nothing trained again): one case, one thread; its
    predictions also show a stock nnU-Net U-Net giving nnU-Net's masks through onnxruntime."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_inference.py"
    cmd = [sys.executable, str(script), "--dataset", "synthetic", "--dataset-id", str(DS), "--out", str(models.workdir),
           "--mednext-trainer", MEDNEXT, "--unet-trainer", STOCK_TRAINER, "--cases", "1", "--threads", "1",
           "--tta", "on", "--backends", "nnunet", "onnxruntime"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(models), timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    table = (models.workdir / "bench_inference.md").read_text()
    results = json.loads((models.workdir / "bench_inference.json").read_text())["results"]
    assert [(r["row"], r["backend"]) for r in results] == [("mednext", "nnunet"), ("mednext", "onnxruntime"),
                                                           ("unet", "nnunet"), ("unet", "onnxruntime")]
    for r in results:
        assert r["cases"] == 1 and r["per_case"] > 0
        assert abs(r["per_case"] - r["preprocessing"] - r["sliding_window"] - r["export"]) < 1e-6
        assert r["min_dice"] == 1.0 if r["backend"] == "nnunet" else r["min_dice"] >= 0.999, r
    assert "| mednext | onnxruntime | on | 1 |" in table and "x U-Net with nnU-Net's torch loop" in table
    assert "load average" in table or "uptime" in table
    # nnU-Net's U-Net (stock trainer) through its exported network: nnU-Net's own masks
    for row in ("mednext", "unet"):
        torch_masks = _masks(models.workdir / "bench_pred" / f"{row}_nnunet_on_1t")
        ort_masks = _masks(models.workdir / "bench_pred" / f"{row}_onnxruntime_on_1t")
        assert torch_masks.keys() == ort_masks.keys() and len(torch_masks) == 1
        for case, mask in ort_masks.items():
            assert _dice(torch_masks[case], mask) >= 0.999, (row, case)
