import sys

from nnunetv2_mednext.cli import main

sys.exit(main())
