"""ONNX export of a model folder's folds, checked against PyTorch, with a JSON sidecar that says what it was made
from.

Each fold's network is rebuilt by nnU-Net's predictor from the plans and the checkpoint (deep supervision off),
traced on one tile of the plan's patch size with a dynamic batch axis, through the plain reference ops (the fused
CPU kernels and the recompute nodes of ``networks/`` are switched off while tracing) and written next to its
checkpoint: ``fold_0/checkpoint_final.onnx`` plus ``fold_0/checkpoint_final.onnx.json``. An export is *fresh* when
its sidecar names the checkpoint's SHA-256 and the checkpoint was not rewritten after the export (its mtime is
not newer than the one the sidecar recorded).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from nnunetv2_mednext import __version__
from nnunetv2_mednext.errors import MedNeXtUserError

from .model import check_model_folder, fold_name, load_predictor

OPSET = 17
SIDECAR_FORMAT = 1
#: a mismatch above ``ATOL + RTOL * max|logit|`` (max abs logit difference to PyTorch) is an error
ATOL, RTOL = 1e-4, 1e-4
#: fewer tile voxels than this with the same argmax as PyTorch is an error
MIN_ARGMAX_AGREEMENT = 0.999


def onnx_path(model_folder: Path, fold: int | str, checkpoint: str) -> Path:
    """``fold_X/<checkpoint stem>.onnx``."""
    return Path(model_folder) / fold_name(fold) / (Path(checkpoint).stem + ".onnx")


def sidecar_path(onnx_file: Path) -> Path:
    return onnx_file.with_name(onnx_file.name + ".json")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def export_command(model_folder: Path, folds: Sequence[int | str], checkpoint: str) -> str:
    """The command that (re)makes the exports."""
    return (f"nnunetv2-mednext export-onnx -m {model_folder} -f {' '.join(str(f) for f in folds)} "
            f"-chk {checkpoint}")


def stale_reason(model_folder: Path, fold: int | str, checkpoint: str) -> str | None:
    """None when the fold's export is present and fresh, else why it cannot be used."""
    onnx_file = onnx_path(model_folder, fold, checkpoint)
    ckpt = Path(model_folder) / fold_name(fold) / checkpoint
    side = sidecar_path(onnx_file)
    if not onnx_file.is_file():
        return f"{onnx_file} is missing"
    if not side.is_file():
        return f"{side} (the export's sidecar) is missing"
    try:
        meta = json.loads(side.read_text())
    except (OSError, ValueError) as e:
        return f"{side} is unreadable ({e})"
    # the checkpoint's mtime at export time, as the sidecar recorded it (older sidecars: the export's own mtime);
    # comparing with the file's mtime instead would keep a checkpoint dated in the future stale forever
    exported_at = float(meta.get("checkpoint_mtime", onnx_file.stat().st_mtime))
    if ckpt.stat().st_mtime > exported_at:
        return f"{ckpt} is newer than {onnx_file.name} (rewritten after the export)"
    if meta.get("checkpoint_sha256") != sha256(ckpt):
        return f"{ckpt} does not match the hash in {side.name} (the checkpoint changed since the export)"
    return None


@contextlib.contextmanager
def reference_route() -> Iterator[None]:
    """Plain PyTorch ops only (no fused CPU nodes, no selective recompute): what a tracer can record."""
    import torch

    from nnunetv2_mednext.networks.fastops.switch import reference_ops
    from nnunetv2_mednext.networks.recompute import recompute_suspended

    with torch.no_grad(), reference_ops(), recompute_suspended():
        yield


def _tile_shape(predictor) -> tuple[int, ...]:
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels

    channels = determine_num_input_channels(predictor.plans_manager, predictor.configuration_manager,
                                            predictor.dataset_json)
    return (int(channels), *map(int, predictor.configuration_manager.patch_size))


def real_tiles(predictor, tile: tuple[int, ...], limit: int = 2) -> list[np.ndarray]:
    """Up to ``limit`` tiles cut from the centre of preprocessed training cases (``$nnUNet_preprocessed``), padded
    with zeros like nnU-Net's sliding window; none when that folder is not at hand. Cascade models (previous-stage
    segmentation as extra input channels) get random one-hot channels."""
    root = os.environ.get("nnUNet_preprocessed")
    if not root:
        return []
    folder = (Path(root) / predictor.plans_manager.dataset_name / predictor.configuration_manager.data_identifier)
    if not folder.is_dir():
        return []
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

    try:
        dataset = infer_dataset_class(str(folder))(str(folder))
        keys = sorted(dataset.identifiers)[:limit]
        tiles = []
        for key in keys:
            data = np.asarray(dataset.load_case(key)[0][:], dtype=np.float32)
            if data.ndim == len(tile) + 1:  # 2D configurations store (C, 1, X, Y): the middle slice
                data = data[:, data.shape[1] // 2]
            tiles.append(_centre_tile(data, tile))
        return tiles
    except Exception:  # an unreadable cache only means no real-tile check
        return []


def _centre_tile(data: np.ndarray, tile: tuple[int, ...]) -> np.ndarray:
    out = np.zeros(tile, np.float32)
    channels = min(data.shape[0], tile[0])
    src, dst = [slice(0, channels)], [slice(0, channels)]
    for have, want in zip(data.shape[1:], tile[1:]):
        n = min(have, want)
        a, b = (have - n) // 2, (want - n) // 2
        src.append(slice(a, a + n))
        dst.append(slice(b, b + n))
    out[tuple(dst)] = data[tuple(src)]
    return out


def compare(reference: np.ndarray, other: np.ndarray) -> dict[str, float]:
    """Max abs logit difference and argmax agreement (fraction of voxels) of two (B, C, *S) logit arrays."""
    return {"max_abs_diff": float(np.max(np.abs(reference - other))),
            "max_abs_logit": float(np.max(np.abs(reference))),
            "argmax_agreement": float(np.mean(reference.argmax(1) == other.argmax(1)))}


def check_agreement(name: str, stats: dict[str, float], where: Path) -> None:
    """Raise when ``stats`` (from :func:`compare`) is outside the tolerance."""
    tol = ATOL + RTOL * stats["max_abs_logit"]
    if stats["max_abs_diff"] > tol or stats["argmax_agreement"] < MIN_ARGMAX_AGREEMENT:
        raise MedNeXtUserError(
            f"{where} disagrees with PyTorch on {name} tiles: max abs logit difference {stats['max_abs_diff']:.3g} "
            f"(tolerance {tol:.3g}), argmax agreement {stats['argmax_agreement']:.5f} (at least "
            f"{MIN_ARGMAX_AGREEMENT}); the file was removed. Fix: re-export with a newer onnx/onnxruntime, or report "
            "the network and versions")


def _export_one(network, tile: tuple[int, ...], target: Path, opset: int) -> None:
    import torch

    dummy = torch.zeros((1, *tile), dtype=torch.float32)
    tmp = target.with_name(target.name + ".tmp")
    network.eval()
    with reference_route(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and instance-norm notes
        torch.onnx.export(network, (dummy,), str(tmp), dynamo=False, opset_version=opset, input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                          do_constant_folding=True)
    os.replace(tmp, target)


def _stamp(target: Path, meta: dict) -> None:
    """Write the sidecar's facts into the ONNX file's metadata too (``opset``, ``tile``, hashes)."""
    import onnx

    model = onnx.load(str(target))
    del model.metadata_props[:]
    for key, value in meta.items():
        if not isinstance(value, dict):
            entry = model.metadata_props.add()
            entry.key, entry.value = key, json.dumps(value) if not isinstance(value, str) else value
    onnx.save(model, str(target))


def export_model(model_folder: str | Path, folds: Sequence[int | str] | None = None,
                 checkpoint: str = "checkpoint_final.pth", opset: int = OPSET,
                 log: Callable[[str], None] = print) -> list[dict]:
    """Export every fold of ``model_folder`` (all folds holding ``checkpoint`` when ``folds`` is None), check each
    against PyTorch on a random and on real tiles, write the sidecars; returns the sidecars' contents."""
    from .backends import onnxruntime_session, require_deploy_extra, to_numpy_logits

    require_deploy_extra("export-onnx")
    import torch

    folder, folds = check_model_folder(model_folder, folds, checkpoint)
    predictor = load_predictor(folder, folds, checkpoint)
    network = predictor.network
    network.eval()
    network.to(memory_format=torch.contiguous_format)
    tile = _tile_shape(predictor)
    rng = np.random.default_rng(0)
    checks = {"random": rng.standard_normal((1, *tile)).astype(np.float32)}
    real = real_tiles(predictor, tile)
    if real:
        checks["real"] = np.stack(real)
    results = []
    for fold, params in zip(folds, predictor.list_of_parameters):
        start = time.perf_counter()
        network.load_state_dict(params)
        ckpt = folder / fold_name(fold) / checkpoint
        target = onnx_path(folder, fold, checkpoint)
        _export_one(network, tile, target, opset)
        session = onnxruntime_session(target, threads=torch.get_num_threads())
        report = {}
        for name, x in checks.items():
            with reference_route():
                ref = network(torch.from_numpy(x)).float().numpy()
            report[name] = compare(ref, to_numpy_logits(session.run(None, {"input": x})[0]))
            try:
                check_agreement(name, report[name], target)
            except MedNeXtUserError:
                target.unlink(missing_ok=True)
                sidecar_path(target).unlink(missing_ok=True)
                raise
        meta = {
            "format": SIDECAR_FORMAT, "opset": opset, "tile": list(tile[1:]), "input_channels": tile[0],
            "output_channels": int(predictor.label_manager.num_segmentation_heads), "dynamic_axes": ["batch"],
            "fold": str(fold), "checkpoint": checkpoint, "checkpoint_sha256": sha256(ckpt),
            "checkpoint_mtime": ckpt.stat().st_mtime, "trainer": predictor.trainer_name,
            "model_folder": folder.name,
            "exporter": f"nnunetv2-mednext {__version__}", "torch": torch.__version__, "check": report,
        }
        _stamp(target, meta)
        sidecar_path(target).write_text(json.dumps(meta, indent=2) + "\n")
        parts = [f"{k} tiles: max |diff| {v['max_abs_diff']:.2e}, argmax agreement {v['argmax_agreement']:.5f}"
                 for k, v in report.items()]
        log(f"exported {target} (opset {opset}, tile {tuple(tile[1:])}, {time.perf_counter() - start:.1f} s); "
            + "; ".join(parts))
        results.append(meta)
    return results
