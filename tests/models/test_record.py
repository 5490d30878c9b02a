"""The model record (``ModelInfo``): what a saved model carries, written into
checkpoints and exports, read back by every loader; older files still load."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

import bcosnet
from bcosnet.data import DatasetRecord, Preprocess
from bcosnet.models import ModelInfo
from bcosnet.training import atomic_save, export_safetensors, load_checkpoint_model, train
from tests.training.helpers import tiny_config

ASSETS = Path(__file__).parents[1] / "assets"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-epoch fmnist_bcos on generated 12×12 data: its checkpoint and export."""
    cfg = tiny_config(tmp_path_factory.mktemp("rec") / "run", epochs=1)
    return train(cfg)


def test_record_round_trips_through_json() -> None:
    m = bcosnet.create_model("fmnist_bcos", num_classes=3, width=4)
    info = m.model_info
    assert info.input_encoding == {"kind": "add_inverse"}
    twin = bcosnet.create_model("standard_fmnist_bcos", num_classes=3)
    assert twin.model_info.input_encoding["kind"] == "normalize"
    rec = info.with_classes(["a", "b", "c"])
    rec = ModelInfo.from_dict(json.loads(json.dumps(rec.to_dict())))
    # (a registered model: its option table comes from the registry)
    full = type(info)(**{**info.__dict__, "classes": ("a", "b", "c")})
    assert rec == full
    pre = Preprocess((64, 64), "crop", 224 / 256)
    data = DatasetRecord("folder", "/data/shapes", "train", "val", {"channels": 3})
    rec2 = ModelInfo.from_dict(json.loads(json.dumps(
        type(info)(**{**info.__dict__, "preprocess": pre, "dataset": data}).to_dict())))
    assert rec2.preprocess == pre and rec2.dataset == data and rec2.image_size == (64, 64)


def test_class_names_is_the_records_classes(tiny_bcos) -> None:
    tiny_bcos.class_names = [f"c{i}" for i in range(10)]
    assert tiny_bcos.model_info.classes == tuple(f"c{i}" for i in range(10))
    with pytest.raises(ValueError, match="11 class names for a model of 10 classes"):
        tiny_bcos.class_names = [f"c{i}" for i in range(11)]
    tiny_bcos.reset_classifier(4)  # new outputs: no names yet
    assert tiny_bcos.class_names == [] and tiny_bcos.model_info.num_classes == 4


@pytest.mark.parametrize("which", ["checkpoint", "weights"])
def test_checkpoint_and_export_carry_the_full_record(trained, which) -> None:
    m = load_checkpoint_model(getattr(trained, which))
    info = m.model_info
    assert info.classes == ("class_0", "class_1", "class_2", "class_3")
    assert info.preprocess == Preprocess((12, 12), "crop", 1.0)
    assert info.dataset.name == "synthetic" and info.dataset.options == {
        "synthetic_samples": 64, "synthetic_classes": 4, "synthetic_channels": 1}
    assert info.extra == {"width": 8, "temperature": 10.0} and info.in_channels == 1
    # create_model(name, weights=file) reads the recorded options and class count
    m2 = bcosnet.create_model("fmnist_bcos", weights=getattr(trained, which))
    assert m2.model_info == info
    x = torch.rand(2, 1, 12, 12)
    torch.testing.assert_close(m.float()(x), m2.float()(x))


def _tamper(src: Path, dst: Path, edit) -> Path:
    ck = torch.load(src, weights_only=True)
    edit(ck)
    atomic_save(ck, dst)
    return dst


@pytest.mark.parametrize("edit, match", [
    (lambda ck: ck["model_info"].update(format="bcosnet-model-record-99"),
     "format 'bcosnet-model-record-99' is not one this bcosnet reads"),
    (lambda ck: ck["model_info"].update(num_classes="four"), "num_classes must be an int >= 1"),
    (lambda ck: ck["model_info"].update(classes=["a"] * 9), "9 class names for a model of 4"),
    (lambda ck: ck["model_info"].update(colour="blue"), r"unknown field\(s\) \['colour'\]"),
    (lambda ck: ck["model_info"]["preprocess"].update(resize="squash"), "resize must be one"),
    (lambda ck: ck["model_info"]["dataset"].update(name="mnist-ish"), "unknown data set"),
    (lambda ck: ck.update(num_classes=7), "model record says num_classes 4"),
])
def test_a_tampered_record_is_a_clear_error(trained, tmp_path, edit, match) -> None:
    bad = _tamper(trained.checkpoint, tmp_path / "bad.pt", edit)
    with pytest.raises(ValueError, match=match) as e:
        load_checkpoint_model(bad)
    assert str(bad) in str(e.value)


def test_a_tampered_export_is_a_clear_error(trained, tmp_path) -> None:
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(trained.weights), framework="pt") as f:
        meta = {k: json.loads(v) for k, v in f.metadata().items()}
    meta["model_info"]["in_channels"] = 0
    bad = export_safetensors(load_file(str(trained.weights)), tmp_path / "bad.safetensors", meta)
    with pytest.raises(ValueError, match="in_channels must be an int >= 1"):
        load_checkpoint_model(bad)


def test_files_of_the_previous_version_load_and_say_what_was_assumed() -> None:
    with pytest.warns(UserWarning, match=r"derived from its training config: data set "
                      r"synthetic \(train/test\), input 12×12 px") as w:
        m = load_checkpoint_model(ASSETS / "v0.1.0_fmnist_bcos_checkpoint.pt")
    assert any("without a model record" in str(x.message) for x in w)
    assert m.model_info.image_size == (12, 12) and m.model_info.dataset.name == "synthetic"
    assert m.class_names == ["class_0", "class_1", "class_2", "class_3"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        e = load_checkpoint_model(ASSETS / "v0.1.0_fmnist_bcos.safetensors")
    text = " ".join(str(x.message) for x in caught)
    assert "records neither its image size nor its data set" in text and "28×28" in text
    assert e.model_info.preprocess is None and e.model_info.dataset is None
    assert e.model_info.image_size == (28, 28) and e.model_info.num_classes == 4


def test_registered_weights_record_their_transform(tmp_path) -> None:
    from bcosnet.models import Weights

    torch.manual_seed(0)
    src = bcosnet.create_model("fmnist_bcos", num_classes=10, width=4)
    path = tmp_path / "fm.pt"
    torch.save(src.state_dict(), path)
    entry = Weights(name="test", url=path.as_uri(), sha256_prefix="", source="a test",
                    num_classes=10, model_options={"width": 4},
                    preprocess=Preprocess((32, 32), "crop", 224 / 256),
                    dataset=DatasetRecord("fashion-mnist"), classes=tuple("abcdefghij"))
    m = bcosnet.create_model("fmnist_bcos", weights=entry)
    assert m.model_info.preprocess == entry.preprocess
    assert m.model_info.dataset == entry.dataset and m.class_names == list("abcdefghij")


def test_to_model_input_follows_the_record_and_warns_on_another_size(tiny_bcos) -> None:
    from dataclasses import replace

    from bcosnet.data import to_model_input

    info = replace(tiny_bcos.model_info, preprocess=Preprocess((28, 28), "crop", 1.0))
    x = torch.rand(1, 28, 28)
    assert torch.equal(to_model_input(x, info), x)  # the native size: unchanged
    wide = torch.rand(1, 28, 56)  # shorter side already 28: the centre 28 columns
    assert torch.equal(to_model_input(wide, info), wide[..., 14:42])
    with pytest.warns(UserWarning, match=r"trained on 28×28 images; feeding 14×14 "
                      r"\(image_size=14\)"):
        small = to_model_input(x, info, image_size=14)
    assert small.shape == (1, 14, 14)
    # a rescaled grey level stays that grey level
    flat = to_model_input(torch.full((1, 40, 30), 0.25), info, image_size=14)
    torch.testing.assert_close(flat, torch.full((1, 14, 14), 0.25))
    with pytest.raises(ValueError, match="takes 1-channel images"):
        to_model_input(torch.rand(3, 28, 28), info)
