"""Test-session settings: one intra-op thread everywhere (subprocess trainings included).

nnU-Net's ``-device cpu`` uses every core; on a shared 2-core machine OpenMP spin-waiting then slows CPU runs down
by an order of magnitude. The MedNeXt trainers honour ``OMP_NUM_THREADS`` (``trainers/threads.py``).
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
