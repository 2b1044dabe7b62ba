"""``nnunetv2-mednext import-v1`` (issue #11): a checkpoint in nnU-Net v1's layout, written here the way the official
MedNeXt fork writes it (``model_final_checkpoint.model`` + ``.pkl``), becomes an nnU-Net v2 model folder whose
predictions equal a direct forward of the network the weights came from.

The official tensor names come from :func:`roy_state_dict`, whose mapping ``tests/test_roy_v1.py`` checks against the
official network; so "equal to our network" here means "equal to the official network" there.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from nnunetv2_mednext.errors import MedNeXtUserError
from nnunetv2_mednext.networks import MedNeXtUNet, create_model, roy_state_dict
from nnunetv2_mednext.nnunet.pipeline import nnunet_command
from nnunetv2_mednext.nnunet.trainers.import_v1 import IMPORT_PLANS_NAME, import_v1_checkpoint

PATCH = (32, 32, 32)
SPACING = (1.0, 1.0, 1.0)
N_CLASSES = 3


def v1_plans(patch=PATCH, scheme: str = "nonCT") -> dict:
    """A v1 plans dict as nnU-Net v1's ExperimentPlanner3D_v21 pickles it (numpy arrays, int keys), one stage."""
    stage = {"batch_size": 2, "num_pool_per_axis": [5, 5, 5], "patch_size": np.array(patch),
             "median_patient_size_in_voxels": np.array([40, 40, 40]), "current_spacing": np.array(SPACING),
             "original_spacing": np.array(SPACING), "do_dummy_2D_data_aug": False,
             "pool_op_kernel_sizes": [[2, 2, 2]] * 5, "conv_kernel_sizes": [[3, 3, 3]] * 6}
    props = OrderedDict({0: {"median": 110.0, "mean": 120.0, "sd": 40.0, "mn": 0.0, "mx": 400.0,
                             "percentile_99_5": 300.0, "percentile_00_5": 20.0, "local_props": {}}})
    return {
        "num_stages": 1, "num_modalities": 1, "modalities": {0: "MRI"},
        "normalization_schemes": OrderedDict({0: scheme}), "use_mask_for_norm": OrderedDict({0: False}),
        "dataset_properties": {"intensityproperties": props, "all_classes": [1, 2], "modalities": {0: "MRI"}},
        "list_of_npz_files": [f"case_{i}.npz" for i in range(4)],
        "original_spacings": [np.array(SPACING)] * 4, "original_sizes": [np.array([40, 40, 40])] * 4,
        "num_classes": N_CLASSES - 1, "all_classes": [1, 2], "base_num_features": 32,
        "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
        "data_identifier": "nnUNetData_plans_v2.1", "plans_per_stage": {0: stage},
        "preprocessor_name": "GenericPreprocessor", "conv_per_stage": 2,
    }


def write_v1_checkpoint(folder: Path, state_dict: dict, plans: dict, fold: int = 0,
                        name: str = "nnUNetTrainerV2_MedNeXt_S_kernel3") -> Path:
    """Write ``model_final_checkpoint.model`` + ``.pkl`` in the layout of nnU-Net v1's ``save_checkpoint``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model_final_checkpoint.model"
    torch.save({
        "epoch": 1000, "state_dict": state_dict, "optimizer_state_dict": None, "lr_scheduler_state_dict": None,
        "plot_stuff": ([np.float64(0.5)], [np.float64(0.6)], [], [np.float64(0.7)]),
        "best_stuff": (999, np.float64(0.4), np.float64(0.8)), "amp_grad_scaler": {"scale": 1024.0},
    }, path)
    init = ("plans/nnUNetPlansv2.1_plans_3D.pkl", fold, f"results/{name}/fold_{fold}",
            "nnUNet_preprocessed/Task042_Synth", True, 0, True, False, True)
    info = OrderedDict(init=init, name=name, plans=plans)
    info["class"] = f"<class 'nnunet_mednext.training.network_training.MedNeXt.nnUNetTrainerV2_MedNeXt.{name}'>"
    with open(path.with_name(path.name + ".pkl"), "wb") as fh:
        pickle.dump(info, fh)
    return path


def official_net(size: str = "s", kernel: int = 3, seed: int = 0) -> MedNeXtUNet:
    torch.manual_seed(seed)
    net = create_model(f"mednextv1_{size}_k{kernel}", input_channels=1, num_classes=N_CLASSES, spatial_dims=3,
                       ds_bottleneck=True).eval()
    with torch.no_grad():  # norms away from their init, so a mix-up of tensors would show
        for name, p in net.named_parameters():
            if name.endswith("norm.weight"):
                p.add_(0.2 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return net


def official_state_dict(net: MedNeXtUNet, seed: int = 1) -> dict:
    """The official layout, with non-zero depthwise biases as a real training leaves them (the norm cancels them)."""
    sd = roy_state_dict(net)
    g = torch.Generator().manual_seed(seed)
    for k, v in sd.items():
        if k.endswith("conv1.bias"):
            sd[k] = torch.randn(v.shape, generator=g)
    return sd


def _write_image(path: Path, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    arr = (100 + 30 * rng.standard_normal(PATCH)).astype(np.float32)  # no zeros: nnU-Net crops nothing
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(SPACING[::-1])
    sitk.WriteImage(img, str(path))
    return arr


def _direct_probabilities(net: MedNeXtUNet, arr: np.ndarray) -> np.ndarray:
    x = torch.from_numpy((arr - arr.mean()) / arr.std()).float()[None, None]  # nnU-Net's per-image z-score
    net.decoder.deep_supervision = False
    with torch.no_grad():
        return torch.softmax(net(x)[0], 0).numpy()


# --------------------------------------------------------------------------------------------------------------------
def test_import_writes_a_v2_model_folder(tmp_path: Path) -> None:
    net = official_net()
    src = write_v1_checkpoint(tmp_path / "v1" / "fold_2", official_state_dict(net), v1_plans(), fold=2)
    out = tmp_path / "model"
    info = import_v1_checkpoint(src, out)
    assert info["variant"] == "mednextv1_s_k3" and info["trainer"] == "nnUNetTrainerMedNeXtV1_S_k3"
    assert info["configuration"] == "3d_fullres" and info["fold"] == 2 and info["epoch"] == 1000
    assert {k for k in info["dropped"] if not k.endswith("conv1.bias")} == {"dummy_tensor"} and not info["missing_heads"]

    plans = json.loads((out / "plans.json").read_text())
    cfg = plans["configurations"]["3d_fullres"]
    assert plans["plans_name"] == IMPORT_PLANS_NAME and plans["dataset_name"] == "Dataset042_Synth"
    assert cfg["patch_size"] == list(PATCH) and cfg["spacing"] == list(SPACING)
    assert cfg["normalization_schemes"] == ["ZScoreNormalization"] and cfg["batch_dice"] is True
    arch = cfg["architecture"]["arch_kwargs"]
    assert arch["features_per_stage"] == [32, 64, 128, 256, 512] and arch["strides"][1:] == [[2, 2, 2]] * 4
    assert arch["ds_bottleneck"] is True and arch["upsample_align"] == "start"
    dsj = json.loads((out / "dataset.json").read_text())
    assert dsj["labels"] == {"background": 0, "label_1": 1, "label_2": 2} and dsj["channel_names"] == {"0": "MRI"}

    ckpt = torch.load(out / "fold_2" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert ckpt["trainer_name"] == "nnUNetTrainerMedNeXtV1_S_k3" and ckpt["init_args"]["configuration"] == "3d_fullres"
    assert ckpt["inference_allowed_mirroring_axes"] == (0, 1, 2)
    for k, v in net.state_dict().items():
        assert torch.equal(ckpt["network_weights"][k], v), k

    # nnU-Net's own predictor restores the network from the folder: same function as the source network
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(device=torch.device("cpu"), use_gaussian=False, use_mirroring=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(out), (2,))
    x = torch.randn(1, 1, *PATCH, generator=torch.Generator().manual_seed(3))
    net.decoder.deep_supervision = False
    with torch.no_grad():
        torch.testing.assert_close(predictor.network(x), net(x), rtol=0, atol=1e-5)
        logits = predictor.predict_sliding_window_return_logits(x[0])  # one tile into nnU-Net's fp16 buffer
    torch.testing.assert_close(logits.float(), net(x)[0], rtol=1e-3, atol=1e-2)

    # another fold of the same model goes into the same folder; a second import of fold 2 does not overwrite
    src0 = write_v1_checkpoint(tmp_path / "v1" / "fold_0", official_state_dict(official_net(seed=5)), v1_plans(), fold=0)
    import_v1_checkpoint(src0, out)
    assert (out / "fold_0" / "checkpoint_final.pth").is_file()
    with pytest.raises(MedNeXtUserError, match="exists"):
        import_v1_checkpoint(src, out)


def test_size_and_kernel_come_from_the_weights(tmp_path: Path) -> None:
    """A B k5 checkpoint under another trainer name is recognised by its tensors; DDP's 'module.' prefix is fine."""
    with torch.device("meta"):
        probe = create_model("mednextv1_b_k5", input_channels=1, num_classes=N_CLASSES, spatial_dims=3, ds_bottleneck=True)
    torch.manual_seed(0)
    net = create_model("mednextv1_b_k5", input_channels=1, num_classes=N_CLASSES, spatial_dims=3, ds_bottleneck=True)
    assert sum(p.numel() for p in probe.parameters()) == sum(p.numel() for p in net.parameters())
    sd = {f"module.{k}": v for k, v in roy_state_dict(net).items()}
    src = write_v1_checkpoint(tmp_path / "v1", sd, v1_plans(scheme="CT"), name="nnUNetTrainerV2_MedNeXt_S_kernel3_lr_1e_4")
    dsj = tmp_path / "dataset.json"
    dsj.write_text(json.dumps({"modality": {"0": "CT"}, "labels": {"0": "background", "1": "liver", "2": "tumour"}}))
    info = import_v1_checkpoint(src, tmp_path / "model", trainer="nnUNetTrainerMedNeXtV1_B_k5_tiny", dataset_json=dsj)
    assert info["variant"] == "mednextv1_b_k5" and info["trainer"] == "nnUNetTrainerMedNeXtV1_B_k5_tiny"
    plans = json.loads((tmp_path / "model" / "plans.json").read_text())
    assert plans["configurations"]["3d_fullres"]["normalization_schemes"] == ["CTNormalization"]
    fg = plans["foreground_intensity_properties_per_channel"]["0"]
    assert (fg["mean"], fg["std"], fg["percentile_00_5"], fg["percentile_99_5"]) == (120.0, 40.0, 20.0, 300.0)
    dataset = json.loads((tmp_path / "model" / "dataset.json").read_text())
    assert dataset["labels"] == {"background": 0, "liver": 1, "tumour": 2} and dataset["channel_names"] == {"0": "CT"}


def test_bad_inputs_are_one_line_errors(tmp_path: Path) -> None:
    net = official_net()
    good = write_v1_checkpoint(tmp_path / "good", roy_state_dict(net), v1_plans())
    cases = []
    cases.append((tmp_path / "missing.model", "not found"))
    no_pkl = tmp_path / "nopkl" / "model_final_checkpoint.model"
    no_pkl.parent.mkdir()
    no_pkl.write_bytes(good.read_bytes())
    cases.append((no_pkl, "model_final_checkpoint.model.pkl is missing"))
    junk = write_v1_checkpoint(tmp_path / "junk", {}, v1_plans())
    junk.write_bytes(b"not a checkpoint")
    cases.append((junk, "cannot read checkpoint"))
    v2 = write_v1_checkpoint(tmp_path / "v2", {}, v1_plans())
    torch.save({"network_weights": {}, "trainer_name": "x"}, v2)
    cases.append((v2, "is an nnU-Net v2 checkpoint"))
    unet = write_v1_checkpoint(tmp_path / "unet", {"conv_blocks_context.0.blocks.0.conv.weight": torch.zeros(1)}, v1_plans())
    cases.append((unet, "not Roy et al.'s MedNeXt v1"))
    sd = roy_state_dict(net)
    cut = write_v1_checkpoint(tmp_path / "cut", {k: v for k, v in sd.items() if not k.startswith("dec_block_0.1.")}, v1_plans())
    cases.append((cut, "match none of Roy et al.'s S/B/M/L k3"))
    wrong_patch = write_v1_checkpoint(tmp_path / "patch", sd, v1_plans(patch=(40, 32, 32)))
    cases.append((wrong_patch, r"patch size \[40, 32, 32\] is not divisible"))
    for path, message in cases:
        with pytest.raises(MedNeXtUserError, match=message):
            import_v1_checkpoint(path, tmp_path / "out_bad")
    with pytest.raises(MedNeXtUserError, match="does not build mednextv1_s_k3"):
        import_v1_checkpoint(good, tmp_path / "out_bad", trainer="nnUNetTrainerMedNeXtV1_L_k3")
    dsj = tmp_path / "ds.json"
    dsj.write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": {"background": 0, "organ": 1}, "file_ending": ".nii.gz"}))
    with pytest.raises(MedNeXtUserError, match="predicts 3 classes"):
        import_v1_checkpoint(good, tmp_path / "out_bad", dataset_json=dsj)
    assert not (tmp_path / "out_bad" / "fold_0").exists()  # nothing written on error


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from nnunetv2_mednext.cli import main

    src = write_v1_checkpoint(tmp_path / "v1", roy_state_dict(official_net()), v1_plans())
    src.with_name(src.name + ".pkl").unlink()
    assert main(["import-v1", str(src), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nnunetv2-mednext import-v1: error:") and ".pkl is missing" in err[0]


@pytest.mark.slow
def test_stock_predict_reproduces_the_network(tmp_path: Path) -> None:
    """The CLI in a subprocess, then nnU-Net's own ``nnUNetv2_predict_from_modelfolder`` on a NIfTI image: the saved
    probabilities equal softmax(network(z-scored image)) up to the predictor's fp16 accumulation buffer. nnU-Net
    weights its tile with a Gaussian kept in fp16, which loses all precision near the tile's corners (weights
    ~1e-10), so the comparison covers the voxels with a weight of at least 1e-2 (about 40 % of the tile)."""
    net = official_net(seed=7)
    src = write_v1_checkpoint(tmp_path / "v1" / "fold_0", official_state_dict(net), v1_plans())
    model = tmp_path / "Dataset042_Synth" / f"nnUNetTrainerMedNeXtV1_S_k3__{IMPORT_PLANS_NAME}__3d_fullres"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "nnUNet_compile": "0", "nnUNet_def_n_proc": "1"}
    cli = [sys.executable, "-m", "nnunetv2_mednext", "import-v1", str(src), "-o", str(model)]
    proc = subprocess.run(cli, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "nnUNetTrainerMedNeXtV1_S_k3" in proc.stdout and "nnUNetv2_predict_from_modelfolder" in proc.stdout

    inp, out = tmp_path / "in", tmp_path / "pred"
    inp.mkdir()
    arr = _write_image(inp / "case_0000.nii.gz")
    cmd = [nnunet_command("nnUNetv2_predict_from_modelfolder"), "-i", str(inp), "-o", str(out), "-m", str(model),
           "-f", "0", "-device", "cpu", "--save_probabilities", "--disable_tta", "-npp", "1", "-nps", "1",
           "--disable_progress_bar"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    from nnunetv2.inference.sliding_window_prediction import compute_gaussian

    probs = np.load(out / "case.npz")["probabilities"]
    expected = _direct_probabilities(net, arr)
    assert probs.shape == expected.shape == (N_CLASSES, *PATCH)
    weighted = compute_gaussian(PATCH, 1 / 8, 10, device=torch.device("cpu")).numpy() >= 1e-2
    assert 0.3 < weighted.mean() < 0.6
    assert np.abs(probs - expected)[:, weighted].max() < 5e-3
    seg = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "case.nii.gz")))
    top2 = np.sort(expected, 0)[-2:]
    clear = weighted & ((top2[1] - top2[0]) > 2e-2)  # no near-ties under fp16 rounding
    assert clear.sum() > 0.8 * weighted.sum() and np.array_equal(seg[clear], expected.argmax(0)[clear])
