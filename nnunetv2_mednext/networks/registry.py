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
        if self.widths is not None:
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


_SEED_DESC = "Seed MedNeXt U-Net ({}): SEM / LA-FFN / SDW-FFN blocks from 1/8 resolution, Roy et al. blocks above."
_seg(SegVariant("mednext_t", "seed", (32, 64, 96, 128, 160, 192, 224, 256), (1, 1, 1, 2, 2, 2), (1,), (2, 2, 2, 4), (2, 2, 2, 4),
                n_light_levels=3, description=_SEED_DESC.format("T, the default")))
_seg(SegVariant("mednext_s", "seed", (32, 64, 128, 160, 224, 256), (1, 1, 2, 2, 2, 2), (1,), (2, 2, 3, 4), (2, 2, 3, 4),
                n_light_levels=2, description=_SEED_DESC.format("S")))
_seg(SegVariant("mednext_b", "seed", (32, 64, 128, 192, 256, 320), (1, 1, 2, 2, 3, 2), (1, 1, 1, 2, 2), (2, 2, 3, 4), (2, 2, 3, 4),
                n_light_levels=2, description=_SEED_DESC.format("B")))

_V1 = {  # Roy et al. Table: expansion ratio and blocks per level (encoder levels 0..3, bottleneck, decoder 3..0)
    "s": ((2, 2, 2, 2, 2), (2, 2, 2, 2), (2, 2, 2, 2, 2), (2, 2, 2, 2), False),
    "b": ((2, 3, 4, 4, 4), (2, 3, 4, 4), (2, 2, 2, 2, 2), (2, 2, 2, 2), False),
    "m": ((2, 3, 4, 4, 4), (2, 3, 4, 4), (3, 4, 4, 4, 4), (3, 4, 4, 4), True),
    "l": ((3, 4, 8, 8, 8), (3, 4, 8, 8), (3, 4, 8, 8, 8), (3, 4, 8, 8), True),
}
for _size, (_r, _rd, _b, _bd, _ckpt) in _V1.items():
    for _k in (3, 5):
        _seg(SegVariant(f"mednextv1_{_size}_k{_k}", "v1", None, _b, _bd, _r, _rd, kernel_size=_k, checkpointing=_ckpt,
                        description=f"Roy et al. MedNeXt {_size.upper()} (kernel {_k}); widths from the plan (32 doubling)."))


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
