"""What one run of the device check measures: the networks, the sections and the three profiles (gpu, cpu, quick).

No torch here: the command line reads these names before anything heavy is imported.
"""

from __future__ import annotations

from dataclasses import dataclass

NETS: dict[str, str] = {  # network label -> trainer that builds it (and whose optimiser recipe is used)
    "mednext_t": "nnUNetTrainerMedNeXt",
    "mednextv1_s_k3": "nnUNetTrainerMedNeXtV1_S_k3",
    "mednextv1_l_k3": "nnUNetTrainerMedNeXtV1_L_k3",
    "PlainConvUNet": "nnUNetTrainer",
}
NUM_CLASSES = 3
# the sections in the order they run (doctor/sections/ has one module each)
SECTIONS = ("matrix", "stability", "planner", "compile", "routes", "predictor", "classify", "nnunet_train")
ROUTE_NETS = ("mednext_t", "mednextv1_s_k3", "PlainConvUNet")  # PlainConvUNet: the reference of the ratios

WORKER_FLAG = "--compile-worker"  # makes ``python -m nnunetv2_mednext.doctor`` the child (worker.py, child.py)

@dataclass(frozen=True)
class Profile:
    """Shapes, step counts and time budgets of one run of the check.

    ``matrix``: (configuration, AMP mode, channels-last) in priority order; each is run for every network.
    ``sections``: seconds each section may take at most; ``budget_s``: the whole run. What does not fit is skipped.
    ``routes_configs``: the plans the routes section measures, in priority order; ``routes_compiled_nets``: the
    networks whose compiled routes it measures.
    """

    name: str
    plans: dict[str, dict]  # configuration -> {"patch": [...], "batch_size": int}
    matrix: tuple[tuple[str, str, bool], ...]
    warmup: int
    repeats: int
    stability_config: str
    stability_steps: int
    stability_amp: str
    compile_backend: str
    compile_items: tuple[tuple[str, str], ...]  # (network, configuration)
    predictor_nets: tuple[str, ...]
    predictor_config: str
    predictor_volume: tuple[int, ...]
    budget_s: float
    sections: dict[str, float]
    classify_size: int = 224  # the classifiers' training steps: input px, batch
    classify_batch: int = 32
    classify_train_size: int = 64  # classify train end to end on a synthetic set
    routes_configs: tuple[str, ...] = ("3d_fullres", "2d")
    routes_compiled_nets: tuple[str, ...] = ROUTE_NETS


PROFILES: dict[str, Profile] = {
    # one GPU, under 9 minutes with start-up: 3D plan 128^3 batch 2, 2D plan 256^2 batch 12 (nnU-Net's reference
    # batch). The shares (nnunet_train aside) add up to the budget; the routes section reuses the compile section's
    # compiled rows. Estimates until a GPU run's meta.section_seconds says otherwise.
    "gpu": Profile(
        "gpu", {"3d_fullres": {"patch": [128] * 3, "batch_size": 2}, "2d": {"patch": [256, 256], "batch_size": 12},
                "3d_stability": {"patch": [64] * 3, "batch_size": 2}},
        (("3d_fullres", "fp16", False), ("3d_fullres", "bf16", False), ("2d", "fp16", False),
         ("3d_fullres", "fp16", True), ("2d", "bf16", False), ("2d", "fp16", True)),
        2, 8, "3d_stability", 300, "fp16",
        "inductor", (("mednext_t", "3d_fullres"), ("mednextv1_l_k3", "3d_fullres"), ("PlainConvUNet", "3d_fullres"),
                     ("mednextv1_s_k3", "3d_fullres"), ("mednext_t", "2d"), ("PlainConvUNet", "2d")),
        tuple(NETS), "3d_fullres", (160, 192, 192), 460.0,
        # with 2+ GPUs the matrix and compile sections give 40 s and 60 s to the DDP run (see check.py)
        {"matrix": 110.0, "stability": 75.0, "compile": 110.0, "routes": 105.0, "predictor": 30.0, "classify": 30.0,
         "nnunet_train": 120.0},
    ),
    # CPU subset, full: about half an hour on two shared cores; inductor compiles (minutes per network on one core),
    # so the compiled routes are mednext_t's on the 2D plan only
    "cpu": Profile(
        "cpu", {"3d_fullres": {"patch": [32] * 3, "batch_size": 1}, "2d": {"patch": [64, 64], "batch_size": 2},
                "2d_stability": {"patch": [32, 32], "batch_size": 2}},
        (("3d_fullres", "fp32", False), ("3d_fullres", "bf16", False), ("2d", "fp32", False), ("2d", "bf16", False),
         ("3d_fullres", "fp32", True), ("2d", "fp32", True)),
        1, 3, "2d_stability", 100, "bf16",
        "inductor", (("mednext_t", "2d"), ("mednextv1_l_k3", "2d"), ("PlainConvUNet", "2d")),
        tuple(NETS), "3d_fullres", (48, 48, 48), 2400.0,
        {"matrix": 600.0, "stability": 600.0, "compile": 900.0, "routes": 600.0, "predictor": 120.0,
         "classify": 120.0, "nnunet_train": 0.0},
        classify_size=128, classify_batch=8, classify_train_size=32, routes_configs=("2d",),
        routes_compiled_nets=("mednext_t",),
    ),
    # CPU subset for CI: about a minute on two cores; compile traces with aot_eager (inductor's CPU code
    # generation alone takes minutes per network on one core). Routes at the 3D plan's 16^3, compiled routes for
    # mednext_t and the U-Net only.
    "quick": Profile(
        "quick", {"3d_fullres": {"patch": [16] * 3, "batch_size": 1}, "2d": {"patch": [32, 32], "batch_size": 2},
                  "2d_stability": {"patch": [16, 16], "batch_size": 4}},
        (("3d_fullres", "fp32", False), ("3d_fullres", "bf16", False), ("2d", "fp32", False), ("2d", "bf16", False)),
        1, 1, "2d_stability", 20, "bf16",
        "aot_eager", (("mednext_t", "2d"), ("mednextv1_l_k3", "2d")),
        ("mednext_t",), "3d_fullres", (24, 24, 24), 270.0,
        {"matrix": 90.0, "stability": 60.0, "compile": 60.0, "routes": 45.0, "predictor": 30.0, "classify": 30.0,
         "nnunet_train": 0.0},
        classify_size=32, classify_batch=4, classify_train_size=32, routes_configs=("3d_fullres",),
        routes_compiled_nets=("mednext_t", "PlainConvUNet"),
    ),
}
