"""Section ``planner``: the MedNeXt planner's memory estimate (and nnU-Net's for ``PlainConvUNet``) against the
peak the matrix section measured, and how to re-fit the planner's constants."""

from __future__ import annotations

import statistics

from ..findings import Report
from .base import Context, Section, gib, shape, table

RATIO_TOLERANCE = 0.25  # planner estimate vs measured peak
# nnU-Net 2.8 ExperimentPlanner: a proxy of UNet_reference_val_{3d,2d} at batch {2,12} fills 8 GB
NNUNET_REFERENCE = {3: (560_000_000, 2), 2: (85_000_000, 12)}
NNUNET_REFERENCE_GB = 8


def planner_estimate(net_name: str, proxy: int, batch: int, dims: int, device_type: str) -> tuple[float | None, str]:
    """Memory the planners predict for a training step (bytes) and the model's name.

    MedNeXt nets: ``proxy x batch x BYTES_PER_PROXY_UNIT`` (GPU, fp16 AMP) or ``x BYTES_PER_PROXY_UNIT_FP32`` (CPU,
    compared with the peak bytes allocated by a step on the GPU path). ``PlainConvUNet``: nnU-Net's reference
    values (GPU only).
    """
    from nnunetv2_mednext.nnunet.planners import mednext_planner as mp

    if net_name != "PlainConvUNet":
        if device_type == "cuda":
            return proxy * batch * mp.BYTES_PER_PROXY_UNIT, "MedNeXt planner (fp16 AMP)"
        return proxy * batch * mp.BYTES_PER_PROXY_UNIT_FP32, "MedNeXt planner, fp32 activations"
    if device_type != "cuda":
        return None, "nnU-Net planner (GPU model only)"
    ref, ref_bs = NNUNET_REFERENCE[dims]
    return proxy * batch * NNUNET_REFERENCE_GB * 1e9 / (ref * ref_bs), "nnU-Net planner reference values"


def planner_rows(matrix: list[dict], device_type: str) -> list[dict]:
    """Estimate vs measured for the rows that match the planner's model (fp16 on CUDA / fp32 on CPU, eager)."""
    base_amp = "fp16" if device_type == "cuda" else "fp32"
    rows = []
    for r in matrix:
        if r.get("status") != "ok" or r["amp"] != base_amp or r["channels_last"] or r["compile"]:
            continue
        dims = len(r["patch"])
        estimate, model = planner_estimate(r["net"], r["proxy"], r["batch"], dims, device_type)
        measured = r.get("peak_bytes")
        row = {"net": r["net"], "config": r["config"], "patch": r["patch"], "batch": r["batch"], "proxy": r["proxy"],
               "checkpointing": r["checkpointing"], "model": model, "estimate_bytes": estimate,
               "measured_bytes": measured, "measured_what": "peak max_memory_allocated" if device_type == "cuda"
               else "peak bytes allocated by a training step on the GPU path (fp32, plain ops)"}
        if estimate and measured:
            row["ratio"] = round(measured / estimate, 3)
            row["within_tolerance"] = abs(row["ratio"] - 1) <= RATIO_TOLERANCE
            row["bytes_per_proxy_unit"] = round(measured / (r["proxy"] * r["batch"]), 3)
        rows.append(row)
    return rows


def refit_advice(rows: list[dict], device_type: str) -> list[str]:
    """How to re-fit the MedNeXt planner's constants from the planner rows (printed and written to the report)."""
    from nnunetv2_mednext.nnunet.planners import mednext_planner as mp

    fit_rows = [r for r in rows if r["net"] != "PlainConvUNet" and not r["checkpointing"] and "bytes_per_proxy_unit" in r]
    lines = []
    if not fit_rows:
        return ["No MedNeXt row without checkpointing was measured: nothing to re-fit from."]
    fit = statistics.median(r["bytes_per_proxy_unit"] for r in fit_rows)
    used = ", ".join(f"{r['net']} {r['config']} {r['bytes_per_proxy_unit']}" for r in fit_rows)
    if device_type == "cuda":
        now = mp.BYTES_PER_PROXY_UNIT
        lines.append(f"Measured bytes per proxy unit (peak / (proxy x batch)), MedNeXt rows without checkpointing: "
                     f"{used}; median {fit:.3f}. The planner uses BYTES_PER_PROXY_UNIT = {now:.3f} "
                     f"(= BYTES_PER_PROXY_UNIT_AMP {mp.BYTES_PER_PROXY_UNIT_AMP} x OVERHEAD_FACTOR "
                     f"{mp.OVERHEAD_FACTOR}).")
        if abs(fit / now - 1) > RATIO_TOLERANCE:
            lines.append(f"Outside ±{RATIO_TOLERANCE:.0%}: re-fit in nnunetv2_mednext/planners/mednext_planner.py by "
                         f"setting OVERHEAD_FACTOR = {fit / mp.BYTES_PER_PROXY_UNIT_AMP:.3f} "
                         f"(so that BYTES_PER_PROXY_UNIT = {fit:.3f}); keep BYTES_PER_PROXY_UNIT_AMP (CPU-measured by "
                         "benchmarks/calibrate_planner.py), re-run this check and the planner tests.")
        else:
            lines.append(f"Within ±{RATIO_TOLERANCE:.0%}: the constants stand.")
        lines.append("Rows with gradient checkpointing are not in the fit: the planner's proxy does not model "
                     "checkpointing, so it over-estimates those networks (their ratio shows by how much).")
    else:
        now = mp.BYTES_PER_PROXY_UNIT_FP32
        lines.append(f"CPU (fp32): peak bytes a training step allocates per proxy unit, MedNeXt rows without "
                     f"checkpointing: {used}; median {fit:.3f} against BYTES_PER_PROXY_UNIT_FP32 = {now}. This checks "
                     "only the fp32 part of the model; OVERHEAD_FACTOR needs the CUDA run of this check.")
        if abs(fit / now - 1) > RATIO_TOLERANCE:
            lines.append(f"Outside ±{RATIO_TOLERANCE:.0%} at these (small) CPU shapes; benchmarks/calibrate_planner.py "
                         "measures at plan-sized shapes and is the reference for BYTES_PER_PROXY_UNIT_FP32.")
    return lines


def run(ctx: Context) -> None:
    ctx.report.planner = planner_rows(ctx.report.matrix, ctx.device.type)
    ctx.report.refit = refit_advice(ctx.report.planner, ctx.device.type)


def attention(report: Report) -> list[str]:
    return [f"planner: {r['net']} {r['config']}: measured / estimate = {r['ratio']}"
            + (" (gradient checkpointing, not in the planner's model)" if r["checkpointing"] else "")
            for r in report.planner if r.get("within_tolerance") is False and r["net"] != "PlainConvUNet"]


def render(report: Report) -> list[str]:
    if not report.planner:
        return []

    def cells(r: dict) -> list:
        ratio = r.get("ratio")
        flag = "" if ratio is None else (" ok" if r["within_tolerance"] else " **flag**")
        return [r["net"], r["config"], f"{shape(r)} x {r['batch']}", "on" if r["checkpointing"] else "off", r["model"],
                gib(r["estimate_bytes"]), f"{gib(r['measured_bytes'])} ({r['measured_what']})",
                f"{ratio if ratio is not None else '-'}{flag}", r.get("bytes_per_proxy_unit", "-")]

    out = table("Planner memory model vs measured", [f"ratio = measured / estimate; flagged outside "
                                                      f"±{RATIO_TOLERANCE:.0%}."],
                ["net", "config", "patch x batch", "ckpt", "model", ">estimate", ">measured", ">ratio",
                 ">bytes / proxy unit"], map(cells, report.planner))
    return out + ["", "Re-fitting the constants:", ""] + [f"* {line}" for line in report.refit]


SECTION = Section("planner", run, render, attention=attention)
