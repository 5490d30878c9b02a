"""The main job's cached stages are keyed by the settings that produced them;
one job at a time per output folder; an interrupted job resumes
(docs/reliability.md)."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import bcosnet.training
from bcosnet._utils.io import FolderBusyError, folder_lock
from bcosnet.cli import main
from bcosnet.pipeline import MainConfig, MainSettingsError, WorkerPool, run_main

AREA = "main job"


@pytest.fixture
def tiny_presets(monkeypatch):
    """The main job's presets with width-8 networks and 96 generated images
    (learning rates that classify every test image of the generated set after 24
    steps, so that a 2×2 grid can be made): every stage in seconds."""
    real = bcosnet.training.get_preset

    def small(name):
        tc = real(name)
        tc.model.options = {**tc.model.options, "width": 8}
        tc.data.synthetic_samples = 96
        tc.eval_every_epochs = 0
        tc.optim.lr = 1e-2 if "standard" in name else 3e-3
        return tc

    monkeypatch.setattr(bcosnet.training, "get_preset", small)


def _cfg(out: Path, **kw) -> MainConfig:
    # workers=1: the monkeypatched presets exist in this process only
    settings = dict(out_dir=str(out), dataset="synthetic", epochs=24, max_steps=24,
                    grids=2, grids_per_method={}, grid_n=2, confidence_threshold=None,
                    methods_bcos=("bcos", "grad"), methods_standard=("grad",), examples=1,
                    progress=False, threads=1, seed=0, workers=1)
    settings.update(kw)
    return MainConfig(**settings)


def _mtimes(out: Path) -> dict[str, int]:
    """Modification times of the cached results (the report and its summaries are
    rewritten by every run, by design)."""
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in sorted(out.rglob("*"))
            if p.is_file() and p.suffix in (".pt", ".json", ".png")
            and p.name not in ("results.json", "report.json", "pointing_game.json")
            and p.parent.name != "figures"}


def _accuracy(out: Path) -> dict[str, float]:
    """The accuracies the main job reported."""
    return json.loads((out / "results.json").read_text())["accuracy"]


def test_stages_keyed_by_settings_resumable_and_locked(tmp_path, tiny_presets,
                                                       reliability) -> None:
    out = tmp_path / "main"
    run_main(_cfg(out))
    before = _mtimes(out)
    acc = _accuracy(out)

    # the same settings (threads / progress are how to run, not what): everything reused
    run_main(_cfg(out, threads=2, progress=False))
    assert _mtimes(out) == before
    reliability.handled(AREA, "re-run with the same settings (other threads)",
                        "every stage reused, no file rewritten")

    # result-defining settings: refused, naming each difference, nothing touched
    for change, pattern in (({"seed": 1}, "seed: 0 then, 1 now"),
                            ({"epochs": 30}, "epochs: 24 then, 30 now"),
                            ({"max_steps": 30}, "max_steps: 24 then, 30 now"),
                            ({"train_overrides": {"epochs": 3}}, "epochs: .* then, 3 now")):
        reliability.refused(AREA, f"re-run into the same folder with {change}",
                            MainSettingsError, pattern + r".*another output folder",
                            lambda change=change: run_main(_cfg(out, **change)))
        assert _mtimes(out) == before
    # the pointing game's own settings (grid size, threshold): refused with the folder
    reliability.refused(AREA, "re-run with another confidence_threshold", MainSettingsError,
                        "pointing-game results in .*pointing_game/bcos.*delete",
                        lambda: run_main(_cfg(out, confidence_threshold=0.01)))
    assert _mtimes(out) == before

    # a derived stage made from other networks is recomputed, not reused
    item = out / "stages" / "accuracy.json"
    saved = json.loads(item.read_text())
    saved["settings"]["networks"] = "0" * 16
    item.write_text(json.dumps(saved))
    run_main(_cfg(out))
    assert item.stat().st_mtime_ns != before["stages/accuracy.json"]
    assert _accuracy(out) == acc
    reliability.handled(AREA, "accuracy cached from other networks (fingerprint differs)",
                        "recomputed")

    # an interrupted training (killed after its last checkpoint) resumes, not refused
    (out / "standard" / "train_done.json").unlink()
    run_main(_cfg(out))
    assert (out / "standard" / "train_done.json").is_file()
    reliability.handled(AREA, "re-run after an interrupted training, same settings",
                        "resumed from the checkpoint")

    # two jobs on one folder: the second is refused at once
    with folder_lock(out, "test"):
        reliability.refused(AREA, "a second job on the same output folder", FolderBusyError,
                            "in use by another .*use another output folder",
                            lambda: run_main(_cfg(out)))


def test_network_trained_for_a_time_budget_is_refused(tmp_path, tiny_presets,
                                                      reliability) -> None:
    """A folder of the earlier main job, whose networks trained for a wall-clock budget
    (time_limit_min in the checkpoint's config), is not reused by the fixed-epoch job."""
    out = tmp_path / "main"
    # as the earlier main job trained: a time budget in the training config
    run_main(_cfg(out, train_overrides={"time_limit_min": 1.0}))
    before = _mtimes(out)
    reliability.refused(
        AREA, "re-run on a folder whose networks trained for a wall-clock budget",
        MainSettingsError,
        r"wall-clock budget \(1 min\) by an earlier version.*fixed number of epochs "
        r"\(now epochs=24\).*Delete .*another output folder \(out_dir\)",
        lambda: run_main(_cfg(out)))
    assert _mtimes(out) == before


def test_refusals_on_the_command_line_name_its_flags(tmp_path, tiny_presets, capsys) -> None:
    out = tmp_path / "main"
    args = ["main", "--dataset", "synthetic", "--workers", "1", "--epochs", "24",
            "--max-steps", "24", "--grids", "2", "--grids-per-method", "none", "--grid-n", "2",
            "--no-threshold", "--methods", "bcos,grad", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    capsys.readouterr()
    args[args.index("--epochs") + 1] = "30"
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "epochs: 24 then, 30 now" in err and "another output folder (--out)" in err
    assert "out_dir" not in err
    # the removed time budget: refused, pointing to the flag that replaced it
    assert main(["main", "--time-limit-min", "8"]) == 2
    assert "trains for a fixed number of epochs: --epochs N" in capsys.readouterr().err


def _numbers(out: Path) -> dict:
    """What a main job computed: accuracies, training steps, every pointing-game score,
    the report's headline (not its timings or paths)."""
    results = json.loads((out / "results.json").read_text())
    scores = {net: json.loads((out / "pointing_game" / net / "pointing_game.json").read_text())
              ["methods"] for net in ("bcos", "standard")}
    return {"accuracy": results["accuracy"],
            "steps": {k: (v["epochs"], v["steps"], v["test_acc"])
                      for k, v in results["runs"].items()},
            "scores": {net: {m: v["scores"] for m, v in ms.items()}
                       for net, ms in scores.items()},
            "headline": json.loads((out / "report.json").read_text())["headline"]}


def test_two_runs_in_two_folders_give_the_same_numbers(tmp_path, tiny_presets) -> None:
    """Same settings, two output folders, progress bars on in one: the same networks,
    accuracies, pointing-game scores and headline, to the last bit."""
    run_main(_cfg(tmp_path / "a"))
    run_main(_cfg(tmp_path / "b", progress=True))
    a, b = _numbers(tmp_path / "a"), _numbers(tmp_path / "b")
    assert a["steps"]["B-cos"][:2] == (24, 24)  # the fixed epochs, not a time budget
    assert set(a["scores"]["bcos"]) == {"bcos", "grad"} and a["headline"]
    assert a == b
    weights = [torch.load(tmp_path / run / "bcos" / "checkpoint.pt", map_location="cpu",
                          weights_only=False)["model"] for run in ("a", "b")]
    assert weights[0].keys() == weights[1].keys()
    for k in weights[0]:
        assert torch.equal(weights[0][k], weights[1][k]), k
    # other epochs train other networks: the comparison above could fail
    run_main(_cfg(tmp_path / "c", epochs=20))
    assert _numbers(tmp_path / "c")["scores"] != a["scores"]


def test_interrupted_job_stops_its_worker_processes(reliability) -> None:
    """Ctrl-C (SIGINT to the main process) while worker processes run jobs: the
    interrupt reaches the caller at once and no worker is left running."""
    # Python turns SIGINT into KeyboardInterrupt only if it was not ignored at start-up
    # (a background job of a script ignores it, as CI may): install the handler here.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    t0 = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt), WorkerPool(2, 1) as jobs:
            jobs.run([("long job", time.sleep, (120,)),
                      ("ctrl-c", os.kill, (os.getpid(), signal.SIGINT))])
    finally:
        signal.signal(signal.SIGINT, previous)
    assert time.monotonic() - t0 < 60  # not the 120 s of the running job
    assert multiprocessing.active_children() == []
    reliability.handled(AREA, "Ctrl-C while worker processes run pointing-game jobs",
                        "workers stopped at once; finished and partial results stay for the re-run")


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as f:
            return any(line.startswith("State:") and "Z" in line.split()[1] for line in f)
    except FileNotFoundError:
        return True


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc (Linux)")
def test_worker_processes_exit_when_the_main_process_is_killed(reliability) -> None:
    """A killed main job (SIGKILL: no clean-up) leaves no worker computing on."""
    script = (
        "import os, signal, threading, time\n"
        "from bcosnet.pipeline import WorkerPool\n"
        "jobs = WorkerPool(2, 1)\n"
        "def kill_later():\n"
        "    while len(jobs.worker_pids) < 2:\n"
        "        time.sleep(0.2)\n"
        "    time.sleep(1)\n"
        "    print(*jobs.worker_pids, flush=True)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "threading.Thread(target=kill_later, daemon=True).start()\n"
        "jobs.run([('a', time.sleep, (120,)), ('b', time.sleep, (120,))])\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    pids = [int(p) for p in proc.stdout.split()]
    assert len(pids) == 2
    deadline = time.monotonic() + 30
    while not all(_gone(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert all(_gone(p) for p in pids), "a worker outlived the killed main process"
    reliability.handled(AREA, "main job killed (SIGKILL) while worker processes run",
                        "each worker exits within a second (it watches its parent)")
