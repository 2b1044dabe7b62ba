"""Device check (``nnunetv2-mednext doctor``, ``benchmarks/device_check.py``): do the GPU paths work, and how fast.

No dataset is read: batches are synthetic, at the shapes of nnU-Net plans written for the check
(:func:`.plans.synthetic_plans`). Four networks are built from the same plans by the trainers users run
(``nnUNetTrainerMedNeXt`` = ``mednext_t``, ``nnUNetTrainerMedNeXtV1_S_k3``, ``nnUNetTrainerMedNeXtV1_L_k3`` with
its default gradient checkpointing, and nnU-Net's own ``nnUNetTrainer`` = ``PlainConvUNet``), with nnU-Net's loss
(Dice + CE, deep supervision) and each trainer's optimiser recipe. Sections (one module each in ``sections/``):

* **matrix**: train iterations/s and memory per network, plan and mode (fp16 + GradScaler, bf16, channels-last);
* **stability**: N AMP steps per network on fresh batches of a learnable synthetic target: no NaN/inf in loss,
  gradients or weights, and the loss goes down;
* **planner**: the MedNeXt planner's memory estimate (and nnU-Net's for ``PlainConvUNet``) against the measured peak;
* **compile**: the same training steps under ``torch.compile`` (inductor), in a child process under a timeout;
* **routes**: channels-last, ``torch.compile`` and the recompute policy as switches, side by side against the U-Net;
  the fastest route per network and the one setting that selects it (defaults unchanged);
* **predictor**: nnU-Net's ``nnUNetPredictor`` (sliding window, Gaussian weighting, mirroring) on a synthetic volume;
* **classify**: the classification trainer's networks (``mednext_cls_t`` against ``resnet18``) under its AMP and
  channels-last rules, then ``classify train`` + ``predict`` end to end on a synthetic set;
* **nnunet_train**: the stock ``nnUNetv2_train`` on a synthetic dataset, ``-num_gpus 2`` when two GPUs are visible.

On a CPU the same command runs the CPU subset (bf16 autocast, inductor if a C++ compiler is there, checkpointing,
the predictor) and lists what it skipped and why. Everything runs inside a time budget; what does not fit is skipped
and says so. Results: ``device_check.json`` and ``device_check.md`` in the output folder.

Modules: ``profiles`` (what a run measures), ``plans`` (synthetic nnU-Net plans), ``amp`` (AMP modes, nnU-Net's
step order, compile guard), ``cases`` (networks, loss, recipe, timed steps), ``worker`` (child processes),
``sections/`` (one per section), ``report`` (JSON and markdown), ``check`` (the run), ``cli`` (the command).
"""
