"""Device check: the GPU paths (fp16 + GradScaler, bf16, torch.compile, channels-last, checkpointing under
autocast, the GPU routes, nnU-Net's predictor, DDP) on synthetic batches at nnU-Net plan shapes; the CPU subset
without CUDA.

Same as ``nnunetv2-mednext doctor`` (the code lives in the ``nnunetv2_mednext/doctor/`` package); see docs/gpu.md::

    python benchmarks/device_check.py -o device_check            # GPU: under 9 minutes on one GPU
    python benchmarks/device_check.py --quick -o device_check    # CPU subset at CI size
"""

from __future__ import annotations

import sys

from nnunetv2_mednext.doctor.cli import main

if __name__ == "__main__":
    sys.exit(main())
