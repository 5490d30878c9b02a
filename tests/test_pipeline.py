"""The main job end to end on a small generated data set (plumbing, resumability)."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import pytest

from bcosnet.pipeline import MainConfig, run_main


@pytest.mark.slow
def test_main_job_end_to_end_and_rerun(tmp_path):
    cfg = MainConfig(
        out_dir=str(tmp_path / "main"),
        dataset="synthetic",
        time_limit_min=2.0,
        max_steps=40,
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
    assert "occlusion 1 grids instead of the paper's 500" in text
    assert (out / "pointing_game" / "panel.png").stat().st_size > 1000
    assert "Fig. A2-style panel" in text
    assert (out / "explanations" / "example_0.png").stat().st_size > 1000

    # Re-running reuses every finished stage: same checkpoints, same results.
    ckpt = out / "bcos" / "checkpoint.pt"
    mtime = ckpt.stat().st_mtime_ns
    run_main(cfg)
    assert ckpt.stat().st_mtime_ns == mtime
    assert json.loads((out / "results.json").read_text())["accuracy"] == acc
