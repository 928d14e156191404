"""``python -m bnmnist``: the same program as ``bnmnist-train`` and ``python scripts/train.py``."""

import sys

from .cli import main

sys.exit(main())
