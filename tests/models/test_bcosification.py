"""B-cosification (models/bcosification.py, nn/bcosified.py): a bcosified network at
B = 1 computes its source's function; the fine-tuning form is a bias-free B-cos
network whose explanations are complete."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision.models as tvm
from torch import nn

import bcosnet
from bcosnet.models import BcosifiedNet
from bcosnet.nn import BatchNormUncentered2d, BcosifiedConv2d


def _randomise_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters, non-zero biases."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.rand(n, generator=g) - 0.5)
            elif isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
                m.bias.copy_(torch.rand(m.bias.shape, generator=g) - 0.5)
    return model


def _small_vgg(num_classes: int = 5) -> tvm.VGG:
    """A torchvision VGG with small layers (built on the meta device, then filled)."""
    with torch.device("meta"):
        vgg = tvm.VGG(nn.Sequential(), num_classes=num_classes)
    vgg.features = tvm.vgg.make_layers([8, "M", 16, "M"], batch_norm=True)
    vgg.avgpool = nn.AdaptiveAvgPool2d((7, 7))
    vgg.classifier = nn.Sequential(
        nn.Linear(16 * 49, 12), nn.ReLU(True), nn.Dropout(), nn.Linear(12, 12), nn.ReLU(True),
        nn.Dropout(), nn.Linear(12, num_classes))
    return vgg


def _grey_resnet() -> tvm.ResNet:
    m = tvm.ResNet(tvm.resnet.Bottleneck, [1, 1, 1, 1], num_classes=5)
    m.conv1 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    return m


# name -> (builder, bcosify kwargs, image channels)
SOURCES = {
    "torchvision resnet18": (lambda: tvm.resnet18(num_classes=5), {}, 3),
    "torchvision resnet (bottleneck, grey, own mean/std)":
        (_grey_resnet, dict(mean=[0.3], std=[0.2]), 1),
    "torchvision vgg (bn)": (_small_vgg, {}, 3),
    "torchvision densenet": (lambda: tvm.DenseNet(4, (1, 1), 8, num_classes=5), {}, 3),
    "standard_resnet18": (lambda: bcosnet.create_model("standard_resnet18", 5), {}, 3),
    "standard_fmnist_bcos":
        (lambda: bcosnet.create_model("standard_fmnist_bcos", 5, width=4), {}, 1),
    "standard_cifar_bcos": (lambda: bcosnet.create_model("standard_cifar_bcos", 5), {}, 3),
    "standard_cifar_resnet20":
        (lambda: bcosnet.create_model("standard_cifar_resnet20", 5), {}, 3),
}


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_bcosified_at_b1_computes_the_source(source: str) -> None:
    build, kw, channels = SOURCES[source]
    torch.manual_seed(0)
    src = _randomise_norms(build()).double().eval()
    before = {k: v.clone() for k, v in src.state_dict().items()}
    net = bcosnet.bcosify(src, **kw)
    assert isinstance(net, BcosifiedNet) and net.stage == "equivalent"
    assert net.encoding(torch.zeros(1, channels, 4, 4)).shape[1] == 2 * channels
    assert all(m.b == 1.0 for m in net.bcos_layers()) and net.bcos_layers()
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.Linear)) for m in net.modules())
    x = torch.rand(3, channels, 32, 32, dtype=torch.float64)
    if source.startswith("torchvision"):  # a plain torchvision model takes normalised images
        f64 = dict(dtype=torch.float64)
        mean = torch.tensor(kw.get("mean", [0.485, 0.456, 0.406]), **f64).view(1, -1, 1, 1)
        std = torch.tensor(kw.get("std", [0.229, 0.224, 0.225]), **f64).view(1, -1, 1, 1)
        ref = src((x - mean) / std)
    else:
        ref = src(x)  # the twins normalise inside
    out = net(x)
    assert out.dtype == torch.float64 and out.shape == ref.shape == (3, 5)
    rel = (out - ref).abs().max() / ref.abs().max()
    # float64 throughout, the normalisation folded in float64 (it was float32: 1.6e-8)
    assert rel < 1e-12, f"{source}: relative difference {rel:.2e}"
    # the source is not modified
    assert all(torch.equal(v, before[k]) for k, v in src.state_dict().items())


def test_input_encoding_weights_fold_the_normalisation() -> None:
    """The first conv on [x, 1 − x] equals the source's conv on (x − μ)/σ, checked
    on a single pixel against the formula W·(1 − μ)/σ, −W·μ/σ."""
    m = tvm.resnet18(num_classes=3).double().eval()
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    net = bcosnet.bcosify(m, mean=mean, std=std)
    w, w2 = m.conv1.weight, net.features.conv1.weight
    mu = torch.tensor(mean, dtype=torch.float64).view(1, 3, 1, 1)
    sd = torch.tensor(std, dtype=torch.float64).view(1, 3, 1, 1)
    torch.testing.assert_close(w2[:, :3], w * (1 - mu) / sd)
    torch.testing.assert_close(w2[:, 3:], -w * mu / sd)


def _unfold_bcos(conv: nn.Conv2d, x: torch.Tensor, b: float) -> torch.Tensor:
    """From the definition: lin = w·patch (unnormalised w, as in B-cosification),
    out = lin · |lin / ‖patch‖|^(B − 1)."""
    n, _, h, w_ = x.shape
    patches = F.unfold(x, conv.kernel_size, padding=conv.padding, stride=conv.stride)
    lin = conv.weight.flatten(1) @ patches  # N×O×L
    norm = (patches.square().sum(1, keepdim=True) + 1e-6).sqrt()
    out = lin * (lin.abs() / norm) ** (b - 1)
    ho = (h + 2 * conv.padding[0] - conv.kernel_size[0]) // conv.stride[0] + 1
    return out.view(n, -1, ho, out.shape[-1] // ho)


@pytest.mark.parametrize("b", [1.0, 1.5, 2.0, 2.5])
def test_bcosified_conv_matches_the_definition(b: float) -> None:
    torch.manual_seed(0)
    c = nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=False).double()
    layer = BcosifiedConv2d.from_conv(c, b=b)
    assert layer.weight is c.weight
    x = torch.randn(2, 4, 9, 9, dtype=torch.float64)
    torch.testing.assert_close(layer(x), _unfold_bcos(c, x, b), rtol=1e-10, atol=1e-12)
    # explanation mode: the factor is detached, so d out / d x · x sums to out
    x.requires_grad_(True)
    with bcosnet.explanation_mode(layer):
        out = layer(x)
        g, = torch.autograd.grad(out[:, 2, 1, 3].sum(), x)
    torch.testing.assert_close((g * x).sum((1, 2, 3)), out[:, 2, 1, 3].detach())


def test_fine_tuning_form_is_bias_free_and_complete() -> None:
    torch.manual_seed(0)
    src = _randomise_norms(tvm.resnet18(num_classes=7)).double().eval()
    net = bcosnet.bcosify(src, fine_tune=True)
    assert net.stage == "fine-tune" and net.b == 2.0
    assert all(m.b == 2.0 for m in net.bcos_layers())
    assert all(getattr(m, "bias", None) is None for m in net.modules()
               if isinstance(m, (nn.Conv2d, BatchNormUncentered2d)))
    assert not any(isinstance(m, nn.MaxPool2d) for m in net.modules())
    pool = net.features.maxpool
    assert isinstance(pool, nn.AvgPool2d) and pool.kernel_size == 3 and pool.stride == 2
    assert net.logit_layer.bias == pytest.approx(-math.log(6))
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    logits = net(x)
    ex = bcosnet.explain(net, x, target=[1, 5])
    got = (ex.contributions.sum((-2, -1)) + ex.bias).flatten()
    torch.testing.assert_close(got, logits[torch.arange(2), [1, 5]], rtol=1e-9, atol=1e-9)
    # the fine-tuning API works on bcosified networks too
    feats = net.forward_features(x)
    net.reset_classifier(4)
    assert net(x).shape == (2, 4) and torch.equal(net.forward_features(x), feats)
    assert net.logit_layer.bias == pytest.approx(-math.log(3))
    assert isinstance(net.get_classifier(), BcosifiedConv2d) and net.get_classifier().b == 2.0


@pytest.mark.parametrize("source", ["torchvision vgg (bn)", "torchvision densenet",
                                    "standard_fmnist_bcos"])
def test_fine_tuning_form_is_complete_for_other_families(source: str) -> None:
    build, kw, channels = SOURCES[source]
    torch.manual_seed(0)
    net = bcosnet.bcosify(_randomise_norms(build()).double().eval(), fine_tune=True, **kw)
    assert not any(isinstance(m, nn.MaxPool2d) for m in net.modules())
    x = torch.rand(2, channels, 32, 32, dtype=torch.float64)
    ex = bcosnet.explain(net, x, target=[[0, 4]] * 2)
    assert ex.logits.abs().max() > 0
    torch.testing.assert_close(ex.contributions.sum((-2, -1)) + ex.bias, ex.logits,
                               rtol=1e-9, atol=1e-9 * float(ex.logits.abs().max()))


def test_fine_tuning_form_logits_are_the_logit_bias_because_b2_shrinks_each_layer() -> None:
    """The docstring's reason for constant logits after fine_tuning_form(b=2): every
    B-cos conv scales its convolution by |conv(x)|/‖x_patch‖ (far below 1 here), the
    eval-mode batch norms keep the B = 1 variances, so the evidence vanishes layer by
    layer; B = 1 (biases still removed) or the batch's statistics (train mode) bring
    input-dependent logits back."""
    torch.manual_seed(0)
    src = _randomise_norms(bcosnet.create_model("standard_fmnist_bcos", 3)).double().eval()
    net = bcosnet.bcosify(src).fine_tuning_form(b=2).eval()
    x = torch.rand(8, 1, 28, 28, dtype=torch.float64)
    bias = net.logit_layer.bias

    def spread(out: torch.Tensor) -> float:  # how much the logits vary across images
        return float((out - out.mean(0)).abs().max())

    factors: list[float] = []

    def record(conv: BcosifiedConv2d, inp: tuple, out: torch.Tensor) -> None:
        lin = F.conv2d(inp[0], conv.weight, None, conv.stride, conv.padding)  # B = 1
        factors.append(float(out.abs().mean() / lin.abs().mean()))

    hooks = [m.register_forward_hook(record) for m in net.bcos_layers()]
    with torch.no_grad():
        at_b2 = net(x)
    for h in hooks:
        h.remove()
    # every layer shrinks its output, the product is tiny: the logits are the bias
    assert len(factors) == 6 and max(factors) < 0.5, factors
    assert (at_b2 - bias).abs().max() < 1e-6 and spread(at_b2) < 1e-9
    with torch.no_grad():
        net.set_b(1.0)
        at_b1 = net(x)  # same network, biases still removed: input-dependent again
        net.set_b(2.0).train()
        batch_stats = net(x)  # train mode: the norms use the batch's statistics
    assert spread(at_b1) > 1e3 * spread(at_b2) and spread(at_b1) > 1e-5
    assert spread(batch_stats) > 1e-3


def test_registered_bcosified_twin_loads_the_source_weights(tmp_path) -> None:
    torch.manual_seed(0)
    twin = _randomise_norms(bcosnet.create_model("standard_fmnist_bcos", width=4)).eval()
    path = tmp_path / "twin.pt"
    torch.save(twin.state_dict(), path)
    net = bcosnet.create_model("bcosified_fmnist_bcos", width=4, source_weights=str(path),
                               stage="equivalent").eval()
    x = torch.rand(2, 1, 28, 28)
    torch.testing.assert_close(net(x), twin(x), rtol=1e-5, atol=1e-5)
    assert net.model_info.kind == "bcos_v2" and net.model_info.input_size == (28, 28)
    ft = bcosnet.create_model("bcosified_fmnist_bcos", width=4, source_weights=str(path))
    assert ft.stage == "fine-tune" and ft.b == 2.0
    with pytest.raises(ValueError, match="stage"):
        bcosnet.create_model("bcosified_fmnist_bcos", width=4, stage="final")


def test_bad_sources_are_refused() -> None:
    with pytest.raises(TypeError, match="does not know how to convert.*supported"):
        bcosnet.bcosify(nn.Sequential(nn.Conv2d(3, 4, 3)))
    with pytest.raises(TypeError, match="torch.nn.Module"):
        bcosnet.bcosify("resnet18")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="normalises its input itself"):
        bcosnet.bcosify(bcosnet.create_model("standard_fmnist_bcos", width=4), mean=[0.5])
    with pytest.raises(ValueError, match="mean and std need 3 values"):
        bcosnet.bcosify(tvm.resnet18(), mean=[0.5], std=[0.5])
    net = bcosnet.bcosify(bcosnet.create_model("standard_fmnist_bcos", width=4))
    with pytest.raises(ValueError, match="b must be"):
        net.set_b(0.5)
