"""The B-cosification study (experiments/bcosify.py), end to end with --quick."""

from __future__ import annotations

import json

from experiments import bcosify


def test_quick_study_runs_every_stage(tmp_path) -> None:
    out = tmp_path / "study"
    r = bcosify.main(["--quick", "--out", str(out), "--threads", "1", "--no-progress"])
    saved = json.loads((out / "results.json").read_text())
    assert saved["quick"] and saved["equivalence"] == r["equivalence"]
    # B = 1: the B-cosified twin is the twin (same predictions, float32 rounding)
    assert r["equivalence"]["max_rel_logit_diff"] < 1e-5
    assert r["equivalence"]["bcosified_b1_test_acc"] == r["standard"]["test_acc"]
    for name in ("bcosified", "bcos"):
        assert 0.0 <= r[name]["test_acc"] <= 1.0 and r[name]["steps"] > 0
        assert r["curves"][name][-1][0] == r[name]["train_time_s"]
    # the same budget: the from-scratch network gets the twin's plus the fine-tuning's
    b = r["budget_min"]
    assert b["bcos"] == b["standard"] + b["finetune"]
    assert (out / "summary.md").read_text().startswith("| network |")
    assert set(r["wall_s"]) >= {"standard", "equivalence", "bcosified", "bcos"}
