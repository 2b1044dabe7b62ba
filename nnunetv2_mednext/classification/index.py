"""Finding the labelled images: a folder per class (ImageFolder layout) or a CSV ``path,label[,group]``.

Nothing here decodes pixels (see :mod:`.fingerprint`); problems with the layout stop with a one-line
:class:`~nnunetv2_mednext.errors.MedNeXtUserError`.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nnunetv2_mednext.errors import MedNeXtUserError

from .io import SUPPORTED_SUFFIXES, image_suffix, is_image_file

PATH_COLUMNS = ("path", "image", "file", "filename", "image_path")
LABEL_COLUMNS = ("label", "class", "target", "diagnosis")
GROUP_COLUMNS = ("group", "patient", "patient_id", "subject", "subject_id", "case")


@dataclass(frozen=True)
class Sample:
    """One labelled image. ``id`` is stable across machines: the path relative to the dataset folder (ImageFolder)
    or the path as written in the CSV."""

    id: str
    path: str
    label: str
    group: str | None = None


@dataclass
class DatasetIndex:
    samples: list[Sample]
    class_names: list[str]
    source: str
    kind: str  # "folder" or "csv"
    has_groups: bool = False
    _by_id: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._by_id = {s.id: i for i, s in enumerate(self.samples)}

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def ids(self) -> list[str]:
        return [s.id for s in self.samples]

    def position(self, sample_id: str) -> int | None:
        return self._by_id.get(sample_id)

    def labels(self) -> np.ndarray:
        """Integer labels in ``class_names`` order."""
        lut = {c: i for i, c in enumerate(self.class_names)}
        return np.array([lut[s.label] for s in self.samples], dtype=np.int64)

    def class_counts(self) -> dict[str, int]:
        counts = Counter(s.label for s in self.samples)
        return {c: counts.get(c, 0) for c in self.class_names}

    def subset(self, keep: list[int]) -> DatasetIndex:
        """A new index with the samples at ``keep`` (class names unchanged)."""
        return DatasetIndex([self.samples[i] for i in keep], list(self.class_names), self.source, self.kind,
                            self.has_groups)


def sort_class_names(names: set[str] | list[str]) -> list[str]:
    """Numeric labels in numeric order, anything else alphabetically."""
    names = list(set(names))
    try:
        return sorted(names, key=lambda n: (float(n), n))
    except ValueError:
        return sorted(names)


def _check_classes(class_names: list[str], counts: dict[str, int], source: str) -> None:
    if len(class_names) < 2:
        only = class_names[0] if class_names else "(none)"
        raise MedNeXtUserError(
            f"only one class ({only!r}, {counts.get(only, 0)} images) in {source}; fix: classification needs images "
            "of at least 2 classes"
        )


def index_folder(root: str | os.PathLike) -> DatasetIndex:
    """ImageFolder layout: ``root/<class>/**/<image>``; class names are the sub-folder names (sorted)."""
    root = Path(root).resolve()
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "__")))
    loose = sorted(p.name for p in root.iterdir() if p.is_file() and is_image_file(p))
    if not class_dirs:
        hint = f" ({len(loose)} images lie directly in it)" if loose else ""
        raise MedNeXtUserError(
            f"no class folders in {str(root)!r}{hint}; fix: put each class's images in its own sub-folder "
            "(DATA/<class>/<image>) or pass a CSV with path,label columns"
        )
    if loose:
        raise MedNeXtUserError(
            f"{len(loose)} images lie directly in {str(root)!r} (e.g. {loose[0]!r}) outside any class folder; "
            "fix: move them into a class sub-folder or delete them"
        )
    samples: list[Sample] = []
    for d in class_dirs:
        files = sorted(
            (p for p in d.rglob("*") if p.is_file() and is_image_file(p) and not _hidden(p.relative_to(d))),
            key=lambda p: p.as_posix(),
        )
        if not files:
            raise MedNeXtUserError(
                f"class folder {d.name!r} in {str(root)!r} has no images (looked for {', '.join(SUPPORTED_SUFFIXES)}); "
                "fix: add its images or remove the empty folder"
            )
        samples += [Sample(p.relative_to(root).as_posix(), str(p), d.name) for p in files]
    names = [d.name for d in class_dirs]
    _check_classes(names, Counter(s.label for s in samples), repr(str(root)))
    return DatasetIndex(samples, names, str(root), "folder")


def _hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


def _pick(header: list[str], options: tuple[str, ...]) -> str | None:
    norm = {h.strip().lower(): h for h in header}
    for o in options:
        if o in norm:
            return norm[o]
    return None


def read_csv_rows(csv_path: str | os.PathLike) -> tuple[list[dict[str, str]], list[str]]:
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            header = list(reader.fieldnames or [])
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise MedNeXtUserError(f"cannot read CSV {str(csv_path)!r} ({e}); fix: pass a UTF-8 CSV file") from None
    return rows, header


def index_csv(csv_path: str | os.PathLike, require_labels: bool = True) -> DatasetIndex:
    """CSV with a header and columns ``path,label[,group]``; relative paths are relative to the CSV's folder."""
    csv_path = Path(csv_path).resolve()
    rows, header = read_csv_rows(csv_path)
    pcol, lcol, gcol = _pick(header, PATH_COLUMNS), _pick(header, LABEL_COLUMNS), _pick(header, GROUP_COLUMNS)
    if pcol is None or (require_labels and lcol is None):
        raise MedNeXtUserError(
            f"CSV {str(csv_path)!r} has columns {header}; fix: it needs a header with 'path' and 'label' columns "
            "(and optionally 'group' = patient id)"
        )
    base = csv_path.parent
    samples: list[Sample] = []
    missing: list[tuple[int, str]] = []
    seen: dict[str, int] = {}
    for line, row in enumerate(rows, start=2):
        rel = (row.get(pcol) or "").strip()
        label = (row.get(lcol) or "").strip() if lcol else ""
        if not rel or (require_labels and not label):
            raise MedNeXtUserError(
                f"CSV {str(csv_path)!r} line {line} has an empty {'path' if not rel else 'label'}; fix: fill it or "
                "delete the row"
            )
        full = Path(rel) if os.path.isabs(rel) else base / rel
        if not full.is_file():
            missing.append((line, rel))
            continue
        if image_suffix(rel) not in SUPPORTED_SUFFIXES:
            raise MedNeXtUserError(
                f"CSV {str(csv_path)!r} line {line}: {rel!r} is not a supported image type; fix: use one of "
                f"{', '.join(SUPPORTED_SUFFIXES)}"
            )
        key = os.path.normpath(str(full))
        if key in seen:
            raise MedNeXtUserError(
                f"CSV {str(csv_path)!r} lists {rel!r} twice (lines {seen[key]} and {line}); fix: keep one row per image"
            )
        seen[key] = line
        group = ((row.get(gcol) or "").strip() or None) if gcol else None
        samples.append(Sample(rel.replace(os.sep, "/"), str(full), label, group))
    if missing:
        line, rel = missing[0]
        raise MedNeXtUserError(
            f"{len(missing)} of {len(rows)} paths in CSV {str(csv_path)!r} do not exist, first {rel!r} (line {line}); "
            f"fix: relative paths are read from the CSV's folder {str(base)!r}: correct or remove those rows"
        )
    if not samples:
        raise MedNeXtUserError(f"CSV {str(csv_path)!r} has no rows; fix: add one row per image (path,label)")
    names = sort_class_names({s.label for s in samples}) if require_labels else []
    if require_labels:
        _check_classes(names, Counter(s.label for s in samples), f"CSV {str(csv_path)!r}")
    return DatasetIndex(samples, names, str(csv_path), "csv", has_groups=any(s.group for s in samples))


def discover(source: str | os.PathLike) -> DatasetIndex:
    """A labelled dataset from a folder (ImageFolder layout) or a ``.csv`` file."""
    p = Path(source)
    if not p.exists():
        raise MedNeXtUserError(f"dataset {str(source)!r} does not exist; fix: pass a class-per-folder directory or a CSV")
    if p.is_file():
        if p.suffix.lower() != ".csv":
            raise MedNeXtUserError(f"dataset {str(source)!r} is a file but not a .csv; fix: pass a folder or a CSV")
        return index_csv(p)
    return index_folder(p)
