"""B-cos DenseNets: registry entries, v1 architecture (Tab. B1 parameter counts),
completeness, equivalence with the ``bcos`` package's DenseNet-121 (v2), input
errors, and the conventional twins."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import bcosnet
from bcosnet.models.densenet import DENSENET_CONFIGS, BcosDenseNet
from bcosnet.nn import AddInverse, BatchNormUncentered2d, BcosConv2d, LogitLayer

ARCHS = list(DENSENET_CONFIGS)


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _meta_model(name: str, **opts) -> nn.Module:
    # Parameter counts only: build on the meta device (no memory, no init cost).
    with torch.device("meta"):
        return bcosnet.create_model(name, **opts)


def _expected_v1_params(g, blocks, f0, max_out, num_classes=1000, in_ch=3, bn_size=4) -> int:
    """Weights of a v1 B-cos DenseNet counted by hand from the architecture:
    every conv (stem, 1×1 bottleneck, 3×3, transition, classifier) has max_out
    units per output channel and no bias; there are no norm layers."""
    p = f0 * max_out * 2 * in_ch * 7 * 7
    c = f0
    for i, n in enumerate(blocks):
        for j in range(n):
            cin = c + j * g
            p += cin * bn_size * g * max_out + bn_size * g * g * max_out * 9
        c += n * g
        if i != len(blocks) - 1:
            p += c * (c // 2) * max_out
            c //= 2
    return p + c * num_classes * max_out


# ----------------------------------------------------------------------------- registry


def test_registry_entries():
    for arch in ARCHS:
        for name, kind in ((arch, "bcos"), (f"{arch}_v2", "bcos_v2"),
                           (f"standard_{arch}", "standard")):
            info = bcosnet.models.model_info(name)
            assert info.kind == kind and info.family == "densenet"
            assert info.input_size == (224, 224) and info.min_size == (29, 29)
            assert info.num_classes == 1000 and info.in_channels == 3
    assert set(bcosnet.list_models("densenet*", kind="bcos")) == set(ARCHS)


# ----------------------------------------------------------------------------- Tab. B1

# Supplement Tab. B1: parameters (M) of B-cos DenseNet-121 by MaxOut units and growth rate.
TAB_B1 = [(1, 32, 7.9), (2, 20, 6.8), (2, 22, 8.0), (2, 24, 9.4), (2, 26, 10.8),
          (2, 28, 12.4), (2, 30, 14.0), (2, 32, 15.8)]


@pytest.mark.parametrize("max_out,growth_rate,millions", TAB_B1)
def test_tab_b1_parameter_counts(max_out, growth_rate, millions):
    model = _meta_model("densenet121", max_out=max_out, growth_rate=growth_rate)
    n = _n_params(model) / 1e6
    assert abs(n - millions) / millions < 0.015, (max_out, growth_rate, n, millions)


def test_tab_b1_default_is_maxout2_g32_and_baseline_size():
    # The registered v1 model is the Fig. B3 / Tab. B1 configuration (MaxOut 2, g = 32).
    n = _n_params(_meta_model("densenet121"))
    assert n == _expected_v1_params(32, (6, 12, 24, 16), 64, 2)
    assert abs(n / 1e6 - 15.8) / 15.8 < 0.015
    # "Standard DenseNet-121: parameters 8.0" (torchvision's, with BatchNorm and biases).
    std = _n_params(_meta_model("standard_densenet121")) / 1e6
    assert abs(std - 8.0) / 8.0 < 0.015


@settings(max_examples=25, deadline=None)
@given(
    g=st.integers(1, 40),
    blocks=st.lists(st.integers(1, 6), min_size=1, max_size=4),
    f0=st.integers(1, 96),
    max_out=st.integers(1, 3),
    num_classes=st.integers(1, 50),
    in_ch=st.sampled_from([1, 3]),
)
def test_parameter_count_matches_architecture(g, blocks, f0, max_out, num_classes, in_ch):
    model = _meta_model("densenet121", growth_rate=g, block_config=tuple(blocks),
                        num_init_features=f0, max_out=max_out, num_classes=num_classes,
                        in_channels=in_ch)
    assert _n_params(model) == _expected_v1_params(g, blocks, f0, max_out, num_classes, in_ch)


# ----------------------------------------------------------------------------- v1 architecture


@pytest.mark.parametrize("arch", ARCHS)
def test_v1_is_pure_bcos(arch):
    model = _meta_model(arch)
    g, blocks, f0 = DENSENET_CONFIGS[arch]
    allowed = (BcosConv2d, AddInverse, LogitLayer, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
               nn.Identity, nn.Sequential, nn.ModuleDict)
    convs = []
    for name, m in model.named_modules():
        if type(m).__name__ in ("_DenseLayer", "BcosDenseNet"):
            continue
        assert isinstance(m, allowed), f"{name}: {type(m).__name__} in a v1 B-cos DenseNet"
        if isinstance(m, BcosConv2d):
            convs.append(m)
            assert m.b == 2.0 and m.max_out == 2
            kh, kw = m.kernel_size
            assert m.scale == pytest.approx(100.0 / math.sqrt(kh * kw * m.in_channels))
    # Only conv weights: no biases, no norm parameters.
    assert all(n.endswith(".weight") for n, _ in model.named_parameters())
    assert sum(c.weight.numel() for c in convs) == _n_params(model)
    assert model.features.conv0.in_channels == 6 and model.features.conv0.out_channels == f0
    assert model.classifier.kernel_size == (1, 1) and model.classifier.out_channels == 1000
    assert model.classifier.max_out == 2
    assert model.logit_layer.temperature == pytest.approx(1e-3)
    assert model.logit_layer.bias == pytest.approx(math.log(0.01 / 0.99))
    n_layers = sum(isinstance(m, BcosConv2d) for m in model.features.modules())
    assert n_layers == 1 + 2 * sum(blocks) + len(blocks) - 1
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())


def test_v1_logit_bias_depends_on_classes_and_options_override():
    m10 = _meta_model("densenet121", num_classes=10)
    assert m10.logit_layer.bias == pytest.approx(math.log(0.1 / 0.9))
    m = _meta_model("densenet121", num_classes=10, temperature=0.5, logit_bias=-2.0, b=1.5,
                    scale=None, max_out=1)
    assert m.logit_layer.temperature == 0.5 and m.logit_layer.bias == -2.0
    assert all(c.b == 1.5 and c.scale is None and c.max_out == 1
               for c in m.modules() if isinstance(c, BcosConv2d))
    with pytest.raises(ValueError, match="does not take option"):
        bcosnet.create_model("densenet121", growth=3)


def test_v2_structure():
    model = _meta_model("densenet121_v2", num_classes=10)
    norms = [m for m in model.modules() if isinstance(m, BatchNormUncentered2d)]
    # norm0, 2 per dense layer, 1 per transition, norm5.
    assert len(norms) == 1 + 2 * 58 + 3 + 1
    assert all(n.bias is None for n in norms)
    assert all(c.max_out == 1 and c.scale is None and c.b == 2.0
               for c in model.modules() if isinstance(c, BcosConv2d))
    assert model.logit_layer.bias == pytest.approx(-math.log(9))
    assert model.logit_layer.temperature == 1.0


# ----------------------------------------------------------------------------- completeness


def _check_completeness(name: str) -> None:
    torch.manual_seed(0)
    model = bcosnet.create_model(name, num_classes=7).double().eval()
    x = torch.rand(1, 3, 32, 32, dtype=torch.float64)
    ex = bcosnet.explain(model, x, target=[[0, 6]])
    with torch.no_grad():
        ref = model(x)
    assert torch.allclose(ex.logits, ref[:, [0, 6]], rtol=0, atol=1e-12)
    signal = (ex.logits - ex.bias).abs()
    assert signal.min() > 0, name  # the contributions are not trivially zero
    assert ex.completeness_error.abs().max() <= 1e-9 * signal.max(), name
    assert ex.weights.shape == (1, 2, 6, 32, 32)


@pytest.mark.parametrize("name", ["densenet121", "densenet121_v2"])
def test_completeness_float64(name):
    _check_completeness(name)


def test_v2_completeness_in_training_mode_and_for_a_neuron():
    torch.manual_seed(1)
    model = bcosnet.create_model("densenet121_v2", num_classes=5).double().train()
    x = torch.rand(3, 3, 40, 40, dtype=torch.float64)
    ex = bcosnet.explain(model, x, target="pred")
    assert ex.completeness_error.abs().max() <= 1e-9 * ex.logits.abs().max()
    nx = bcosnet.explain(model.eval(), x, layer="features.denseblock2", channel=[1, 200])
    assert nx.completeness_error.abs().max() <= 1e-9 * nx.logits.abs().max()


# ----------------------------------------------------------------------------- errors


def test_bad_inputs_raise_clear_errors():
    model = bcosnet.create_model("densenet121", num_classes=3, max_out=1, growth_rate=4,
                                 block_config=(1, 1, 1, 1), num_init_features=4).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 29, 29)).shape == (1, 3)  # the minimum size works
        with pytest.raises(ValueError, match="at least 29×29"):
            model(torch.rand(1, 3, 28, 40))
        with pytest.raises(ValueError, match="pass raw images"):
            model(torch.rand(1, 6, 64, 64))
        with pytest.raises(ValueError, match="3-channel"):
            model(torch.rand(1, 1, 64, 64))
        with pytest.raises(ValueError, match="unsqueeze"):
            model(torch.rand(3, 64, 64))
    with pytest.raises(ValueError, match="block_config"):
        bcosnet.create_model("densenet121", block_config=())
    with pytest.raises(ValueError, match="growth_rate"):
        bcosnet.create_model("densenet121", growth_rate=0)


def test_grey_input_channels():
    model = bcosnet.create_model("densenet121", num_classes=4, in_channels=1, growth_rate=4,
                                 block_config=(2, 2), num_init_features=8).double()
    assert model.features.conv0.in_channels == 2
    ex = bcosnet.explain(model, torch.rand(2, 1, 33, 33, dtype=torch.float64))
    assert ex.weights.shape == (2, 1, 2, 33, 33)
    assert ex.completeness_error.abs().max() <= 1e-9 * ex.logits.abs().max()


# ----------------------------------------------------------------------------- standard twins


def test_standard_twin_is_torchvision_on_normalised_input():
    torch.manual_seed(0)
    ours = bcosnet.create_model("standard_densenet121", num_classes=10).eval()
    tv = torchvision.models.densenet121(weights=None, num_classes=10).eval()
    # Same keys as torchvision: its checkpoints load unchanged.
    tv.load_state_dict(ours.state_dict(), strict=True)
    x = torch.rand(2, 3, 40, 40)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tv((x - mean) / std))
        with pytest.raises(ValueError, match="at least 29×29"):
            ours(torch.rand(1, 3, 20, 20))
    grey = bcosnet.create_model("standard_densenet169", num_classes=2, in_channels=1).eval()
    with torch.no_grad():
        assert grey(torch.rand(1, 1, 32, 32)).shape == (1, 2)


def test_create_model_attaches_info():
    model = _meta_model("densenet121_v2", num_classes=12, in_channels=1)
    assert model.model_info.num_classes == 12 and model.model_info.in_channels == 1
    assert isinstance(model, BcosDenseNet) and model.last_feature_layer == "features"
