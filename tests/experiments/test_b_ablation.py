"""The B ablation study end to end with --quick (synthetic data, seeded), and its
scale/temperature rules against their definitions."""

from __future__ import annotations

import json

import pytest
import torch

from bcosnet import create_model
from bcosnet.data import build_datasets
from bcosnet.training import load_checkpoint_model
from experiments import b_ablation


def test_quick_runs_end_to_end_and_resumes(tmp_path, capsys) -> None:
    out = tmp_path / "b"
    assert b_ablation.main(["--quick", "--out", str(out), "--threads", "1",
                            "--no-progress"]) == 0
    res = json.loads((out / "results.json").read_text())
    rows = res["rows"]
    assert [r["b"] for r in rows] == [1.0, 2.5]
    assert (out / "b_ablation.png").stat().st_size > 1000
    table = (out / "table.md").read_text()
    assert table.count("\n| 1 |") == 1 and table.count("\n| 2.5 |") == 1
    test = build_datasets("synthetic", augment=False, synthetic_samples=600,
                          synthetic_classes=10).test
    x = torch.stack([test[i][0] for i in range(len(test))])
    y = torch.tensor([int(test[i][1]) for i in range(len(test))])
    for r in rows:
        # the reported accuracy is the checkpoint's, recomputed here
        model = load_checkpoint_model(r["checkpoint"])
        with torch.no_grad():
            acc = (model(x).argmax(1) == y).double().mean().item()
        assert r["test_acc"] == pytest.approx(acc, abs=1e-6)
        assert f"| {100 * acc:.2f} |" in table
        assert 0.0 <= r["deletion_auc"] <= 1.0 and 0.0 <= r["random_deletion_auc"] <= 1.0
        assert r["faithfulness_images"] == 40
        pg = r["localisation"]
        assert "error" in pg or 0.0 <= pg["mean"] <= 1.0
    assert set(res["verdict"]) >= {"localisation_monotone", "accuracy_drop_points"}
    assert res["verdict"]["accuracy_drop_points"] == pytest.approx(
        100 * (rows[0]["test_acc"] - rows[1]["test_acc"]))
    # a second run loads every B instead of training again
    stamp = (out / "B1" / "result.json").stat().st_mtime_ns
    capsys.readouterr()
    assert b_ablation.main(["--quick", "--out", str(out), "--threads", "1",
                            "--no-progress"]) == 0
    assert "B = 1: loaded" in capsys.readouterr().out
    assert (out / "B1" / "result.json").stat().st_mtime_ns == stamp


def test_scale_and_temperature_rules() -> None:
    # "cifar": the v1 CIFAR-10 constants relative to B = 2 (experiment_parameters.py:
    # per-layer factor 10**(1.5·B − 1.75), T = 10**(−3, −3, −2, 1, 2, 2, 3))
    s, t = b_ablation.scale_and_temperature(1.0, "cifar", torch.zeros(1))
    assert s == pytest.approx(100 * 10 ** -1.5) and t == pytest.approx(10.0 ** (-3 - 2))
    s, t = b_ablation.scale_and_temperature(2.5, "cifar", torch.zeros(1))
    assert s == pytest.approx(100 * 10 ** 0.75) and t == pytest.approx(10.0)
    # "calibrated": with its T, a fresh network's logits spread as the B = 2 network's
    torch.manual_seed(1)
    x = torch.rand(16, 1, 28, 28)

    def spread(b: float, temperature: float) -> float:
        torch.manual_seed(0)  # the study's seed: the trainer's initialisation
        m = create_model("fmnist_bcos", 10, b=b, temperature=temperature).eval()
        with torch.no_grad():
            return float(m(x).std())

    for b in (1.0, 2.5):
        s, t = b_ablation.scale_and_temperature(b, "calibrated", x)
        assert s == 100.0
        assert spread(b, t) == pytest.approx(spread(2.0, 1.0), rel=1e-4)
    s, t = b_ablation.scale_and_temperature(2.0, "calibrated", x)
    assert s == 100.0 and t == pytest.approx(1.0)
    with pytest.raises(ValueError, match="rule"):
        b_ablation.scale_and_temperature(2.0, "v2", x)
