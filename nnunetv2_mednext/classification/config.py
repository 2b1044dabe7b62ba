"""Training settings with defaults for small medical 2D sets (AdamW, warm-up + cosine, label smoothing
0.1, drop-path 0.1 in the model)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from nnunetv2_mednext.errors import MedNeXtUserError

# settings a resumed run must share with the run it continues
RESUME_KEYS = ("model", "model_kwargs", "input_size", "channels", "seed", "time_budget")


@dataclass
class TrainConfig:
    model: str = "mednext_cls_t"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    input_size: int = 224
    channels: str = "auto"  # auto (from the fingerprint) | grey | rgb
    epochs: int = 100
    time_budget: float | None = None  # seconds of training per fold: epochs from a short pilot (replaces epochs)
    batch_size: int = 32
    lr: float = 5e-4
    min_lr: float = 1e-6
    weight_decay: float = 0.05
    warmup_epochs: int = 5
    label_smoothing: float = 0.1
    balance: str = "weights"  # weights (class-weighted loss) | sampler (class-balanced sampling) | none
    augment: str = "default"  # default | light | none
    color_jitter: bool = False  # saturation/hue jitter, colour images only (e.g. dermatology photos)
    grad_clip: float | None = None
    seed: int = 12345
    workers: int = -1  # -1: 0 on CPU, min(4, cores) on CUDA
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: str = "auto"  # auto (on for CUDA) | on | off
    channels_last: str = "auto"  # auto (on for CUDA) | on | off
    val_every: int = 1
    report_checkpoint: str = "auto"  # auto (best when the fold has a test part, else final) | final | best
    cache_images: str = "auto"  # auto (in memory when < 8 GiB) | on | off
    quiet: bool = False

    def validate(self) -> TrainConfig:
        checks = [
            (self.epochs >= 1, "--epochs must be >= 1"),
            (self.time_budget is None or self.time_budget > 0, "--time-budget must be > 0 seconds"),
            (self.batch_size >= 1, "--batch-size must be >= 1"),
            (self.input_size >= 16, "--input-size must be >= 16"),
            (self.lr > 0, "--lr must be > 0"),
            (0 <= self.label_smoothing < 1, "--label-smoothing must be in [0, 1)"),
            (self.warmup_epochs >= 0, "--warmup-epochs must be >= 0"),
            (self.balance in ("weights", "sampler", "none"), "--balance must be weights, sampler or none"),
            (self.augment in ("default", "light", "none"), "--augment must be default, light or none"),
            (self.channels in ("auto", "grey", "rgb"), "--channels must be auto, grey or rgb"),
            (self.report_checkpoint in ("auto", "final", "best"), "--report-checkpoint must be auto, final or best"),
            (self.amp in ("auto", "on", "off"), "--amp must be auto, on or off"),
            (self.val_every >= 1, "--val-every must be >= 1"),
        ]
        for ok, msg in checks:
            if not ok:
                raise MedNeXtUserError(f"{msg}; fix: change the option")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
