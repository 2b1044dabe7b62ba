"""Docs hygiene: README and docs/ name no path of the machine they were written on and no file outside the repo."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# absolute folders of a build machine (temp folders, home folders, the workspace) and files that are not shipped
FORBIDDEN = re.compile(r"(?<![\w$.-])(/tmp/|/work/|/root/|/home/|/Users/|[A-Z]:\\\\)|paper\.md|\.\./shared/data/\w")


@pytest.mark.parametrize("path", DOCS, ids=[p.name for p in DOCS])
def test_docs_name_no_machine_paths(path: Path) -> None:
    bad = [f"{path.name}:{i}: {line.strip()[:120]}" for i, line in enumerate(path.read_text().splitlines(), 1)
           if FORBIDDEN.search(line)]
    assert not bad, "use $nnUNet_raw-style variables or repository-relative paths:\n" + "\n".join(bad)


def test_trainers_doc_lists_every_exported_name() -> None:
    """``docs/trainers.md`` is the generated catalogue of the installed package, name for name."""
    from nnunetv2_mednext.nnunet.planners import PLANNERS
    from nnunetv2_mednext.nnunet.trainers import TRAINERS
    from nnunetv2_mednext.nnunet.trainers.catalog import catalog_markdown

    text = (ROOT / "docs" / "trainers.md").read_text()
    assert text == catalog_markdown(), "regenerate: nnunetv2-mednext info --trainers --markdown > docs/trainers.md"
    listed = set(re.findall(r"^\| `(\w+)` \|", text, flags=re.M))
    assert listed == set(TRAINERS) | set(PLANNERS)
