"""``python -m ibnedge``: the same as the ``ibnedge`` command."""
from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
