"""Named MedNeXt configurations, creatable by name (``create_model``) in the style of timm's registry.

Segmentation variants are *recipes*: the topology (stages, strides, kernel sizes) comes from an nnU-Net plan
(or :func:`reference_topology`), the variant decides block family, widths, depths and expansion ratios.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from .classification import MedNeXtClassifier
from .segmentation import MedNeXtUNet, per_stage

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_TASK: dict[str, str] = {}


class UnknownVariantError(KeyError):
    """Raised for a variant name that is not registered."""

    def __str__(self) -> str:
        return str(self.args[0])


def register_model(name: str, task: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering a model factory under ``name`` (task: ``segmentation`` or ``classification``)."""

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"variant {name!r} is already registered")
        _REGISTRY[name], _TASK[name] = fn, task
        return fn

    return deco


def list_models(pattern: str = "*", task: str | None = None) -> list[str]:
    """Registered variant names matching a glob pattern (and a task)."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern) and (task is None or _TASK[n] == task))


def model_task(name: str) -> str:
    """``segmentation`` or ``classification``."""
    _check(name)
    return _TASK[name]


def _check(name: str) -> None:
    if name not in _REGISTRY:
        raise UnknownVariantError(f"unknown MedNeXt variant {name!r}; available: {', '.join(list_models())}")


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered variant; ``kwargs`` go to its factory (see :func:`list_models`)."""
    _check(name)
    return _REGISTRY[name](**kwargs)


# ---------------------------------------------------------------------------------------------------------------
# segmentation recipes
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SegVariant:
    """A segmentation recipe applied to a plan's topology. Per-level lists are padded with their last value."""

    name: str
    block: str
    size: str  # the size letter of the family: T/S/B (seed), S/B/M/L (Roy et al.)
    widths: tuple[int, ...] | None  # None: use the plan's features_per_stage
    n_blocks: tuple[int, ...]
    n_blocks_decoder: tuple[int, ...]
    exp_ratio: tuple[float, ...]
    exp_ratio_decoder: tuple[float, ...]
    kernel_size: int = 3
    n_light_levels: int = 0
    checkpointing: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    def arch_kwargs(
        self,
        n_stages: int,
        kernel_sizes: Sequence[Sequence[int]],
        strides: Sequence[Sequence[int]],
        conv_op: str,
        plan_features: Sequence[int] | None = None,
        **overrides: Any,
    ) -> dict[str, Any]:
        """JSON-serialisable ``arch_kwargs`` for :class:`MedNeXtUNet` on the given topology."""
        if overrides.get("features_per_stage") == "plan":  # design option: the plan's widths, not the recipe's
            overrides = {k: v for k, v in overrides.items() if k != "features_per_stage"}
            features = [int(v) for v in plan_features] if plan_features is not None else \
                [min(32 * 2**i, 512) for i in range(n_stages)]
        elif self.widths is not None:
            features = per_stage(list(self.widths), n_stages, "widths")
        elif plan_features is not None:
            features = [int(v) for v in plan_features]
        else:
            features = [min(32 * 2**i, 512) for i in range(n_stages)]
        kw: dict[str, Any] = {
            "n_stages": n_stages,
            "features_per_stage": features,
            "conv_op": conv_op,
            "kernel_sizes": [list(map(int, k)) for k in kernel_sizes],
            "strides": [list(map(int, s)) for s in strides],
            "block": self.block,
            "n_blocks_per_stage": per_stage(list(self.n_blocks), n_stages, "n_blocks"),
            "n_blocks_per_stage_decoder": per_stage(list(self.n_blocks_decoder), n_stages - 1, "n_blocks_decoder"),
            "exp_ratio": per_stage(list(self.exp_ratio), n_stages, "exp_ratio"),
            "exp_ratio_decoder": per_stage(list(self.exp_ratio_decoder), n_stages - 1, "exp_ratio_decoder"),
            "kernel_size": self.kernel_size,
            "n_light_levels": self.n_light_levels,
            "checkpointing": self.checkpointing,
            **self.extra,
        }
        kw.update(overrides)
        return kw


def reference_topology(spatial_dims: int = 2, n_stages: int | None = None) -> dict[str, Any]:
    """Isotropic topology used for documented numbers: 6 stages in 2D (224^2 input), 5 in 3D (128^3)."""
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    n = n_stages or (6 if spatial_dims == 2 else 5)
    return {
        "n_stages": n,
        "kernel_sizes": [[3] * spatial_dims] * n,
        "strides": [[1] * spatial_dims] + [[2] * spatial_dims] * (n - 1),
        "conv_op": f"torch.nn.Conv{spatial_dims}d",
    }


SEG_VARIANTS: dict[str, SegVariant] = {}


def _seg(variant: SegVariant) -> None:
    SEG_VARIANTS[variant.name] = variant

    def factory(
        input_channels: int = 1,
        num_classes: int = 2,
        spatial_dims: int = 2,
        deep_supervision: bool = False,
        topology: dict[str, Any] | None = None,
        **overrides: Any,
    ) -> nn.Module:
        topo = topology or reference_topology(spatial_dims)
        kw = variant.arch_kwargs(
            topo["n_stages"], topo["kernel_sizes"], topo["strides"], topo["conv_op"], topo.get("features_per_stage"), **overrides
        )
        return MedNeXtUNet(input_channels=input_channels, num_classes=num_classes, deep_supervision=deep_supervision, **kw)

    factory.__doc__ = f"{variant.description} Topology: ``topology`` (nnU-Net plan) or the reference one."
    register_model(variant.name, "segmentation")(factory)


# The one table of segmentation variants: the registry, the nnU-Net trainer families (nnunet/trainers/variants.py)
# and the planner presets (nnunet/planners/mednext_planner.py) are all derived from it.
_SEED_DESC = "Seed MedNeXt U-Net ({}): SEM / LA-FFN / SDW-FFN blocks from 1/8 resolution, Roy et al. blocks above."
_SEED = {  # size: widths, blocks per level, decoder blocks, expansion ratios (encoder, decoder), light levels
    "T": ((32, 64, 96, 128, 160, 192, 224, 256), (1, 1, 1, 2, 2, 2), (1,), (2, 2, 2, 4), (2, 2, 2, 4), 3),
    "S": ((32, 64, 128, 160, 224, 256), (1, 1, 2, 2, 2, 2), (1,), (2, 2, 3, 4), (2, 2, 3, 4), 2),
    "B": ((32, 64, 128, 192, 256, 320), (1, 1, 2, 2, 3, 2), (1, 1, 1, 2, 2), (2, 2, 3, 4), (2, 2, 3, 4), 2),
}
_V1 = {  # Roy et al. Table: expansion ratio and blocks per level (encoder levels 0..3, bottleneck, decoder 3..0)
    "S": ((2, 2, 2, 2, 2), (2, 2, 2, 2), (2, 2, 2, 2, 2), (2, 2, 2, 2), False),
    "B": ((2, 3, 4, 4, 4), (2, 3, 4, 4), (2, 2, 2, 2, 2), (2, 2, 2, 2), False),
    "M": ((2, 3, 4, 4, 4), (2, 3, 4, 4), (3, 4, 4, 4, 4), (3, 4, 4, 4), True),
    "L": ((3, 4, 8, 8, 8), (3, 4, 8, 8), (3, 4, 8, 8, 8), (3, 4, 8, 8), True),
}
# MedNeXt-v2 (Roy, Kirchhoff et al. 2025): the paper's preset table could not be read here, so these presets are
# ours (docs/architecture.md section 2a): Roy et al. v1's S / B / M rows of expansion ratios and blocks per level
# with the v2 block (GRN), kernel 3 (the paper's 3x3x3 depthwise), widths and stages from the plan.
_V2 = {size: _V1[size] for size in ("S", "B", "M")}
for _size, (_w, _b, _bd, _r, _rd, _light) in _SEED.items():
    _seg(SegVariant(f"mednext_{_size.lower()}", "seed", _size, _w, _b, _bd, _r, _rd, n_light_levels=_light,
                    description=_SEED_DESC.format(f"{_size}, the default" if _size == "T" else _size)))
for _size, (_r, _rd, _b, _bd, _ckpt) in _V1.items():
    for _k in (3, 5):
        _seg(SegVariant(f"mednextv1_{_size.lower()}_k{_k}", "v1", _size, None, _b, _bd, _r, _rd, kernel_size=_k,
                        checkpointing=_ckpt,
                        description=f"Roy et al. MedNeXt {_size} (kernel {_k}); widths from the plan (32 doubling)."))
for _size, (_r, _rd, _b, _bd, _ckpt) in _V2.items():
    _seg(SegVariant(f"mednextv2_{_size.lower()}", "v2", _size, None, _b, _bd, _r, _rd, kernel_size=3,
                    checkpointing=_ckpt,
                    description=f"MedNeXt-v2 {_size} (GRN blocks, kernel 3, preset ours), stages and widths from the plan."))


# ---------------------------------------------------------------------------------------------------------------
# design options of the seed network (issue 14's ablation): overrides of ``mednext_t``'s arch kwargs
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DesignOption:
    """A named alternative to one free choice of the default seed network (kwargs merged into its arch kwargs)."""

    name: str
    choice: str
    overrides: dict[str, Any]
    description: str


DESIGN_OPTIONS: dict[str, DesignOption] = {
    o.name: o
    for o in (
        DesignOption("default", "-", {}, "mednext_t as registered"),
        DesignOption("composition_B", "composition / LA-FFN placement", {"composition": "B"},
                     "SEM -> SDW-FFN; LA-FFN only at the two lowest-resolution levels"),
        DesignOption("light_levels_2", "where seed blocks start", {"n_light_levels": 2},
                     "seed blocks from 1/4 resolution (Roy et al. blocks above)"),
        DesignOption("light_levels_4", "where seed blocks start", {"n_light_levels": 4},
                     "seed blocks from 1/16 resolution"),
        DesignOption("exp_ratio_2", "expansion ratio per level", {"exp_ratio": [2] * 8, "exp_ratio_decoder": [2] * 8},
                     "expansion 2 everywhere (default: 4 in the seed levels)"),
        DesignOption("exp_ratio_1_level0", "expansion ratio per level",
                     {"exp_ratio": [1, 2, 2, 4], "exp_ratio_decoder": [1, 2, 2, 4]},
                     "expansion 1 in the full-resolution blocks"),
        DesignOption("no_level0_blocks", "stem / level-0 blocks",
                     {"n_blocks_per_stage": [0, 1, 1, 2, 2, 2], "n_blocks_per_stage_decoder": [0, 1]},
                     "no block at full resolution (stem, skip fusion and heads only)"),
        DesignOption("sem_kernels_5_7_11", "kernel sizes", {"sem_kernels": [5, 7, 11]},
                     "SEM without the 21-long strips"),
        DesignOption("la_kernels_5_5_2", "kernel sizes", {"la_kernels": [5, 5, 2]},
                     "LA-FFN attention 5x5 then 5x5 dilation 2 (default 5x5, 7x7 dilation 3)"),
        DesignOption("norm_batch", "norm", {"norm": "batch"}, "BatchNorm"),
        DesignOption("norm_group", "norm", {"norm": "group"}, "GroupNorm with one group"),
        DesignOption("norm_layer", "norm", {"norm": "layer"}, "LayerNorm over channels"),
        DesignOption("layer_scale_off", "layer scale init", {"layer_scale": None}, "no layer scale"),
        DesignOption("layer_scale_1e-6", "layer scale init", {"layer_scale": 1e-6}, "layer scale init 1e-6"),
        DesignOption("head_init_fan_out", "initialisation", {"head_init": "fan_out"},
                     "segmentation heads by the He fan-out rule (initial logits of std ~5-10) instead of "
                     "std 1/sqrt(fan_in) (unit scale)"),
        DesignOption("plan_widths", "widths per level", {"features_per_stage": "plan"},
                     "the plan's widths (32 doubling, capped) instead of mednext_t's"),
    )
}


def design_option_kwargs(name: str) -> dict[str, Any]:
    """The overrides of a design option (pass them to ``create_model("mednext_t", ...)`` or a trainer's
    ``mednext_overrides``)."""
    if name not in DESIGN_OPTIONS:
        raise UnknownVariantError(f"unknown design option {name!r}; available: {', '.join(DESIGN_OPTIONS)}")
    return dict(DESIGN_OPTIONS[name].overrides)


# ---------------------------------------------------------------------------------------------------------------
# classification
# ---------------------------------------------------------------------------------------------------------------

CLS_VARIANTS: dict[str, dict[str, Any]] = {
    "mednext_cls_t": {"dims": (32, 64, 160, 256), "depths": (2, 2, 4, 2)},
    "mednext_cls_s": {"dims": (64, 128, 320, 512), "depths": (2, 2, 4, 2)},
    "mednext_cls_b": {"dims": (64, 128, 320, 512), "depths": (3, 3, 9, 3)},
}


def _cls(name: str, cfg: dict[str, Any]) -> None:
    def factory(in_chans: int = 3, num_classes: int = 2, **overrides: Any) -> nn.Module:
        return MedNeXtClassifier(in_chans=in_chans, num_classes=num_classes, **{**cfg, **overrides})

    factory.__doc__ = f"Seed MedNeXt classifier, dims {cfg['dims']}, depths {cfg['depths']}."
    register_model(name, "classification")(factory)


for _name, _cfg in CLS_VARIANTS.items():
    _cls(_name, _cfg)


def get_seg_variant(name: str) -> SegVariant:
    """The segmentation recipe registered under ``name``."""
    _check(name)
    if name not in SEG_VARIANTS:
        raise UnknownVariantError(f"{name!r} is a classification variant; segmentation: {', '.join(SEG_VARIANTS)}")
    return SEG_VARIANTS[name]
