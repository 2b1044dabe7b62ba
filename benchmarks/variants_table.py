"""Write ``docs/variants.md``: parameters and MACs of every registered MedNeXt variant.

Conditions (also written into the document):

* segmentation, seed variants (``mednext_*``): 2D, 1 x 224 x 224 input, reference topology (6 stages, strides 1,2,2,2,2,2);
* segmentation, Roy et al. variants (``mednextv1_*``) and MedNeXt-v2 presets (``mednextv2_*``): 3D, 1 x 128^3 input,
  reference topology (5 stages), and also 2D, 1 x 224 x 224 (6 stages, widths 32 doubling, capped at 512);
* classification (``mednext_cls_*``): 3 x 224 x 224 input;
* MACs = FLOPs / 2 from ``torch.utils.flop_counter.FlopCounterMode`` for one forward pass of one sample in inference
  mode (deep supervision off). The counter sees convolutions (transposed ones included) and matrix products only;
  norms, activations and element-wise products are not counted. Parameters include the deep-supervision heads
  (they always exist).

Models are built on the ``meta`` device, so the script needs no real memory or compute and runs in seconds.
``tests/test_networks.py`` parses the table and compares the parameter counts with freshly built models.

Usage::

    python benchmarks/variants_table.py            # writes docs/variants.md
    python benchmarks/variants_table.py --stdout   # prints instead
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from nnunetv2_mednext.networks import CLS_VARIANTS, create_model, get_seg_variant, list_models, reference_topology
from nnunetv2_mednext.networks.roy_weights import roy_key_map

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "variants.md"

SEG_CLASSES = 9  # Synapse (8 organs + background), the seed paper's reference task
CLS_CLASSES = 2

# Roy et al. README (MIC-DKFZ/MedNeXt), 3D 128^3: params (M) and "GFLOPs" for k3 / k5 (the numbers its README publishes).
ROY_README = {
    "s": ((5.6, 5.9), (130, 169)),
    "b": ((10.5, 11.0), (170, 208)),
    "m": ((17.6, 18.3), (248, 308)),
    "l": ((61.8, 63.0), (500, 564)),
}


@dataclass
class Row:
    name: str
    task: str
    block: str
    in_channels: int
    spatial: tuple[int, ...]
    classes: int
    params: int
    macs: int

    @property
    def input(self) -> str:
        return "×".join(str(v) for v in (self.in_channels, *self.spatial))


def build(name: str, in_channels: int, spatial: tuple[int, ...], classes: int, device: str = "meta") -> torch.nn.Module:
    """The model as the table describes it (reference topology for segmentation variants)."""
    with torch.device(device):
        if name in CLS_VARIANTS:
            return create_model(name, in_chans=in_channels, num_classes=classes)
        return create_model(name, input_channels=in_channels, num_classes=classes, spatial_dims=len(spatial))


def count(name: str, in_channels: int, spatial: tuple[int, ...], classes: int) -> tuple[int, int]:
    """``(params, MACs)`` of one forward pass of one sample."""
    model = build(name, in_channels, spatial, classes).eval()
    params = sum(p.numel() for p in model.parameters())
    x = torch.zeros((1, in_channels, *spatial), device="meta")
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return params, counter.get_total_flops() // 2


def roy_counts(name: str, in_channels: int, classes: int) -> tuple[int, int]:
    """``(params, params of the official code)`` of a Roy et al. variant with its bottleneck head (3D)."""
    with torch.device("meta"):
        model = create_model(name, input_channels=in_channels, num_classes=classes, spatial_dims=3, ds_bottleneck=True)
    params = sum(p.numel() for p in model.parameters())
    dw_biases = sum(math.prod(t.shape) for t in roy_key_map(model) if t.key.endswith(".conv1.bias"))
    return params, params + dw_biases + 1  # + the official dummy_tensor


def collect() -> list[Row]:
    rows = []
    for name in ordered(list_models()):
        if name in CLS_VARIANTS:
            settings = [("classification", "seed", 3, (224, 224), CLS_CLASSES)]
        else:
            block = get_seg_variant(name).block
            if block in ("v1", "v2"):
                settings = [("segmentation", block, 1, (128, 128, 128), SEG_CLASSES),
                            ("segmentation", block, 1, (224, 224), SEG_CLASSES)]
            else:
                settings = [("segmentation", block, 1, (224, 224), SEG_CLASSES)]
        for task, block, cin, spatial, classes in settings:
            params, macs = count(name, cin, spatial, classes)
            rows.append(Row(name, task, block, cin, spatial, classes, params, macs))
    return rows


def ordered(names: list[str]) -> list[str]:
    """Seed segmentation (T, S, B), Roy et al. (S, B, M, L; k3, k5), MedNeXt-v2 (S, B, M), then classification."""
    size = {"t": 0, "s": 1, "b": 2, "m": 3, "l": 4}

    def key(name: str) -> tuple[int, int, str]:
        family = 3 if name in CLS_VARIANTS else 1 if name.startswith("mednextv1_") else \
            2 if name.startswith("mednextv2_") else 0
        return family, size.get(name.split("_")[-2 if family == 1 else -1], 9), name

    return sorted(names, key=key)


def _l(values) -> str:
    return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


def _m(v: int) -> str:
    return f"{v / 1e6:.2f}"


def _g(v: int) -> str:
    return f"{v / 1e9:.2f}"


def render(rows: list[Row]) -> str:
    out = [
        "# MedNeXt variants: parameters and MACs",
        "",
        "Generated by `python benchmarks/variants_table.py`; do not edit by hand "
        "(`tests/test_networks.py` checks the parameter counts against freshly built models).",
        "",
        "Conditions:",
        "",
        f"* **Segmentation, seed variants** (`mednext_*`): 2D input 1×224×224, {SEG_CLASSES} classes (Synapse), reference "
        "topology = 6 stages, strides 1,2,2,2,2,2, kernels 3 (`reference_topology(2)`).",
        f"* **Segmentation, Roy et al. variants** (`mednextv1_*`): 3D input 1×128×128×128, {SEG_CLASSES} classes, 5 stages "
        "(widths 32/64/128/256/512: four encoder levels + bottleneck, as in Roy et al.); also 2D 1×224×224 with the "
        "6-stage 2D reference topology (widths 32 doubling, capped at 512).",
        "* **Segmentation, MedNeXt-v2 presets** (`mednextv2_*`, ours: docs/architecture.md section 2a): as the Roy et al. "
        "variants, the reference topologies' widths (32 doubling).",
        f"* **Classification** (`mednext_cls_*`): input 3×224×224, {CLS_CLASSES} classes.",
        "* **Params**: all parameters, deep-supervision heads included (they always exist; deep supervision only "
        "switches their outputs).",
        "* **GMACs** = FLOPs / 2 / 1e9 from `torch.utils.flop_counter.FlopCounterMode`, one forward pass, batch 1, "
        "inference (deep supervision off). Counted: convolutions (incl. transposed and depthwise) and matrix "
        "products; not counted: norms, activations, element-wise products and additions.",
        "",
        "## All variants",
        "",
        "| Variant | Task | Block | Input | Classes | Params | Params (M) | GMACs |",
        "|---|---|---|---|---|---:|---:|---:|",
    ]
    for r in rows:
        out.append(f"| `{r.name}` | {r.task} | {r.block} | {r.input} | {r.classes} | {r.params} | {_m(r.params)} | {_g(r.macs)} |")
    out += [
        "",
        "## Roy et al. variants next to the official code and the published numbers (3D, 128³)",
        "",
        "Built as the V1 planners' `roy` topology builds them: 5 levels, widths 32-512, the bottleneck head on "
        "(`ds_bottleneck=True`: five 1×1 heads, as the official network trained with deep supervision), 1 input "
        f"channel, {SEG_CLASSES} classes. *Official code* = this port's parameters + one bias per depthwise-conv "
        "channel + the official `dummy_tensor` (1): this port drops the depthwise biases because the per-channel "
        "GroupNorm right after them cancels them exactly (no function, no gradient); the sum equals the count of "
        "the official `MedNeXt` class (checked when `tests/fixtures/roy_v1_reference.json` was made). GMACs: "
        "inference, one output; equal to the official network's under the same counter (same up-block grid). "
        "Published: MIC-DKFZ/MedNeXt README (rounded; its \"GFLOPs\" behave like MACs).",
        "",
        "| Variant | Params | Params + depthwise biases (= official code) | published (M) | GMACs | published \"GFLOPs\" |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r.block != "v1" or len(r.spatial) != 3:
            continue
        size, k = r.name.split("_")[1], int(r.name[-1])
        (p3, p5), (g3, g5) = ROY_README[size]
        params, official = roy_counts(r.name, r.in_channels, r.classes)
        out.append(f"| `{r.name}` | {params} ({_m(params)} M) | {official} ({_m(official)} M) | {p3 if k == 3 else p5} | "
                   f"{_g(r.macs)} | {g3 if k == 3 else g5} |")
    out += [
        "",
        "## Recipes, resolved at the reference topology",
        "",
        "Per-level lists run from the highest resolution (level 0) to the bottleneck; decoder lists have one entry "
        "fewer. On an nnU-Net plan the recipe is applied to the plan's stages, kernels and strides (lists are cut, or "
        "padded with their last value). The Roy et al. variants take their widths from the plan; the V1 planners "
        "write Roy et al.'s (`roy` topology: at most 5 levels, widths 32·2^i), stock nnU-Net plans cap them (320 in "
        "3D, see docs/nnunet.md).",
        "",
        "| Variant | Topology | Widths | Blocks enc / dec | Expansion enc / dec | Notes |",
        "|---|---|---|---|---|---|",
    ]
    for name in ordered(list_models()):
        if name in CLS_VARIANTS:
            cfg = CLS_VARIANTS[name]
            out.append(f"| `{name}` | 4 stages (/4 stem, /32 last) | {_l(cfg['dims'])} | {_l(cfg['depths'])} | 4 | "
                       "seed blocks, option A, BatchNorm, drop path 0.1 |")
            continue
        v = get_seg_variant(name)
        dims = 3 if v.block in ("v1", "v2") else 2
        topo = reference_topology(dims)
        kw = v.arch_kwargs(topo["n_stages"], topo["kernel_sizes"], topo["strides"], topo["conv_op"])
        notes = [v.description.split(":")[0].split(";")[0].rstrip(".")]
        if v.n_light_levels:
            notes.append(f"Roy et al. blocks on levels 0-{v.n_light_levels - 1}, seed blocks below")
        if v.checkpointing:
            notes.append("gradient checkpointing on")
        out.append(
            f"| `{name}` | {dims}D, {topo['n_stages']} stages | {_l(kw['features_per_stage'])} | "
            f"{_l(kw['n_blocks_per_stage'])} / {_l(kw['n_blocks_per_stage_decoder'])} | "
            f"{_l(kw['exp_ratio'])} / {_l(kw['exp_ratio_decoder'])} | {'; '.join(notes)} |"
        )
    out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stdout", action="store_true", help="print the markdown instead of writing docs/variants.md")
    args = parser.parse_args(argv)
    text = render(collect())
    if args.stdout:
        print(text)
    else:
        DOC.parent.mkdir(parents=True, exist_ok=True)
        DOC.write_text(text, encoding="utf-8")
        print(f"wrote {DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
