"""Inference sessions for exported networks and the ``nn.Module`` adapter that nnU-Net's predictor runs.

nnU-Net's predictor calls ``network.load_state_dict(params)`` once per fold and then ``network(tile)`` for each
tile and each mirrored copy of it. :class:`ExportedNetwork` keeps one session per fold: the predictor's
``list_of_parameters`` holds small markers naming the fold (:func:`fold_marker`), ``load_state_dict`` picks that
fold's session, ``forward`` runs it on numpy arrays. ``predict`` makes the sessions up front, with the threads
nU-Net gives PyTorch for the sliding window.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nnunetv2_mednext.errors import MedNeXtUserError

BACKENDS = ("torch", "onnxruntime", "openvino")
_MARKER = "_nnunetv2_mednext_exported_fold"
#: the modules each exported backend needs (all from the ``deploy`` extra)
_NEEDS = {"export-onnx": ("onnx", "onnxruntime"), "onnxruntime": ("onnx", "onnxruntime"),
          "openvino": ("onnx", "openvino")}


def require_deploy_extra(what: str) -> None:
    """Raise naming the extra to install when a module ``what`` needs is not importable."""
    for module in _NEEDS.get(what, ()):
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise MedNeXtUserError(f"{what} needs the Python package {module!r}, which is not installed ({e}); "
                                   "install the deploy extra: pip install 'nnunetv2-mednext[deploy]'") from None


def to_numpy_logits(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float32)


def onnxruntime_session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, int(threads))
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


class _OpenVINOSession:
    """An OpenVINO compiled model with onnxruntime's ``run(None, {"input": x})`` call."""

    def __init__(self, path: Path, threads: int) -> None:
        import openvino as ov

        core = ov.Core()
        # full precision: OpenVINO's CPU plugin would otherwise run bf16 on CPUs that have it
        config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": max(1, int(threads)),
                  "PERFORMANCE_HINT": "LATENCY"}
        self.compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
        self.request = self.compiled.create_infer_request()

    def run(self, _outputs, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        result = self.request.infer({0: feeds["input"]})
        return [np.array(result[self.compiled.output(0)], copy=True)]


def make_session(backend: str, path: Path, threads: int):
    if backend == "onnxruntime":
        return onnxruntime_session(path, threads)
    if backend == "openvino":
        return _OpenVINOSession(path, threads)
    raise MedNeXtUserError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")


def fold_marker(fold: int | str) -> dict:
    """What the predictor's ``list_of_parameters`` holds per fold instead of the weights."""
    return {_MARKER: str(fold)}


class ExportedNetwork(nn.Module):
    """Runs one exported file per fold; ``load_state_dict(fold_marker(f))`` selects fold ``f``."""

    def __init__(self, backend: str, files: Mapping[str, Path]) -> None:
        super().__init__()
        if backend not in BACKENDS[1:]:
            raise MedNeXtUserError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        self.backend, self.files = backend, dict(files)
        self.sessions: dict[str, object] = {}
        self.active = next(iter(self.files))

    def load_state_dict(self, state_dict: Mapping, strict: bool = True, assign: bool = False):  # type: ignore[override]
        if _MARKER not in state_dict:
            raise RuntimeError("ExportedNetwork takes fold markers (fold_marker), not PyTorch weights")
        fold = state_dict[_MARKER]
        if fold not in self.files:
            raise RuntimeError(f"fold {fold} has no exported network here (have {', '.join(self.files)})")
        self.active = fold
        return None

    def session(self, fold: str, threads: int | None = None):
        """The fold's session, made on first use (``threads``: default PyTorch's number at that moment)."""
        if fold not in self.sessions:
            self.sessions[fold] = make_session(self.backend, self.files[fold], threads or torch.get_num_threads())
        return self.sessions[fold]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        data = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        out = self.session(self.active).run(None, {"input": data})[0]
        return torch.from_numpy(to_numpy_logits(out)).to(x.device)
