"""Learning-rate schedules per optimiser step: cosine / step / constant with a
linear warm-up (a ``LambdaLR`` whose state is saved in checkpoints)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .config import ScheduleConfig

__all__ = ["lr_factor", "build_scheduler"]


def lr_factor(
    step: int,
    total_steps: int,
    steps_per_epoch: int,
    cfg: ScheduleConfig,
    base_lr: float,
    progress: float | None = None,
) -> float:
    """Multiplier of the base learning rate at optimiser step ``step`` (0-based).

    ``progress`` (in [0, 1]) overrides the cosine's position after warm-up
    (used to fit the schedule to a time limit)."""
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    if warmup > 0 and step < warmup:
        start = cfg.warmup_start_factor
        return start + (1.0 - start) * step / warmup
    if cfg.name == "constant":
        return 1.0
    if cfg.name == "step":
        epoch = step // max(steps_per_epoch, 1)
        return cfg.gamma ** (epoch // max(cfg.step_epochs, 1))
    if cfg.name == "cosine":
        span = max(total_steps - warmup, 1)
        t = min(max(step - warmup, 0) / span, 1.0)
        if progress is not None:
            t = min(max(t, progress), 1.0)
        floor = cfg.min_lr / base_lr
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t))
    raise ValueError(f"unknown schedule {cfg.name!r}; use 'cosine', 'step' or 'constant'")


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    cfg: ScheduleConfig,
    total_steps: int,
    steps_per_epoch: int,
    progress: Callable[[], float | None] | None = None,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` stepping once per optimiser step.  ``progress()`` (optional)
    returns the time-based progress in [0, 1] (see ``ScheduleConfig.fit_time_limit``)."""
    base_lr = optimizer.param_groups[0]["lr"]
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: lr_factor(s, total_steps, steps_per_epoch, cfg, base_lr,
                            progress() if progress is not None else None),
    )
