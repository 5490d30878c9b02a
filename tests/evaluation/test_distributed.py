"""Evaluation over several processes: ``torchrun`` ranks (gloo, CPU) give the results
of one process; a killed rank, then a re-run with another number of ranks, computes
no finished chunk again; ranks given different settings, or a results folder of other
settings, stop every rank with a clear error; a GPU asked for where none is visible
(or more ranks than GPUs) is a clear error.

The ranks are fresh interpreters started by ``python -m torch.distributed.run`` (no
fork of a process with torch loaded)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bcosnet._utils.store import ResultStore, SettingsMismatchError
from bcosnet.cli import main
from bcosnet.data import build_datasets
from bcosnet.evaluation import evaluate_faithfulness, grid_pointing_game
from bcosnet.evaluation.distributed import chunk_ranges
from bcosnet.evaluation.pointing_game import make_attribution_fn, make_grid_dataset
from bcosnet.training import load_checkpoint_model
from bcosnet.training.distributed import DistEnv, pick_device

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The smoke preset's 4-class B-cos network (3 epochs on synthetic 28-px images:
    every class has correctly classified test images, so 2×2 grids can be made)."""
    run = tmp_path_factory.mktemp("smoke")
    assert main(["train", "--preset", "smoke", "--out-dir", str(run), "--no-progress",
                 "--threads", "1"]) == 0
    return run / "checkpoint.pt"


def _test_set():
    return build_datasets("synthetic", None, augment=False, synthetic_samples=128,
                          synthetic_classes=4).test


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(nproc: int, target: list[str], timeout: float = 300
              ) -> subprocess.CompletedProcess:
    """``torchrun --nproc-per-node nproc TARGET`` on this machine (gloo, 1 thread per rank)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "BCOSNET_PROGRESS_LINES": "1",
           "PYTHONPATH": str(ROOT / "src") + os.pathsep + str(ROOT)
           + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1",
           "--nproc-per-node", str(nproc), "--master-addr", "127.0.0.1",
           "--master-port", str(_free_port()), *target]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout,
                          check=False)


def _scores(folder: Path, method: str) -> np.ndarray:
    return np.asarray(json.loads((folder / f"{method}.json").read_text())["scores"])


#: One torchrun launch of 3 ranks runs every CLI command of the tests below (a launch
#: costs seconds of interpreter start-up per rank): each rank joins the process group,
#: then runs ``bcosnet.cli.main`` once per command, its stdout/stderr in
#: ``<out>/<name>.<rank>.out|err`` and its exit code in ``<out>/<name>.<rank>.code``.
LAUNCH = '''
import contextlib, json, os, sys
from bcosnet.cli import main
from bcosnet.training.distributed import init_distributed

out, commands = sys.argv[1], json.loads(open(sys.argv[2]).read())
ranks = init_distributed("cpu")
for name, argv in commands:
    argv = [a.replace("{RANK}", str(ranks.rank)) for a in argv]
    stem = f"{out}/{name}.{ranks.rank}"
    with open(stem + ".out", "w") as o, open(stem + ".err", "w") as e, \\
            contextlib.redirect_stdout(o), contextlib.redirect_stderr(e):
        code = main(argv)
    open(stem + ".code", "w").write(str(code))
ranks.close()
'''

PG_FLAGS = ["--grid-n", "2", "--grids", "8", "--batch-size", "2", "--no-threshold",
            "--allow-fewer", "--no-progress", "--methods", "bcos,grad,rise",
            "--grids-per-method", "rise=5"]
FA_FLAGS = ["--methods", "bcos,grad", "--images", "9", "--steps", "4",
            "--attribution-batch-size", "2", "--images-per-method", "grad=5", "--no-progress"]


@pytest.fixture(scope="module")
def launched(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of one 3-rank launch: the pointing game (``--chunk 2``), deletion/
    insertion and accuracy of ``checkpoint``; localisation with a different ``--seed``
    on every rank; localisation into a folder of other grid settings."""
    out = tmp_path_factory.mktemp("launch")
    ck = ["--checkpoint", str(checkpoint)]
    loc = ["evaluate", "localisation", *ck, "--grid-n", "2", "--grids", "4",
           "--no-threshold", "--methods", "grad", "--no-progress"]
    ResultStore(out / "other", {"n": 3, "seed": 0, "confidence_threshold": None,
                                "confidence_score": "sigmoid", "model": "0123456789abcdef"},
                what="pointing-game results")
    commands = [
        ("pg", ["evaluate", "localisation", *ck, *PG_FLAGS, "--chunk", "2",
                "--out", str(out / "pg")]),
        ("fa", ["evaluate", "faithfulness", *ck, *FA_FLAGS, "--out", str(out / "fa")]),
        ("acc", ["evaluate", "accuracy", *ck, "--batch-size", "5",
                 "--json", str(out / "acc.json")]),
        ("seeds", [*loc, "--seed", "{RANK}", "--out", str(out / "seeds")]),
        ("other", [*loc, "--out", str(out / "other")]),
    ]
    (out / "commands.json").write_text(json.dumps(commands))
    (out / "launch.py").write_text(LAUNCH)
    done = _torchrun(3, [str(out / "launch.py"), str(out), str(out / "commands.json")])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def _said(out: Path, name: str, stream: str) -> list[str]:
    """What each rank printed on ``stream`` (``out``/``err``) in command ``name``."""
    return [(out / f"{name}.{r}.{stream}").read_text() for r in range(3)]


def _codes(out: Path, name: str) -> list[int]:
    return [int((out / f"{name}.{r}.code").read_text()) for r in range(3)]


def test_three_ranks_play_the_pointing_game_of_one_process(checkpoint: Path, launched: Path,
                                                           tmp_path: Path) -> None:
    assert main(["evaluate", "localisation", "--checkpoint", str(checkpoint), *PG_FLAGS,
                 "--out", str(tmp_path)]) == 0
    assert _codes(launched, "pg") == [0, 0, 0]
    one, three = tmp_path, launched / "pg"
    grids = json.loads((one / "grids.json").read_text())
    assert len(grids["source_indices"]) == 8
    assert json.loads((three / "grids.json").read_text())["source_indices"] == \
        grids["source_indices"]
    for m, count in (("bcos", 8), ("grad", 8), ("rise", 5)):
        a, b = _scores(one, m), _scores(three, m)
        assert a.shape == b.shape == (count, 4)
        assert np.abs(a - b).max() <= 1e-6, m
        assert a.std() > 0.01  # real scores, not a constant both sides could share
    assert not list(three.glob("*.chunk-*.json"))  # merged and removed
    # rank 0 alone prints the table and writes the outputs
    assert ["uniform baseline" in s for s in _said(launched, "pg", "out")] == \
        [True, False, False]
    assert (three / "boxplot.png").stat().st_size > 1000
    merged = json.loads((three / "pointing_game.json").read_text())
    assert {m: v["grids"] for m, v in merged["methods"].items()} == {
        "bcos": 8, "grad": 8, "rise": 5}


def test_three_ranks_give_the_faithfulness_of_one_process(checkpoint: Path, launched: Path,
                                                          tmp_path: Path) -> None:
    assert main(["evaluate", "faithfulness", "--checkpoint", str(checkpoint), *FA_FLAGS,
                 "--out", str(tmp_path)]) == 0
    assert _codes(launched, "fa") == [0, 0, 0]
    one = json.loads((tmp_path / "faithfulness.json").read_text())
    three = json.loads((launched / "fa" / "faithfulness.json").read_text())
    assert one["indices"] == three["indices"] and one["targets"] == three["targets"]
    assert one["settings"] == three["settings"]
    for m, count in (("bcos", 9), ("grad", 5), ("random", 9)):
        a = json.loads((tmp_path / f"{m}.json").read_text())
        b = json.loads((launched / "fa" / f"{m}.json").read_text())
        for mode in ("deletion", "insertion"):
            x, y = np.asarray(a[mode]), np.asarray(b[mode])
            assert x.shape == y.shape == (count, 5)
            assert np.abs(x - y).max() <= 1e-6, (m, mode)
        for k, v in one["summary"][m].items():
            assert three["summary"][m][k] == pytest.approx(v, abs=1e-6)
    # the random row's ties are broken per image as in one process (its chunks start
    # part-way through the sample): its curves differ between images
    assert np.ptp(np.asarray(json.loads(
        (launched / "fa" / "random.json").read_text())["deletion"])[:, 2]) > 1e-3
    assert not list((launched / "fa").glob("*.chunk-*.json"))


def test_three_ranks_give_the_accuracy_of_one_process(checkpoint: Path, launched: Path,
                                                      tmp_path: Path) -> None:
    assert main(["evaluate", "accuracy", "--checkpoint", str(checkpoint), "--batch-size", "5",
                 "--json", str(tmp_path / "acc1.json")]) == 0
    assert _codes(launched, "acc") == [0, 0, 0]
    a1, a3 = (json.loads(p.read_text()) for p in (tmp_path / "acc1.json",
                                                   launched / "acc.json"))
    assert a3["n"] == a1["n"] == len(_test_set())  # 11 + 11 + 10 images, each once
    assert a3["counts"] == a1["counts"] and a3["per_class"] == a1["per_class"]
    assert a3["top1"] == a1["top1"]


def test_ranks_with_different_settings_stop_with_a_clear_error(launched: Path) -> None:
    assert _codes(launched, "seeds") == [2, 2, 2]
    said = ("the 3 ranks were given different pointing-game settings (rank(s) 1, 2 differ "
            "from rank 0) — seed: 0 on rank 0, 1 on rank 1")
    for err in _said(launched, "seeds", "err"):
        assert said in err and "start every rank with the same arguments" in err, err
    assert not (launched / "seeds" / "store.json").exists()  # refused before any work


def test_a_folder_of_other_settings_stops_every_rank(launched: Path) -> None:
    # rank 0 names the difference in the command's flags, the others say why they stop
    codes, errs = _codes(launched, "other"), _said(launched, "other", "err")
    assert codes[0] == 2 and "n: 3 then, 2 now" in errs[0], errs[0]
    for r in (1, 2):
        assert codes[r] == 1
        assert (f"rank 0 of 3 failed while opening the results folder and making the grid "
                f"set, so rank {r} stops too: SettingsMismatchError") in errs[r], errs[r]
    assert sorted(p.name for p in (launched / "other").iterdir()) == ["store.json"]


KILLED_RUN = '''
import os, signal, sys
from bcosnet.data import build_datasets
from bcosnet.evaluation import grid_pointing_game
from bcosnet.evaluation.pointing_game import make_attribution_fn
from bcosnet.training import load_checkpoint_model
from bcosnet.training.distributed import init_distributed

checkpoint, out, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
ranks = init_distributed("cpu")
model = load_checkpoint_model(checkpoint)
test = build_datasets("synthetic", None, augment=False, synthetic_samples=128,
                      synthetic_classes=4).test
grad = make_attribution_fn(model, "grad")
calls = 0

def counted(images, targets):
    """grad, one target per call; rank 1 kills itself in call ``kill_at``."""
    global calls
    calls += 1
    if ranks.rank == 1 and calls == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    return grad(images, targets)

grid_pointing_game(model, test, {"grad": counted}, n=2, num_grids=8, batch_size=1, chunk=1,
                   confidence_threshold=None, allow_fewer=True, progress=False,
                   results_dir=out, ranks=ranks)
ranks.close()
'''


def _digests(grid_images: torch.Tensor) -> set[str]:
    import hashlib

    return {hashlib.sha1(img.numpy().tobytes()).hexdigest() for img in grid_images}


def test_a_killed_rank_then_a_rerun_recomputes_no_finished_chunk(checkpoint: Path,
                                                                tmp_path: Path) -> None:
    script = tmp_path / "run.py"
    script.write_text(KILLED_RUN)
    out = tmp_path / "pg"
    # rank 1 kills itself (SIGKILL) in its third grid: 4 calls per grid (one per cell)
    first = _torchrun(2, [str(script), str(checkpoint), str(out), "9"])
    assert first.returncode != 0
    finished = sorted(int(p.name.split("-")[1]) for p in out.glob("grad.chunk-*.json"))
    assert 2 <= len(finished) < 8, (finished, first.stderr[-3000:])
    assert not (out / "grad.json").exists()

    # a re-run (here one process: any number of ranks) plays the missing chunks only
    model = load_checkpoint_model(str(checkpoint))
    grad = make_attribution_fn(model, "grad")
    recomputed: set[str] = set()

    def counted(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        recomputed.update(_digests(x))
        return grad(x, t)

    grid_pointing_game(model, _test_set(), {"grad": counted}, n=2, num_grids=8, batch_size=1,
                       chunk=1, confidence_threshold=None, allow_fewer=True, progress=False,
                       results_dir=out, ranks=DistEnv())
    grids = make_grid_dataset(model, _test_set(), results_dir=out, n=2, num_grids=8,
                              confidence_threshold=None, allow_fewer=True, progress=False)
    images = grids.get_images(range(len(grids)))
    done_before = _digests(images[finished])
    assert recomputed and not recomputed & done_before  # nothing finished is redone
    assert recomputed | done_before == _digests(images)  # and nothing is left out
    # the merged scores are those of one process playing the whole game
    ref = grid_pointing_game(model, grids, {"grad": lambda x, t: grad(x, t)}, batch_size=1,
                             smoothing=None, progress=False)
    assert np.abs(_scores(out, "grad") - ref.scores["grad"]).max() <= 1e-6
    assert not list(out.glob("*.chunk-*.json"))


# ----------------------------------------------------------------------------- one process
def test_one_rank_resumes_a_one_process_partial_game_and_its_own_chunks(
        checkpoint: Path, tmp_path: Path) -> None:
    """``ranks`` of one process: the grids a one-process run finished (its partial
    file) and the chunks already stored are not played again."""
    model = load_checkpoint_model(str(checkpoint))
    test = _test_set()
    grad = make_attribution_fn(model, "grad")
    played: list[int] = []
    fail_at = [0]

    def counted(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        played.append(len(x))  # one call per cell (a plain function: per-target loop)
        if len(played) == fail_at[0]:
            raise RuntimeError("stopped here")
        return grad(x, t)

    kw = dict(n=2, num_grids=8, confidence_threshold=None, batch_size=2, progress=False)
    ref = grid_pointing_game(model, test, {"grad": counted}, **kw)
    assert sum(played) == 8 * 4
    # a one-process run stops in its third batch: its partial file holds grids 0-3
    played.clear()
    fail_at[0] = 9
    with pytest.raises(RuntimeError, match="stopped here"):
        grid_pointing_game(model, test, {"grad": counted}, results_dir=tmp_path,
                           checkpoint_interval_s=0, **kw)
    assert len(json.loads((tmp_path / "grad.partial.json").read_text())["scores"]) == 4 * 4
    # a one-rank run takes them as chunks 0-2 and 2-4, plays 4-6, stops in 6-8
    played.clear()
    fail_at[0] = 5
    with pytest.raises(RuntimeError, match="stopped here"):
        grid_pointing_game(model, test, {"grad": counted}, results_dir=tmp_path,
                           ranks=DistEnv(), chunk=2, **kw)
    assert sorted(p.name for p in tmp_path.glob("grad.chunk-*")) == [
        f"grad.chunk-{a:06d}-{b:06d}.json" for a, b in ((0, 2), (2, 4), (4, 6))]
    # and the next run plays grids 6-7 alone
    played.clear()
    fail_at[0] = 0
    res = grid_pointing_game(model, test, {"grad": counted}, results_dir=tmp_path,
                             ranks=DistEnv(), chunk=2, **kw)
    assert played == [2] * 4
    assert np.abs(res.scores["grad"] - ref.scores["grad"]).max() <= 1e-6
    assert np.abs(_scores(tmp_path, "grad") - ref.scores["grad"]).max() <= 1e-6
    assert not (tmp_path / "grad.partial.json").exists()
    assert not list(tmp_path.glob("*.chunk-*.json"))


def test_chunks_must_hold_whole_attribution_batches(checkpoint: Path, tmp_path: Path,
                                                     capsys) -> None:
    model = load_checkpoint_model(str(checkpoint))
    with pytest.raises(ValueError, match=r"chunk=3 must be a multiple of batch_size=2 .*"
                                         r"e\.g\. chunk=4"):
        grid_pointing_game(model, _test_set(), "grad", n=2, num_grids=4, batch_size=2,
                           confidence_threshold=None, results_dir=tmp_path, ranks=DistEnv(),
                           chunk=3, progress=False)
    with pytest.raises(ValueError, match="ranks= needs results_dir"):
        evaluate_faithfulness(model, _test_set(), ["grad"], images=4, ranks=DistEnv())
    assert chunk_ranges(7, 3) == [(0, 3), (3, 6), (6, 7)] and chunk_ranges(0, 3) == []


def test_store_chunks_are_checked_listed_and_dropped(tmp_path: Path) -> None:
    store = ResultStore(tmp_path, {"model": "m"})
    store.save_chunk("grad", 0, 2, {"scores": [1, 2]}, {"k": 1})
    store.save_chunk("grad", 2, 3, {"scores": [3]}, {"k": 1})
    assert [c["scores"] for c in store.load_chunks("grad", [(0, 2), (2, 3)], {"k": 1})] == \
        [[1, 2], [3]]
    with pytest.raises(SettingsMismatchError, match="k: 1 then, 2 now"):
        store.load_chunk("grad", 0, 2, {"k": 2})
    with pytest.raises(ValueError, match=r"grad\.chunk-000003-000004\.json is missing"):
        store.load_chunks("grad", [(0, 2), (3, 4)], {"k": 1})
    store.save("grad-cam", {"x": 1})
    store.drop_chunks("grad")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grad-cam.json", "store.json"]


# ----------------------------------------------------------------------------- devices
def _no_gpu(monkeypatch: pytest.MonkeyPatch, count: int = 0) -> None:
    """This process sees ``count`` CUDA devices (whatever the machine has)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


def test_a_gpu_asked_for_where_none_is_visible_is_a_clear_error(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys) -> None:
    _no_gpu(monkeypatch)
    assert main(["main", "--device", "cuda", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "bcosnet main: error: --device cuda asks for a GPU, but this process sees no " \
           "CUDA device" in err and "use --device cpu, or --device auto" in err, err
    assert not (tmp_path / "run").exists()  # said before any work
    assert main(["evaluate", "accuracy", "--checkpoint", str(tmp_path / "none.pt"),
                 "--device", "cuda:1"]) == 2
    assert "bcosnet evaluate: error: --device cuda:1 asks for a GPU" in capsys.readouterr().err
    assert pick_device("auto") == torch.device("cpu") and pick_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match="device must be 'auto', 'cpu', 'cuda' or 'cuda:N'"):
        pick_device("gpu")


def test_more_ranks_than_gpus_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    _no_gpu(monkeypatch, count=2)
    assert pick_device("cuda", local_rank=1) == torch.device("cuda:1")
    assert pick_device("auto", local_rank=1) == torch.device("cuda:1")
    with pytest.raises(ValueError, match=r"device cuda:2 asked for \(device=auto, LOCAL_RANK "
                                         r"2\), but this machine shows 2 CUDA device\(s\), "
                                         r"cuda:0 to cuda:1; start at most one process per GPU "
                                         r"\(torchrun --nproc-per-node 2\)"):
        pick_device("auto", local_rank=2)
