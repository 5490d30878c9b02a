"""B-cos Inception-v3: registry entry, v1 architecture mirrored on torchvision's,
training/eval outputs with the auxiliary head, completeness, input errors, and
the conventional twin."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision
from torch import nn

import bcosnet
from bcosnet.models.inception import BcosInception3, InceptionOutputs
from bcosnet.nn import AddInverse, BcosConv2d, LogitLayer


def _meta_model(name: str, **opts) -> nn.Module:
    with torch.device("meta"):
        return bcosnet.create_model(name, **opts)


def test_registry_entries():
    for name, kind in (("inception_v3", "bcos"), ("standard_inception_v3", "standard")):
        info = bcosnet.models.model_info(name)
        assert info.kind == kind and info.family == "inception"
        assert info.input_size == (299, 299) and info.min_size == (75, 75)


def test_v1_mirrors_torchvision_layout():
    """Every torchvision BasicConv2d (conv + BN + ReLU) is one B-cos conv of the
    same shape with 2 MaxOut units and γ = 200/√(kh·kw·C_in); the classifiers
    are 1×1 B-cos convs; nothing else has parameters."""
    ours = _meta_model("inception_v3")
    with torch.device("meta"):
        tv = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    tv_convs = {n.removesuffix(".conv"): m for n, m in tv.named_modules()
                if isinstance(m, nn.Conv2d)}
    our_convs = {n: m for n, m in ours.named_modules() if isinstance(m, BcosConv2d)}
    assert set(our_convs) == set(tv_convs) | {"fc", "AuxLogits.fc"}
    for name, c in tv_convs.items():
        m = our_convs[name]
        in_ch = 6 if name == "Conv2d_1a_3x3" else c.in_channels
        assert (m.in_channels, m.out_channels) == (in_ch, c.out_channels), name
        assert (m.kernel_size, m.stride, m.padding) == (c.kernel_size, c.stride, c.padding), name
        assert m.max_out == 2 and m.b == 2.0
        kh, kw = m.kernel_size
        assert m.scale == pytest.approx(200.0 / math.sqrt(kh * kw * m.in_channels)), name
    for name, cin in (("fc", 2048), ("AuxLogits.fc", 768)):
        assert our_convs[name].kernel_size == (1, 1) and our_convs[name].in_channels == cin
        assert our_convs[name].out_channels == 1000
    n_ours = sum(p.numel() for p in ours.parameters())
    n_tv_convs = sum(m.weight.numel() for m in tv_convs.values())
    # MaxOut doubles every conv; stem sees 6 channels; classifiers are 1000×2 units.
    expected = 2 * n_tv_convs + 2 * 32 * 3 * 9 + 2 * 1000 * (2048 + 768)
    assert n_ours == expected
    assert not any(isinstance(m, (nn.MaxPool2d, nn.BatchNorm2d, nn.ReLU, nn.Linear))
                   for m in ours.modules())
    assert all(n.endswith("weight") for n, _ in ours.named_parameters())
    assert ours.logit_layer.temperature == 1.0
    assert ours.logit_layer.bias == pytest.approx(math.log(0.01 / 0.99))
    assert isinstance(ours.encoding, AddInverse) and isinstance(ours.logit_layer, LogitLayer)


def test_training_output_has_aux_logits_and_eval_output_does_not():
    torch.manual_seed(0)
    model = bcosnet.create_model("inception_v3", num_classes=4, max_out=1)
    x = torch.rand(1, 3, 299, 299)
    with torch.no_grad():
        out = model.train()(x)
        assert isinstance(out, InceptionOutputs)
        assert out.logits.shape == out.aux_logits.shape == (1, 4)
        assert torch.isfinite(out.logits).all() and torch.isfinite(out.aux_logits).all()
        assert not torch.allclose(out.logits, out.aux_logits)
        ev = model.eval()(x)
    assert isinstance(ev, torch.Tensor) and ev.shape == (1, 4)
    torch.testing.assert_close(ev, out.logits)  # no norm layers: same function in both modes


def test_without_aux_head():
    model = bcosnet.create_model("inception_v3", num_classes=3, aux_logits=False, max_out=1)
    assert model.AuxLogits is None
    with torch.no_grad():
        out = model.train()(torch.rand(2, 3, 80, 80))  # small input is fine without the head
    assert isinstance(out, torch.Tensor) and out.shape == (2, 3)


def test_completeness_float64():
    torch.manual_seed(0)
    model = bcosnet.create_model("inception_v3", num_classes=6).double().eval()
    x = torch.rand(2, 3, 75, 75, dtype=torch.float64)
    ex = bcosnet.explain(model, x, target=[[1, 4]] * 2)
    signal = (ex.logits - ex.bias).abs()
    assert signal.min() > 0
    assert ex.completeness_error.abs().max() <= 1e-9 * signal.max()
    assert ex.weights.shape == (2, 2, 6, 75, 75)


def test_bad_inputs_raise_clear_errors():
    model = bcosnet.create_model("inception_v3", num_classes=2, max_out=1)
    with torch.no_grad():
        with pytest.raises(ValueError, match="at least 75×75"):
            model.eval()(torch.rand(1, 3, 74, 100))
        with pytest.raises(ValueError, match="pass raw images"):
            model.eval()(torch.rand(1, 6, 80, 80))
        with pytest.raises(ValueError, match="auxiliary head needs images of at least 299×299"):
            model.train()(torch.rand(1, 3, 298, 299))


def test_standard_twin():
    torch.manual_seed(0)
    ours = bcosnet.create_model("standard_inception_v3", num_classes=5).eval()
    tv = torchvision.models.inception_v3(weights=None, num_classes=5, aux_logits=True,
                                         init_weights=False).eval()
    tv.load_state_dict(ours.state_dict(), strict=True)  # same keys as torchvision
    x = torch.rand(2, 3, 80, 80)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tv((x - mean) / std))
        with pytest.raises(ValueError, match="at least 75×75"):
            ours(torch.rand(1, 3, 60, 60))
        ours.train()
        with pytest.raises(ValueError, match="batch of at least 2"):
            ours(torch.rand(1, 3, 299, 299))
        with pytest.raises(ValueError, match="auxiliary head needs"):
            ours(torch.rand(2, 3, 100, 100))


def test_model_class_and_info():
    model = _meta_model("inception_v3", num_classes=9, in_channels=1)
    assert isinstance(model, BcosInception3)
    assert model.Conv2d_1a_3x3.in_channels == 2
    assert model.model_info.num_classes == 9 and model.last_feature_layer == "Mixed_7c"
