"""2D classification pyramid on the seed MedNeXt blocks (pure PyTorch).

Stem (two strided 3x3 convs, /4) -> 4 stages (strided 3x3 conv + BN downsampling from stage 2 on, then blocks)
-> global average pooling -> LayerNorm -> Linear.

On CPU the network runs on channels-last activations through the fast layers of :mod:`.fastops` (pointwise
convolutions as GEMMs, depthwise convolutions without oneDNN's slow large-kernel paths), as the segmentation
networks do; the computed function and the ``state_dict`` are those of the plain layers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .execution import prepare_input
from .layers import conv_layer, init_weights
from .seed_blocks import DEFAULT_LA_KERNELS, DEFAULT_SEM_KERNELS, MedNeXtBlock


class MedNeXtClassifier(nn.Module):
    """Seed MedNeXt image classifier for any number of input channels and classes."""

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 2,
        dims: Sequence[int] = (32, 64, 160, 256),
        depths: Sequence[int] = (2, 2, 4, 2),
        composition: str = "A",
        la_ffn_stages: Sequence[int] | None = None,
        exp_ratio: float = 4,
        norm: str = "batch",
        layer_scale: float | None = 1e-2,
        drop_path_rate: float = 0.1,
        drop_rate: float = 0.0,
        sem_kernels: Sequence[int] = DEFAULT_SEM_KERNELS,
        la_kernels: Sequence[int] = DEFAULT_LA_KERNELS,
    ) -> None:
        super().__init__()
        if len(dims) != len(depths):
            raise ValueError(f"dims and depths must have the same length, got {len(dims)} and {len(depths)}")
        if in_chans < 1 or num_classes < 1:
            raise ValueError(f"in_chans and num_classes must be >= 1, got {in_chans} and {num_classes}")
        c0 = dims[0]
        self.stem = nn.Sequential(
            conv_layer(nn.Conv2d, in_chans, c0 // 2, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(c0 // 2),
            nn.GELU(),
            conv_layer(nn.Conv2d, c0 // 2, c0, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(c0),
        )
        n_blocks = max(sum(depths), 1)  # plain Python: torch.linspace would fail under a meta-device context
        rates = [drop_path_rate * i / max(n_blocks - 1, 1) for i in range(n_blocks)]
        # option B: LA-FFN only in the last two stages by default (with every stage, B would equal A)
        la_stages = set(la_ffn_stages) if la_ffn_stages is not None else {len(dims) - 2, len(dims) - 1}
        self.stages = nn.ModuleList()
        k = 0
        for i, (dim, depth) in enumerate(zip(dims, depths)):
            layers: list[nn.Module] = []
            if i > 0:
                layers += [conv_layer(nn.Conv2d, dims[i - 1], dim, 3, stride=2, padding=1, bias=False),
                           nn.BatchNorm2d(dim)]
            for _ in range(depth):
                layers.append(
                    MedNeXtBlock(
                        dim, nn.Conv2d, composition, exp_ratio, norm, layer_scale, rates[k], sem_kernels, la_kernels,
                        use_la_ffn=composition == "A" or i in la_stages,
                    )
                )
                k += 1
            self.stages.append(nn.Sequential(*layers))
        self.norm = nn.LayerNorm(dims[-1])
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(dims[-1], num_classes)
        self.num_classes, self.num_features = num_classes, dims[-1]
        self.apply(init_weights)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled, normalised features ``(B, dims[-1])``."""
        x = self.stem(prepare_input(x))
        for stage in self.stages:
            x = stage(x)
        return self.norm(x.mean((2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.head_drop(self.forward_features(x)))

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head for a new number of classes."""
        self.head = nn.Linear(self.num_features, num_classes)
        init_weights(self.head)
        self.num_classes = num_classes
