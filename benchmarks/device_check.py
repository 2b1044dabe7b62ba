"""Device check: the GPU paths (fp16 + GradScaler, bf16, torch.compile, channels-last, checkpointing under
autocast, nnU-Net's predictor, DDP) on synthetic batches at nnU-Net plan shapes; the CPU subset without CUDA.

Same as ``nnunetv2-mednext doctor`` (the code lives in ``nnunetv2_mednext/device_check.py``); see docs/gpu.md::

    python benchmarks/device_check.py --out device_check            # GPU: under 8 minutes on one GPU
    python benchmarks/device_check.py --quick --out device_check    # CPU subset at CI size
"""

from __future__ import annotations

import sys

from nnunetv2_mednext.device_check import main

if __name__ == "__main__":
    sys.exit(main())
