"""One process of the DDP test (``test_ddp.py``): one nnU-Net training step of a package trainer, on CPU.

``python ddp_worker.py DATASET TRAINER OUT`` with ``WORLD_SIZE`` 1 (the single-process reference on the whole batch)
or 2 (``RANK``, ``MASTER_ADDR``, ``MASTER_PORT``: gloo). The trainer is built as ``nnUNetv2_train`` builds it
(``get_trainer_from_args`` after the process group exists, then nnU-Net's own ``initialize()``: its batch split,
``convert_sync_batchnorm``, ``DistributedDataParallel`` without ``find_unused_parameters`` and its deep-supervision
weights under DDP) and runs nnU-Net's own ``train_step`` twice on a fixed batch (each rank on its half).

Patches, test only, because nnU-Net's DDP assumes CUDA:

* ``nnUNetTrainer.__init__`` moves a DDP trainer to ``cuda:RANK``: the worker sets ``trainer.device`` back to the CPU
  (and no ``GradScaler``, as for any CPU trainer) before ``initialize()``;
* nnU-Net wraps with ``DDP(network, device_ids=[rank])``, which PyTorch refuses for CPU modules: the module's ``DDP``
  name is replaced by one that drops ``device_ids`` and passes everything else on;
* ``MEDNEXT_DDP_COMPILE=1``: nnU-Net never compiles on a CPU (``_do_i_compile``); the worker lets it, with
  ``torch.compile``'s ``aot_eager`` backend (the CPU has no inductor toolchain guarantee).

The route is the package's switch: ``NNUNETV2_MEDNEXT_FAST_OPS=1`` (CPU fused nodes) or ``0`` (plain ops with
selective recompute, the GPU route). Writes the parameters and gradients after the step, the loss weights and the
autograd node types the forward ran to ``OUT`` (``torch.save``).
"""

from __future__ import annotations

import functools
import os
import sys

import torch
import torch.distributed as dist


def autograd_nodes(outputs: list[torch.Tensor]) -> set[str]:
    seen, names, stack = set(), set(), [o.grad_fn for o in outputs]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        names.add(type(fn).__name__)
        stack.extend(f for f, _ in fn.next_functions)
    return names


def main(dataset: str, trainer_name: str, out: str) -> None:
    import nnunetv2.training.nnUNetTrainer.nnUNetTrainer as trainer_module
    from nnunetv2.run.run_training import get_trainer_from_args
    from torch.nn.parallel import DistributedDataParallel

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    compile_ = os.environ.get("MEDNEXT_DDP_COMPILE") == "1"
    torch.set_num_threads(1)
    if world > 1:
        dist.init_process_group("gloo", rank=rank, world_size=world)
    trainer_module.DDP = lambda module, device_ids=None, **kw: DistributedDataParallel(module, **kw)  # CPU: no ids
    if compile_:
        torch.compile = functools.partial(torch.compile, backend="aot_eager")

    trainer = get_trainer_from_args(dataset, "2d", 0, trainer_name, "nnUNetPlans", device=torch.device("cpu"))
    trainer.device, trainer.grad_scaler = torch.device("cpu"), None
    if compile_:
        trainer._do_i_compile = lambda: True
    torch.manual_seed(0)  # the same initial weights everywhere (DDP also broadcasts rank 0's)
    trainer.initialize()
    ddp_weights = None
    if world == 1:  # the reference uses the loss weights nnU-Net gives a DDP run (lowest output 1e-6, or 0 compiled)
        trainer.is_ddp = True
        ddp_weights = trainer._build_loss().weight_factors
        trainer.is_ddp = False
        trainer.loss.weight_factors = ddp_weights
    net = trainer.network
    base = net.module if isinstance(net, DistributedDataParallel) else net
    base = getattr(base, "_orig_mod", base)
    for m in base.modules():  # drop path draws per sample from each process's stream: off, so the runs can agree
        if hasattr(m, "drop_prob"):
            m.drop_prob = 0.0

    cm = trainer.configuration_manager
    global_batch = trainer.batch_size * world
    patch = [int(s) for s in cm.patch_size]
    g = torch.Generator().manual_seed(1)
    data = torch.randn(global_batch, trainer.num_input_channels, *patch, generator=g)
    n_classes = trainer.label_manager.num_segmentation_heads
    seg = torch.randint(0, n_classes, (global_batch, 1, *patch), generator=g).float()
    scales = trainer._get_deep_supervision_scales()
    targets = [torch.nn.functional.interpolate(seg, size=[max(1, round(p * s)) for p, s in zip(patch, sc)],
                                               mode="nearest") for sc in scales]
    mine = slice(rank * trainer.batch_size, (rank + 1) * trainer.batch_size)

    seen: dict[str, set[str]] = {}

    def record(_module, _inputs, output) -> None:  # type: ignore[no-untyped-def]
        outs = output if isinstance(output, (list, tuple)) else [output]
        seen["nodes"] = autograd_nodes([o for o in outs if o.grad_fn is not None])

    base.register_forward_hook(record)
    # two steps: DDP without find_unused_parameters fails in the second forward if a parameter got no gradient
    for _ in range(2):
        loss = trainer.train_step({"data": data[mine], "target": [t[mine] for t in targets]})["loss"]
    torch.save({
        "params": {k: v.detach().clone() for k, v in base.named_parameters()},
        "grads": {k: v.grad.detach().clone() for k, v in base.named_parameters() if v.grad is not None},
        "buffers": {k: v.detach().clone() for k, v in base.named_buffers()},
        "weight_factors": list(trainer.loss.weight_factors), "ddp_weights": ddp_weights,
        "wrapped": type(net).__name__, "batch_size": trainer.batch_size, "loss": float(loss),
        "nodes": sorted(seen.get("nodes", ())), "is_ddp": trainer.is_ddp,
        "ds_bottleneck": bool(getattr(base, "ds_bottleneck", False)),
        "sync_bn": sum(isinstance(m, torch.nn.SyncBatchNorm) for m in base.modules()),
        "batch_norms": sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in base.modules()),
    }, out)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:4])
