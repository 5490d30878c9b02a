"""Keep freed tensor memory in the process (glibc's ``mallopt``).

PyTorch's CPU tensors come from ``malloc``.  With glibc's defaults a large
block (above a dynamic threshold of at most 32 MiB) is a fresh ``mmap`` that
goes back to the kernel when freed, and the heap above 128 KiB of free space
is trimmed: every training step or big no-grad batch then faults its
temporaries' pages in again — one page fault per 4 KiB, each zero-filled by
the kernel.  The B-cos layers make more temporaries than a plain convolution
(MaxOut, the patch norms, the scaling), so they pay more.  Measured on the
2-core CPU box (``benchmarks/README.md`` §4d): ``fmnist_bcos`` training ≈ 1.3×
faster (1.04–1.56× in alternating runs), a no-grad batch of 500 images of 84 px
≈ 3.4× (its twin 2.5×), at the price of a resident size that stays at its peak
(2.0 → 3.2 GB for that batch).

``tune_malloc()`` raises the mmap threshold to 1 GiB and the trim threshold to
2 GiB for the calling process.  The ``bcosnet`` command and the main job's
worker processes call it; library users opt in (it changes a process-wide
setting, so importing bcosnet never does).  ``BCOSNET_MALLOC_TUNING=0`` turns
it off, and glibc's own ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_``
environment variables, when set, win.
"""

from __future__ import annotations

import ctypes
import os
import sys

__all__ = ["tune_malloc", "ENV_VAR"]

ENV_VAR = "BCOSNET_MALLOC_TUNING"
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_GLIBC_VARS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def tune_malloc(mmap_threshold: int = 1 << 30, trim_threshold: int = 2**31 - 1) -> bool:
    """Set glibc's mmap and trim thresholds for this process (see the module
    docstring).  Returns True when both were set; False (and changes nothing)
    off Linux/glibc, when ``BCOSNET_MALLOC_TUNING=0``, or when glibc's own
    environment variables are set."""
    # Standard library only (no check_int): the module also runs alone, before torch.
    for name, value in (("mmap_threshold", mmap_threshold), ("trim_threshold", trim_threshold)):
        if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 2**31:
            raise ValueError(f"{name} must be an int in 1 .. 2**31 - 1 (mallopt takes a C int), "
                             f"got {value!r}")
    if os.environ.get(ENV_VAR, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if any(v in os.environ for v in _GLIBC_VARS) or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # no C library symbols / not glibc
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, mmap_threshold) == 1
    return mallopt(_M_TRIM_THRESHOLD, trim_threshold) == 1 and ok
