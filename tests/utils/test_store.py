"""The keyed result store (bcosnet._utils.store): settings checked before any work,
each differing setting named, items written atomically, a killed item resumed, and
several processes adding items to one store."""

from __future__ import annotations

import errno
import json
import os
import pickle
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import bcosnet._utils.io as io_module
from bcosnet._utils.store import (
    UNSET,
    ResultStore,
    SettingsMismatchError,
    fingerprint,
    settings_differences,
)

UTILS = Path(io_module.__file__).parent

# A fresh interpreter that loads the store's two modules alone (no torch, no bcosnet
# package import): starts in a fraction of a second.
PRELUDE = f"""
import os, signal, sys, types
pkg = types.ModuleType("store_pkg"); pkg.__path__ = [{str(UTILS)!r}]
sys.modules["store_pkg"] = pkg
from store_pkg.store import ResultStore, SettingsMismatchError
"""


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PRELUDE + script, *args], capture_output=True,
                          text=True, timeout=120)


def test_settings_recorded_then_checked_naming_each_difference(tmp_path) -> None:
    settings = {"n": 3, "seed": 0, "method_settings": {"n_steps": 50}, "threshold": 0.5}
    ResultStore(tmp_path, settings)
    saved = json.loads((tmp_path / "store.json").read_text())
    assert saved["settings"] == settings and saved["key"] == fingerprint(settings)
    ResultStore(tmp_path, dict(settings))  # the same settings: accepted
    other = {"n": 2, "seed": 0, "method_settings": {"n_steps": 20}, "extra": True}
    with pytest.raises(SettingsMismatchError) as e:
        ResultStore(tmp_path, other)
    # each differing setting, then and now; nested settings by dotted name
    assert e.value.differences == {"extra": (UNSET, True), "method_settings.n_steps": (50, 20),
                                   "n": (3, 2), "threshold": (0.5, UNSET)}
    msg = str(e.value)
    for text in ("n: 3 then, 2 now", "method_settings.n_steps: 50 then, 20 now",
                 "threshold: 0.5 then, (unset) now", "extra: (unset) then, True now",
                 f"delete {tmp_path}"):
        assert text in msg
    assert "seed" not in e.value.differences and e.value.path == str(tmp_path)
    assert isinstance(e.value, ValueError)
    # it crosses process boundaries whole (a worker's refusal reaches the main process)
    back = pickle.loads(pickle.dumps(e.value))
    assert back.differences == e.value.differences and str(back) == msg
    assert back.differences["extra"][0] is UNSET
    # the store.json the folder records is not rewritten by a refused opening
    assert json.loads((tmp_path / "store.json").read_text()) == saved


def test_settings_differences_compare_values_not_types_of_containers() -> None:
    assert settings_differences({"a": (1, 2), "b": {"c": None}}, {"a": [1, 2], "b": {"c": None}}) \
        == {}
    assert settings_differences({"a": 1.0}, {"a": 1.5}) == {"a": (1.0, 1.5)}


def test_items_keyed_by_their_own_settings(tmp_path) -> None:
    store = ResultStore(tmp_path, {"model": "abc"})
    assert store.load("grad", {"smoothing": None}) is None
    store.save("grad", {"scores": [0.5, 0.25]}, {"smoothing": None})
    assert store.load("grad", {"smoothing": None}) == {"scores": [0.5, 0.25]}
    with pytest.raises(SettingsMismatchError, match="smoothing: None then, 3 now") as e:
        store.load("grad", {"smoothing": 3})
    assert e.value.path == str(tmp_path / "grad.json")
    # a stale item the caller recomputes instead (the main job's derived stages)
    assert store.load("grad", {"smoothing": 3}, stale_ok=True) is None
    with pytest.raises(ValueError, match="may not be named"):
        store.save("bad", {"settings": 1})


def test_a_full_disk_keeps_the_previous_item(tmp_path, monkeypatch) -> None:
    store = ResultStore(tmp_path)
    store.save("a", {"v": 1})
    before = (tmp_path / "a.json").read_bytes()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io_module.os, "replace", full)
    with pytest.raises(OSError, match="no space left .*previous version is intact"):
        store.save("a", {"v": 2})
    with pytest.raises(OSError, match="nothing was written"):
        store.save_partial("b", {"v": 2})
    monkeypatch.undo()
    assert (tmp_path / "a.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]  # no temporary file left
    assert store.load("a") == {"v": 1}


RESUMABLE = """
folder, kill_at = sys.argv[1], int(sys.argv[2])
store = ResultStore(folder, {"n": 10})
if store.load("squares", {"k": 2}) is not None:
    print("loaded"); sys.exit(0)
values = (store.load_partial("squares", {"k": 2}) or {"values": []})["values"]
print("start", len(values), flush=True)
for i in range(len(values), 10):
    values.append(i ** 2)
    store.save_partial("squares", {"values": values}, {"k": 2})
    if i == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
store.save("squares", {"values": values}, {"k": 2})
print("done", flush=True)
"""


def test_item_killed_midway_resumes_where_it_stopped(tmp_path) -> None:
    killed = _run(RESUMABLE, str(tmp_path), "4")
    assert killed.returncode == -signal.SIGKILL and "start 0" in killed.stdout
    assert not (tmp_path / "squares.json").exists()
    partial = ResultStore(tmp_path, {"n": 10}).load_partial("squares", {"k": 2})
    assert partial == {"values": [0, 1, 4, 9, 16]}
    again = _run(RESUMABLE, str(tmp_path), "-1")
    assert again.returncode == 0, again.stderr
    assert "start 5" in again.stdout and "done" in again.stdout  # the first 5 not redone
    store = ResultStore(tmp_path, {"n": 10})
    assert store.load("squares", {"k": 2}) == {"values": [i ** 2 for i in range(10)]}
    assert not store.partial_path("squares").exists()
    assert _run(RESUMABLE, str(tmp_path), "-1").stdout.strip() == "loaded"
    # the partial item of other settings is refused, not continued
    store.save_partial("cubes", {"values": [0]}, {"k": 3})
    with pytest.raises(SettingsMismatchError, match="k: 3 then, 2 now"):
        store.load_partial("cubes", {"k": 2})


WRITER = """
folder, who, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
try:
    store = ResultStore(folder, {"model": "m1", "n": 3})
except SettingsMismatchError as e:
    print("refused", sorted(e.differences)); sys.exit(3)
for i in range(count):
    store.save(f"{who}-{i}", {"value": [i] * 500, "by": who}, {"index": i})
    store.save(f"shared-{i}", {"value": i}, {"index": i})  # both write the same item
print("ok")
"""


def test_two_processes_add_items_to_one_store(tmp_path) -> None:
    procs = [subprocess.Popen([sys.executable, "-c", PRELUDE + WRITER, str(tmp_path), who, "40"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for who in ("a", "b")]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    store = ResultStore(tmp_path, {"model": "m1", "n": 3})
    for who in ("a", "b"):
        for i in range(40):
            assert store.load(f"{who}-{i}", {"index": i}) == {"value": [i] * 500, "by": who}
    assert all(store.load(f"shared-{i}", {"index": i}) == {"value": i} for i in range(40))
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    # a process with other settings is refused before it writes anything
    names = sorted(p.name for p in tmp_path.iterdir())
    other = _run(WRITER.replace('"model": "m1"', '"model": "m2"'), str(tmp_path), "c", "5")
    assert other.returncode == 3 and "refused ['model']" in other.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == names


def test_processes_opening_a_new_store_at_once_agree_on_its_settings(tmp_path) -> None:
    """Threads racing to create store.json: exactly one settings record, and a
    different one is refused, whichever thread came first."""
    results: dict[int, str] = {}
    barrier = threading.Barrier(8)

    def open_store(i: int) -> None:
        barrier.wait()
        try:
            ResultStore(tmp_path, {"seed": i % 2})
            results[i] = "ok"
        except SettingsMismatchError:
            results[i] = "refused"

    threads = [threading.Thread(target=open_store, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winner = json.loads((tmp_path / "store.json").read_text())["settings"]["seed"]
    assert results == {i: "ok" if i % 2 == winner else "refused" for i in range(8)}
    assert [p.name for p in tmp_path.iterdir()] == ["store.json"]


def test_a_damaged_item_is_named(tmp_path) -> None:
    store = ResultStore(tmp_path)
    (tmp_path / "x.json").write_text("[1, 2")
    with pytest.raises(ValueError, match=r"x\.json is not a result file.*delete it"):
        store.load("x")
    assert os.path.exists(tmp_path / "x.json")  # nothing deleted behind the user's back


def test_a_folder_from_before_the_store_is_checked_by_what_it_recorded(tmp_path) -> None:
    """legacy_settings: an earlier folder's recorded settings are compared as far as
    they go (here it did not record "model"), then store.json is written."""
    with pytest.raises(SettingsMismatchError, match="a: 2 then, 1 now") as e:
        ResultStore(tmp_path / "x", {"a": 1, "model": "m"}, legacy_settings=lambda f: {"a": 2})
    assert e.value.differences == {"a": (2, 1)} and not (tmp_path / "x" / "store.json").exists()
    ResultStore(tmp_path / "y", {"a": 1, "model": "m"}, legacy_settings=lambda f: {"a": 1})
    saved = json.loads((tmp_path / "y" / "store.json").read_text())
    assert saved["settings"] == {"a": 1, "model": "m"}
