"""Loaders for the published layouts of the paper's three classification datasets (docs/datasets.md).

Each writes ``OUT/dataset.csv`` (``path,label,group``; paths relative to OUT) and, where the dataset ships its own
protocol, ``OUT/splits.json``. No image is copied. Layouts (the Kaggle downloads, unzipped anywhere under SRC):

* ``sarscov2``: ``COVID/`` + ``non-COVID/`` (Soares et al.). No patient ids exist: splits can group only duplicates.
* ``msld``: ``Original Images/{Monkey Pox,Others}`` (228 originals); group = class + case from the file name: the
  stem before the first ``_`` (``P13_2.jpg`` -> ``P13``, ``11_1.jpg`` and ``11.jpg`` -> ``11``). Cross-validation
  grouped by case.
* ``msld-folds``: the authors' patient-independent folds ``Fold1/.../Fold<k>/{Train,Val,Test}/{Monkeypox,Others}``
  (augmented train/val, original test): ``splits.json`` with train/val/test per fold, as published.
* ``largecovid`` / ``largecovid-2class``: ``curated_data/curated_data/{1NonCOVID,2COVID,3CAP}`` with the patient
  metadata ``meta_data_{normal,covid,cap}.csv`` (or .xlsx with openpyxl); group = class + patient id. 2-class drops
  CAP (COVID vs Normal).
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from nnunetv2_mednext.errors import MedNeXtUserError

from .io import is_image_file

MAX_DEPTH = 4


@dataclass
class Conversion:
    csv_path: Path
    splits_path: Path | None
    n_images: int
    class_counts: dict[str, int]
    notes: list[str] = field(default_factory=list)
    recommended: list[str] = field(default_factory=list)  # extra `classify train` options


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _dirs(root: Path, max_depth: int = MAX_DEPTH):
    """Directories under ``root`` (itself included), breadth first, hidden ones skipped."""
    level = [root]
    for _ in range(max_depth + 1):
        nxt = []
        for d in level:
            yield d
            try:
                nxt += sorted(c for c in d.iterdir() if c.is_dir() and not c.name.startswith((".", "__")))
            except OSError:
                continue
        level = nxt


def _find_parent_of(root: Path, wanted: dict[str, tuple[str, ...]]) -> tuple[Path, dict[str, Path]]:
    """The first directory having a child folder for every key of ``wanted`` (matched on normalised names)."""
    for d in _dirs(root):
        children = {_norm(c.name): c for c in d.iterdir() if c.is_dir()}
        found = {}
        for key, aliases in wanted.items():
            for a in aliases:
                if _norm(a) in children:
                    found[key] = children[_norm(a)]
                    break
        if len(found) == len(wanted):
            return d, found
    names = " + ".join(f"{v[0]}/" for v in wanted.values())
    raise MedNeXtUserError(f"no folder with {names} under {str(root)!r}; fix: pass the unzipped download's folder")


def _images(folder: Path) -> list[Path]:
    files = sorted((p for p in folder.rglob("*") if p.is_file() and is_image_file(p)), key=lambda p: p.as_posix())
    if not files:
        raise MedNeXtUserError(f"no images in {str(folder)!r}; fix: check that the download is complete")
    return files


def _write_csv(out: Path, rows: list[tuple[Path, str, str | None]]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "dataset.csv"
    tmp = out / f".dataset.csv.{os.getpid()}.tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "group"])
        for p, label, group in rows:
            w.writerow([os.path.relpath(p, out).replace(os.sep, "/"), label, group or ""])
    os.replace(tmp, path)
    return path


def _counts(rows) -> dict[str, int]:
    out: dict[str, int] = {}
    for _, label, _ in rows:
        out[label] = out.get(label, 0) + 1
    return out


# ------------------------------------------------------------------------------------------------ SARS-CoV-2 CT
def convert_sarscov2(src: Path, out: Path) -> Conversion:
    _, found = _find_parent_of(src, {"COVID": ("COVID",), "non-COVID": ("non-COVID", "NonCOVID", "non_COVID")})
    rows = [(p, label, None) for label in ("COVID", "non-COVID") for p in _images(found[label])]
    return Conversion(
        _write_csv(out, rows), None, len(rows), _counts(rows),
        notes=["SARS-CoV-2 CT has no patient ids: a patient-level split is impossible. Splits group exact and "
               "near-duplicate slices only (an approximation); state this with every result."],
    )


# ------------------------------------------------------------------------------------------------ MSLD v1
_MSLD_CLASSES = {"Monkeypox": ("Monkeypox", "Monkey Pox", "Monkey_Pox"), "Others": ("Others", "Other")}
def msld_patient(filename: str, label: str | None = None) -> str | None:
    """The case of an MSLD file name: the stem's part before the first ``_`` (the whole stem when there is none),
    upper-cased, prefixed by ``label`` when given (one case has one diagnosis: ``Others/19_1.jpg`` and
    ``Monkeypox/...19...`` are never one case). ``P13_2.jpg`` -> ``P13``; ``11.jpg`` and ``11_1.jpg`` -> ``11``;
    ``NM12_01_aug3.jpg`` -> ``NM12``; None for an empty prefix (``_1.jpg``)."""
    prefix = Path(filename).stem.split("_", 1)[0].strip().upper()
    if not prefix:
        return None
    return f"{label}:{prefix}" if label else prefix


def convert_msld(src: Path, out: Path) -> Conversion:
    originals = None
    for d in _dirs(src):
        if _norm(d.name) == "originalimages":
            try:
                _, originals = _find_parent_of(d, _MSLD_CLASSES)
                break
            except MedNeXtUserError:
                continue
    if originals is None:
        raise MedNeXtUserError(
            f"no 'Original Images/{{Monkey Pox,Others}}' under {str(src)!r}; fix: pass the unzipped MSLD download"
        )
    rows = [(p, label, msld_patient(p.name, label)) for label in _MSLD_CLASSES for p in _images(originals[label])]
    no_pid = sum(g is None for _, _, g in rows)
    n_cases = len({g for _, _, g in rows if g})
    notes = ["MSLD originals only (the 'Augmented Images' folder is ignored: its copies would leak across folds). "
             f"Splits group images by case: the file name before '_' ({n_cases} cases, e.g. P13_1 and P13_2; 11 and "
             "11_1)."]
    if no_pid:
        notes.append(f"{no_pid} file names carry no patient id: those images are grouped by duplicate hash only.")
    return Conversion(_write_csv(out, rows), None, len(rows), _counts(rows), notes=notes)


def _fold_dirs(src: Path) -> list[tuple[int, Path]]:
    """Folders named Fold<k> that hold Train/Val/Test (nested Fold1/Fold1/Fold1 wrappers are skipped)."""
    found: dict[int, Path] = {}
    for d in _dirs(src, MAX_DEPTH + 2):
        m = re.fullmatch(r"fold[ _-]?(\d+)", d.name.lower())
        if not m:
            continue
        kids = {_norm(c.name) for c in d.iterdir() if c.is_dir()}
        if {"train", "test"} <= kids:
            found.setdefault(int(m.group(1)), d)
    return sorted(found.items())


def convert_msld_folds(src: Path, out: Path) -> Conversion:
    from .fingerprint import save_json

    folds = _fold_dirs(src)
    if not folds:
        raise MedNeXtUserError(
            f"no Fold<k>/{{Train,Val,Test}} folders under {str(src)!r}; fix: pass the unzipped MSLD download "
            "(its Fold1 folder)"
        )
    rows: list[tuple[Path, str, str | None]] = []
    split_folds = []
    for _, fdir in folds:
        parts: dict[str, list[str]] = {}
        for part_dir in sorted(c for c in fdir.iterdir() if c.is_dir()):
            part = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}.get(
                _norm(part_dir.name))
            if part is None:
                continue
            _, classes = _find_parent_of(part_dir, _MSLD_CLASSES)
            for label, cdir in classes.items():
                for p in _images(cdir):
                    rows.append((p, label, msld_patient(p.name, label)))
                    parts.setdefault(part, []).append(os.path.relpath(p, out).replace(os.sep, "/"))
        split_folds.append({k: sorted(v) for k, v in parts.items()})
    csv_path = _write_csv(out, rows)
    splits_path = out / "splits.json"
    save_json({"format": "nnunetv2_mednext.classification.splits/1", "method": "MSLD published patient-independent "
               "folds (train/val augmented, test originals)", "n_folds": len(split_folds), "folds": split_folds},
              splits_path)
    notes = [f"{len(split_folds)} published fold(s): {', '.join(d.name for _, d in folds)}. Metrics are computed on "
             "each fold's Test (original images); the best checkpoint is chosen on Val."]
    if len(split_folds) < 3:
        notes.append("the paper's protocol has 3 folds; only the folds present in the download are used.")
    return Conversion(csv_path, splits_path, len(rows), _counts(rows), notes=notes)


# ------------------------------------------------------------------------------------------------ Large COVID-19 CT
_LC_CLASSES = {"Normal": ("1NonCOVID", "NonCOVID"), "COVID": ("2COVID", "COVID"), "CAP": ("3CAP", "CAP")}
_LC_META = {"Normal": "meta_data_normal", "COVID": "meta_data_covid", "CAP": "meta_data_cap"}


def _read_metadata(path: Path) -> list[dict[str, str]]:
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8-sig") as f:
            return list(csv.DictReader(f))
    try:
        import pandas as pd

        return pd.read_excel(path, dtype=str).fillna("").to_dict("records")
    except ImportError as e:
        raise MedNeXtUserError(f"cannot read {str(path)!r} ({e}); fix: pip install openpyxl, or use the .csv "
                               "metadata from the dataset's GitHub repository") from None


def _find_metadata(src: Path, stem: str) -> Path | None:
    for d in _dirs(src):
        for ext in (".csv", ".xlsx"):
            p = d / f"{stem}{ext}"
            if p.is_file():
                return p
    return None


def _patient_map(rows: list[dict[str, str]]) -> dict[str, str]:
    if not rows:
        return {}
    keys = {_norm(k): k for k in rows[0]}
    fcol, pcol = keys.get("filename"), keys.get("patientid")
    if fcol is None or pcol is None:
        return {}
    return {str(r[fcol]).strip(): str(r[pcol]).strip() for r in rows if str(r[fcol]).strip() and str(r[pcol]).strip()}


def _convert_largecovid(src: Path, out: Path, classes: tuple[str, ...]) -> Conversion:
    _, found = _find_parent_of(src, {c: _LC_CLASSES[c] for c in classes})
    rows: list[tuple[Path, str, str | None]] = []
    missing_meta, unmatched = [], 0
    for label in classes:
        meta_path = _find_metadata(src, _LC_META[label])
        pmap = _patient_map(_read_metadata(meta_path)) if meta_path else {}
        if not meta_path:
            missing_meta.append(_LC_META[label])
        for p in _images(found[label]):
            pid = pmap.get(p.name)
            unmatched += pid is None
            rows.append((p, label, f"{label}:{pid}" if pid else None))
    if missing_meta:
        raise MedNeXtUserError(
            f"patient metadata {', '.join(m + '.csv' for m in missing_meta)} not found under {str(src)!r}; fix: put "
            "the meta_data_*.csv (or .xlsx) files from the dataset next to curated_data/ (patient-level splits need them)"
        )
    notes = ["Groups are class + patient id from the metadata: slices of one patient never cross folds. The paper's "
             "protocol is a 70/10/20 patient-level hold-out: train with --split holdout."]
    if unmatched:
        notes.append(f"{unmatched} images have no metadata row: they are grouped by duplicate hash only.")
    notes.append("CAP images come from a single source (COVID-CT-MD): a source shortcut is possible.")
    return Conversion(_write_csv(out, rows), None, len(rows), _counts(rows), notes=notes,
                      recommended=["--split", "holdout"])


def convert_largecovid(src: Path, out: Path) -> Conversion:
    return _convert_largecovid(src, out, ("Normal", "COVID", "CAP"))


def convert_largecovid_2class(src: Path, out: Path) -> Conversion:
    return _convert_largecovid(src, out, ("Normal", "COVID"))


LAYOUTS: dict[str, Callable[[Path, Path], Conversion]] = {
    "sarscov2": convert_sarscov2,
    "msld": convert_msld,
    "msld-folds": convert_msld_folds,
    "largecovid": convert_largecovid,
    "largecovid-2class": convert_largecovid_2class,
}


def convert(layout: str, src: str | os.PathLike, out: str | os.PathLike) -> Conversion:
    if layout not in LAYOUTS:
        raise MedNeXtUserError(f"unknown layout {layout!r}; fix: one of {', '.join(LAYOUTS)}")
    src_p = Path(src).resolve()
    if not src_p.is_dir():
        raise MedNeXtUserError(f"{str(src)!r} is not a folder; fix: pass the unzipped download's folder")
    return LAYOUTS[layout](src_p, Path(out).resolve())
