"""The package's data checks count channels with nnU-Net's own readers, and the hook's rule for when a diagnosis
explains an exception (no nnU-Net command runs here: seconds)."""

from __future__ import annotations

import ast
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from conformance_data import FORMATS, make_format_dataset
from PIL import Image

from nnunetv2_mednext.nnunet import friendly_errors
from nnunetv2_mednext.nnunet.dataset_check import DataProblemError, check_prediction_inputs, check_raw_dataset


def _dataset(tmp_path: Path, key: str) -> Path:
    return make_format_dataset(tmp_path / "raw", 700 + list(FORMATS).index(key), FORMATS[key])


def _json(folder: Path) -> dict:
    return json.loads((folder / "dataset.json").read_text())


def _set_json(folder: Path, **changes: object) -> None:
    (folder / "dataset.json").write_text(json.dumps({**_json(folder), **changes}))


@pytest.mark.parametrize("key", list(FORMATS))
def test_every_format_nnunet_reads_passes_every_check(tmp_path: Path, key: str) -> None:
    folder = _dataset(tmp_path, key)
    check_raw_dataset(folder)
    check_raw_dataset(folder, full=True)
    check_prediction_inputs(folder / "imagesTs", _json(folder))


def test_rgb_png_is_three_channels_in_one_file(tmp_path: Path) -> None:
    """The issue's dataset: one CASE_0000.png with R, G, B. Counting files said 1 channel and refused it."""
    folder = _dataset(tmp_path, "png_rgb")
    model = _json(folder)
    check_prediction_inputs(folder / "imagesTs", model)  # was: "has channel file(s) _0000 but ... 3 channel(s)"
    _set_json(folder, channel_names={"0": "gray"})
    with pytest.raises(DataProblemError, match=r"case_000 .* reads as 3 channel\(s\) with nnU-Net's NaturalImage2DIO "
                                               r".* but dataset.json \(channel_names\) has 1; fix: list 3 channel"):
        check_raw_dataset(folder)
    grey = _dataset(tmp_path / "g", "png_grey")
    with pytest.raises(DataProblemError, match=r"reads as 1 channel\(s\) .* the model \(R, G, B\) has 3; fix: give "
                                               r"every case 3 file\(s\) \(_0000 \.\. _0002\) of 1 channel"):
        check_prediction_inputs(grey / "imagesTs", model)


def test_rgba_png_reads_as_four_channels(tmp_path: Path) -> None:
    folder = _dataset(tmp_path, "png_rgb")
    for p in (folder / "imagesTr").glob("*.png"):
        Image.open(p).convert("RGBA").save(p)
    with pytest.raises(DataProblemError, match=r"reads as 4 channel\(s\)") as info:
        check_raw_dataset(folder)
    assert info.value.channels == (3, 4)


def test_multi_file_channels_must_be_the_same_in_every_case(tmp_path: Path) -> None:
    folder = _dataset(tmp_path, "nifti3d_2ch")
    (folder / "imagesTr" / "case_003_0001.nii.gz").rename(folder / "imagesTr" / "case_003_0002.nii.gz")
    with pytest.raises(DataProblemError, match=r"case case_003 .* has channel file\(s\) _0000, _0002 but case "
                                               r"case_000 has _0000, _0001"):
        check_raw_dataset(folder)
    inputs = tmp_path / "in"
    shutil.copytree(folder / "imagesTs", inputs)
    (inputs / "case_005_0001.nii.gz").unlink()  # the first case has one file of two: read, it is 1 channel
    with pytest.raises(DataProblemError, match=r"case_005 .* reads as 1 channel\(s\) .* \(T1, T2\) has 2; fix: give "
                                               r"every case 2 file\(s\) \(_0000 \.\. _0001\)"):
        check_prediction_inputs(inputs, _json(folder))


def test_guards_stock_nnunet_does_not_share_are_gone(tmp_path: Path) -> None:
    """A label without image (nnU-Net ignores it) passes; numTraining is checked only with full (as nnU-Net's
    --verify_dataset_integrity does); a dataset.json that lists its files needs no imagesTr."""
    folder = _dataset(tmp_path, "png_grey")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(folder / "labelsTr" / "extra.png")
    _set_json(folder, numTraining=99)
    check_raw_dataset(folder)
    with pytest.raises(DataProblemError, match=r"numTraining 99 .* fix: set numTraining to 5"):
        check_raw_dataset(folder, full=True)
    listed = {f"c{i}": {"images": [f"imagesTr/case_{i:03d}_0000.png"], "label": f"labelsTr/case_{i:03d}.png"}
              for i in range(5)}
    _set_json(folder, numTraining=5, dataset=listed)
    (folder / "imagesTr").rename(folder / "elsewhere")
    for entry in listed.values():
        entry["images"] = [entry["images"][0].replace("imagesTr", "elsewhere")]
    _set_json(folder, dataset=listed)
    check_raw_dataset(folder, full=True)


def test_unsuffixed_file_names_the_case_nnunet_makes_up(tmp_path: Path) -> None:
    folder = _dataset(tmp_path, "png_grey")
    (folder / "imagesTr" / "case_001_0000.png").rename(folder / "imagesTr" / "case_001.png")
    with pytest.raises(DataProblemError, match=r"case_001.png has no channel suffix .* e.g. case_001_0000.png") as e:
        check_raw_dataset(folder)
    assert "cas" in e.value.derived  # nnU-Net cuts 9 characters off "case_001.png"


# ------------------------------------------------------------------------------------------- the hook's rule
def _raise_in_nnunet(body: str, **local: object) -> tuple[BaseException, object]:
    """Run ``body`` as code of a module named ``nnunetv2.fake`` with ``local`` as its locals; return the exception."""
    code = "def failing(" + ", ".join(local) + "):\n    " + body + "\n"
    namespace: dict = {"__name__": "nnunetv2.fake"}
    exec(compile(code, "<nnunetv2.fake>", "exec"), namespace)
    try:
        namespace["failing"](**local)
    except Exception as exc:
        return exc, exc.__traceback__
    raise AssertionError("did not raise")


def test_a_diagnosis_explains_only_the_failure_it_is_about(tmp_path: Path) -> None:
    case = str(tmp_path / "case_000_0000.png")
    problem = DataProblemError("x", paths=[case], channels=(1, 2))
    # nnU-Net was handling the file when it failed (e.g. its predictor's list of input files)
    exc, tb = _raise_in_nnunet("raise RuntimeError('Background workers died')", files=[[case]])
    assert friendly_errors.explains(problem, exc, tb)
    exc, tb = _raise_in_nnunet("raise RuntimeError('Background workers died')", files=[[case + "x"]])
    assert not friendly_errors.explains(problem, exc, tb)
    # nnU-Net's message names the file, or reports the same channel mismatch (torch's conv message)
    exc, tb = _raise_in_nnunet(f"raise OSError('cannot read {Path(case).name}')")
    assert friendly_errors.explains(problem, exc, tb)
    conv = "Given groups=1, weight of size [32, {}, 3, 3], expected input[2, {}, 32, 32] to have {} channels, but got {} " \
           "channels instead"
    exc, tb = _raise_in_nnunet(f"raise RuntimeError({conv.format(1, 2, 1, 2)!r})")
    assert friendly_errors.explains(problem, exc, tb)
    exc, tb = _raise_in_nnunet(f"raise RuntimeError({conv.format(3, 1, 3, 1)!r})")
    assert not friendly_errors.explains(problem, exc, tb)
    # the case: a stock failure about something else (threads at planning) is not explained by a data problem
    exc, tb = _raise_in_nnunet("raise RuntimeError('set_num_threads expects a positive integer')", patch=[32, 32])
    assert not friendly_errors.explains(problem, exc, tb)
    # the case id nnU-Net makes up for a misnamed file, in its message or in the failing object's data
    made_up = DataProblemError("x", derived=["cas"])
    exc, tb = _raise_in_nnunet("raise AssertionError(\"Missing: [np.str_('cas')]\")")
    assert friendly_errors.explains(made_up, exc, tb)
    exc, tb = _raise_in_nnunet("raise IndexError('list index out of range')")
    assert not friendly_errors.explains(made_up, exc, tb)


def test_hook_prints_nnunets_error_with_every_explanation(capsys: pytest.CaptureFixture[str]) -> None:
    exc, tb = _raise_in_nnunet("raise ValueError('Cannot have number of splits n_splits=5 greater than the number of "
                               "samples: n_samples=3.')")
    friendly_errors.excepthook(type(exc), exc, tb)
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("nnunetv2-mednext: nnU-Net failed with ValueError: Cannot have number of splits")
    assert err[1].startswith("nnunetv2-mednext: error: only 3 training cases") and len(err) == 2
    calls: list[tuple] = []
    exc, tb = _raise_in_nnunet("raise KeyError('something nobody explains')")
    friendly_errors.excepthook(type(exc), exc, tb, _previous=lambda *a: calls.append(a))
    assert calls and calls[0][1] is exc and capsys.readouterr().err == ""  # nnU-Net's traceback, untouched


def test_network_builders_never_read_the_command_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A predict command line with an input folder that does not exist: building the network does not look."""
    from types import SimpleNamespace

    from nnunetv2_mednext.nnunet.trainers import TRAINERS

    arch = {"n_stages": 4, "features_per_stage": [32, 64, 128, 256], "conv_op": "torch.nn.modules.conv.Conv2d",
            "kernel_sizes": [[3, 3]] * 4, "strides": [[1, 1], [2, 2], [2, 2], [2, 2]], "n_conv_per_stage": [2] * 4,
            "n_conv_per_stage_decoder": [2] * 3, "conv_bias": True,
            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm2d", "norm_op_kwargs": {"eps": 1e-05, "affine": True},
            "dropout_op": None, "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": True}}
    cfg = SimpleNamespace(network_arch_init_kwargs=arch, patch_size=[32, 32],
                          network_arch_class_name="dynamic_network_architectures.architectures.unet.PlainConvUNet",
                          network_arch_init_kwargs_req_import=["conv_op", "norm_op", "dropout_op", "nonlin"])
    monkeypatch.setattr(sys, "argv", ["nnUNetv2_predict", "-i", str(tmp_path / "missing"), "-o", str(tmp_path / "o"),
                                      "-d", "1", "-c", "2d"])
    # every family: seed MedNeXt, Roy V1, and the two that build nnU-Net's own U-Net from the plans
    for name in ("nnUNetTrainerMedNeXt", "nnUNetTrainerMedNeXtV1_S_k3_tiny", "nnUNetTrainerMedNeXtRecipeUNet_tiny",
                 "nnUNetTrainerMedNeXtRefUNet_tiny"):
        assert TRAINERS[name].build_network_architecture(None, cfg, 3, 2, False) is not None, name


def test_friendly_errors_does_not_import_the_trainers() -> None:
    tree = ast.parse(Path(friendly_errors.__file__).read_text())
    modules = {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    modules |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not any("trainers" in m for m in modules), modules
    import nnunetv2_mednext.nnunet.trainers  # noqa: F401 -- registers the names

    assert "did you mean nnUNetTrainerMedNeXt_tiny" in friendly_errors.unknown_trainer_message("nnUNetTrainerMedNext_tiny")
