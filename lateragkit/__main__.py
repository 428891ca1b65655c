"""``python -m lateragkit``: the ``lateragkit`` command without relying on the console script being on PATH."""
from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
