"""ResNet, VGG and CIFAR models: architecture facts, paper constants, options, twins."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import bcosnet
from bcosnet._utils.validate import check_image_batch
from bcosnet.models._common import (
    ImageNormalize,
    bcos_conv_factory,
    cifar_v1_scale,
    cifar_v1_temperature,
    count_parameters,
    v1_logit_bias,
    v2_logit_bias,
)
from bcosnet.nn import AddInverse, BatchNormUncentered2d, BcosConv2d, LogitLayer


def _bcos_convs(model: nn.Module) -> list[BcosConv2d]:
    return [m for m in model.modules() if isinstance(m, BcosConv2d)]


def _assert_pure_bcos(model: nn.Module, allow_bnu: bool = False) -> None:
    """No ReLU / BatchNorm / max-pooling / biases; B-cos convs are the only params."""
    for name, m in model.named_modules():
        banned = (nn.ReLU, nn.BatchNorm2d, nn.MaxPool2d, nn.Conv2d, nn.Linear)
        assert not isinstance(m, banned), name
        if isinstance(m, BatchNormUncentered2d):
            assert allow_bnu and m.bias is None, name
    for name, _ in model.named_parameters():
        owner = model.get_submodule(name.rsplit(".", 1)[0])
        assert isinstance(owner, BcosConv2d) or (allow_bnu and isinstance(owner,
                                                                        BatchNormUncentered2d))


# ----------------------------------------------------------------------------- constants
def test_logit_bias_functions_match_paper() -> None:
    assert v1_logit_bias(1000) == pytest.approx(math.log(0.01 / 0.99))
    assert v1_logit_bias(10) == pytest.approx(math.log(0.1 / 0.9))
    assert v1_logit_bias(2) == pytest.approx(0.0)
    assert v1_logit_bias(5, prior=0.3) == pytest.approx(math.log(0.3 / 0.7))
    assert v2_logit_bias(1000) == pytest.approx(-math.log(999))
    assert v2_logit_bias(2) == 0.0
    with pytest.raises(ValueError, match="prior"):
        v1_logit_bias(10, prior=1.5)


def test_cifar_v1_scale_and_temperature_table() -> None:
    table = {1: -3, 1.25: -3, 1.5: -2, 1.75: 1, 2: 2, 2.25: 2, 2.5: 3}
    for b, log_t in table.items():
        assert math.log10(cifar_v1_temperature(b)) == pytest.approx(log_t)
        assert math.log10(cifar_v1_scale(b)) == pytest.approx(1.5 * b - 1.75)
    # in between: interpolated in log10 T
    assert math.log10(cifar_v1_temperature(1.625)) == pytest.approx(-0.5)


def test_conv_factory_v1_scale_and_overrides() -> None:
    conv = bcos_conv_factory(b=2, max_out=2, scale=100)
    layer = conv(64, 32, 3, 1, 1)
    assert layer.max_out == 2 and layer.scale == pytest.approx(100 / math.sqrt(9 * 64))
    assert conv(64, 32, 1, max_out=1).max_out == 1
    assert bcos_conv_factory(scale=3.0, scale_mode="fixed")(4, 4, 3).scale == 3.0
    assert bcos_conv_factory()(4, 4, 3).scale is None
    with pytest.raises(ValueError, match="scale_mode"):
        bcos_conv_factory(scale=1.0, scale_mode="per_layer")
    with pytest.raises(ValueError, match="finite positive"):
        bcos_conv_factory(scale=-1.0)


# ----------------------------------------------------------------------------- ResNet
def test_resnet18_v1_architecture_and_constants() -> None:
    m = bcosnet.create_model("resnet18")
    _assert_pure_bcos(m)
    assert isinstance(m.encoding, AddInverse) and m.encoding.in_channels == 3
    assert isinstance(m.pool, nn.AvgPool2d)
    convs = _bcos_convs(m)
    assert all(c.max_out == 2 and c.b == 2.0 for c in convs)
    # γ = s/√(k²·C_in) with s = 100 for every layer (stem sees the 6 encoded channels)
    for c in convs:
        kh, kw = c.kernel_size
        assert c.scale == pytest.approx(100 / math.sqrt(kh * kw * c.in_channels))
    assert m.conv1.in_channels == 6 and m.conv1.kernel_size == (7, 7)
    # classifier: 1×1 B-cos conv before the global pooling
    assert m.fc.kernel_size == (1, 1) and m.fc.out_channels == 1000
    assert m.logit_layer.temperature == pytest.approx(10.0)
    assert m.logit_layer.bias == pytest.approx(math.log(0.01 / 0.99))
    # MaxOut doubles the B-cos weights of the bias-free torchvision ResNet-18
    tv = torchvision.models.resnet18()
    n_tv_conv = sum(p.numel() for n, p in tv.named_parameters()
                    if p.dim() == 4) + tv.fc.weight.numel()
    assert count_parameters(m) == 2 * (n_tv_conv + 3 * 64 * 7 * 7)  # +3 encoded stem channels


def test_resnet_v2_mirrors_bcos_layout_and_constants() -> None:
    m = bcosnet.create_model("resnet50_v2")
    _assert_pure_bcos(m, allow_bnu=True)
    assert all(c.max_out == 1 and c.scale is None for c in _bcos_convs(m))
    assert isinstance(m.bn1, BatchNormUncentered2d) and m.bn1.bias is None
    assert isinstance(m.layer1[0].downsample[1], BatchNormUncentered2d)
    assert m.logit_layer.temperature == 1.0
    assert m.logit_layer.bias == pytest.approx(-math.log(999))
    # the published v2 ResNet-50 has 25.54 M parameters (bcos.models.pretrained docs)
    assert round(count_parameters(m) / 1e6, 2) == 25.54
    assert round(count_parameters(bcosnet.create_model("resnet18_v2")) / 1e6, 2) == 11.69


def test_resnet_overrides_and_grey_input() -> None:
    m = bcosnet.create_model("resnet18", num_classes=3, in_channels=1, b=1.5, max_out=1,
                             scale=50.0, temperature=2.0, logit_bias=-1.0)
    assert m.conv1.in_channels == 2 and m.conv1.b == 1.5 and m.conv1.max_out == 1
    assert m.conv1.scale == pytest.approx(50 / math.sqrt(49 * 2))
    assert (m.logit_layer.temperature, m.logit_layer.bias) == (2.0, -1.0)
    assert m(torch.rand(2, 1, 40, 48)).shape == (2, 3)
    with pytest.raises(ValueError, match="expects 1-channel images.*convert to grey"):
        m(torch.rand(2, 3, 40, 48))


def test_standard_resnet_is_torchvision_resnet_on_normalised_images() -> None:
    torch.manual_seed(0)
    m = bcosnet.create_model("standard_resnet18", num_classes=10).eval()
    tv = torchvision.models.resnet18(num_classes=10).eval()
    # same state dict keys and shapes: torchvision checkpoints load as they are
    tv.load_state_dict(m.state_dict(), strict=True)
    x = torch.rand(2, 3, 64, 64)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(m(x), tv((x - mean) / std))
    assert any(isinstance(mod, nn.MaxPool2d) for mod in m.modules())
    assert any(isinstance(mod, nn.ReLU) for mod in m.modules())
    grey = bcosnet.create_model("standard_resnet18", num_classes=4, in_channels=1).eval()
    assert grey(torch.rand(1, 1, 32, 32)).shape == (1, 4)


# ----------------------------------------------------------------------------- VGG
def test_vgg11_v1_architecture_and_constants() -> None:
    m = bcosnet.create_model("vgg11", num_classes=5, hidden_features=16)
    _assert_pure_bcos(m)
    convs = _bcos_convs(m)
    assert len(convs) == 8 + 3
    assert all(c.max_out == 2 for c in convs)
    for c in convs:
        kh, kw = c.kernel_size
        assert c.scale == pytest.approx(1000 / math.sqrt(kh * kw * c.in_channels))
    assert sum(isinstance(x, nn.AvgPool2d) for x in m.features) == 5
    assert m.classifier[0].kernel_size == (7, 7) and m.classifier[0].padding == (3, 3)
    assert m.logit_layer.temperature == pytest.approx(0.1)
    assert m(torch.rand(1, 3, 32, 32)).shape == (1, 5)
    with pytest.raises(ValueError, match=r"at least 32×32"):
        m(torch.rand(1, 3, 31, 64))


def test_vgg_depths_count_convs() -> None:
    for depth in (13, 16, 19):
        m = bcosnet.create_model(f"vgg{depth}", num_classes=2, hidden_features=4)
        assert len(_bcos_convs(m)) == depth  # depth − 3 feature convs + 3 head convs


def test_vgg_bnu_v2_layout_matches_bcos_package() -> None:
    m = bcosnet.create_model("vgg11_bnu_v2", num_classes=10, hidden_features=8)
    kinds = ["c" if isinstance(x, BcosConv2d) else "n" if isinstance(x, BatchNormUncentered2d)
             else "p" for x in m.features]
    assert "".join(kinds) == "cnpcnpcncnpcncnpcncnp"
    assert m.logit_layer.bias == pytest.approx(-math.log(9))


def test_standard_vgg_is_torchvision_vgg() -> None:
    m = bcosnet.create_model("standard_vgg11", num_classes=3)
    tv = torchvision.models.vgg11(num_classes=3)
    tv.load_state_dict(m.state_dict(), strict=True)
    assert any(isinstance(x, nn.MaxPool2d) for x in m.features)


# ----------------------------------------------------------------------------- CIFAR
def test_cifar_bcos_is_the_papers_network() -> None:
    m = bcosnet.create_model("cifar_bcos")
    _assert_pure_bcos(m)
    convs = _bcos_convs(m)
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 128, 256, 256, 256, 10]
    assert [c.stride[0] for c in convs] == [1, 1, 2, 1, 1, 2, 1, 1, 1]
    assert [c.kernel_size[0] for c in convs] == [3] * 8 + [1]
    assert all(c.max_out == 2 and c.scale == pytest.approx(10**1.25) for c in convs)
    assert m.logit_layer.temperature == pytest.approx(100.0)
    assert m.logit_layer.bias == pytest.approx(math.log(0.1 / 0.9))
    m15 = bcosnet.create_model("cifar_bcos", b=1.5)
    assert m15.logit_layer.temperature == pytest.approx(1e-2)
    assert _bcos_convs(m15)[0].scale == pytest.approx(10**0.5)


def test_cifar_resnets_have_the_cifar_layout() -> None:
    for depth, blocks in ((20, 3), (56, 9)):
        m = bcosnet.create_model(f"cifar_resnet{depth}")
        assert m.layer4 is None and isinstance(m.pool, nn.Identity)
        assert [len(s) for s in (m.layer1, m.layer2, m.layer3)] == [blocks] * 3
        assert m.conv1.kernel_size == (3, 3) and m.conv1.stride == (1, 1)
        assert len(_bcos_convs(m)) == depth - 1 + 2 + 1  # + 2 shortcut convs, − fc counted
        s = bcosnet.create_model(f"standard_cifar_resnet{depth}")
        n_conv = sum(isinstance(x, nn.Conv2d) for x in s.modules())
        assert n_conv == depth - 1 + 2
    assert bcosnet.create_model("standard_cifar_bcos")(torch.rand(3, 3, 32, 32)).shape == (3, 10)


# ----------------------------------------------------------------------------- invariants
_HOMOG_MODEL = bcosnet.create_model("cifar_resnet20", num_classes=3).double().eval()
for _conv in _bcos_convs(_HOMOG_MODEL):
    _conv.norm_eps = 0.0


@settings(max_examples=10, deadline=None)
@given(alpha=st.floats(0.25, 8.0), seed=st.integers(0, 2**16))
def test_bcos_nets_are_positively_homogeneous_in_the_encoding(alpha: float, seed: int) -> None:
    """B = 2 units, MaxOut and average pooling are positively homogeneous of degree 1:
    scaling the encoded input by α scales ``logit − bias`` by α (exactly, with the
    norms' ε set to 0)."""
    torch.manual_seed(seed)
    model = _HOMOG_MODEL
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    base = model(x) - model.logit_layer.bias
    handle = model.encoding.register_forward_hook(lambda _m, _i, out: out * alpha)
    try:
        scaled = model(x) - model.logit_layer.bias
    finally:
        handle.remove()
    assert base.abs().max() > 1e-6
    torch.testing.assert_close(scaled, alpha * base, rtol=1e-9, atol=1e-14)


def test_check_images_messages() -> None:
    with pytest.raises(ValueError, match="add a batch dimension"):
        check_image_batch(torch.rand(3, 8, 8), in_channels=3, min_size=(4, 4))
    with pytest.raises(ValueError, match="pass raw images in \\[0, 1\\]"):
        check_image_batch(torch.rand(1, 6, 8, 8), in_channels=3, min_size=(4, 4))
    with pytest.raises(ValueError, match="at least 9×4 pixels, got 8×8"):
        check_image_batch(torch.rand(1, 3, 8, 8), in_channels=3, min_size=(9, 4))
    with pytest.raises(TypeError):
        check_image_batch([1, 2], in_channels=3, min_size=(1, 1))  # type: ignore[arg-type]
    norm = ImageNormalize(1)
    torch.testing.assert_close(norm(torch.ones(1, 1, 2, 2)), torch.ones(1, 1, 2, 2))
    with pytest.raises(ValueError, match="3 values"):
        ImageNormalize(3, mean=(0.5,), std=(0.5,))


def test_logit_layer_is_last_and_bias_is_explanation_bias() -> None:
    m = bcosnet.create_model("cifar_bcos", num_classes=4).double()
    assert isinstance(m.logit_layer, LogitLayer)
    ex = bcosnet.explain(m, torch.rand(1, 3, 16, 16, dtype=torch.float64), target=1)
    assert ex.bias.item() == pytest.approx(math.log(0.25 / 0.75))
