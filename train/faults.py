"""Faults a training process injects into itself on request, for the launcher's tests.

Each is switched on by an environment variable, which the launcher passes to every rank:

- ``IBNEDGE_TRAIN_FAULT_RANK=R``: rank R raises after its first step (the run must fail).
- ``IBNEDGE_TRAIN_LOGGED_FAULT_RANK=R``: rank R, after its first step, catches an exception
  and logs its traceback and an ``error:`` line, then trains on (the run must succeed).
- ``IBNEDGE_TRAIN_STEP_SLEEP=S``: every rank sleeps S seconds after each step, so that a
  test can act while the run is in progress.
"""
from __future__ import annotations

import os
import time
import traceback

FAULT_ENV = "IBNEDGE_TRAIN_FAULT_RANK"
LOGGED_FAULT_ENV = "IBNEDGE_TRAIN_LOGGED_FAULT_RANK"
STEP_SLEEP_ENV = "IBNEDGE_TRAIN_STEP_SLEEP"

_logged = False


def after_step(rank: int, global_step: int) -> None:
    """Called at the end of every training step."""
    global _logged
    if os.environ.get(LOGGED_FAULT_ENV) == str(rank) and not _logged:
        _logged = True
        try:
            raise RuntimeError("a recoverable fault on rank %d after step %d (%s)" % (rank, global_step, LOGGED_FAULT_ENV))
        except RuntimeError as exc:
            traceback.print_exc()
            print("error: %s; caught, training goes on" % exc, flush=True)
    if os.environ.get(FAULT_ENV) == str(rank):
        raise RuntimeError("fault injected on rank %d after step %d (%s)" % (rank, global_step, FAULT_ENV))
    pause = float(os.environ.get(STEP_SLEEP_ENV) or 0)
    if pause > 0:
        time.sleep(pause)
