"""Named MedNeXt trainers: sizes, Roy et al. variants, nnU-Net-style run lengths, and CPU smoke/budget runs.

Names carry the ``MedNeXt`` token so they never collide with nnU-Net's own trainers.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunetv2_mednext.errors import MedNeXtUserError

from .base import nnUNetTrainerMedNeXt
from .threads import apply_thread_env

BUDGET_ENV = "NNUNETV2_MEDNEXT_BUDGET"
EPOCH_LENGTHS = (1, 5, 10, 20, 50, 100, 250, 500, 2000)

_classes: dict[str, type] = {}


def _make(name: str, bases: tuple[type, ...], doc: str, **attrs: Any) -> type:
    cls = type(name, bases, {"__doc__": doc, "__module__": __name__, **attrs})
    _classes[name] = cls
    globals()[name] = cls
    return cls


class _TinyRun:
    """Smoke-test length: 2 epochs x 4 iterations, 2 validation iterations, a checkpoint every epoch."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")) -> None:
        super().__init__(plans, configuration, fold, dataset_json, device)  # type: ignore[call-arg]
        self.num_epochs = 2
        self.num_iterations_per_epoch = 4
        self.num_val_iterations_per_epoch = 2
        self.save_every = 1


def parse_budget(value: str | None) -> tuple[int, int, int]:
    """Parse ``EPOCHS,ITERS[,VAL_ITERS]`` (default ``1,10,2``)."""
    if not value:
        return 1, 10, 2
    try:
        parts = [int(v) for v in value.replace(":", ",").split(",")]
    except ValueError:
        parts = []
    if len(parts) not in (2, 3) or min(parts) < 1:
        raise MedNeXtUserError(
            f"{BUDGET_ENV}={value!r} is not valid; use EPOCHS,ITERS[,VAL_ITERS] with positive integers, e.g. 2,50,5"
        )
    return parts[0], parts[1], parts[2] if len(parts) == 3 else 2


class _BudgetRun:
    """Run length from ``NNUNETV2_MEDNEXT_BUDGET=EPOCHS,ITERS[,VAL_ITERS]`` (default 1,10,2): fair CPU comparisons."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")) -> None:
        super().__init__(plans, configuration, fold, dataset_json, device)  # type: ignore[call-arg]
        epochs, iters, val_iters = parse_budget(os.environ.get(BUDGET_ENV))
        self.num_epochs, self.num_iterations_per_epoch, self.num_val_iterations_per_epoch = epochs, iters, val_iters
        self.save_every = 1


def _with_lengths(base: type, base_name: str) -> None:
    for n in EPOCH_LENGTHS:
        suffix = "1epoch" if n == 1 else f"{n}epochs"

        def init(self, plans, configuration, fold, dataset_json, device=torch.device("cuda"), _n=n, _base=base):
            _base.__init__(self, plans, configuration, fold, dataset_json, device)
            self.num_epochs = _n

        _make(f"{base_name}_{suffix}", (base,), f"{base_name} for {n} epoch(s) of 250 iterations.", __init__=init)
    _make(f"{base_name}_tiny", (_TinyRun, base), f"{base_name}, smoke-test length (2 x 4 iterations).")
    _make(f"{base_name}_budget", (_BudgetRun, base), f"{base_name}, run length from ${BUDGET_ENV}.")


# seed MedNeXt sizes -------------------------------------------------------------------------------------------
_SIZES = {"T": "mednext_t", "S": "mednext_s", "B": "mednext_b"}
for _size, _variant in _SIZES.items():
    _make(f"nnUNetTrainerMedNeXt_{_size}", (nnUNetTrainerMedNeXt,), f"Seed MedNeXt {_size} (variant {_variant}).",
          mednext_variant=_variant)
_with_lengths(nnUNetTrainerMedNeXt, "nnUNetTrainerMedNeXt")

# Roy et al. MedNeXt (v1) --------------------------------------------------------------------------------------
for _size in ("S", "B", "M", "L"):
    for _k in (3, 5):
        _name = f"nnUNetTrainerMedNeXtV1_{_size}_k{_k}"
        _cls = _make(_name, (nnUNetTrainerMedNeXt,),
                     f"Roy et al. MedNeXt {_size}, kernel {_k} (AdamW lr 1e-3, eps 1e-4, weight decay 3e-5 on every "
                     "parameter, poly decay without warm-up).",
                     mednext_variant=f"mednextv1_{_size.lower()}_k{_k}", mednext_lr=1e-3, mednext_weight_decay=3e-5,
                     mednext_warmup_fraction=0.0, mednext_decay_norms_and_biases=True)
        _make(f"{_name}_tiny", (_TinyRun, _cls), f"{_name}, smoke-test length.")
        _make(f"{_name}_budget", (_BudgetRun, _cls), f"{_name}, run length from ${BUDGET_ENV}.")

# nnU-Net's default U-Net with nnU-Net's recipe, at the same short lengths (fair baselines) ----------------------
class _RefUNet(nnUNetTrainer):
    """nnU-Net's own trainer, plus what every trainer of this package does on CPU: honour ``OMP_NUM_THREADS``."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")) -> None:
        super().__init__(plans, configuration, fold, dataset_json, device)
        apply_thread_env(self.device)


_make("nnUNetTrainerMedNeXtRefUNet_tiny", (_TinyRun, _RefUNet),
      "nnU-Net's default trainer and U-Net, smoke-test length (baseline for comparisons).")
_make("nnUNetTrainerMedNeXtRefUNet_budget", (_BudgetRun, _RefUNet),
      f"nnU-Net's default trainer and U-Net, run length from ${BUDGET_ENV} (baseline for comparisons).")

# nnU-Net's default U-Net with the MedNeXt recipe: separates architecture from optimiser in comparisons ----------
_make("nnUNetTrainerMedNeXtRecipeUNet", (nnUNetTrainerMedNeXt,),
      "nnU-Net's PlainConvUNet from the plans, trained with the MedNeXt recipe (AdamW 3e-3, warm-up, poly): the "
      "control for 'network or optimiser?' (against nnUNetTrainerMedNeXt only the network differs, against "
      "nnUNetTrainer only the recipe).",
      build_network_architecture=staticmethod(nnUNetTrainer.build_network_architecture))
_with_lengths(_classes["nnUNetTrainerMedNeXtRecipeUNet"], "nnUNetTrainerMedNeXtRecipeUNet")

TRAINERS: dict[str, type] = {"nnUNetTrainerMedNeXt": nnUNetTrainerMedNeXt, **_classes}
__all__ = ["BUDGET_ENV", "TRAINERS", "nnUNetTrainerMedNeXt", "parse_budget", *_classes]
