"""Deployment of trained nnU-Net models (this package's trainers and stock ones): ONNX export of each fold's network
and prediction through nnU-Net's own predictor with the exported network (``onnxruntime``, ``openvino``) or with
a faster PyTorch route (``torch``).

* :mod:`.model`: a model folder, its folds and checkpoints, loaded with nnU-Net's predictor;
* :mod:`.onnx_export`: export, check against PyTorch, sidecar and freshness;
* :mod:`.backends`: inference sessions and the ``nn.Module`` adapter nnU-Net's predictor runs;
* :mod:`.predict`: ``nnunetv2-mednext predict`` (``nnUNetv2_predict``'s arguments plus ``--backend``).
"""
