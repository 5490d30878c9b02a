"""``bcosnet evaluate localisation`` and the main job's grid-count options."""

from __future__ import annotations

import argparse
import json
import re
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
    # the paper's 500 for every method
    assert counts == dict.fromkeys(ALL_METHODS, 500)
    quick = MainConfig.quick(out_dir="x")
    assert quick.out_dir == "x" and quick.epochs == 1
    assert quick.grid_counts(("bcos", "lime")) == {"bcos": 20, "lime": 3}


def test_evaluate_faithfulness_cli(tmp_path: Path, capsys) -> None:
    import numpy as np
    import torch

    import bcosnet
    from bcosnet.data import build_datasets
    from bcosnet.training import load_checkpoint_model

    run = tmp_path / "run"
    assert main(["train", "--preset", "smoke", "--out-dir", str(run), "--no-progress",
                 "--threads", "1", "--epochs", "1"]) == 0
    out = tmp_path / "di"
    args = ["evaluate", "faithfulness", "--checkpoint", str(run / "checkpoint.pt"),
            "--out", str(out), "--methods", "bcos,grad", "--images", "6", "--steps", "4",
            "--no-progress"]
    capsys.readouterr()
    assert main(args) == 0
    text = capsys.readouterr().out
    saved = json.loads((out / "faithfulness.json").read_text())
    assert set(saved["summary"]) == {"bcos", "grad", "random"}
    assert saved["settings"]["images"] == 6 and saved["settings"]["steps"] == 4
    assert saved["settings"]["output"] == "sigmoid" and saved["bcos_network"] is True
    assert "| bcos |" in text and "| random |" in text
    assert (out / "faithfulness.md").read_text() in text
    # from the definition, for the bcos row: rank pixels by the explanation's contributions,
    # black out the top k, score sigmoid(logit of the predicted class)
    model = load_checkpoint_model(str(run / "checkpoint.pt"))
    test = build_datasets("synthetic", None, augment=False, synthetic_samples=128,
                          synthetic_classes=4).test
    curves = json.loads((out / "bcos.json").read_text())
    x = torch.stack([test[i][0] for i in saved["indices"]])
    with torch.no_grad():
        pred = model(x).argmax(1)
    assert pred.tolist() == saved["targets"]
    contrib = bcosnet.explain(model, x, target=pred).contributions.detach()
    hw = x.shape[-1] * x.shape[-2]
    aucs = []
    for j in range(len(x)):
        c = contrib[j].flatten().numpy().astype(np.float64)
        order = np.argsort(-c, kind="stable")
        scores = []
        for k in range(5):
            m = round(k * hw / 4)
            keep = torch.ones(hw)
            keep[torch.as_tensor(order[:m])] = 0
            xd = x[j:j + 1] * keep.view(1, 1, *x.shape[-2:])
            with torch.no_grad():
                scores.append(model(xd).sigmoid()[0, pred[j]].item())
            # the top-m set is unambiguous unless values tie at its border
            if 0 < m < hw and abs(c[order[m - 1]] - c[order[m]]) < 1e-7:
                continue
            assert curves["deletion"][j][k] == pytest.approx(scores[-1], abs=1e-5)
        aucs.append(np.trapezoid(scores, np.linspace(0, 1, 5)))
    assert saved["summary"]["bcos"]["deletion_auc"] == pytest.approx(np.mean(aucs), abs=1e-4)
    # a second call reuses the finished methods
    stamp = (out / "bcos.json").stat().st_mtime_ns
    assert main(args) == 0
    assert (out / "bcos.json").stat().st_mtime_ns == stamp


def test_library_errors_are_reworded_into_the_commands_flags() -> None:
    """cli_message: API arguments in a library message become the command's flags
    (one mapping per command, used by main() for every command)."""
    import torch

    from bcosnet.cli._common import COMMON_FLAGS, cli_message
    from bcosnet.cli.evaluate import LOCALISATION_FLAGS
    from bcosnet.evaluation import make_grid_dataset

    flags = {**COMMON_FLAGS, **LOCALISATION_FLAGS}
    assert cli_message("pass num_grids=7, allow_fewer=True, a smaller grid (n=2 needs 4 classes "
                       "per grid) or confidence_threshold=None; batch_size must be >= 1", flags) \
        == ("pass --grids 7, --allow-fewer, a smaller grid (--grid-n 2 needs 4 classes per grid) "
            "or --no-threshold; --batch-size must be >= 1")
    # whole names only: not inside identifiers, attributes or flags
    assert cli_message("model.batch_size and my_num_grids=3 and --grids 3", flags) \
        == "model.batch_size and my_num_grids=3 and --grids 3"

    # a real message of the library: 3 of 5 classes pass the threshold
    class Fixed(torch.nn.Module):
        def forward(self, x):
            lab = x[:, 0, 0, 0].round().long()
            scale = torch.where(lab < 3, 5.0, 0.1)[:, None]  # classes 3, 4: not confident
            out = torch.nn.functional.one_hot(lab, 5).double() * scale
            return out + 0 * x.sum((1, 2, 3))[:, None]

    labels = torch.arange(20) % 5
    images = labels.double().view(-1, 1, 1, 1).expand(-1, 1, 4, 4).clone()
    with pytest.raises(ValueError) as e:
        make_grid_dataset(Fixed(), (images, labels), n=2, confidence_threshold=0.9,
                          progress=False)
    api = str(e.value)
    assert "n=2" in api and "confidence_threshold=None" in api
    cli = cli_message(api, flags)
    assert "--grid-n 2" in cli and "--no-threshold" in cli
    assert "n=" not in cli and "confidence_threshold" not in cli


def test_evaluate_localisation_names_its_flags_and_the_grid_that_fits(tmp_path: Path,
                                                                       capsys) -> None:
    run = tmp_path / "run"
    assert main(["train", "--preset", "smoke", "--out-dir", str(run), "--no-progress",
                 "--threads", "1", "--epochs", "1"]) == 0
    capsys.readouterr()
    code = main(["evaluate", "localisation", "--checkpoint", str(run / "checkpoint.pt"),
                 "--out", str(tmp_path / "pg"), "--grid-n", "4", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert re.search(r"a 4×4 grid needs 16 distinct classes \(n² for --grid-n 4\), but the "
                     r"model has (4|10); --grid-n [23] fits", err), err
    assert "n=" not in err
