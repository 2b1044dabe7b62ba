"""Checkpoints that are self-describing: class names, input size, channels, normalisation and the network recipe
travel with the weights, so ``predict`` needs nothing else. Loaded with ``weights_only=True`` (plain types only)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nnunetv2_mednext.errors import MedNeXtUserError

FORMAT = "nnunetv2_mednext.classification.checkpoint/1"
META_KEYS = ("model", "model_kwargs", "class_names", "input_size", "in_chans", "color_mode", "normalization",
             "intensity", "fold", "package_version")


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


def save(path: str | os.PathLike, model: nn.Module, meta: dict[str, Any], **state: Any) -> None:
    """Atomic write of ``{"format", "meta", "state_dict", **state}``; a failed write leaves no partial file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    sd = {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()}
    try:
        torch.save({"format": FORMAT, "meta": meta, "state_dict": sd, **state}, tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # torch reports a full disk as RuntimeError("... basic_ios::clear ...")
        tmp.unlink(missing_ok=True)
        raise MedNeXtUserError(_write_failure(path, e)) from None


def _write_failure(path: Path, exc: BaseException) -> str:
    import shutil

    from nnunetv2_mednext.fsutil import os_error_message

    if isinstance(exc, OSError) and (message := os_error_message(exc, path)):
        return message
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        free = None
    if free is not None and free < (1 << 20):
        return f"cannot write checkpoint {path}: the disk is full ({free} bytes free); fix: free some space, then --resume"
    reason = " ".join(str(exc).split())[:160] or type(exc).__name__
    return f"cannot write checkpoint {path} ({reason}); fix: check the folder's free space and permissions, then --resume"


def load(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise MedNeXtUserError(f"checkpoint {str(path)!r} does not exist; fix: pass a checkpoint_*.pt from a training run")
    retrain = ("fix: re-copy it from where it was made, or re-create it with `classify train ... --resume` "
               "(an interrupted write leaves such files)")
    if path.stat().st_size == 0:
        raise MedNeXtUserError(f"checkpoint {str(path)!r} is empty (0 bytes); {retrain}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any unpickling problem means a bad file
        reason = " ".join(str(e).split())[:200] or type(e).__name__
        raise MedNeXtUserError(f"checkpoint {str(path)!r} is corrupt or not a PyTorch file ({reason}); {retrain}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise MedNeXtUserError(
            f"{str(path)!r} is not a classification checkpoint of nnunetv2-mednext; fix: pass fold_K/checkpoint_final.pt"
        )
    return ckpt


def build_from(ckpt: dict[str, Any]) -> nn.Module:
    """The network of a loaded checkpoint, weights restored, in eval mode."""
    from .models import build_classifier

    meta = ckpt["meta"]
    kwargs = {k: v for k, v in meta["model_kwargs"].items() if k != "pretrained"}  # the weights are right here
    model = build_classifier(meta["model"], meta["in_chans"], len(meta["class_names"]), **kwargs)
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()
