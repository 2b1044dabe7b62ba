"""Every named trainer of the package, declared in one table (``FAMILIES``) and built from it.

A *family* is a network + recipe (one base class); a *length* is a run length (nnU-Net-style ``_250epochs``,
the ``_tiny`` smoke test, the ``_budget`` length from ``NNUNETV2_MEDNEXT_BUDGET``). Each generated class is
``type(name, (LengthMixin, FamilyBase), {})``: it defines no ``__init__`` of its own, so its constructor is the
mixin's, whose signature is exactly nnU-Net's ``(plans, configuration, fold, dataset_json, device)`` -- nnU-Net
records its constructor arguments by looking every parameter name up in ``locals()``, and any extra parameter
crashes ``nnUNetv2_train``. ``tests/test_trainer_enumeration.py`` constructs and initialises every class the
package exports exactly as ``nnUNetv2_train`` does.

Names carry the ``MedNeXt`` token so they never collide with nnU-Net's own trainers. ``trainer_names()`` lists
them all (also ``nnunetv2-mednext info --trainers``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunetv2_mednext.envflags import parse_flag
from nnunetv2_mednext.errors import MedNeXtUserError
from nnunetv2_mednext.networks.registry import SegVariant
from nnunetv2_mednext.nnunet.variant_names import segmentation_variants, trainer_name

from .base import nnUNetTrainerMedNeXt
from .seeding import seed_from_env
from .threads import apply_thread_env

BUDGET_ENV = "NNUNETV2_MEDNEXT_BUDGET"
FINAL_VALIDATION_ENV = "NNUNETV2_MEDNEXT_FINAL_VALIDATION"
_CUDA = torch.device("cuda")


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
            f"{BUDGET_ENV}={value!r} is not valid; fix: use EPOCHS,ITERS[,VAL_ITERS] with positive integers, e.g. 2,50,5"
        )
    return parts[0], parts[1], parts[2] if len(parts) == 3 else 2


# -- run lengths -------------------------------------------------------------------------------------------------
class _RunLength:
    """Mixin that sets the run length after the family's ``__init__``; subclasses only override ``run_length``."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = _CUDA) -> None:
        epochs, iters, val_iters, save_every = self.run_length()  # a bad setting fails before nnU-Net writes a log
        super().__init__(plans, configuration, fold, dataset_json, device)  # type: ignore[call-arg]
        self.num_epochs = epochs  # type: ignore[attr-defined]
        if iters is not None:
            self.num_iterations_per_epoch = iters  # type: ignore[attr-defined]
        if val_iters is not None:
            self.num_val_iterations_per_epoch = val_iters  # type: ignore[attr-defined]
        if save_every is not None:
            self.save_every = save_every  # type: ignore[attr-defined]

    @classmethod
    def run_length(cls) -> tuple[int, int | None, int | None, int | None]:
        """``(epochs, iterations per epoch, validation iterations, save_every)``; ``None`` keeps nnU-Net's value."""
        raise NotImplementedError


class _Epochs(_RunLength):
    """``epochs`` epochs of nnU-Net's 250 iterations (like nnU-Net's ``nnUNetTrainer_Xepochs``)."""

    epochs: ClassVar[int] = 1

    @classmethod
    def run_length(cls) -> tuple[int, None, None, None]:
        return cls.epochs, None, None, None


def final_validation_wanted(value: str | None) -> bool:
    """Parse ``NNUNETV2_MEDNEXT_FINAL_VALIDATION`` (default on): ``0``/``off`` skips nnU-Net's end-of-training
    validation of a ``_tiny`` or ``_budget`` run (benchmarks that score a held-out test set, and tests that predict
    with ``nnUNetv2_predict`` anyway, need not pay for it)."""
    return bool(parse_flag(FINAL_VALIDATION_ENV, value, True, "validate the fold at the end, the default",
                           "skip it"))


class _ShortRun(_RunLength):
    """A short run whose final validation ``NNUNETV2_MEDNEXT_FINAL_VALIDATION=0`` skips.

    nnU-Net's end-of-training validation of the fold (sliding window with mirroring over every validation case) takes
    minutes on a CPU, longer than a short run's training.
    """

    def perform_actual_validation(self, save_probabilities: bool = False) -> None:
        if final_validation_wanted(os.environ.get(FINAL_VALIDATION_ENV)):
            super().perform_actual_validation(save_probabilities)  # type: ignore[misc]
            return
        self.print_to_log_file(f"final validation skipped ({FINAL_VALIDATION_ENV}=0)")  # type: ignore[attr-defined]


class _TinyRun(_ShortRun):
    """Smoke-test length: 2 epochs x 4 iterations, 2 validation iterations, a checkpoint every epoch."""

    @classmethod
    def run_length(cls) -> tuple[int, int, int, int]:
        final_validation_wanted(os.environ.get(FINAL_VALIDATION_ENV))  # a bad value fails before any work
        return 2, 4, 2, 1


class _BudgetRun(_ShortRun):
    """Run length from ``NNUNETV2_MEDNEXT_BUDGET=EPOCHS,ITERS[,VAL_ITERS]`` (default 1,10,2): fair CPU comparisons."""

    @classmethod
    def run_length(cls) -> tuple[int, int, int, int]:
        epochs, iters, val_iters = parse_budget(os.environ.get(BUDGET_ENV))
        final_validation_wanted(os.environ.get(FINAL_VALIDATION_ENV))  # a bad value fails before any work
        return epochs, iters, val_iters, 1


def _epochs(n: int) -> tuple[str, type]:
    return ("1epoch" if n == 1 else f"{n}epochs"), type(f"_Epochs{n}", (_Epochs,), {"epochs": n})


EPOCH_LENGTHS = (1, 5, 10, 20, 50, 100, 250, 500, 2000)
LENGTHS: dict[str, type] = {
    **dict(_epochs(n) for n in EPOCH_LENGTHS),
    "tiny": _TinyRun,
    "budget": _BudgetRun,
}
ALL_LENGTHS = tuple(LENGTHS)
SHORT_LENGTHS = ("tiny", "budget")


# -- family bases that are not plain nnUNetTrainerMedNeXt ----------------------------------------------------------
def _plans_network(plans_manager: Any, configuration_manager: Any, num_input_channels: int,
                   num_output_channels: int, enable_deep_supervision: bool = True) -> torch.nn.Module:
    """nnU-Net's own builder: the network the plans name."""
    return nnUNetTrainer.build_network_architecture(plans_manager, configuration_manager, num_input_channels,
                                                    num_output_channels, enable_deep_supervision)


class _RefUNet(nnUNetTrainer):
    """nnU-Net's own trainer, plus what every trainer of this package does on CPU: honour ``OMP_NUM_THREADS``."""

    build_network_architecture = staticmethod(_plans_network)  # type: ignore[assignment]

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = _CUDA) -> None:
        seed_from_env()
        super().__init__(plans, configuration, fold, dataset_json, device)
        apply_thread_env(self.device)


class _RecipeUNet(nnUNetTrainerMedNeXt):
    """nnU-Net's network from the plans (``PlainConvUNet`` or whatever the plans name) with the MedNeXt recipe."""

    build_network_architecture = staticmethod(_plans_network)  # type: ignore[assignment]


# -- the table -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Family:
    """One row of the trainer table: ``name`` itself (unless ``standalone`` is false) plus ``name_<length>``."""

    name: str
    base: type
    doc: str
    attrs: tuple[tuple[str, object], ...] = ()
    lengths: tuple[str, ...] = ()
    standalone: bool = True


_ROY_RECIPE = (("mednext_lr", 1e-3), ("mednext_weight_decay", 3e-5), ("mednext_warmup_fraction", 0.0),
               ("mednext_decay_norms_and_biases", True))
_ROY_DOC = ("Roy et al. MedNeXt {size}, kernel {k} (AdamW lr 1e-3, eps 1e-4, weight decay 3e-5 on every parameter, "
            "poly decay without warm-up).")


_V2_DOC = ("MedNeXt-v2 {size} ({name}: GRN blocks, kernel 3, stages and widths from the plan) with Roy et al.'s "
           "recipe (AdamW lr 1e-3, weight decay 3e-5, poly decay without warm-up).")


def _variant_family(v: SegVariant) -> Family:
    """The trainer family of one row of the variant table (seed: the MedNeXt recipe; Roy et al. v1 and v2: theirs)."""
    if v.block == "seed":
        return Family(trainer_name(v), nnUNetTrainerMedNeXt, f"Seed MedNeXt {v.size} (variant {v.name}).",
                      (("mednext_variant", v.name),))
    doc = (_V2_DOC if v.block == "v2" else _ROY_DOC).format(size=v.size, name=v.name, k=v.kernel_size)
    return Family(trainer_name(v), nnUNetTrainerMedNeXt, doc, (("mednext_variant", v.name), *_ROY_RECIPE),
                  SHORT_LENGTHS)


FAMILIES: tuple[Family, ...] = (
    Family("nnUNetTrainerMedNeXt", nnUNetTrainerMedNeXt, "Seed MedNeXt T (mednext_t), the default.",
           lengths=ALL_LENGTHS, standalone=False),  # the base class itself is exported as is
    *(_variant_family(v) for v in segmentation_variants()),
    Family("nnUNetTrainerMedNeXtRefUNet", _RefUNet,
           "nnU-Net's default trainer and U-Net at the package's short lengths (baseline for comparisons).",
           lengths=SHORT_LENGTHS, standalone=False),
    Family("nnUNetTrainerMedNeXtRecipeUNet", _RecipeUNet,
           "nnU-Net's PlainConvUNet from the plans, trained with the MedNeXt recipe (AdamW 3e-3, warm-up, poly): the "
           "control for 'network or optimiser?' (against nnUNetTrainerMedNeXt only the network differs, against "
           "nnUNetTrainer only the recipe).", lengths=ALL_LENGTHS),
)


def _build(families: tuple[Family, ...]) -> dict[str, type]:
    classes: dict[str, type] = {}
    for fam in families:
        base = fam.base
        if fam.standalone:
            base = type(fam.name, (fam.base,), {"__doc__": fam.doc, "__module__": __name__, **dict(fam.attrs)})
            classes[fam.name] = base
        for length in fam.lengths:
            mixin = LENGTHS[length]
            name = f"{fam.name}_{length}"
            length_doc = (f"{mixin.epochs} epoch(s) of 250 iterations." if issubclass(mixin, _Epochs)
                          else (mixin.__doc__ or "").splitlines()[0])
            doc = f"{fam.doc} Run length: {length_doc}"
            classes[name] = type(name, (mixin, base), {"__doc__": doc, "__module__": __name__})
    return classes


TRAINERS: dict[str, type] = {"nnUNetTrainerMedNeXt": nnUNetTrainerMedNeXt, **_build(FAMILIES)}
globals().update(TRAINERS)  # module attributes: nnU-Net's lookup finds trainers with hasattr(module, name)


def trainer_names() -> list[str]:
    """Every trainer name the package exports (what ``nnUNetv2_train -tr`` accepts)."""
    return list(TRAINERS)


__all__ = ["BUDGET_ENV", "FAMILIES", "FINAL_VALIDATION_ENV", "TRAINERS", "parse_budget", "trainer_names", *TRAINERS]
