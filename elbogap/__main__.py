"""``python -m elbogap``: the same command line as ``elbogap``."""

import sys

from elbogap.cli import main

sys.exit(main())
