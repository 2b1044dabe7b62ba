"""``nnunetv2-mednext predict``: ``nnUNetv2_predict`` itself, with the network it runs swapped for ``--backend``.

The arguments are nnU-Net's own: its parser is taken from ``predict_entry_point`` (built there, captured before it
parses), so they cannot drift from the installed nnU-Net. Running is nnU-Net's entry point as well, with two
hooks: ``parse_args`` answers the namespace parsed here, and after ``initialize_from_trained_model_folder`` the
backend is installed on the predictor. Preprocessing, the Gaussian-weighted sliding window, mirroring, fold
ensembling, resampling, export, ``--save_probabilities`` and ``-prev_stage_predictions`` stay nnU-Net's.

Backends:

* ``torch``: nnU-Net's PyTorch network (MedNeXt: the fused CPU kernels and channels-last of ``networks/fastops``);
  ``NNUNETV2_MEDNEXT_MIRROR_BATCH=8`` runs the mirrored copies of a tile as one batch (:mod:`.fast_torch`);
* ``onnxruntime`` / ``openvino``: the fold's ONNX export (:mod:`.onnx_export`). A missing or stale export (the
  checkpoint was rewritten after the export, or its hash differs from the sidecar's) is made anew, and checked, before the
  prediction starts; the command says so.
"""

from __future__ import annotations

import argparse
import contextlib
import io
from collections.abc import Iterator
from pathlib import Path

from nnunetv2_mednext.errors import MedNeXtUserError

from .backends import BACKENDS, ExportedNetwork, fold_marker, require_deploy_extra
from .model import check_model_folder

DEFAULT_BACKEND = "torch"


class _CapturedError(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        super().__init__("parser captured")
        self.parser = parser


@contextlib.contextmanager
def _parse_args_answer(answer) -> Iterator[None]:
    """``ArgumentParser.parse_args`` returns ``answer(parser)`` while inside (nnU-Net builds its parser locally)."""
    original = argparse.ArgumentParser.parse_args

    def parse_args(self, args=None, namespace=None):
        return answer(self)

    argparse.ArgumentParser.parse_args = parse_args  # type: ignore[method-assign]
    try:
        yield
    finally:
        argparse.ArgumentParser.parse_args = original  # type: ignore[method-assign]


def nnunet_predict_parser() -> argparse.ArgumentParser:
    """The parser ``nnUNetv2_predict`` builds (taken from nnU-Net's ``predict_entry_point`` before it parses)."""
    from nnunetv2.inference.predict_from_raw_data import predict_entry_point

    def capture(parser):
        raise _CapturedError(parser)

    try:
        with _parse_args_answer(capture), contextlib.redirect_stdout(io.StringIO()):
            predict_entry_point()
    except _CapturedError as c:
        return c.parser
    raise RuntimeError("nnUNetv2_predict's entry point did not build an argument parser")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """nnU-Net's ``nnUNetv2_predict`` arguments plus ``--backend``."""
    for action in nnunet_predict_parser()._actions:
        if not isinstance(action, argparse._HelpAction):
            parser._add_action(action)
    parser.add_argument("--backend", choices=BACKENDS, default=DEFAULT_BACKEND,
                        help="what runs the network: torch (nnU-Net's PyTorch network), "
                             "onnxruntime or openvino (the fold's ONNX export, made on first use; needs the deploy "
                             f"extra). Default: {DEFAULT_BACKEND}")


def model_folder_of(args: argparse.Namespace) -> Path:
    """``$nnUNet_results/DatasetX/Trainer__Plans__Config`` of ``-d -tr -p -c``, or a one-line error."""
    from nnunetv2_mednext.nnunet.env import require_env

    require_env("nnUNet_results")
    from nnunetv2.utilities.file_path_utilities import get_output_folder

    try:
        return Path(get_output_folder(args.d, args.tr, args.p, args.c))
    except RuntimeError as e:
        raise MedNeXtUserError(f"dataset {args.d} not found ({str(e).splitlines()[0][:200]}); give its id or "
                               "name as trained (ls $nnUNet_results)") from None


def ensure_exports(folder: Path, folds: list, checkpoint: str, log=print) -> dict[str, Path]:
    """The fresh ONNX export of each fold, (re)made where missing or stale."""
    from .onnx_export import export_model, onnx_path, stale_reason

    todo = []
    for fold in folds:
        reason = stale_reason(folder, fold, checkpoint)
        if reason is not None:
            log(f"nnunetv2-mednext predict: exporting fold {fold} first: {reason}")
            todo.append(fold)
    if todo:
        try:
            export_model(folder, todo, checkpoint, log=log)
        except PermissionError as e:
            from .onnx_export import export_command

            raise MedNeXtUserError(f"cannot write the export next to the checkpoint ({e}); run "
                                   f"'{export_command(folder, todo, checkpoint)}' as a user who may write there") from None
    return {str(f): onnx_path(folder, f, checkpoint) for f in folds}


def install_backend(predictor, backend: str, folds: list, files: dict[str, Path] | None) -> None:
    """Swap what runs the network on an initialised nnU-Net predictor."""
    from .fast_torch import install_batched_mirroring

    if backend != "torch":
        import torch
        from nnunetv2.configuration import default_num_processes

        predictor.network = ExportedNetwork(backend, files or {})
        predictor.list_of_parameters = [fold_marker(f) for f in folds]
        # the threads nnU-Net gives PyTorch for the sliding window (predict_logits_from_preprocessed_data)
        threads = min(default_num_processes, torch.get_num_threads())
        for fold in predictor.network.files:
            predictor.network.session(fold, threads)
    install_batched_mirroring(predictor)


def run(args: argparse.Namespace) -> int:
    import torch
    from nnunetv2.inference import predict_from_raw_data as nnunet_predict

    backend = args.backend
    if backend != "torch":
        require_deploy_extra(backend)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise MedNeXtUserError("-device cuda (nnU-Net's default) but no CUDA device is visible; add -device cpu")
    if not Path(args.i).is_dir():
        raise MedNeXtUserError(f"input folder {args.i} does not exist; give the folder of images to predict with -i")
    folder, folds = check_model_folder(model_folder_of(args), args.f, args.chk)
    files = ensure_exports(folder, folds, args.chk) if backend != "torch" else None
    predictor_class = nnunet_predict.nnUNetPredictor
    original = predictor_class.initialize_from_trained_model_folder

    def initialize(self, model_training_output_dir, use_folds, checkpoint_name="checkpoint_final.pth"):
        original(self, model_training_output_dir, use_folds, checkpoint_name)
        install_backend(self, backend, folds, files)

    args.f = [str(f) for f in folds]
    predictor_class.initialize_from_trained_model_folder = initialize  # type: ignore[method-assign]
    try:
        with _parse_args_answer(lambda parser: args):
            nnunet_predict.predict_entry_point()
    finally:
        predictor_class.initialize_from_trained_model_folder = original  # type: ignore[method-assign]
    return 0
