"""The nnU-Net v2 integration: everything of the package that imports ``nnunetv2`` lives here.

* ``trainers/``: the ``nnUNetTrainerMedNeXt*`` trainers (one table, ``trainers.variants``) and their helpers;
* ``planners/``: the MedNeXt experiment planners (patch and batch from MedNeXt's memory model);
* ``startup_hook.py`` + ``autoregister.pth`` (installed at the root of ``site-packages``) and ``ext_trainers/`` (the
  folder put on ``nnUNet_extTrainer``): how the stock ``nnUNetv2_*`` commands find the trainers;
* ``friendly_errors.py`` (the exception hook that explains, never hides), ``dataset_check.py`` (raw data and predict
  inputs, through nnU-Net's own readers), ``env.py`` (nnU-Net's folder variables);
* ``pipeline.py`` (the stock commands in subprocesses), ``synthetic.py`` (raw datasets for tests and the demo),
  ``demo.py`` (the CPU demo).

It may import ``networks`` and the package's shared utilities; nothing below it imports it. Importing this package
itself imports nothing.
"""
