"""``python -m train``: see :mod:`train.loop`."""
from .loop import main

if __name__ == "__main__":
    raise SystemExit(main())
