"""Faults (docs/reliability.md): SIGKILL during a checkpoint write and during the
pointing game, a full disk, two runs on one folder."""

from __future__ import annotations

import errno
import json
import os
import re
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


# ----------------------------------------------------------------------------- full disk
# Both tests leave the host as it was: the real full disk is a tmpfs mounted in a
# private mount namespace of a fresh interpreter (gone when it exits), the other
# injects the OSError a full disk raises.  Checked in both: results written before
# the disk filled are unchanged, no temporary file is left, the error says so.
_NEW = "no space left on the device while writing .*rise.json; nothing was written.*earlier " \
    "results are kept"
_OVERWRITE = "no space left on the device while writing .*results.json; its previous " \
    "version is intact"
_CKPT = "no space left on the device while writing .*checkpoint.pt; nothing was written"
_WHAT = {"new": "a new result", "overwrite": "an existing result", "checkpoint": "a checkpoint"}

_FULL_DISK = """
import json, sys
from pathlib import Path
import torch
from bcosnet._utils.io import atomic_write_json
from bcosnet.training import atomic_save

d, out = Path(sys.argv[1]), {}
first = atomic_write_json(d / "results.json", {"accuracy": 0.9})
atomic_write_json(d / "grad.json", {"scores": [0.5] * 10})
big = {"scores": [0.123456789] * 20_000}  # ~300 kB: more than the 64 kB disk holds
for case, write in [("new", lambda: atomic_write_json(d / "rise.json", big)),
                    ("overwrite", lambda: atomic_write_json(first, big)),
                    ("checkpoint", lambda: atomic_save({"w": torch.zeros(100_000)},
                                                       d / "checkpoint.pt"))]:
    try:
        write()
        out[case] = ["returned", ""]
    except Exception as e:
        out[case] = [type(e).__name__, str(e)]
out["results"] = json.loads(first.read_text())
out["grad"] = json.loads((d / "grad.json").read_text())
out["files"] = sorted(p.name for p in d.iterdir())
print(json.dumps(out))
"""


def _private_namespace() -> list[str]:
    """The ``unshare`` command that gives a fresh process its own mount namespace
    (``-m`` as root, ``-rm`` in a user namespace otherwise; mounts stay private)."""
    cmd = ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-rm"]
    try:
        r = subprocess.run([*cmd, "true"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"this host cannot make a private mount namespace ({e}); "
                    "test_full_disk_injected covers the handling")
    if r.returncode != 0:
        pytest.skip(f"this host cannot make a private mount namespace ({r.stderr.strip()}); "
                    "test_full_disk_injected covers the handling")
    return cmd


def test_full_disk_tmpfs_in_private_namespace(tmp_path, reliability) -> None:
    """A real 64 kB tmpfs, mounted in a private mount namespace of a fresh
    interpreter (no fork of this process): results, a result overwritten and
    torch.save's own failure on a full disk (a RuntimeError from its writer)."""
    d = tmp_path / "small"
    d.mkdir()
    script = 'mount -t tmpfs -o size=64k tmpfs "$1" && exec "$2" -c "$3" "$1"'
    r = subprocess.run([*_private_namespace(), "sh", "-c", script, "sh", str(d),
                        sys.executable, _FULL_DISK], capture_output=True, text=True,
                       timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.splitlines()[-1])
    for case, match in [("new", _NEW), ("overwrite", _OVERWRITE), ("checkpoint", _CKPT)]:
        kind, message = out[case]
        assert kind == "OSError" and re.search(match, message), (case, kind, message)
        reliability.message(AREA, f"full disk while writing {_WHAT[case]} (tmpfs of 64 kB)",
                            "refused: OSError", message)
    assert out["results"] == {"accuracy": 0.9} and out["grad"] == {"scores": [0.5] * 10}
    assert out["files"] == ["grad.json", "results.json"]
    reliability.handled(AREA, "results written before the disk filled (tmpfs of 64 kB)",
                        "unchanged, no temporary file left (0 results lost)")
    # The host never saw the mount: the folder is a plain empty folder here.
    assert list(d.iterdir()) == [] and str(d) not in Path("/proc/self/mounts").read_text()


def test_full_disk_injected(tmp_path, monkeypatch, reliability) -> None:
    """The writes of the one atomic-write helper fail as on a full disk: half the
    bytes reach the temporary file, then ``OSError(ENOSPC)`` (results: the file
    write; checkpoints: torch.save)."""
    first = atomic_write_json(tmp_path / "results.json", {"accuracy": 0.9})
    atomic_write_json(tmp_path / "grad.json", {"scores": [0.5] * 10})

    def full(path, data: bytes) -> None:
        with open(path, "wb") as f:
            f.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", lambda self, data: full(self, data))
    monkeypatch.setattr(torch, "save", lambda obj, path: full(path, b"x" * 1000))
    big = {"scores": [0.123456789] * 20_000}
    for case, match, write in [
            ("new", _NEW, lambda: atomic_write_json(tmp_path / "rise.json", big)),
            ("overwrite", _OVERWRITE, lambda: atomic_write_json(first, big)),
            ("checkpoint", _CKPT, lambda: atomic_save({"w": torch.zeros(10)},
                                                      tmp_path / "checkpoint.pt"))]:
        err = reliability.refused(AREA, f"full disk while writing {_WHAT[case]} (injected "
                                  "ENOSPC)", OSError, match, write)
        assert err.errno == errno.ENOSPC
    monkeypatch.undo()
    assert json.loads(first.read_text()) == {"accuracy": 0.9}
    assert json.loads((tmp_path / "grad.json").read_text()) == {"scores": [0.5] * 10}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grad.json", "results.json"]
    reliability.handled(AREA, "results written before the disk filled (injected ENOSPC)",
                        "unchanged, no temporary file left (0 results lost)")


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


_HOLDER = """
import importlib.util, sys, time
# bcosnet's io module alone (standard library only): no torch to import
spec = importlib.util.spec_from_file_location("bcosnet_io", sys.argv[2])
io = importlib.util.module_from_spec(spec)
spec.loader.exec_module(io)
with io.folder_lock(sys.argv[1], "test run"):
    print("1", flush=True)
    time.sleep(120)
"""


def test_two_runs_on_one_folder(tmp_path, reliability) -> None:
    """The first run holds the folder in a fresh interpreter (no fork of this process)."""
    import bcosnet._utils.io

    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(out), bcosnet._utils.io.__file__],
                              stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == b"1"  # the folder is held
        err = reliability.refused(AREA, "a second process on an output folder in use",
                                  FolderBusyError,
                                  f"in use by another main job \\(pid {holder.pid}\\)",
                                  lambda: folder_lock(out, "main job").__enter__())
        assert isinstance(err, ValueError)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
        holder.stdout.close()  # type: ignore[union-attr]
    with folder_lock(out, "main job"):  # the killed holder's lock is gone
        pass
    reliability.handled(AREA, "re-run after the lock holder was SIGKILLed",
                        "the lock is free (the OS drops it with the process)")
