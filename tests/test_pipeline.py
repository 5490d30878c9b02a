"""The main job end to end on a small generated data set (plumbing, resumability)."""

from __future__ import annotations

import dataclasses
import json
import math
import operator
import pickle
import shutil
from html.parser import HTMLParser

import numpy as np
import pytest
import torch

from bcosnet.evaluation import PointingGameResult
from bcosnet.pipeline import MainConfig, MainSettingsError, WorkerPool, run_main


@pytest.mark.slow
def test_main_job_end_to_end_and_rerun(tmp_path):
    cfg = MainConfig(
        out_dir=str(tmp_path / "main"),
        dataset="synthetic",
        epochs=20,
        grids=3,
        grids_per_method={"occlusion": 1},
        grid_n=2,  # the synthetic data has 4 classes
        confidence_threshold=None,
        methods_bcos=("bcos", "grad", "occlusion"),
        methods_standard=("grad", "occlusion"),
        examples=1,
        progress=False,
    )
    html = run_main(cfg)
    out = tmp_path / "main"
    assert html.is_file()
    HTMLParser().feed(html.read_text())  # parses
    results = json.loads((out / "results.json").read_text())
    acc = results["accuracy"]
    assert set(acc) == {"B-cos", "standard"}
    # The report shows the measured accuracies and every method's pointing-game median.
    text = (out / "report.md").read_text()
    assert f"{100 * acc['B-cos']:.2f}" in text
    for method in ("bcos", "grad"):
        assert method in results["pointing_game"]["B-cos"]
        median = results["pointing_game"]["B-cos"][method]["median"]
        assert 0.0 <= median <= 1.0
    assert "bcos" not in results["pointing_game"]["standard"]
    # grids per method and what was cut are stated; the Fig. A2-style panel is there
    assert results["pointing_game_grids"]["B-cos"] == {"bcos": 3, "grad": 3, "occlusion": 1}
    # each cut-for-time note once (both networks played the same counts)
    assert text.count("cut from the paper's 500 for time: 3 for bcos and grad; 1 for "
                      "occlusion.") == 1
    assert (out / "pointing_game" / "panel.png").stat().st_size > 1000
    assert "Fig. A2-style panel" in text
    # the report leads with the paper's comparison, read off the results
    lines = [x for x in text.splitlines() if x.strip()]
    assert lines[1].startswith("**The paper's claim") and lines[1].endswith(".**")
    bcos = results["pointing_game"]["B-cos"]["bcos"]
    assert f"localises with a median score of {bcos['median']:.3f} (mean {bcos['mean']:.3f})" \
        in lines[1]
    # the box plot comes before the table; the same training epochs named once, not a column
    assert text.index("![Grid pointing game scores") < text.index("| model | method |")
    assert "Same in every row: model fmnist_bcos" not in text
    assert "epochs 20" in text and "| epochs |" not in text
    # no reference to documents outside the repository; the protocol is docs/protocol.md
    assert "SPEC" not in text and "SPEC" not in html.read_text()
    assert "docs/protocol.md" in text
    # the converged networks' line is Fashion-MNIST's: not in a synthetic job's report
    assert "Trained to convergence instead" not in text
    # the panel's caption names the framed cell's class (the synthetic set's names)
    grids = json.loads((out / "pointing_game" / "bcos" / "grids.json").read_text())
    centre = np.asarray(grids["classes"]).reshape(-1, 4)[0, 2]  # 2×2: cell 4 // 2
    assert f"cell's class, class_{centre}, on the B-cos network" in text
    assert (out / "explanations" / "example_0.png").stat().st_size > 1000

    # Re-running reuses every finished stage: same checkpoints, same results.
    ckpt = out / "bcos" / "checkpoint.pt"
    mtime = ckpt.stat().st_mtime_ns
    run_main(cfg)
    assert ckpt.stat().st_mtime_ns == mtime
    assert json.loads((out / "results.json").read_text())["accuracy"] == acc

    # The default ran the trainings and the pointing-game jobs in 2 worker processes;
    # the same networks played in this process give the same scores.
    assert cfg.workers == 2
    serial = tmp_path / "serial"
    for net in ("bcos", "standard"):
        shutil.copytree(out / net, serial / net)
    run_main(dataclasses.replace(cfg, out_dir=str(serial), workers=1))
    for net, methods in (("bcos", {"bcos", "grad", "occlusion"}),
                         ("standard", {"grad", "occlusion"})):
        one = PointingGameResult.load(serial / "pointing_game" / net / "pointing_game.json")
        two = PointingGameResult.load(out / "pointing_game" / net / "pointing_game.json")
        assert set(one.scores) == set(two.scores) == methods
        for m in methods:
            np.testing.assert_allclose(one.scores[m], two.scores[m], atol=1e-5)
    assert "2 worker processes of 1 thread(s)" in text


def test_jobs_run_in_workers_keep_order_threads_and_errors():
    """The main job's job runner: results by label in the order given, each worker
    with threads // workers torch threads, a job's exception raised in the caller."""
    cfg = MainConfig(threads=2, workers=2)
    with WorkerPool(cfg.workers, cfg.worker_threads()) as jobs:
        got = jobs.run([("a", math.sqrt, (9.0,)), ("b", operator.add, (1, 2)),
                        ("t", torch.get_num_threads, ())])
        assert list(got) == ["a", "b", "t"] and got["a"] == 3.0 and got["b"] == 3
        assert got["t"] == 1
        with pytest.raises(ValueError, match="math domain error"):
            jobs.run([("ok", math.sqrt, (4.0,)), ("bad", math.sqrt, (-1.0,))])
    # A refusal raised in a worker reaches the caller as itself, differences included.
    err = pickle.loads(pickle.dumps(MainSettingsError("other settings: delete it",
                                                      {"seed": (0, 1)}, "out/bcos")))
    assert isinstance(err, MainSettingsError) and "delete it" in str(err)
    assert err.differences == {"seed": (0, 1)} and err.path == "out/bcos"
    with pytest.raises(ValueError, match="workers must be an int >= 1"):
        MainConfig(workers=0)


def test_the_converged_line_quotes_docs_claims() -> None:
    """The report's converged-networks sentence carries the figures of docs/claims.md's
    section 3 (accuracies after convergence, bcos and the twin's Grad-CAM)."""
    import re
    from pathlib import Path

    from bcosnet.pipeline.report import CONVERGED_FMNIST

    docs = (Path(__file__).resolve().parents[1] / "docs" / "claims.md").read_text()
    section = docs[docs.index("## 3. Converged networks"):docs.index("### Why 0.6")]
    last = {m.group(1): m.group(2) for m in re.finditer(
        r"^\| (B-cos net|twin) \| \d+ \(last\) \| ([\d.]+) \|", section, re.M)}
    assert f"B-cos {last['B-cos net']} %" in CONVERGED_FMNIST
    assert f"twin {last['twin']} %" in CONVERGED_FMNIST
    bcos = re.search(r"^\| B-cos net \| \d+ \(last\) \| [\d.]+ \| ([\d.]+) / ([\d.]+) \|",
                     section, re.M)
    cam = re.search(r"^\| twin \| \d+ \(last\) \| [\d.]+ \| – \| ([\d.]+) / ([\d.]+) \|",
                    section, re.M)
    assert f"bcos {bcos.group(2)} ({bcos.group(1)})" in CONVERGED_FMNIST
    assert f"Grad-CAM {cam.group(2)} ({cam.group(1)})" in CONVERGED_FMNIST
