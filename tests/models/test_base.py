"""The one classifier shape (models/base.py), the option vocabulary and loading
checkpoints written by an earlier bcosnet version."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import pytest
import torch

import bcosnet
from bcosnet.models import BcosClassifier
from bcosnet.models._common import LEGACY_OPTIONS, translate_legacy_options
from bcosnet.training import load_checkpoint_model

DATA = Path(__file__).parents[1] / "assets"

# Small members of every B-cos family (fast to build and run).
SMALL = {
    "fmnist_bcos": dict(width=4),
    "cifar_bcos": {},
    "cifar_resnet20": {},
    "cifar_resnet20_v2": {},
    "resnet18_v2": {},
    "vgg11_bnu_v2": dict(hidden_features=8),
    "densenet121": dict(growth_rate=4, num_init_features=8, block_config=(1, 1)),
    "inception_v3": dict(aux_logits=False),
}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_forward_is_features_then_head(name: str) -> None:
    torch.manual_seed(0)
    m = bcosnet.create_model(name, num_classes=5, **SMALL[name]).double().eval()
    assert isinstance(m, BcosClassifier)
    size = 80 if name == "inception_v3" else 32
    x = torch.rand(2, m.in_channels, size, size, dtype=torch.float64)
    seen = {}
    layer = dict(m.named_modules())[m.last_feature_layer]
    h = layer.register_forward_hook(lambda _m, _i, out: seen.setdefault("out", out))
    try:
        logits = m(x)
    finally:
        h.remove()
    feats = m.forward_features(x)
    # last_feature_layer names the module whose output forward_features returns.
    assert torch.equal(seen["out"], feats)
    torch.testing.assert_close(m.forward_head(feats), logits, rtol=0, atol=0)
    pooled = m.forward_head(feats, pre_logits=True)
    lt = m.logit_layer
    torch.testing.assert_close(pooled / lt.temperature + lt.bias, logits)
    # The classifier applied per location, then averaged: pooled == mean of the map.
    per_loc = m.get_classifier()(feats)
    torch.testing.assert_close(per_loc.mean((2, 3)), pooled)


def test_forward_features_checks_the_input(tiny_bcos) -> None:
    with pytest.raises(ValueError, match="pass raw images"):
        tiny_bcos.forward_features(torch.rand(1, 2, 28, 28))


def test_one_option_vocabulary() -> None:
    for name in bcosnet.list_models():
        opts = bcosnet.models.model_info(name).options
        assert not set(opts) & set(LEGACY_OPTIONS), (name, opts)
        if bcosnet.models.model_info(name).is_bcos:
            assert {"b", "max_out", "temperature", "logit_bias"} <= set(opts), name


def test_legacy_option_names_translate_with_a_warning() -> None:
    with pytest.warns(FutureWarning, match="log10_temperature"):
        old = bcosnet.create_model("fmnist_bcos", width=4, log10_temperature=2.0, s=50.0)
    new = bcosnet.create_model("fmnist_bcos", width=4, temperature=100.0, scale=50.0)
    assert old.logit_layer.temperature == pytest.approx(new.logit_layer.temperature) == 100.0
    assert old.features[0].scale == pytest.approx(new.features[0].scale)
    with pytest.warns(FutureWarning, match="scale_s"):
        m = bcosnet.create_model("resnet18", num_classes=3, scale_s=10.0)
    assert m.conv1.scale == pytest.approx(10.0 / (7 * 7 * 6) ** 0.5)
    with pytest.warns(FutureWarning, match="gamma"):
        m = bcosnet.create_model("cifar_bcos", gamma=3.0)
    assert m.features[0].scale == 3.0  # CIFAR: a fixed γ
    with pytest.raises(ValueError, match="give 'scale' only"):
        translate_legacy_options({"scale": 1.0, "scale_s": 2.0}, "resnet18")


def test_unknown_option_names_the_close_one() -> None:
    with pytest.raises(ValueError, match="did you mean 'max_out'"):
        bcosnet.create_model("resnet18", maxout=1)
    with pytest.raises(ValueError, match="did you mean 'temperature'"):
        bcosnet.models.resnet.resnet18(temprature=1.0)


@pytest.mark.parametrize("file", ["v0.1.0_fmnist_bcos_checkpoint.pt",
                                  "v0.1.0_fmnist_bcos.safetensors"])
def test_checkpoints_of_the_previous_version_load(file: str) -> None:
    ref = json.loads((DATA / "v0.1.0_fmnist_bcos_logits.json").read_text())
    x = torch.tensor(ref["x"]).view(ref["x_shape"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = load_checkpoint_model(DATA / file)
    assert any("log10_temperature" in str(w.message) for w in caught)
    assert m.logit_layer.temperature == pytest.approx(10.0)
    with torch.no_grad():
        torch.testing.assert_close(m(x), torch.tensor(ref["logits"]), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- fine-tuning API
@pytest.mark.parametrize("name", ["fmnist_bcos", "resnet18_v2", "vgg11_bnu_v2"])
def test_reset_classifier_keeps_features_and_stays_complete(name: str) -> None:
    torch.manual_seed(0)
    m = bcosnet.create_model(name, num_classes=5, **SMALL[name]).double().eval()
    x = torch.rand(3, m.in_channels, 32, 32, dtype=torch.float64)
    feats = m.forward_features(x)
    old_head = m.get_classifier()
    m.reset_classifier(7)
    assert m.num_classes == 7 and m.model_info.num_classes == 7
    assert torch.equal(m.forward_features(x), feats)
    logits = m(x)
    assert logits.shape == (3, 7)
    # the new last layer takes the old one's options
    new_last = m.get_classifier()[-1] if name.startswith("vgg") else m.get_classifier()
    old_last = old_head[-1] if name.startswith("vgg") else old_head
    assert type(new_last) is type(old_last) and new_last.b == old_last.b
    assert new_last.max_out == old_last.max_out and new_last.scale == old_last.scale
    assert new_last.weight.shape[0] == 7 * new_last.max_out
    assert new_last.weight.dtype == torch.float64
    # logit bias: the family's rule for 7 classes (v2: −log(C − 1); v1: log(p/(1 − p)), p = 1/7)
    expected = -math.log(6) if name.endswith("_v2") else math.log((1 / 7) / (6 / 7))
    assert m.logit_layer.bias == pytest.approx(expected)
    # independent check of the head: pooled per-location classifier, then out / T + b
    ref = m.get_classifier()(feats).mean((2, 3)) / m.logit_layer.temperature + expected
    torch.testing.assert_close(logits, ref, rtol=1e-10, atol=1e-10)
    ex = bcosnet.explain(m, x, target=[0, 3, 6])  # one class per image (captum's rule)
    got = (ex.contributions.sum((-2, -1)) + ex.bias).flatten()
    torch.testing.assert_close(got, logits[torch.arange(3), [0, 3, 6]], rtol=1e-9, atol=1e-9)


def test_reset_classifier_refuses_bad_counts() -> None:
    m = bcosnet.create_model("fmnist_bcos", width=4)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="num_classes"):
            m.reset_classifier(bad)


@pytest.mark.parametrize("name", ["standard_fmnist_bcos", "standard_resnet18",
                                  "standard_cifar_resnet20"])
def test_standard_twins_reset_classifier(name: str) -> None:
    torch.manual_seed(0)
    m = bcosnet.create_model(name, num_classes=5).double().eval()
    x = torch.rand(2, m.in_channels, 32, 32, dtype=torch.float64)
    before = dict(m.named_parameters())
    head_params = {n for n, _ in m.get_classifier().named_parameters()}
    m.reset_classifier(3)
    assert m(x).shape == (2, 3) and m.num_classes == 3
    kept = {n: p for n, p in m.named_parameters()
            if not n.startswith(m.classifier_name + ".")}
    assert all(torch.equal(p, before[n]) for n, p in kept.items())
    assert head_params  # the head has parameters
    if hasattr(m, "forward_features"):
        assert m.forward_features(x).dim() == 4
