"""``bcosnet train`` / ``bcosnet evaluate accuracy`` and bcosnet.evaluation.accuracy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from bcosnet.cli import build_parser, main
from bcosnet.cli.train import config_from_args
from bcosnet.data import TensorImageDataset
from bcosnet.evaluation import accuracy
from bcosnet.training import load_checkpoint


def test_train_then_evaluate_accuracy(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    rc = main(["train", "--preset", "smoke", "--out-dir", str(out), "--no-progress",
               "--threads", "1", "--epochs", "1"])
    assert rc == 0
    assert "test accuracy" in capsys.readouterr().out
    ck = load_checkpoint(out / "checkpoint.pt")
    js = tmp_path / "acc.json"
    rc = main(["evaluate", "accuracy", "--checkpoint", str(out / "checkpoint.pt"),
               "--json", str(js), "--per-class"])
    assert rc == 0
    res = json.loads(js.read_text())
    assert res["top1"] == pytest.approx(ck["metrics"]["test_acc"])
    assert res["n"] == ck["metrics"]["test_n"] and len(res["per_class"]) == 4
    # The exported weights need the data set named explicitly.
    rc = main(["evaluate", "accuracy", "--checkpoint", str(out / "model.safetensors"),
               "--dataset", "synthetic"])
    assert rc == 0


def test_missing_data_is_reported_with_the_path(tmp_path: Path, capsys) -> None:
    rc = main(["train", "--dataset", "imagenet", "--data", str(tmp_path / "nope"),
               "--model", "resnet18", "--out-dir", str(tmp_path / "o"), "--no-progress"])
    assert rc == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "nope") in err and "train/<class>" in err


def test_flags_override_preset_and_config(tmp_path: Path) -> None:
    p = build_parser()
    args = p.parse_args(["train", "--preset", "fmnist", "--model", "standard_fmnist_bcos",
                         "--model-option", "width=8", "--lr", "0.01", "--epochs", "2",
                         "--time-limit-min", "0.5", "--batch-size", "32", "--resume"])
    cfg = config_from_args(args)
    assert cfg.model.name == "standard_fmnist_bcos" and cfg.model.options == {"width": 8}
    assert (cfg.optim.lr, cfg.epochs, cfg.time_limit_min, cfg.optim.batch_size) == (
        0.01, 2, 0.5, 32)
    assert cfg.resume and cfg.loss == "bce"  # untouched preset values stay
    conf = tmp_path / "c.yaml"
    conf.write_text("preset: cifar10-v1\nepochs: 7\n")
    cfg2 = config_from_args(p.parse_args(["train", "--config", str(conf), "--seed", "3"]))
    assert (cfg2.epochs, cfg2.seed, cfg2.model.name) == (7, 3, "cifar_bcos")
    with pytest.raises(ValueError, match="either --preset or --config"):
        config_from_args(p.parse_args(["train", "--config", str(conf), "--preset", "fmnist"]))


def test_list_presets(capsys) -> None:
    assert main(["train", "--list-presets"]) == 0
    names = capsys.readouterr().out.split()
    assert "cifar10-v1" in names and "imagenet-inception-v3-v1" in names and "fmnist" in names


class _FixedLogits(nn.Module):
    """Returns the logits stored for each image (image value = row index)."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("table", logits)
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.table[x[:, 0, 0, 0].round().long()]


def test_accuracy_top1_topk_and_per_class() -> None:
    labels = torch.tensor([0, 1, 2, 2])
    logits = torch.tensor([
        [3.0, 2.0, 1.0],   # label 0: top-1 hit
        [3.0, 2.0, 1.0],   # label 1: top-2 hit only
        [1.0, 2.0, 3.0],   # label 2: top-1 hit
        [3.0, 2.0, 1.0],   # label 2: top-3 only
    ])
    images = torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1).expand(4, 1, 2, 2)
    ds = TensorImageDataset(images.clone(), labels, ["a", "b", "c"])
    res = accuracy(_FixedLogits(logits), ds, topk=(1, 2), batch_size=3)
    assert res.top1 == 0.5 and res.topk == {1: 0.5, 2: 0.75}
    assert res.per_class == [1.0, 0.0, 0.5] and res.counts == [1, 1, 2]
    assert res.class_names == ["a", "b", "c"] and res.n == 4
