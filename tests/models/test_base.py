"""The one classifier shape (models/base.py), the option vocabulary and loading
checkpoints written by an earlier bcosnet version."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import bcosnet
from bcosnet.models import BcosClassifier
from bcosnet.models._common import LEGACY_OPTIONS, translate_legacy_options
from bcosnet.nn import BcosConv2d
from bcosnet.training import load_checkpoint_model

from .bcos_reference import calibrate_norms

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


def bcos_conv_from_definition(layer: BcosConv2d, x: torch.Tensor) -> torch.Tensor:
    """A B-cos convolution from its definition (docs/protocol.md §1), not the layer's
    code: ``γ · |cos|^(B−1) · ŵᵀx`` per patch, ``ŵ`` unit-norm rows, MaxOut over each
    unit's consecutive rows before the scaling, ``‖x‖ = sqrt(Σ_patch x² + 1e-6)``."""
    w = layer.weight
    w_hat = w / w.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    lin = F.conv2d(x, w_hat, None, layer.stride, layer.padding)
    lin = lin.unflatten(1, (layer.out_channels, layer.max_out)).amax(2)
    ones = x.new_ones(1, 1, *layer.kernel_size)
    norm = F.conv2d(x.square().sum(1, keepdim=True), ones, None, layer.stride,
                    layer.padding).add(1e-6).sqrt()
    gamma = 1.0 if layer.scale is None else layer.scale
    return gamma * (lin.abs() / norm) ** (layer.b - 1) * lin


def evidence_from_definition(m: BcosClassifier, feats: torch.Tensor) -> torch.Tensor:
    """The pooled class evidence from the feature map: every conv of the head from
    its definition, then the global average (the logits are ``evidence / T + b``)."""
    head = m.get_classifier()
    out = feats
    for layer in head if isinstance(head, torch.nn.Sequential) else [head]:
        out = bcos_conv_from_definition(layer, out)
    return out.mean((2, 3))


@pytest.mark.parametrize("name", sorted(SMALL))
def test_forward_is_features_then_head(name: str) -> None:
    torch.manual_seed(0)
    m = bcosnet.create_model(name, num_classes=5, **SMALL[name]).double().eval()
    assert isinstance(m, BcosClassifier)
    size = 80 if name == "inception_v3" else 32
    x = torch.rand(2, m.in_channels, size, size, dtype=torch.float64)
    calibrate_norms(m, torch.rand(4, m.in_channels, size, size, dtype=torch.float64))
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
    # the head against its definition (per-location B-cos convs, average, out / T + b);
    # relative to the evidence's size (the v1 nets' is small: no norms)
    evidence = evidence_from_definition(m, feats)
    size = float(evidence.abs().max())
    assert size > 0 and evidence.std() > 1e-2 * size  # varies: the comparison says something
    torch.testing.assert_close(m.forward_evidence(feats), evidence, rtol=1e-9, atol=1e-12 * size)
    lt = m.logit_layer
    torch.testing.assert_close(logits, evidence / lt.temperature + lt.bias, rtol=1e-9,
                               atol=1e-12 * size / lt.temperature)
    # pre_logits: the pooled features before the classifier (timm's meaning)
    pooled = m.forward_head(feats, pre_logits=True)
    assert pooled.shape == (2, m.num_features) == (2, feats.shape[1])
    torch.testing.assert_close(pooled, feats.mean((2, 3)), rtol=1e-12, atol=1e-14)


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
                                  "standard_cifar_resnet20", "standard_inception_v3"])
def test_standard_twins_reset_classifier(name: str) -> None:
    torch.manual_seed(0)
    opts = {"aux_logits": False} if "inception" in name else {}
    m = bcosnet.create_model(name, num_classes=5, **opts).double().eval()
    size = 80 if "inception" in name else 32
    x = torch.rand(2, m.in_channels, size, size, dtype=torch.float64)
    # copies: named_parameters() holds the tensors that reset_classifier could change in place
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    head_params = {f"{m.classifier_name}.{n}" for n, _ in m.get_classifier().named_parameters()}
    feats = m.forward_features(x)
    m.reset_classifier(3)
    assert m(x).shape == (2, 3) and m.num_classes == 3 and m.model_info.num_classes == 3
    new_last = [mod for mod in m.get_classifier().modules()
                if isinstance(mod, (torch.nn.Linear, torch.nn.Conv2d))][-1]
    assert new_last.weight.shape[0] == 3 and new_last.weight.dtype == torch.float64
    kept = {n: p for n, p in m.named_parameters()
            if not n.startswith(m.classifier_name + ".")}
    assert head_params and set(before) - set(kept) == head_params  # the rest is all kept
    for n, p in kept.items():
        assert torch.equal(p, before[n]), n
    assert torch.equal(m.forward_features(x), feats)


# ----------------------------------------------------------------------------- the B-cos rule
class _HandBuiltBcos(BcosClassifier):
    """A B-cos network written by a user: two B-cos convs, no record, no norms."""

    def __init__(self, num_classes: int = 4, in_channels: int = 1, **_: object) -> None:
        super().__init__(num_classes=num_classes, in_channels=in_channels, min_size=(4, 4),
                         name="hand_built")
        self.features = BcosConv2d(2 * in_channels, 8, 3, padding=1)
        self.num_features = 8
        self._set_head(BcosConv2d(8, num_classes, 1), temperature=1.0, logit_bias=0.0)


class _Plain(torch.nn.Module):
    """A conventional network written by a user."""

    def __init__(self, num_classes: int = 4, in_channels: int = 1, **_: object) -> None:
        super().__init__()
        self.body = torch.nn.Conv2d(in_channels, num_classes, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).mean((2, 3))


@pytest.fixture
def registered():
    """Register user-built networks for one test only (other tests walk the registry)."""
    from bcosnet.models import registry

    names = []

    def register(name: str, builder, **kw):
        bcosnet.register_model(name, family="test", input_size=(8, 8), in_channels=1,
                               default_num_classes=4, options={}, **kw)(builder)
        names.append(name)
        return name

    yield register
    for n in names:
        registry._REGISTRY.pop(n, None)


def test_record_and_logit_rule_follow_is_bcos_model(registered) -> None:
    from bcosnet.models.base import logit_bias_rule
    from bcosnet.nn import is_bcos_model

    torch.manual_seed(0)
    made = {
        "registered B-cosified": bcosnet.create_model("bcosified_fmnist_bcos", 5, width=4),
        "bcosify()'d twin": bcosnet.bcosify(bcosnet.create_model("standard_fmnist_bcos", 5,
                                                                 width=4), fine_tune=True),
        "hand-built B-cos": _HandBuiltBcos(5),
        "registered hand-built B-cos": bcosnet.create_model(
            registered("test_hand_bcos", _HandBuiltBcos, kind="bcos"), 5),
        "registered plain": bcosnet.create_model(
            registered("test_plain", _Plain, kind="standard"), 5),
    }
    rules = {k: logit_bias_rule(m) for k, m in made.items()}
    assert rules == {"registered B-cosified": "v2", "bcosify()'d twin": "v2",
                     "hand-built B-cos": "v1", "registered hand-built B-cos": "v1",
                     "registered plain": None}
    for what, m in made.items():
        assert is_bcos_model(m) == (rules[what] is not None), what
        info = m.__dict__.get("model_info")
        if info is not None:  # the record never contradicts the module rule
            assert info.is_bcos == is_bcos_model(m), what
        if rules[what] is not None:  # reset_classifier's logit bias follows the same rule
            m.reset_classifier(7)
            want = -math.log(6) if rules[what] == "v2" else math.log((1 / 7) / (6 / 7))
            assert m.logit_layer.bias == pytest.approx(want), what


def test_a_registration_contradicting_the_module_rule_is_refused(registered) -> None:
    plain = registered("test_plain_as_bcos", _Plain, kind="bcos")
    with pytest.raises(ValueError, match=r"kind 'bcos'.*has no B-cos layer.*kind='standard'"):
        bcosnet.create_model(plain)
    bcos = registered("test_bcos_as_standard", _HandBuiltBcos, kind="standard")
    with pytest.raises(ValueError, match=r"kind 'standard'.*has B-cos layers.*kind='bcos'"):
        bcosnet.create_model(bcos)


def test_every_registered_model_agrees_with_the_module_rule() -> None:
    from bcosnet.nn import is_bcos_model

    for name in bcosnet.list_models("*fmnist*") + bcosnet.list_models("cifar_resnet20*") + [
            "convnext_atto_v2", "simple_vit_ti_patch16_224_v2", "standard_resnet18"]:
        with torch.device("meta"):
            m = bcosnet.create_model(name)
        assert m.model_info.is_bcos == is_bcos_model(m) == (
            bcosnet.models.model_info(name).kind != "standard"), name
