"""tune_malloc: freed tensor memory stays in the process (no page faults the
second time), and it stands aside when asked to or when glibc's own settings exist.
Each case runs in a fresh interpreter: mallopt changes a process-wide setting."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bcosnet.cli import main

_PROBE = r"""
import ctypes, importlib.util, json, resource, sys
# the module alone (no torch import: a fast probe); torch's CPU tensors come from
# the same malloc (posix_memalign)
spec = importlib.util.spec_from_file_location("m", sys.argv[1])
m = importlib.util.module_from_spec(spec)
spec.loader.exec_module(m)
tuned = m.tune_malloc()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
faults = []
for _ in range(8):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    p = libc.malloc(64 * 2**20)  # 64 MiB: above glibc's default mmap threshold
    ctypes.memset(p, 1, 64 * 2**20)
    libc.free(p)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"tuned": tuned, "faults": faults}))
"""


def _probe(**env: str) -> dict:
    import json

    e = {k: v for k, v in os.environ.items()
         if k not in ("BCOSNET_MALLOC_TUNING", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")}
    e.update(env)
    import bcosnet._utils.malloc as module

    out = subprocess.run([sys.executable, "-c", _PROBE, module.__file__], env=e,
                         capture_output=True, text=True, timeout=120, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's (Linux)")
def test_tuned_process_reuses_freed_memory_without_page_faults():
    pages = 64 * 2**20 // 4096
    tuned = _probe(BCOSNET_MALLOC_TUNING="1")
    assert tuned["tuned"] is True
    # the first allocations fault their pages in either way (glibc settles its
    # heap within the first few); from then on only the tuned process reuses them
    assert tuned["faults"][0] > pages // 2
    assert max(tuned["faults"][4:]) < pages // 20
    off = _probe(BCOSNET_MALLOC_TUNING="0")
    assert off["tuned"] is False
    assert min(off["faults"][4:]) > pages // 2  # glibc's default: a fresh mmap each time


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's (Linux)")
def test_glibc_environment_variables_win_and_bad_values_are_refused():
    assert _probe(MALLOC_TRIM_THRESHOLD_="131072")["tuned"] is False
    from bcosnet import tune_malloc

    with pytest.raises(ValueError, match="C int"):
        tune_malloc(mmap_threshold=2**40)


def test_the_bcosnet_command_tunes_malloc_before_running(monkeypatch, tmp_path, capsys):
    """Every sub-command runs tuned (here one that fails at once on a missing file:
    the tuning happened before it ran)."""
    import bcosnet._utils.malloc as module

    calls = []
    monkeypatch.setattr(module, "tune_malloc", lambda: calls.append(1) or True)
    rc = main(["explain", str(tmp_path / "missing.png"), "--checkpoint",
               str(tmp_path / "missing.pt"), "--out", str(tmp_path / "o")])
    assert rc != 0 and calls == [1]
    assert "missing" in capsys.readouterr().err
