"""Peak memory of one call, for the benchmarks of this folder (``bench_explain.py``,
``bench_memory_methods.py``): run each measurement in a fresh process started
with :data:`MMAP_ENV`, so that big blocks are mapped and unmapped and the
resident size tracks the live tensors."""

from __future__ import annotations

import gc
import os
import resource
import time
from collections.abc import Callable
from typing import Any

import torch

#: The environment of a measuring subprocess: glibc maps every block ≥ 64 KiB
#: afresh and returns it on free.
MMAP_ENV = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")


def _rss() -> int:
    """Resident set size of this process now, bytes."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS"))


def _max_rss() -> int:
    """The process's high-water resident size so far, bytes (Linux: KiB in ru_maxrss)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def peak_memory(fn: Callable[[], Any], device: torch.device) -> tuple[int, bool, float, Any]:
    """(peak bytes above the memory before ``fn``, whether that is only an upper
    bound, wall seconds, ``fn()``'s result)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base, before = _rss(), _max_rss()
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() - base, False, seconds, out
    peak = _max_rss()
    # The high-water mark did not move: the call's peak was at most the earlier one.
    return peak - base, peak == before, seconds, out


