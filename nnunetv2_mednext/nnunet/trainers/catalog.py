"""The catalogue of every trainer and planner name the package exports, with its one-line description.

``docs/trainers.md`` is this catalogue (``nnunetv2-mednext info --trainers --markdown > docs/trainers.md``);
``tests/test_docs.py`` fails when the two differ.
"""

from __future__ import annotations


def _one_line(cls: type) -> str:
    """The first line of the class docstring (generated classes have one line)."""
    return ((cls.__doc__ or "").strip().splitlines() or [""])[0].replace("``", "`")


def catalog_markdown() -> str:
    """``docs/trainers.md``: one table of trainers (``-tr``) and one of planners (``-pl``)."""
    from nnunetv2_mednext.nnunet.planners import PLANNERS
    from nnunetv2_mednext.nnunet.trainers import TRAINERS

    lines = [
        "# Trainers and planners",
        "",
        "Generated from the package (`nnunetv2-mednext info --trainers --markdown > docs/trainers.md`; "
        "`tests/test_docs.py` checks it is current). Every name works in the stock commands: "
        "`nnUNetv2_train DATASET CONFIG FOLD -tr NAME`, `nnUNetv2_predict ... -tr NAME`, and planners through "
        "`nnunetv2-mednext plan_and_preprocess -d DATASET -pl NAME`. Run lengths: `_Nepochs` are N epochs of "
        "nnU-Net's 250 iterations, `_tiny` is a smoke test (2 x 4 iterations), `_budget` reads "
        "`NNUNETV2_MEDNEXT_BUDGET=EPOCHS,ITERS[,VAL_ITERS]`.",
        "",
        f"## Trainers ({len(TRAINERS)})",
        "",
        "| `-tr` | what it trains |",
        "|---|---|",
        *(f"| `{name}` | {_one_line(cls)} |" for name, cls in TRAINERS.items()),
        "",
        f"## Planners ({len(PLANNERS)})",
        "",
        "| `-pl` | plans name | what it plans |",
        "|---|---|---|",
        *(f"| `{name}` | `{cls.default_plans_name}` | {_one_line(cls)} |" for name, cls in PLANNERS.items()),
    ]
    return "\n".join(lines) + "\n"
