"""The trainer's start-up summary: what a run is about to do, before it does it.

:func:`startup_summary` describes a set-up run — model and parameter count,
classes with their image counts, train/test sizes, image size and channels,
augmentation, EMA, what stops the run, threads and where their count came from,
device, output folder — plus the settings read off the data
(:func:`bcosnet.training.resolve_config`).  The trainer prints it once, from the
main process, before the first step.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["startup_summary", "print_summary", "thread_origin", "class_counts"]


def thread_origin(threads: int | None) -> str:
    """The torch thread count and where it came from: ``threads`` (config / CLI
    ``--threads``), ``OMP_NUM_THREADS``, or torch's default — and whether a set
    ``threads`` overrides ``OMP_NUM_THREADS``."""
    n = torch.get_num_threads()
    env = os.environ.get("OMP_NUM_THREADS")
    if threads:
        text = f"{n} (config threads / --threads)"
        if env is not None and env.strip() != str(threads):
            text += f", overriding OMP_NUM_THREADS={env}"
        return text
    if env is not None:
        return f"{n} (OMP_NUM_THREADS={env})"
    return f"{n} (torch's default for {os.cpu_count()} CPU cores; --threads or " \
           f"OMP_NUM_THREADS to choose)"


def _targets(ds: Any) -> list[int] | None:
    """Labels of a data set, through wrappers (``.dataset``) and subsets (``.indices``)."""
    targets = ds.__dict__.get("targets") if hasattr(ds, "__dict__") else None
    if targets is not None:
        return [int(t) for t in targets]
    inner = ds.__dict__.get("dataset") if hasattr(ds, "__dict__") else None
    if inner is None:
        return None
    t = _targets(inner)
    indices = ds.__dict__.get("indices")
    if t is None or indices is None:
        return t
    return [t[int(i)] for i in indices]


def class_counts(dataset: Any, num_classes: int) -> list[int] | None:
    """Images per class of ``dataset`` (``None`` when it lists no labels)."""
    t = _targets(dataset)
    if t is None:
        return None
    counts = [0] * num_classes
    for label in t:
        if 0 <= label < num_classes:
            counts[label] += 1
    return counts


def _count(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _transform_names(t: Any) -> str:
    ops = getattr(t, "transforms", None)
    if ops is None:
        return type(t).__name__
    return " + ".join(type(op).__name__ for op in ops if type(op).__name__ != "ToTensor")


def _classes_line(names: Sequence[str], train: list[int] | None, test: list[int] | None,
                  limit: int = 12) -> str:
    parts = []
    for i, name in enumerate(names[:limit]):
        counts = "/".join(str(c[i]) for c in (train, test) if c is not None)
        parts.append(f"{name} {counts}" if counts else name)
    more = f", ... ({len(names)} in all)" if len(names) > limit else ""
    return ", ".join(parts) + more


def startup_summary(run: Any, notes: Sequence[str] = ()) -> str:
    """The summary of a set-up ``_Run`` (the trainer's run object) as text lines."""
    cfg, env, data = run.cfg, run.env, run.data
    model = run.model
    k = run.num_classes
    params = sum(p.numel() for p in model.parameters())
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    ch = getattr(getattr(model, "model_info", None), "in_channels", data.in_channels)
    start = f"from {cfg.model.init_weights}" if cfg.model.init_weights else "random init"
    part = (f" ({trained:,} of them trained: trainable {cfg.trainable})"
            if trained != params else "")
    lines = [f"model:     {cfg.model.name}, {params:,} parameters{part}, {k} classes, "
             f"{ch} input channel{'s' if ch != 1 else ''}, {start}"]
    train_counts = class_counts(run.train_ds, k)
    test_counts = class_counts(data.test, k)
    d = cfg.data
    split = getattr(getattr(data, "dataset", None), "test_split", None) or "test"
    where = f" at {d.root}" if d.root else ""
    subset = (f" ({d.train_per_class} per class, seeded subset)"
              if d.train_per_class is not None else "")
    lines.append(f"data:      {d.dataset}{where}: {len(run.train_ds)} training images{subset}, "
                 f"{len(data.test)} test images ({split} split)")
    names = list(data.classes)
    lines.append(f"classes:   {len(names)} (images train/{split}) "
                 + _classes_line(names, train_counts, test_counts))
    if len(names) != k:
        lines.append(f"           the model has {k} outputs for {len(names)} classes "
                     "(model.num_classes / --num-classes)")
    h, w = data.image_size
    pre = getattr(data, "preprocess", None)
    size = pre.describe() if pre is not None and hasattr(pre, "describe") else f"{h}×{w} px"
    kind = {1: " (grey)", 3: "s (RGB)"}.get(data.in_channels, "s")
    lines.append(f"images:    {size}; {data.in_channels} channel{kind}")
    tr = getattr(data.train, "transform", None)
    aug = "off" if not d.augment else (_transform_names(tr) if tr is not None else "none")
    lines.append(f"augment:   {aug}")
    steps = cfg.epochs * run.steps_per_epoch
    stops = [f"{_count(cfg.epochs, 'epoch')} ({_count(steps, 'step')} of "
             f"{cfg.optim.batch_size} images)"]
    if cfg.time_limit_min:
        stops.append(f"{cfg.time_limit_min:g} min of training")
    if cfg.max_steps is not None:
        stops.append(f"step {cfg.max_steps}")
    lines.append("stops at:  " + (" or ".join(stops) + ", whichever comes first"
                                   if len(stops) > 1 else stops[0]))
    o = cfg.optim
    lines.append(f"optimiser: {o.name}, lr {o.lr:g}, {cfg.schedule.name} schedule, "
                 f"loss {cfg.loss}")
    if cfg.ema_decay:
        span = round(1.0 / (1.0 - cfg.ema_decay))
        total = min(steps, cfg.max_steps or steps)
        text = (f"EMA:       decay {cfg.ema_decay:g} (averages ~{span} steps); evaluation and "
                "the exported weights use the EMA weights")
        if span > total / 5:
            text += (f" — WARNING: this run has {_count(total, 'step')}, so the EMA weights "
                     "lag far behind training; lower --ema or leave it out")
        lines.append(text)
    else:
        lines.append("EMA:       off (evaluation uses the trained weights)")
    lines.append(f"threads:   {thread_origin(cfg.threads)}")
    dev = f"{env.device}" + (f", {env.world_size} processes" if env.world_size > 1 else "")
    prec = str(run.dtype).removeprefix("torch.")
    if run.ac_dtype is not None:
        prec += f" with {str(run.ac_dtype).removeprefix('torch.')} autocast"
    lines.append(f"device:    {dev} ({prec})")
    lines.append(f"output:    {run.out_dir}" + (f" (resuming at epoch {run.epoch}, step "
                                                f"{run.step})" if run.resuming else ""))
    if notes:
        lines.append("read off the data:")
        lines.extend(f"  - {n}" for n in notes)
    return "\n".join(lines)


def print_summary(run: Any, notes: Sequence[str] = ()) -> None:
    """Print :func:`startup_summary` from the main process."""
    if run.env.is_main:
        print("bcosnet train: start-up summary\n" + startup_summary(run, notes), flush=True)
