"""Class probabilities for new images from one or more checkpoints (several: probabilities averaged)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from nnunetv2_mednext.errors import MedNeXtUserError

from . import checkpoint as ckpt_io
from .index import Sample, index_csv
from .io import is_image_file, load_for_model
from .transforms import normalize_batch


def find_checkpoints(spec: str | os.PathLike, which: str = "final") -> list[Path]:
    """A checkpoint file, or a run folder (every ``fold_*/checkpoint_<which>.pt``)."""
    p = Path(spec)
    if p.is_dir():
        found = sorted(p.glob(f"fold_*/checkpoint_{which}.pt"))
        if not found and (p / f"checkpoint_{which}.pt").is_file():
            found = [p / f"checkpoint_{which}.pt"]
        if not found:
            raise MedNeXtUserError(f"no fold_*/checkpoint_{which}.pt under {str(p)!r}; fix: pass a checkpoint file or "
                                   "a finished training folder")
        return found
    return [p]


def gather_inputs(source: str | os.PathLike, class_names: list[str]) -> list[Sample]:
    """Images to predict: a CSV (``path`` column, optional ``label``), a folder (recursive), or one image.

    In a folder whose top-level sub-folders are all class names of the model, those names become labels.
    """
    p = Path(source)
    if not p.exists():
        raise MedNeXtUserError(f"input {str(source)!r} does not exist; fix: pass an image folder, a CSV or an image")
    if p.is_file() and p.suffix.lower() == ".csv":
        idx = index_csv(p, require_labels=False)
        return [Sample(s.id, s.path, s.label or None, s.group) for s in idx.samples]
    if p.is_file():
        if not is_image_file(p):
            raise MedNeXtUserError(f"{str(p)!r} is not a supported image; fix: pass an image, a folder or a CSV")
        return [Sample(p.name, str(p.resolve()), None)]
    files = sorted((f for f in p.rglob("*") if f.is_file() and is_image_file(f)), key=lambda f: f.as_posix())
    if not files:
        raise MedNeXtUserError(f"no images under {str(p)!r}; fix: pass a folder with PNG/JPG/TIFF/BMP/NIfTI/DICOM files")
    rel = [f.relative_to(p) for f in files]
    labelled = all(len(r.parts) > 1 and r.parts[0] in class_names for r in rel)
    return [Sample(r.as_posix(), str(f.resolve()), r.parts[0] if labelled else None) for r, f in zip(rel, files)]


class Predictor:
    def __init__(self, checkpoints: list[str | os.PathLike], device: str = "auto") -> None:
        from .distributed import pick_device

        if not checkpoints:
            raise MedNeXtUserError("no checkpoint given; fix: -m fold_0/checkpoint_final.pt (or a run folder)")
        self.device = pick_device(device)
        self.models, self.meta = [], None
        for c in checkpoints:
            ck = ckpt_io.load(c)
            meta = ck["meta"]
            if self.meta is None:
                self.meta = meta
            else:
                for key in ("class_names", "input_size", "in_chans", "normalization"):
                    if meta[key] != self.meta[key]:
                        raise MedNeXtUserError(f"checkpoint {str(c)!r} differs in {key} from the first one; fix: "
                                               "ensemble only checkpoints of one run")
            self.models.append(ckpt_io.build_from(ck).to(self.device))
        self.class_names: list[str] = list(self.meta["class_names"])

    @torch.no_grad()
    def predict(self, paths: list[str], batch_size: int = 64, progress: bool | None = None) -> np.ndarray:
        from tqdm import tqdm

        size, chans = self.meta["input_size"], self.meta["in_chans"]
        mean, std = self.meta["normalization"]["mean"], self.meta["normalization"]["std"]
        out = []
        disable = True if progress is False else None
        for start in tqdm(range(0, len(paths), batch_size), desc="predict", unit="batch", disable=disable,
                          leave=False):
            batch = np.stack([load_for_model(p, size, chans) for p in paths[start : start + batch_size]])
            x = normalize_batch(torch.from_numpy(batch).to(self.device), mean, std)
            probs = torch.zeros(len(batch), len(self.class_names), dtype=torch.float64)
            for m in self.models:
                probs += torch.softmax(m(x).float(), 1).cpu().double()
            out.append((probs / len(self.models)).numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.class_names)))
