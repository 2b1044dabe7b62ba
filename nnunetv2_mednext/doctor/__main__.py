"""``python -m nnunetv2_mednext.doctor``: the device check (also the compile and routes sections' child process)."""

import sys

from .cli import main

sys.exit(main())
