"""``python -m train.models --list [PATTERN]``: registered models and their parameter counts."""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from ibnedge.errors import add_debug_flag, run_reporting

from . import create_model, list_models


def count_parameters(net) -> int:
    """Trainable parameters, the figure PyTorch's ``sum(p.numel() for p in model.parameters())`` gives.

    BN moving statistics are MindSpore Parameters without gradients (PyTorch buffers), so
    they are not counted.
    """
    return int(sum(p.size for p in net.trainable_params()))


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.models", description=__doc__)
    parser.add_argument("--list", action="store_true", help="print every registered model with its parameter count")
    parser.add_argument("pattern", nargs="?", default=None, help="shell-style filter, e.g. 'resnet*_ibn_a'")
    parser.add_argument("--num-classes", type=int, default=1000)
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    if not args.list:
        parser.print_help()
        return 2
    return run_reporting(lambda: _list_command(args), "error: ", args.debug)


def _list_command(args: argparse.Namespace) -> int:
    names = list_models(args.pattern)
    if not names:
        print("no registered model matches %r" % args.pattern, file=sys.stderr)
        return 1
    width = max(len(n) for n in names)
    for name in names:
        params = count_parameters(create_model(name, num_classes=args.num_classes))
        print("%-*s  %12s  (%.2f M)" % (width, name, format(params, ","), params / 1e6), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
