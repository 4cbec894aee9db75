"""Learning-rate schedules as one value per optimizer step.

MindSpore's optimizers take the whole schedule as a 1-D tensor and index it with their
``global_step`` parameter, which is saved in every checkpoint: a resumed run therefore
continues the schedule exactly where it stopped.

The seed (ModelZoo IBN-Net): lr = 0.1 x global batch / 256, x0.1 at epochs 30, 60, 90 of 100.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ibnedge.errors import UserError

SCHEDULES = ("step", "cosine", "constant")


class ScheduleError(UserError, ValueError):
    """The schedule's settings contradict each other (e.g. --warmup-epochs beyond --epochs)."""


def scaled_lr(global_batch: int, base_lr: float = 0.1, base_batch: int = 256) -> float:
    """Linear scaling rule (Goyal et al. 2017): ``base_lr`` is the rate for ``base_batch`` images."""
    if global_batch < 1 or base_batch < 1:
        raise ScheduleError("batch sizes must be positive, got global %d, base %d" % (global_batch, base_batch))
    return base_lr * global_batch / base_batch


def check_schedule(lr: float, epochs: int, schedule: str = "step", warmup_epochs: float = 0.0,
                   min_lr: float = 0.0) -> None:
    """The schedule's settings that contradict each other whatever the data: checked by
    ``python -m train`` before its dataset scan, and by :func:`learning_rates`."""
    if schedule not in SCHEDULES:
        raise ScheduleError("unknown lr schedule %r: choose one of %s" % (schedule, ", ".join(SCHEDULES)))
    if epochs < 1:
        raise ScheduleError("need at least one epoch, got %d" % epochs)
    if warmup_epochs < 0 or warmup_epochs > epochs:
        raise ScheduleError("warmup_epochs must be within [0, epochs=%d], got %g" % (epochs, warmup_epochs))
    if schedule == "cosine" and not 0 <= min_lr <= lr:
        raise ScheduleError("min_lr must be within [0, lr=%g] for the cosine schedule, got %g" % (lr, min_lr))


def learning_rates(
    lr: float,
    epochs: int,
    steps_per_epoch: int,
    schedule: str = "step",
    milestones: Sequence[int] = (30, 60, 90),
    gamma: float = 0.1,
    warmup_epochs: float = 0.0,
    min_lr: float = 0.0,
) -> np.ndarray:
    """float32 array of ``epochs * steps_per_epoch`` learning rates.

    ``step``: ``lr * gamma**k`` after the k-th milestone epoch; ``cosine``: from ``lr`` down
    to ``min_lr`` over the steps after warmup; ``constant``: ``lr``. ``warmup_epochs``
    (may be fractional) ramps linearly from ``lr / warmup_steps`` up to ``lr`` first; the
    step schedule keeps counting epochs from the start of training, so its milestones do
    not move.
    """
    check_schedule(lr, epochs, schedule, warmup_epochs, min_lr)
    if steps_per_epoch < 1:
        raise ScheduleError("need at least one step per epoch, got %d" % steps_per_epoch)
    total = epochs * steps_per_epoch
    warmup = int(round(warmup_epochs * steps_per_epoch))
    steps = np.arange(total, dtype=np.float64)
    if schedule == "step":
        epoch_of_step = np.floor(steps / steps_per_epoch)
        decays = np.zeros(total)
        for m in sorted(milestones):
            decays += epoch_of_step >= m
        rates = lr * np.power(gamma, decays)
    elif schedule == "cosine":
        span = max(1, total - warmup)
        progress = np.clip((steps - warmup) / span, 0.0, 1.0)
        rates = min_lr + 0.5 * (lr - min_lr) * (1.0 + np.cos(math.pi * progress))
    else:
        rates = np.full(total, lr)
    if warmup:
        ramp = lr * (np.arange(warmup) + 1) / warmup
        rates[:warmup] = np.minimum(ramp, rates[:warmup]) if schedule == "step" else ramp
    return rates.astype(np.float32)
