"""``bcosnet neurons`` end to end on a small checkpoint and real Fashion-MNIST images."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Subset

import bcosnet
from bcosnet.cli import main
from bcosnet.cli.neurons import parse_channels
from bcosnet.data import fashion_mnist
from bcosnet.evaluation.neurons import top_activations
from bcosnet.training import atomic_save


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    model = bcosnet.create_model("fmnist_bcos", num_classes=10, width=4)
    p = tmp_path_factory.mktemp("ck") / "ckpt.pt"
    atomic_save(
        {"model_name": "fmnist_bcos", "model_options": {"width": 4}, "num_classes": 10,
         "classes": [f"c{i}" for i in range(10)], "model": model.state_dict()},
        p,
    )
    return p, model.eval()


def test_neurons_writes_figures_and_matches_api(ckpt, tmp_path, capsys):
    path, model = ckpt
    out = tmp_path / "n"
    rc = main(["neurons", "--checkpoint", str(path), "--layer", "features.3",
               "--channels", "0-1,5", "--data", "fashion-mnist", "--limit", "150",
               "--top", "20", "--images-per-neuron", "2", "--out", str(out)])
    assert rc == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "class_distribution_features.3_ch0.png",
        "class_distribution_features.3_ch1.png",
        "class_distribution_features.3_ch5.png",
        "neurons_features.3.png",
        "top_features.3.json",
    ]
    for n in names[:-1]:
        with Image.open(out / n) as im:
            assert im.format == "PNG"
    rec = json.loads((out / "top_features.3.json").read_text())
    ds = Subset(fashion_mnist(None, "test"), range(150))
    ref = top_activations(model, DataLoader(ds, batch_size=64), "features.3", [0, 1, 5], k=20,
                          progress=False)
    for c in (0, 1, 5):
        assert rec["neurons"][str(c)]["indices"] == ref.indices[ref.row(c)].tolist()
        labels = rec["neurons"][str(c)]["labels"]
        assert labels == [int(ds[i][1]) for i in rec["neurons"][str(c)]["indices"]]


def test_neurons_errors_and_listing(ckpt, tmp_path, capsys):
    path, _ = ckpt
    assert main(["neurons", "--checkpoint", str(path), "--list-layers"]) == 0
    assert "features.3\tBcosConv2d" in capsys.readouterr().out
    rc = main(["neurons", "--checkpoint", str(path), "--layer", "featurez.3", "--limit", "10",
               "--dataset", "fashion-mnist", "--out", str(tmp_path)])
    assert rc == 2
    assert "did you mean 'features.3'" in capsys.readouterr().err
    # a file that records no data set: the command asks for one (no silent default)
    rc = main(["neurons", "--checkpoint", str(path), "--layer", "features.3", "--limit", "10",
               "--out", str(tmp_path)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "records no data set; pass --dataset NAME" in err and "--data DIR" in err


def test_parse_channels():
    assert parse_channels("3,1,0-2") == [0, 1, 2, 3]
    assert parse_channels(None) is None
    for bad in ("a", "5-2", ","):
        with pytest.raises(ValueError, match="channels"):
            parse_channels(bad)
