"""2D image classification on MedNeXt backbones (independent of nnU-Net); see ``docs/classification.md``.

Importing this package is cheap; torch is imported by the training modules only. Python use::

    from nnunetv2_mednext.classification.prepare import prepare
    from nnunetv2_mednext.classification.config import TrainConfig
    from nnunetv2_mednext.classification.trainer import train_folds

    prepared = prepare("DATA", "runs/x", n_folds=5)          # fingerprint, duplicates, splits
    result = train_folds(prepared, "runs/x", TrainConfig(epochs=100))
    result["summary"]["aggregate"]["mean"]["accuracy"]
"""
