"""``import-v1``: a checkpoint of Roy et al.'s official MedNeXt (their nnU-Net v1 fork) -> an nnU-Net v2 model folder.

nnU-Net v1 writes two files per fold: ``model_final_checkpoint.model`` (``torch.save`` of a dict whose
``state_dict`` holds the network) and ``model_final_checkpoint.model.pkl`` (a pickle with ``init``: the trainer's
constructor arguments ``(plans_file, fold, output_folder, dataset_directory, batch_dice, stage, ...)``, ``name``:
the trainer class, ``plans``: the v1 plans). From them this module writes what ``nnUNetv2_predict`` reads from a
model folder: ``plans.json``, ``dataset.json`` and ``fold_<f>/checkpoint_final.pth`` (``network_weights``,
``init_args``, ``trainer_name``, ``inference_allowed_mirroring_axes``), for the matching
``nnUNetTrainerMedNeXtV1_<S|B|M|L>_k<3|5>`` trainer.

* The size (S/B/M/L) and kernel come from the state dict itself (tensor names and shapes), not from the trainer name.
* The v2 plans keep the v1 preprocessing of the trained stage: spacing, transposition, patch, normalisation
  (``CT`` -> ``CTNormalization`` with the v1 intensity statistics, ``nonCT`` -> ``ZScoreNormalization``, ``noNorm``
  -> ``NoNormalization``), mask-for-norm, batch dice, and nnU-Net's third-order (data) / first-order (probabilities)
  resampling with separate z handling as v1 used it. The architecture is Roy et al.'s (``roy`` topology: 5 levels,
  stride 2 on every axis, widths 32..512, bottleneck head) whatever the v1 plans' pooling says, as the official
  network ignores them.
* The checkpoint is for inference and for ``-pretrained_weights``; it holds no optimiser state, so
  ``nnUNetv2_train --c`` cannot continue it.
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nnunetv2_mednext.errors import MedNeXtUserError
from nnunetv2_mednext.networks import MedNeXtUNet, create_model
from nnunetv2_mednext.networks.roy_weights import ROY_N_STAGES, RoyWeightsError, load_roy_state_dict, roy_key_map
from nnunetv2_mednext.nnunet.trainers.plans_defaults import default_resampling

from .network_from_plans import MEDNEXT_CLASS_PATH, ROY_BASE_WIDTH, variant_arch_kwargs

IMPORT_PLANS_NAME = "nnUNetMedNeXtV1ImportPlans"
V1_NORMALIZATION = {"CT": "CTNormalization", "nonCT": "ZScoreNormalization", "noNorm": "NoNormalization"}
_OPTIONAL = re.compile(r"(dummy_tensor|out_[1-4]\.conv_out\.(weight|bias))")


def _fail(message: str) -> MedNeXtUserError:
    return MedNeXtUserError(message)


def read_v1_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """``(state_dict, info, checkpoint)`` of an nnU-Net v1 checkpoint and its ``.pkl``; one-line errors otherwise."""
    path = Path(path)
    if not path.is_file():
        raise _fail(f"checkpoint {path} not found; fix: pass the model_final_checkpoint.model of an nnU-Net v1 "
                    "MedNeXt training (its fold_X folder)")
    pkl = path.with_name(path.name + ".pkl")
    if not pkl.is_file():
        raise _fail(f"{pkl.name} is missing next to {path.name}; nnU-Net v1 stores the plans there; fix: copy it from "
                    "the same fold folder")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)  # v1 stores numpy scalars: full unpickling
    except Exception as e:
        raise _fail(f"cannot read checkpoint {path} ({type(e).__name__}); fix: check the file") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        if isinstance(ckpt, dict) and "network_weights" in ckpt:
            raise _fail(f"{path} is an nnU-Net v2 checkpoint, not a v1 one; it needs no import")
        raise _fail(f"{path} is not an nnU-Net v1 checkpoint (no 'state_dict'); fix: pass model_final_checkpoint.model")
    try:
        with open(pkl, "rb") as fh:
            info = pickle.load(fh)
    except Exception as e:
        raise _fail(f"cannot read {pkl} ({type(e).__name__}); fix: check the file") from None
    if not isinstance(info, dict) or not {"init", "plans"} <= set(info):
        raise _fail(f"{pkl} is not an nnU-Net v1 checkpoint info file (no 'init'/'plans')")
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in ckpt["state_dict"].items()}
    return state, info, ckpt


def infer_variant(state: dict[str, torch.Tensor], trainer: str = "?") -> tuple[str, int, int, int]:
    """``(variant, spatial_dims, in_channels, num_classes)`` of an official MedNeXt v1 state dict."""
    needed = ("stem.weight", "enc_block_0.0.conv1.weight", "out_0.conv_out.weight")
    if any(k not in state for k in needed):
        raise _fail(f"the checkpoint (trainer {trainer}) is not Roy et al.'s MedNeXt v1: no {[k for k in needed if k not in state]}")
    stem, dw, head = (state[k] for k in needed)
    dims, in_ch, n_cls, kernel = stem.ndim - 2, int(stem.shape[1]), int(head.shape[1]), int(dw.shape[-1])
    if stem.shape[0] != ROY_BASE_WIDTH or kernel not in (3, 5) or dims not in (2, 3):
        raise _fail(f"the checkpoint's MedNeXt (stem width {stem.shape[0]}, kernel {kernel}, {dims}D) is not one of Roy "
                    "et al.'s S/B/M/L with kernel 3 or 5 (base width 32)")
    found = {(k, tuple(v.shape)) for k, v in state.items() if not _OPTIONAL.fullmatch(k)}
    closest = None
    for size in "sbml":
        name = f"mednextv1_{size}_k{kernel}"
        with torch.device("meta"):
            net = create_model(name, input_channels=in_ch, num_classes=n_cls, spatial_dims=dims, ds_bottleneck=True)
        spec = {(t.key, t.shape) for t in roy_key_map(net) if not _OPTIONAL.fullmatch(t.key)}
        if spec == found:
            return name, dims, in_ch, n_cls
        diff = sorted(spec ^ found)
        if closest is None or len(diff) < len(closest[1]):
            closest = (size.upper(), diff)
    assert closest is not None
    raise _fail(f"the checkpoint's tensors match none of Roy et al.'s S/B/M/L k{kernel} (closest: {closest[0]}, "
                f"{len(closest[1])} names/shapes differ, e.g. {closest[1][0][0]} {list(closest[1][0][1])}); it is "
                "another architecture or a modified MedNeXt")


def _v2_dataset_name(info: dict[str, Any]) -> str:
    folder = Path(str(info["init"][3])).name if len(info["init"]) > 3 else ""
    m = re.fullmatch(r"Task(\d+)_(.+)", folder)
    if m:
        return f"Dataset{int(m.group(1)):03d}_{m.group(2)}"
    return folder or "Dataset999_ImportedV1"


def _dataset_json(info: dict[str, Any], in_ch: int, n_cls: int, given: Path | None) -> dict[str, Any]:
    """v2 dataset.json: labels/channels from ``given`` (a v1 or v2 dataset.json) or from the v1 plans."""
    plans = info["plans"]
    channels = {str(k): str(v) for k, v in (plans.get("modalities") or {i: f"channel_{i}" for i in range(in_ch)}).items()}
    labels = {"background": 0, **{f"label_{c}": c for c in range(1, n_cls)}}
    file_ending = ".nii.gz"
    n_train = len(plans.get("list_of_npz_files") or [])
    if given is not None:
        try:
            src = json.loads(Path(given).read_text())
        except Exception as e:
            raise _fail(f"cannot read dataset json {given} ({type(e).__name__}); fix: pass a dataset.json") from None
        raw_channels = src.get("channel_names", src.get("modality"))
        if isinstance(raw_channels, dict):
            channels = {str(k): str(v) for k, v in raw_channels.items()}
        raw_labels = src.get("labels")
        if isinstance(raw_labels, dict) and raw_labels:
            if all(str(k).isdigit() for k in raw_labels):  # v1: {"0": "background", "1": "x"}
                labels = {str(v): int(k) for k, v in sorted(raw_labels.items(), key=lambda kv: int(kv[0]))}
            else:
                labels = {str(k): v for k, v in raw_labels.items()}
        file_ending = src.get("file_ending", file_ending)
        n_train = int(src.get("numTraining", n_train))
    if len(channels) != in_ch:
        raise _fail(f"the network takes {in_ch} input channel(s) but the dataset has {len(channels)} ({channels}); fix: "
                    "pass the dataset.json of the dataset this model was trained on")
    if any(not isinstance(v, int) for v in labels.values()) or sorted(labels.values()) != list(range(n_cls)):
        raise _fail(f"the network predicts {n_cls} classes but the labels are {labels}; fix: pass the dataset.json of "
                    "the dataset this model was trained on (region-based trainings are not supported)")
    return {"channel_names": channels, "labels": labels, "numTraining": n_train, "file_ending": file_ending,
            "name": "imported from nnU-Net v1 (nnunetv2-mednext import-v1)"}


def _float(v: Any) -> float:
    return float(np.asarray(v).item())


def _per_channel(mapping: Any, c: int, default: Any = None) -> Any:
    """``mapping[c]`` for v1's per-channel dicts (int keys as pickled by v1; str keys tolerated)."""
    if not isinstance(mapping, dict):
        return default
    return mapping.get(c, mapping.get(str(c), default))


def v2_plans(info: dict[str, Any], variant: str, dims: int, configuration: str, dataset_name: str) -> dict[str, Any]:
    """nnU-Net v2 plans with one configuration reproducing the v1 stage the checkpoint was trained on."""
    p1, init = info["plans"], info["init"]
    stage = int(init[5]) if len(init) > 5 else 0
    stages = p1.get("plans_per_stage", {})
    if stage not in stages:
        raise _fail(f"the v1 plans have no stage {stage} (stages {sorted(stages)}); the .pkl does not belong to this model")
    sp = stages[stage]
    patch = [int(v) for v in sp["patch_size"]]
    if len(patch) != dims:
        raise _fail(f"the v1 plans' patch {patch} is not {dims}D like the network")
    n_ch = int(p1.get("num_modalities", len(p1.get("normalization_schemes", {})) or 1))
    schemes = [_per_channel(p1.get("normalization_schemes"), c, "missing") for c in range(n_ch)]
    unknown = sorted({s for s in schemes if s not in V1_NORMALIZATION})
    if unknown:
        raise _fail(f"v1 normalisation {unknown} has no nnU-Net v2 equivalent here (supported: {', '.join(V1_NORMALIZATION)})")
    use_mask = [bool(_per_channel(p1.get("use_mask_for_norm"), c, False)) for c in range(n_ch)]
    props = (p1.get("dataset_properties") or {}).get("intensityproperties") or {}
    fg: dict[str, dict[str, float]] = {}
    for c in range(n_ch):
        pc = _per_channel(props, c)
        if pc is None:
            if schemes[c] == "CT":
                raise _fail(f"channel {c} uses CT normalisation but the v1 plans hold no intensity statistics for it")
            continue
        fg[str(c)] = {"max": _float(pc["mx"]), "mean": _float(pc["mean"]), "median": _float(pc["median"]),
                      "min": _float(pc["mn"]), "percentile_00_5": _float(pc["percentile_00_5"]),
                      "percentile_99_5": _float(pc["percentile_99_5"]), "std": _float(pc["sd"])}
    tf = [int(v) for v in p1.get("transpose_forward", range(dims))]
    tb = [int(v) for v in p1.get("transpose_backward", range(dims))]
    spacing = [float(v) for v in sp["current_spacing"]]
    if p1.get("original_spacings") is not None and len(p1["original_spacings"]):
        med_spacing = [float(v) for v in np.median(np.vstack(p1["original_spacings"]), 0)[tf]]
        med_shape = [float(v) for v in np.median(np.vstack(p1["original_sizes"]), 0)[tf]]
    else:
        med_spacing, med_shape = spacing, [float(v) for v in sp["median_patient_size_in_voxels"]]
    topology = {"n_stages": ROY_N_STAGES, "conv_op": f"torch.nn.modules.conv.Conv{dims}d",
                "kernel_sizes": [[3] * dims] * ROY_N_STAGES, "strides": [[1] * dims] + [[2] * dims] * (ROY_N_STAGES - 1)}
    arch = variant_arch_kwargs(variant, topology, topology="roy")
    config = {
        "data_identifier": f"{IMPORT_PLANS_NAME}_{configuration}",
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": int(sp.get("batch_size", 2)),
        "patch_size": patch,
        "median_image_size_in_voxels": [float(v) for v in sp["median_patient_size_in_voxels"]],
        "spacing": spacing,
        "normalization_schemes": [V1_NORMALIZATION[s] for s in schemes],
        "use_mask_for_norm": use_mask,
        **default_resampling(),
        "architecture": {"network_class_name": MEDNEXT_CLASS_PATH, "arch_kwargs": arch, "_kw_requires_import": ["conv_op"]},
        "batch_dice": bool(init[4]) if len(init) > 4 else False,
        "mednext_variant": variant,
        "mednext_topology": "roy",
    }
    return {
        "dataset_name": dataset_name,
        "plans_name": IMPORT_PLANS_NAME,
        "original_median_spacing_after_transp": med_spacing,
        "original_median_shape_after_transp": med_shape,
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": tf,
        "transpose_backward": tb,
        "configurations": {configuration: config},
        "experiment_planner_used": "nnunetv2-mednext import-v1 (from nnU-Net v1 plans)",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": fg,
    }


def _default_configuration(info: dict[str, Any], dims: int) -> str:
    if dims == 2:
        return "2d"
    p1, init = info["plans"], info["init"]
    stage = int(init[5]) if len(init) > 5 else 0
    return "3d_lowres" if int(p1.get("num_stages", 1)) > 1 and stage == 0 else "3d_fullres"


def _write_json(path: Path, content: dict[str, Any], overwrite: bool) -> None:
    text = json.dumps(content, indent=2)
    if path.exists() and not overwrite:
        if json.loads(path.read_text()) != json.loads(text):
            raise _fail(f"{path} exists with other content (another model?); fix: choose another output folder or pass "
                        "--overwrite")
        return
    path.write_text(text)


def import_v1_checkpoint(
    checkpoint: str | Path,
    output: str | Path,
    fold: int | str | None = None,
    trainer: str | None = None,
    configuration: str | None = None,
    dataset_json: str | Path | None = None,
    dataset_name: str | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Convert ``checkpoint`` (+ ``.pkl``) into the model folder ``output``; returns a summary."""
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from .variants import TRAINERS

    state, info, ckpt = read_v1_checkpoint(checkpoint)
    variant, dims, in_ch, n_cls = infer_variant(state, str(info.get("name", "?")))
    size, kernel = variant.split("_")[1].upper(), int(variant[-1])
    target = trainer or f"nnUNetTrainerMedNeXtV1_{size}_k{kernel}"
    if target not in TRAINERS or getattr(TRAINERS[target], "mednext_variant", None) != variant:
        raise _fail(f"trainer {target!r} does not build {variant} (the checkpoint's network); fix: use "
                    f"nnUNetTrainerMedNeXtV1_{size}_k{kernel} or one of its run-length variants")
    fold = fold if fold is not None else (info["init"][1] if len(info["init"]) > 1 else 0)
    fold = fold if fold == "all" else int(fold)
    configuration = configuration or _default_configuration(info, dims)
    dsj = _dataset_json(info, in_ch, n_cls, Path(dataset_json) if dataset_json else None)
    plans = v2_plans(info, variant, dims, configuration, dataset_name or _v2_dataset_name(info))

    # build the network exactly as nnUNetv2_predict will (trainer class, plans), then load the official tensors
    pm = PlansManager(plans)
    cm = pm.get_configuration(configuration)
    net = TRAINERS[target].build_network_architecture(
        pm, cm, determine_num_input_channels(pm, cm, dsj), pm.get_label_manager(dsj).num_segmentation_heads, False
    )
    assert isinstance(net, MedNeXtUNet)
    try:
        report = load_roy_state_dict(net, state)
    except RoyWeightsError as e:
        raise _fail(f"{e} (checkpoint {checkpoint})") from None

    out = Path(output)
    fold_dir = out / f"fold_{fold}"
    target_file = fold_dir / "checkpoint_final.pth"
    if target_file.exists() and not overwrite:
        raise _fail(f"{target_file} exists; fix: choose another output folder or pass --overwrite")
    fold_dir.mkdir(parents=True, exist_ok=True)
    _write_json(out / "plans.json", plans, overwrite)
    _write_json(out / "dataset.json", dsj, overwrite)
    mirror = tuple(range(dims))  # nnU-Net v1's default test-time mirroring for 2D / 3D
    summary = {
        "source": str(checkpoint), "source_trainer": str(info.get("name", "?")), "variant": variant, "trainer": target,
        "configuration": configuration, "fold": fold, "epoch": int(ckpt.get("epoch", 0) or 0),
        "dropped": report["dropped"], "missing_heads": report["missing_heads"], "output": str(out),
    }
    torch.save({
        "network_weights": net.state_dict(),
        "init_args": {"plans": plans, "configuration": configuration, "fold": fold, "dataset_json": dsj,
                      "device": torch.device("cpu")},
        "trainer_name": target,
        "inference_allowed_mirroring_axes": mirror,
        "current_epoch": summary["epoch"],
        "optimizer_state": None,
        "grad_scaler_state": None,
        "_best_ema": None,
        "imported_from_nnunet_v1": {k: v for k, v in summary.items() if k not in ("dropped", "missing_heads")},
    }, target_file)
    return summary
