"""Faults (docs/reliability.md): SIGKILL during a checkpoint write and during the
pointing game, a full disk, two runs on one folder."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bcosnet._utils.io import FolderBusyError, atomic_write_json, folder_lock
from bcosnet.training import atomic_save, load_checkpoint

AREA = "faults"


_WRITER = """
import sys, torch
from bcosnet.training import atomic_save
i = 0
while True:
    atomic_save({"step": i, "w": torch.full((4_000_000,), float(i))}, sys.argv[1])
    if i == 0:
        print("1", flush=True)
    i += 1
"""


def test_sigkill_during_checkpoint_writes(tmp_path, reliability) -> None:
    """A child process rewrites a 16 MB checkpoint in a loop; SIGKILL at 5 moments:
    each time the file loads and is one complete version.  (A fresh interpreter, not
    os.fork: a forked child of a process whose OpenMP pool is running can hang.)"""
    ckpt = tmp_path / "checkpoint.pt"
    kills = 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for delay in (0.0, 0.02, 0.05, 0.09, 0.15):
        child = subprocess.Popen([sys.executable, "-c", _WRITER, str(ckpt)],
                                 stdout=subprocess.PIPE, env=env)
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == b"1"  # one version written
            time.sleep(delay)
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=60)
            child.stdout.close()  # type: ignore[union-attr]
        kills += 1
        c = load_checkpoint(ckpt)
        assert torch.equal(c["w"], torch.full((4_000_000,), float(c["step"])))
    reliability.handled(AREA, f"SIGKILL during checkpoint writes ({kills} kills at "
                        "0–0.15 s into a write loop of 16 MB checkpoints)",
                        "every time the checkpoint loads and is one complete version")


def _disk(tmp_path: Path, size_kb: int) -> tuple[Path, bool]:
    """A small tmpfs if we may mount one (root), else a plain folder (ENOSPC is then
    simulated)."""
    d = tmp_path / "small"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(d)],
                       capture_output=True)
    return d, r.returncode == 0


def test_full_disk_keeps_earlier_results(tmp_path, monkeypatch, reliability) -> None:
    d, mounted = _disk(tmp_path, 64)
    try:
        first = atomic_write_json(d / "results.json", {"accuracy": 0.9})
        atomic_write_json(d / "grad.json", {"scores": [0.5] * 10})
        big = {"scores": [0.123456789] * 20_000}  # ~300 kB: more than the disk holds
        if not mounted:  # simulate: every write fails as on a full disk
            real = Path.write_bytes

            def full(self, data):
                if len(data) > 50_000:
                    raise OSError(errno.ENOSPC, "No space left on device")
                return real(self, data)

            monkeypatch.setattr(Path, "write_bytes", full)
        how = "tmpfs of 64 kB" if mounted else "simulated ENOSPC (tmpfs could not be mounted)"
        reliability.refused(AREA, f"full disk while writing a new result ({how})", OSError,
                            "no space left on the device while writing .*nothing was "
                            "written.*earlier results are kept",
                            lambda: atomic_write_json(d / "rise.json", big))
        reliability.refused(AREA, f"full disk while overwriting a result ({how})", OSError,
                            "previous version is intact",
                            lambda: atomic_write_json(first, big))
        assert json.loads(first.read_text()) == {"accuracy": 0.9}
        assert json.loads((d / "grad.json").read_text()) == {"scores": [0.5] * 10}
        assert not (d / "rise.json").exists()
        assert sorted(p.name for p in d.iterdir()) == ["grad.json", "results.json"]
        reliability.handled(AREA, f"results written before the disk filled ({how})",
                            "unchanged, no temporary file left (0 results lost)")
        # torch.save's own failure on a full disk (a RuntimeError) is reworded too
        if mounted:
            reliability.refused(AREA, "full disk while writing a checkpoint (tmpfs)", OSError,
                                "no space left", lambda: atomic_save(
                                    {"w": torch.zeros(100_000)}, d / "checkpoint.pt"))
            assert not (d / "checkpoint.pt").exists()
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(d)], check=False, capture_output=True)


def test_interrupted_pointing_game_then_rerun_is_identical(tmp_path, reliability) -> None:
    """The game is interrupted (KeyboardInterrupt from inside a method, after 2 of 4
    grids — the partial file is written atomically after every grid, so this is
    what a SIGKILL leaves); the re-run's scores equal an uninterrupted run's."""
    from bcosnet.evaluation import grid_pointing_game
    from tests.reliability.test_fuzz import _Oracle, _oracle_data

    calls = {"n": 0, "stop_at": None}

    def grad_like(images, targets):
        calls["n"] += 1
        if calls["stop_at"] is not None and calls["n"] > calls["stop_at"]:
            raise KeyboardInterrupt
        return images.abs() * (1 + targets.view(-1, 1, 1, 1).float())

    def play(folder):
        return grid_pointing_game(_Oracle(), _oracle_data(), {"m": grad_like, "grad": "grad"},
                                  n=2, num_grids=4, confidence_threshold=None,
                                  results_dir=folder, checkpoint_interval_s=0.0,
                                  progress=False, batch_size=1)

    clean = play(tmp_path / "clean")
    calls.update(n=0, stop_at=8)  # per-cell calls: 4 cells a grid, stop in grid 3
    with pytest.raises(KeyboardInterrupt):
        play(tmp_path / "killed")
    partial = json.loads((tmp_path / "killed" / "m.partial.json").read_text())["scores"]
    assert 0 < len(partial) < 16 and not (tmp_path / "killed" / "m.json").exists()
    calls.update(n=0, stop_at=None)
    again = play(tmp_path / "killed")
    assert calls["n"] < 16  # resumed, not redone
    for m in clean.scores:
        assert (again.scores[m] == clean.scores[m]).all()
    reliability.handled(AREA, "pointing game interrupted mid-method, then re-run",
                        f"resumed after {len(partial)} of 16 cell scores; every score equals "
                        "an uninterrupted run's (no row duplicated or missing)")


def test_two_runs_on_one_folder(tmp_path, reliability) -> None:
    out = tmp_path / "out"
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the first run: hold the folder until killed
        try:
            os.close(r)
            with folder_lock(out, "test run"):
                os.write(w, b"1")
                time.sleep(60)
        finally:
            os._exit(0)
    os.close(w)
    try:
        assert os.read(r, 1) == b"1"
        err = reliability.refused(AREA, "a second process on an output folder in use",
                                  FolderBusyError, f"in use by another main job \\(pid {pid}\\)",
                                  lambda: folder_lock(out, "main job").__enter__())
        assert isinstance(err, ValueError)
    finally:
        os.close(r)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    with folder_lock(out, "main job"):  # the killed holder's lock is gone
        pass
    reliability.handled(AREA, "re-run after the lock holder was SIGKILLed",
                        "the lock is free (the OS drops it with the process)")
