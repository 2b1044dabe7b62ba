"""The package's trainers under nnU-Net's DistributedDataParallel, on CPU (gloo, 2 processes).

Each case runs ``ddp_worker.py`` three times: twice as the ranks of one DDP run (each on half of a fixed batch) and
once as a single process on the whole batch with the loss weights nnU-Net gives DDP runs. After two of nnU-Net's own
``train_step`` calls (gradient clipping and AdamW included):

* both ranks hold bit-identical parameters and buffers (a gradient that bypassed DDP's all-reduce would leave them
  apart) and no parameter went unused (DDP without ``find_unused_parameters`` fails in the second step otherwise);
* the ranks' gradients equal the single-process gradients within 1e-5 of the largest one (float32 sums in another
  order), and the parameters within what AdamW makes of that difference (``lr / eps`` times it, plus 1e-6);
* the forward ran the route the package's switch selected: the CPU fused nodes (``NNUNETV2_MEDNEXT_FAST_OPS=1``) or
  plain ops with selective recompute (``=0``, the GPU route);
* nnU-Net's deep-supervision weights under DDP: the lowest output 1e-6 before normalisation (0 when compiling;
  Roy et al.'s bottleneck head keeps its ``2^-i`` weights).

Default seed MedNeXt and Roy et al.'s V1-S k3, both routes, and the seed network compiled (``aot_eager``) under DDP.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nnunetv2_mednext.nnunet.pipeline import NnUNetRunner
from nnunetv2_mednext.nnunet.synthetic import make_synthetic_2d

pytestmark = pytest.mark.slow

DS = 994
WORKER = Path(__file__).with_name("ddp_worker.py")
FUSED = {"nnUNetTrainerMedNeXt": "_PreNormFFNCPUBackward", "nnUNetTrainerMedNeXtV1_S_k3": "_RoyBlockCPUBackward"}
CPU_NODES = ("_PreNormFFNCPUBackward", "_RoyBlockCPUBackward", "_ConvNormCPUBackward", "_SkipFuseCPUBackward")


@pytest.fixture(scope="module")
def planned(tmp_path_factory: pytest.TempPathFactory) -> NnUNetRunner:
    runner = NnUNetRunner(tmp_path_factory.mktemp("ddp"))
    make_synthetic_2d(runner.raw, DS, n_train=6, n_test=1, size=32)
    runner.plan_and_preprocess(DS, ("2d",))
    return runner


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(runner: NnUNetRunner, trainer: str, out: Path, env: dict[str, str]) -> tuple[dict, dict, dict]:
    """The reference and the two ranks, all at once; their results (``torch.load``)."""
    base = runner.env({"OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), **env})
    jobs = {}
    for name, extra in (("ref", {"WORLD_SIZE": "1", "RANK": "0"}), ("rank0", {"WORLD_SIZE": "2", "RANK": "0"}),
                        ("rank1", {"WORLD_SIZE": "2", "RANK": "1"})):
        cmd = [sys.executable, str(WORKER), str(DS), trainer, str(out / f"{name}.pt")]
        jobs[name] = subprocess.Popen(cmd, env={**base, **extra}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True, cwd=runner.workdir)
    for name, proc in jobs.items():
        output, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, (name, output[-4000:])
    return tuple(torch.load(out / f"{n}.pt", weights_only=False) for n in ("ref", "rank0", "rank1"))  # type: ignore


CASES = [("nnUNetTrainerMedNeXt", "fused"), ("nnUNetTrainerMedNeXt", "recompute"),
         ("nnUNetTrainerMedNeXtV1_S_k3", "fused"), ("nnUNetTrainerMedNeXtV1_S_k3", "recompute"),
         ("nnUNetTrainerMedNeXt", "compiled")]


@pytest.mark.parametrize(("trainer", "route"), CASES, ids=[f"{t}-{r}" for t, r in CASES])
def test_ddp_step_equals_single_process_step(planned: NnUNetRunner, tmp_path: Path, trainer: str, route: str) -> None:
    env = {"NNUNETV2_MEDNEXT_FAST_OPS": "1" if route == "fused" else "0", "NNUNETV2_MEDNEXT_RECOMPUTE": "1",
           "MEDNEXT_DDP_COMPILE": "1" if route == "compiled" else "0"}
    ref, r0, r1 = _run(planned, trainer, tmp_path, env)

    assert r0["wrapped"] == r1["wrapped"] == "DistributedDataParallel" and r0["is_ddp"] and not ref["is_ddp"]
    assert r0["batch_size"] == r1["batch_size"] and 2 * r0["batch_size"] == ref["batch_size"]  # nnU-Net's split
    assert r0["sync_bn"] == r0["batch_norms"]  # every BatchNorm (if any) is a SyncBatchNorm under DDP
    for key in ("params", "buffers"):
        assert r0[key].keys() == r1[key].keys() == ref[key].keys()
        for k in r0[key]:
            assert torch.equal(r0[key][k], r1[key][k]), f"ranks differ after the step: {key} {k}"
    assert r0["grads"].keys() == r0["params"].keys(), "parameters without gradient"

    scale = max(g.abs().max().item() for g in ref["grads"].values())
    gdiff = max((r0["grads"][k] - ref["grads"][k]).abs().max().item() for k in ref["grads"])
    assert gdiff <= 1e-5 * scale, (gdiff, scale)
    lr_over_eps = 3e-3 / 1e-4
    pdiff = max((r0["params"][k] - ref["params"][k]).abs().max().item() for k in ref["params"])
    assert pdiff <= lr_over_eps * 1e-5 * scale + 1e-6, (pdiff, gdiff)

    weights = r0["weight_factors"]
    assert weights == pytest.approx(ref["ddp_weights"], rel=1e-12)
    if r0["ds_bottleneck"]:  # bottleneck head: Roy et al.'s 2^-i over every output
        assert weights == pytest.approx([w / sum(2.0**-i for i in range(len(weights)))
                                         for w in (2.0**-i for i in range(len(weights)))])
    else:
        raw = [2.0**-i for i in range(len(weights) - 1)] + [0.0 if route == "compiled" else 1e-6]
        assert weights == pytest.approx([w / sum(raw) for w in raw], rel=1e-9, abs=1e-15)

    nodes = set(r0["nodes"])
    if route == "fused":
        assert FUSED[trainer] in nodes, nodes
    elif route == "recompute":
        assert "_BranchNodeBackward" in nodes and not nodes & set(CPU_NODES), nodes
    else:
        assert not nodes & set(CPU_NODES) and "_BranchNodeBackward" not in nodes, nodes

