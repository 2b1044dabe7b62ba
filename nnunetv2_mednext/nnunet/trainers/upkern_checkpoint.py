"""UpKern for nnU-Net checkpoints: a trained MedNeXtV1 k3 ``checkpoint_final.pth`` -> k5 initial weights.

The output holds ``{"network_weights": ...}``, the format ``nnUNetv2_train ... -pretrained_weights FILE`` reads.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from nnunetv2_mednext.errors import MedNeXtUserError
from nnunetv2_mednext.networks.upkern import UpKernError, upkern_state_dict

_RUN_LENGTH = re.compile(r"_(tiny|budget|\d+epochs?|1epoch)$")


def default_target_trainer(source_trainer: str, kernel: int = 5) -> str:
    """``nnUNetTrainerMedNeXtV1_S_k3[_tiny]`` -> ``nnUNetTrainerMedNeXtV1_S_k5[_tiny]``."""
    base = _RUN_LENGTH.sub("", source_trainer)
    m = re.fullmatch(r"(nnUNetTrainerMedNeXtV1_[SBML])_k(\d)", base)
    if m is None:
        raise MedNeXtUserError(
            f"checkpoint trainer {source_trainer!r} is not a MedNeXtV1 trainer; UpKern starts from "
            "nnUNetTrainerMedNeXtV1_<S|B|M|L>_k3 (or pass --trainer with the target trainer explicitly)"
        )
    return f"{m.group(1)}_k{kernel}{source_trainer[len(base):]}"


def _load(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise MedNeXtUserError(f"checkpoint {path} not found; fix: pass nnUNet_results/.../fold_X/checkpoint_final.pth")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # any unreadable file gets the same one-line message
        raise MedNeXtUserError(f"cannot read checkpoint {path} ({type(e).__name__}); fix: check the file") from None
    missing = [k for k in ("network_weights", "trainer_name", "init_args") if k not in ckpt]
    if missing:
        raise MedNeXtUserError(f"{path} is not an nnU-Net training checkpoint (no {missing}); fix: pass checkpoint_final.pth")
    return ckpt


def upkern_checkpoint(source: str | Path, output: str | Path, target_trainer: str | None = None,
                      overwrite: bool = False) -> dict[str, Any]:
    """Write the k5 initialisation of ``source`` to ``output``; returns a summary (trainer names, resized tensors)."""
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnunetv2_mednext.nnunet.trainers.variants import TRAINERS

    source, output = Path(source), Path(output)
    if output.exists() and not overwrite:
        raise MedNeXtUserError(f"{output} exists; fix: choose another output file or pass --overwrite")
    ckpt = _load(source)
    target_name = target_trainer or default_target_trainer(ckpt["trainer_name"])
    if target_name not in TRAINERS or not hasattr(TRAINERS[target_name], "mednext_variant"):
        raise MedNeXtUserError(f"unknown MedNeXt trainer {target_name!r}; fix: see `nnunetv2-mednext info` for names")
    init = ckpt["init_args"]
    plans_manager = PlansManager(init["plans"])
    config = plans_manager.get_configuration(init["configuration"])
    n_in = determine_num_input_channels(plans_manager, config, init["dataset_json"])
    n_out = plans_manager.get_label_manager(init["dataset_json"]).num_segmentation_heads
    target = TRAINERS[target_name].build_network_architecture(plans_manager, config, n_in, n_out, True)
    try:
        weights, resized = upkern_state_dict(ckpt["network_weights"], target.state_dict())
    except UpKernError as e:
        raise MedNeXtUserError(f"{e} (source trainer {ckpt['trainer_name']}, target {target_name})") from None
    output.parent.mkdir(parents=True, exist_ok=True)
    info = {"source": str(source), "source_trainer": ckpt["trainer_name"], "target_trainer": target_name,
            "configuration": init["configuration"], "resized": len(resized), "copied": len(weights) - len(resized)}
    torch.save({"network_weights": weights, "upkern": info}, output)
    return info
