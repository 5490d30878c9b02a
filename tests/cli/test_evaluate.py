"""``bcosnet evaluate localisation`` and the main job's grid-count options."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from bcosnet.cli import main
from bcosnet.cli._common import parse_grid_counts
from bcosnet.pipeline import ALL_METHODS, MainConfig


def test_evaluate_localisation_runs_and_resumes(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    assert main(["train", "--preset", "smoke", "--out-dir", str(run), "--no-progress",
                 "--threads", "1", "--epochs", "1"]) == 0
    out = tmp_path / "pg"
    args = ["evaluate", "localisation", "--checkpoint", str(run / "checkpoint.pt"),
            "--out", str(out), "--grid-n", "1", "--grids", "3", "--methods", "bcos,grad",
            "--grids-per-method", "grad=2", "--no-threshold", "--allow-fewer", "--no-progress"]
    capsys.readouterr()
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "1×1 grids, confidence threshold None, smoothing None" in text
    saved = json.loads((out / "pointing_game.json").read_text())
    made = saved["num_grids"]
    assert 1 <= made <= 3
    assert {m: v["grids"] for m, v in saved["methods"].items()} == {"bcos": made,
                                                                     "grad": min(2, made)}
    for m, v in saved["methods"].items():
        assert f"{m:<10} {v['grids']:>5} {v['summary']['median']:7.4f}" in text
    assert (out / "boxplot.png").stat().st_size > 1000
    # (1×1 grids keep this plumbing test independent of how well 1 epoch trains)
    # a second call reuses the finished methods
    stamp = (out / "bcos.json").stat().st_mtime_ns
    assert main(args) == 0
    assert (out / "bcos.json").stat().st_mtime_ns == stamp


def test_grid_count_options() -> None:
    assert parse_grid_counts("occlusion=100, rise=7") == {"occlusion": 100, "rise": 7}
    assert parse_grid_counts("none") == {}
    with pytest.raises(argparse.ArgumentTypeError, match="occlusion=100"):
        parse_grid_counts("occlusion")
    cfg = MainConfig()
    assert cfg.grid_n == 3 and cfg.confidence_threshold == 0.5
    assert cfg.methods_bcos == ALL_METHODS and "bcos" not in cfg.methods_standard
    assert len(cfg.methods_bcos) == 9 and len(cfg.methods_standard) == 8
    counts = cfg.grid_counts(ALL_METHODS)
    # issue #10's minimum: >= 250 for bcos and every gradient method, >= 100 for the
    # perturbation methods
    assert counts["bcos"] == counts["grad"] == counts["intgrad"] == counts["gradcam"] == 250
    assert counts["occlusion"] == counts["rise"] == counts["lime"] == 100
    quick = MainConfig.quick(out_dir="x")
    assert quick.out_dir == "x" and quick.time_limit_min == 2.0
    assert quick.grid_counts(("bcos", "lime")) == {"bcos": 20, "lime": 3}
