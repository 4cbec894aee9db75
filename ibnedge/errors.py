"""Failures a user can fix, and how every command of this project reports them.

A command (``ibnedge ...``, ``python -m train...``) reports a user error in ONE line that
names the file or flag and the fix, and exits 2. A user error is

- a :class:`UserError`: the base of the project's own error types (``BackendError``,
  ``OutputError``, ``MetadataError``, ``TrainingError``, ``PthError``, ...), raised where
  bad input or an unusable set-up is detected;
- an :class:`OSError` that names a file (``filename`` set: missing, not permitted, not a
  directory...): the operating system refusing a path the user gave, already worded.

Anything else is a bug and keeps Python's traceback and exit status 1: a one-line message
would hide the only thing needed to fix it, and a long run may not fail the same way twice.
``--debug`` (every entry point) or ``IBNEDGE_DEBUG=1`` prints a user error's traceback too,
its cause included, above the one line.
"""
from __future__ import annotations

import argparse
import os
import sys
import traceback
from typing import Callable

DEBUG_ENV = "IBNEDGE_DEBUG"
EXIT_USER_ERROR = 2


class UserError(Exception):
    """Base of the errors a command reports in one line (exit 2); subclasses say what failed."""


def is_user_error(exc: BaseException) -> bool:
    return isinstance(exc, UserError) or (isinstance(exc, OSError) and exc.filename is not None)


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--debug", action="store_true", default=False,
        help="on an error, also print its traceback (as does %s=1)" % DEBUG_ENV,
    )


def debug_requested(flag: bool = False) -> bool:
    """``--debug`` given, or ``IBNEDGE_DEBUG`` set to anything but empty/0/false/no."""
    return bool(flag) or os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def report(exc: BaseException, prefix: str, debug: bool) -> int:
    """Write ``prefix`` + the error in one line (the traceback above it under ``debug``)."""
    if debug:
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    sys.stderr.write("%s%s\n" % (prefix, one_line(exc)))
    sys.stderr.flush()
    return EXIT_USER_ERROR


def run_reporting(command: Callable[[], int], prefix: str, debug: bool = False) -> int:
    """``command()``'s exit status; a user error is reported in one line (exit 2; with its
    traceback under ``debug`` or IBNEDGE_DEBUG), anything else propagates with its traceback."""
    try:
        return command()
    except Exception as exc:  # narrowed at once: only user errors are handled here
        if not is_user_error(exc):
            raise
        return report(exc, prefix, debug_requested(debug))


__all__ = ["DEBUG_ENV", "EXIT_USER_ERROR", "UserError", "add_debug_flag", "debug_requested", "is_user_error",
           "one_line", "report", "run_reporting"]
