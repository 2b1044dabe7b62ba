"""``nnunetv2-mednext plan_and_preprocess``: nnU-Net's own ``nnUNetv2_plan_and_preprocess``, knowing our planners.

All arguments are nnU-Net's (``-d``, ``-c``, ``-np``, ``-npfp``, ``-gpu_memory_target``, ``--verify_dataset_integrity``
...). ``-pl`` defaults to ``nnUNetPlannerMedNeXt`` and also accepts every ``nnUNetPlannerMedNeXt*`` name as well as
nnU-Net's own planners; several names plan one after the other (the fingerprint is extracted once).
"""

from __future__ import annotations

import argparse
import sys

NAME = "plan_and_preprocess"
HELP = "nnUNetv2_plan_and_preprocess with the MedNeXt planners (-pl nnUNetPlannerMedNeXt by default)"
DESCRIPTION = __doc__
ORDER = 10


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-d", nargs="+", required=True, help="dataset id(s), as for nnUNetv2_plan_and_preprocess")
    parser.add_argument("-pl", nargs="+", default=["nnUNetPlannerMedNeXt"], metavar="PLANNER",
                        help="planner class(es), run one after the other (default: nnUNetPlannerMedNeXt)")
    parser.epilog = "Every other nnUNetv2_plan_and_preprocess argument is passed through unchanged."
    parser.set_defaults(_accepts_extra=True)


def install_planner_lookup() -> None:
    """Make nnU-Net's planner lookup (``-pl NAME``) resolve our planners first; nnU-Net's own still work."""
    import nnunetv2.experiment_planning.plan_and_preprocess_api as api

    from nnunetv2_mednext.nnunet.planners import PLANNERS

    if getattr(api.recursive_find_python_class, "_mednext", False):
        return
    original = api.recursive_find_python_class

    def lookup(folder, class_name, current_module, *args, **kwargs):  # type: ignore[no-untyped-def]
        if class_name in PLANNERS:
            return PLANNERS[class_name]
        found = original(folder, class_name, current_module, *args, **kwargs)
        if found is None:
            from nnunetv2_mednext.errors import MedNeXtUserError

            raise MedNeXtUserError(
                f"planner or fingerprint extractor {class_name!r} not found; MedNeXt planners: {', '.join(PLANNERS)}"
            )
        return found

    lookup._mednext = True  # type: ignore[attr-defined]
    api.recursive_find_python_class = lookup


def run(args: argparse.Namespace) -> int:
    from nnunetv2_mednext.nnunet.dataset_check import check_raw_dataset
    from nnunetv2_mednext.nnunet.env import find_dataset, require_env

    env = require_env()
    full = "--verify_dataset_integrity" in getattr(args, "extra", [])
    check_planner_names(args.pl)
    for d in args.d:  # nnU-Net fails deep inside (or reads on) on these; name the file and the fix first
        check_raw_dataset(env["nnUNet_raw"] / find_dataset(d), full=full)
    from nnunetv2.experiment_planning.plan_and_preprocess_entrypoints import plan_and_preprocess_entry

    install_planner_lookup()
    old = sys.argv
    try:
        for planner in args.pl:
            sys.argv = ["nnUNetv2_plan_and_preprocess", "-d", *args.d, "-pl", planner, *getattr(args, "extra", [])]
            plan_and_preprocess_entry()
    finally:
        sys.argv = old
    return 0


def check_planner_names(names: list[str]) -> None:
    """Fail before any work (fingerprinting takes minutes) when a planner name is unknown."""
    import difflib

    from nnunetv2_mednext.errors import MedNeXtUserError
    from nnunetv2_mednext.nnunet.planners import PLANNERS

    known = [*PLANNERS, *nnunet_planner_names()]
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
            hint = f"did you mean {' or '.join(close)}? " if close else ""
            raise MedNeXtUserError(
                f"unknown planner {name!r}; {hint}fix: pass -pl with one of the MedNeXt planners "
                f"({', '.join(PLANNERS)}) or nnU-Net's own ({', '.join(nnunet_planner_names())})"
            )


def nnunet_planner_names() -> list[str]:
    """Names of nnU-Net's own experiment planner classes (what its ``-pl`` accepts)."""
    import importlib
    import inspect
    import pkgutil

    import nnunetv2.experiment_planning.experiment_planners as pkg
    from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner

    names = set()
    for info in pkgutil.walk_packages(pkg.__path__, prefix=f"{pkg.__name__}."):
        try:
            module = importlib.import_module(info.name)
        except Exception:  # an optional planner whose dependencies are missing is simply not offered
            continue
        names.update(n for n, o in vars(module).items()
                     if inspect.isclass(o) and issubclass(o, ExperimentPlanner) and not n.startswith("_"))
    return sorted(names)
