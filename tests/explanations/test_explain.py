"""explain(): completeness, exactness, targets, side effects, neurons, errors."""

from __future__ import annotations

import math
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import bcosnet
from bcosnet.nn import (
    AddInverse,
    BatchNormUncentered2d,
    BcosConv2d,
    BcosLinear,
    LogitLayer,
    explanation_mode,
)

B_VALUES = [1.0, 1.25, 1.5, 2.0, 2.5]


@st.composite
def small_bcos_nets(draw):
    """A random small B-cos network (raw images in, logits out) and a matching input."""
    in_ch = draw(st.sampled_from([1, 3]))
    layers: list[nn.Module] = [AddInverse(in_ch)]
    c = 2 * in_ch
    size = draw(st.integers(6, 11))
    for _ in range(draw(st.integers(1, 3))):
        groups = draw(st.sampled_from([1, 2]))
        out = 2 * draw(st.integers(1, 4))
        if c % groups:
            groups = 1
        k = draw(st.sampled_from([1, 2, 3]))
        dilation = draw(st.sampled_from([1, 2])) if k > 1 else 1
        stride = draw(st.sampled_from([1, 2]))
        padding = draw(st.integers(0, 2))
        span = dilation * (k - 1) + 1
        if size + 2 * padding < span:
            padding = span
        layer = BcosConv2d(
            c, out, k, stride, padding, dilation, groups,
            b=draw(st.sampled_from(B_VALUES)),
            max_out=draw(st.integers(1, 3)),
            scale=draw(st.sampled_from([None, 0.3, 7.0])),
        )
        layers.append(layer)
        size = (size + 2 * padding - span) // stride + 1
        c = out
        if draw(st.booleans()):
            bn = BatchNormUncentered2d(c)
            with torch.no_grad():
                bn.running_var.uniform_(0.5, 2.0)
                bn.weight.uniform_(0.5, 1.5)
            layers.append(bn)
    n_classes = draw(st.integers(2, 6))
    if draw(st.booleans()):
        layers += [BcosConv2d(c, n_classes, 1, b=draw(st.sampled_from(B_VALUES))),
                   nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    else:
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                   BcosLinear(c, n_classes, b=draw(st.sampled_from(B_VALUES)),
                              max_out=draw(st.integers(1, 3)))]
    layers.append(LogitLayer(temperature=draw(st.sampled_from([1.0, 0.01, 10.0])),
                             bias=draw(st.sampled_from([0.0, math.log(0.1 / 0.9), 2.5]))))
    model = nn.Sequential(*layers).double().eval()
    seed = draw(st.integers(0, 2**16))
    gen = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        with torch.no_grad():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype))
    x = torch.rand(2, in_ch, draw(st.integers(6, 11)) + 4, draw(st.integers(6, 11)) + 4,
                   generator=gen, dtype=torch.float64)
    return model, x, n_classes


@settings(max_examples=60, deadline=None)
@given(net=small_bcos_nets(), data=st.data())
def test_completeness_property(net, data):
    model, x, k = net
    targets = data.draw(st.lists(st.integers(0, k - 1), min_size=1, max_size=3))
    ex = bcosnet.explain(model, x, target=torch.tensor(targets).expand(x.shape[0], -1))
    with torch.no_grad():
        logits = model(x)
    torch.testing.assert_close(ex.logits, logits[:, targets])
    total = ex.contributions.sum((-2, -1)) + ex.bias
    scale = logits.abs().max().clamp_min(1e-12)
    assert ((total - ex.logits).abs() <= 1e-8 * scale).all(), (total, ex.logits)


def _tiny_model(b=2.0, n_classes=5, in_ch=3, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        AddInverse(in_ch),
        BcosConv2d(2 * in_ch, 8, 3, padding=1, b=b, max_out=2),
        BcosConv2d(8, 8, 3, stride=2, padding=1, b=b),
        BcosConv2d(8, n_classes, 1, b=b),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        LogitLayer(temperature=0.1, bias=-1.5),
    ).double()


def test_linear_model_weights_are_the_jacobian():
    """With B = 1 and no MaxOut the network is linear: W is its (constant) Jacobian."""
    model = _tiny_model(b=1.0)
    for m in model.modules():
        if isinstance(m, BcosConv2d):
            m.max_out = 1
            m.weight = nn.Parameter(m.weight[: m.out_channels].detach().clone())
    x = torch.rand(1, 3, 8, 8, dtype=torch.float64)
    ex = bcosnet.explain(model, x, target=torch.tensor([[0, 3]]))
    enc = torch.cat([x, 1 - x], 1)
    body = nn.Sequential(*list(model)[1:])
    jac = torch.autograd.functional.jacobian(lambda e: body(e)[0, [0, 3]], enc)
    torch.testing.assert_close(ex.weights[0], jac[:, 0])
    torch.testing.assert_close(ex.bias, torch.full_like(ex.bias, -1.5))


def test_weights_reproduce_the_output_of_the_frozen_map():
    """W(x) is the model's own computation: applying W(x) to x gives the logits, but W(x)
    differs from the ordinary gradient (B > 1)."""
    model = _tiny_model(b=2.0)
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    ex = bcosnet.explain(model, x, target=1)
    out = (ex.weights[:, 0] * ex.inputs).sum((1, 2, 3)) + ex.bias[:, 0]
    torch.testing.assert_close(out, model(x)[:, 1].detach())
    enc = torch.cat([x, 1 - x], 1).requires_grad_(True)
    plain_grad = torch.autograd.grad(nn.Sequential(*list(model)[1:])(enc)[:, 1].sum(), enc)[0]
    assert not torch.allclose(plain_grad, ex.weights[:, 0])


def test_encoded_and_raw_inputs_give_the_same_explanation():
    model = _tiny_model()
    x = torch.rand(3, 3, 8, 8, dtype=torch.float64)
    two = torch.tensor([0, 2]).expand(3, -1)
    ex_raw = bcosnet.explain(model, x, target=two)
    body = nn.Sequential(*list(model)[1:])
    ex_enc = bcosnet.explain(body, torch.cat([x, 1 - x], 1), target=two)
    for a, b in ((ex_raw.weights, ex_enc.weights), (ex_raw.contributions, ex_enc.contributions),
                 (ex_raw.logits, ex_enc.logits), (ex_raw.bias, ex_enc.bias),
                 (ex_raw.inputs, ex_enc.inputs)):
        torch.testing.assert_close(a, b)


def test_target_forms():
    model = _tiny_model(n_classes=6)
    x = torch.rand(4, 3, 8, 8, dtype=torch.float64)
    logits = model(x).detach()
    pred = logits.argmax(1)
    ex = bcosnet.explain(model, x, target="pred")
    assert ex.targets.shape == (4, 1) and (ex.targets[:, 0] == pred).all()
    ex = bcosnet.explain(model, x, target=("topk", 3))
    assert (ex.targets == logits.topk(3, 1).indices).all()
    per_image = torch.tensor([5, 0, 2, 1])
    ex = bcosnet.explain(model, x, target=per_image)
    assert (ex.targets[:, 0] == per_image).all()
    torch.testing.assert_close(ex.logits[:, 0], logits[torch.arange(4), per_image])
    ex_int = bcosnet.explain(model, x, target=4)
    ex_multi = bcosnet.explain(model, x, target=torch.tensor([1, 4]).expand(4, -1))
    # Multi-target = the single-target explanations stacked.
    torch.testing.assert_close(ex_multi.weights[:, 1], ex_int.weights[:, 0])
    assert ex_multi.weights.shape == (4, 2, 6, 8, 8)
    assert ex_multi.contributions.shape == (4, 2, 8, 8)
    assert ex_multi.logits.shape == ex_multi.bias.shape == (4, 2)
    # Captum's rule: a flat list is one class per image (like a 1-D tensor), a list
    # of lists T classes per image (like an N×T tensor).
    ex_list = bcosnet.explain(model, x, target=[5, 0, 2, 1])
    assert ex_list.targets.shape == (4, 1) and torch.equal(ex_list.targets[:, 0], per_image)
    torch.testing.assert_close(ex_list.weights, ex.weights)
    ex_lists = bcosnet.explain(model, x, target=[[1, 4]] * 4)
    assert torch.equal(ex_lists.targets, torch.tensor([[1, 4]] * 4))
    torch.testing.assert_close(ex_lists.weights, ex_multi.weights)


def test_multi_target_uses_one_forward_pass():
    model = _tiny_model(n_classes=6)
    """Five targets cost the forward passes of one: neither more passes nor the
    batch repeated per target (each pass's batch is at most the N images)."""
    batches: list[int] = []
    model[1].register_forward_hook(lambda _m, inp, _out: batches.append(inp[0].shape[0]))
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)

    def passes(target):
        batches.clear()
        bcosnet.explain(model, x, target=target)
        return list(batches)

    one, five = passes([[3]] * 2), passes([[0, 1, 2, 3, 4]] * 2)
    assert len(five) == len(one) and max(five) <= 2, (one, five)


def test_samples_are_independent():
    model = _tiny_model()
    x = torch.rand(3, 3, 8, 8, dtype=torch.float64)
    ex_all = bcosnet.explain(model, x, target=2)
    ex_one = bcosnet.explain(model, x[1:2], target=2)
    torch.testing.assert_close(ex_all.weights[1:2], ex_one.weights)


def test_no_side_effects_on_the_model():
    model = _tiny_model()
    bn = BatchNormUncentered2d(8)
    model.insert(3, bn)
    model.train()
    model[1].eval()  # a mixed state must survive as it is
    before_modes = [m.training for m in model.modules()]
    before_buffers = [b.clone() for b in model.buffers()]
    model[1].weight.requires_grad_(False)
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    ex = bcosnet.explain(model, x, target=[[0, 1], [0, 1]])
    assert ex.completeness_error.abs().max() < 1e-9
    assert [m.training for m in model.modules()] == before_modes
    for b0, b1 in zip(before_buffers, model.buffers()):
        assert torch.equal(b0, b1)
    assert all(p.grad is None for p in model.parameters())
    assert model[1].weight.requires_grad is False and model[2].weight.requires_grad is True
    assert not any(m.is_in_explanation_mode for m in bcosnet.nn.explanation_modules(model))


def test_explanation_mode_restores_state_on_error():
    model = _tiny_model()
    model[2].set_explanation_mode(True)  # a pre-existing state is restored as it was
    with pytest.raises(RuntimeError, match="boom"):
        with explanation_mode(model):
            assert model[1].is_in_explanation_mode
            raise RuntimeError("boom")
    assert not model[1].is_in_explanation_mode
    assert model[2].is_in_explanation_mode


def test_explanation_mode_finds_modules_added_later():
    model = _tiny_model()
    extra = BcosConv2d(5, 5, 1)
    model.append(nn.Unflatten(1, (5, 1, 1)))
    model.append(extra)
    with explanation_mode(model):
        assert extra.is_in_explanation_mode


@pytest.mark.parametrize("location", [None, (1, 2)])
def test_neuron_explanation(location):
    model = _tiny_model()
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    ex = bcosnet.explain(model, x, layer="2", channel=[3, 5], location=location)
    with torch.no_grad():
        act = nn.Sequential(*list(model)[:3])(x)
    expect = act[:, [3, 5]].sum((2, 3)) if location is None else act[:, [3, 5], 1, 2]
    torch.testing.assert_close(ex.logits, expect)
    assert ex.completeness_error.abs().max() < 1e-10
    assert (ex.targets == torch.tensor([3, 5])).all()
    # The explanation of a neuron does not depend on layers after it.
    truncated = nn.Sequential(*list(model)[:3])
    ex2 = bcosnet.explain(truncated, x, layer="2", channel=[3, 5], location=location)
    torch.testing.assert_close(ex.weights, ex2.weights)


def test_bcos_package_modules_take_part():
    bcos_modules = pytest.importorskip("bcos.modules")
    torch.manual_seed(0)
    model = nn.Sequential(
        bcos_modules.BcosConv2d(6, 8, 3, padding=1), bcos_modules.BcosConv2d(8, 4, 1),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    ).double()
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    ex = bcosnet.explain(model, torch.cat([x, 1 - x], 1), target=1)
    assert ex.completeness_error.abs().max() < 1e-12


@pytest.mark.parametrize(
    "images,target,exc,match",
    [
        (torch.rand(3, 8, 8), 0, ValueError, "4-D"),
        (torch.full((1, 3, 8, 8), float("nan")), 0, ValueError, "NaN"),
        (torch.rand(1, 4, 8, 8), 0, ValueError, "3-channel"),
        (torch.rand(1, 6, 8, 8), 0, ValueError, "encodes them"),
        (torch.rand(1, 3, 8, 8), 5, ValueError, "out of range"),
        (torch.rand(1, 3, 8, 8), [[1, -1]], ValueError, "out of range"),
        (torch.rand(2, 3, 8, 8), [1, 2, 3], ValueError, "one class per image"),
        (torch.rand(1, 3, 8, 8), "max", ValueError, "pred"),
        (torch.rand(1, 3, 8, 8), ("topk", 9), ValueError, "topk"),
        (torch.rand(2, 3, 8, 8), torch.tensor([1, 2, 3]), ValueError, "one class per image"),
        (torch.rand(1, 3, 8, 8), 1.5, TypeError, "target"),
        ((torch.rand(1, 3, 8, 8) * 255).to(torch.uint8), 0, TypeError, "floating-point"),
    ],
)
def test_bad_input(images, target, exc, match):
    model = _tiny_model().float()
    with pytest.raises(exc, match=match):
        bcosnet.explain(model, images, target=target)


def test_bad_layer_arguments():
    model = _tiny_model().float()
    x = torch.rand(1, 3, 8, 8)
    with pytest.raises(ValueError, match="no layer named 'foo'"):
        bcosnet.explain(model, x, layer="foo", channel=0)
    with pytest.raises(ValueError, match="channel 9 is out of range"):
        bcosnet.explain(model, x, layer="1", channel=9)
    with pytest.raises(ValueError, match="needs channel"):
        bcosnet.explain(model, x, layer="1")
    with pytest.raises(ValueError, match="also pass layer"):
        bcosnet.explain(model, x, channel=1)
    with pytest.raises(ValueError, match="outside"):
        bcosnet.explain(model, x, layer="1", channel=1, location=(8, 0))


# ----------------------------------------------------------------------------- one rule


def _conventional_cnn(n_classes=5):
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, n_classes)).double().eval()


@pytest.mark.parametrize("name", ["tiny bcos", "conventional", "standard_fmnist_bcos",
                                  "fmnist_bcos", "bcosified_fmnist_bcos"])
def test_explain_and_attribution_decide_bcos_alike(name):
    """explain(), attribution 'bcos' and the perturbation methods' default score all
    follow bcosnet.nn.is_bcos_model: a conventional network is refused by both with
    the same message pointing to Input×Gradient, which then works on it."""
    model = {"tiny bcos": lambda: _tiny_model(),
             "conventional": lambda: _conventional_cnn(),
             }.get(name, lambda: bcosnet.create_model(name, num_classes=4).double().eval())()
    grey = name.endswith("fmnist_bcos")
    x = torch.rand(2, 1 if grey else 3, 28 if grey else 8, 28 if grey else 8,
                   dtype=torch.float64)
    expected_bcos = name in ("tiny bcos", "fmnist_bcos", "bcosified_fmnist_bcos")
    assert bcosnet.nn.is_bcos_model(model) is expected_bcos
    assert bcosnet.attribution.default_output(model) == (
        "sigmoid" if expected_bcos else "softmax")
    if expected_bcos:
        ex = bcosnet.explain(model, x, target=1)
        got = bcosnet.attribution.get("bcos", model).attribute(x, target=1)
        torch.testing.assert_close(got, ex.contributions_full[:, 0])
        return
    with pytest.raises(ValueError) as e_explain:
        bcosnet.explain(model, x, target=1)
    with pytest.raises(ValueError) as e_attr:
        bcosnet.attribution.get("bcos", model)
    m1, m2 = str(e_explain.value), str(e_attr.value)
    assert m1.startswith("bcosnet.explain explains B-cos networks")
    assert m2.startswith("attribution 'bcos' explains B-cos networks")
    assert m1.split(" explains ", 1)[1] == m2.split(" explains ", 1)[1]
    assert "attribution.get('ixg', model)" in m1
    ixg = bcosnet.attribution.get("ixg", model).attribute(x, target=1)
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model(xr)[:, 1].sum(), xr)
    torch.testing.assert_close(ixg, g * x)


# ----------------------------------------------------------------------------- class names

NAMES = ["T-shirt", "Trouser", "Pullover", "Dress", "Coat"]


def test_class_names_as_targets():
    model = _tiny_model(n_classes=5)
    model.class_names = list(NAMES)
    x = torch.rand(3, 3, 8, 8, dtype=torch.float64)
    by_index = bcosnet.explain(model, x, target=4)
    by_name = bcosnet.explain(model, x, target="Coat")
    assert torch.equal(by_name.targets, torch.full((3, 1), 4))
    torch.testing.assert_close(by_name.weights, by_index.weights)
    per_image = bcosnet.explain(model, x, target=["Coat", "T-shirt", "Dress"])
    assert per_image.targets[:, 0].tolist() == [4, 0, 3]
    several = bcosnet.explain(model, x, target=[["Coat", 1]] * 3)
    assert several.targets.tolist() == [[4, 1]] * 3
    # the same names in attribute(), one rule for both
    ixg = bcosnet.attribution.get("ixg", model)
    torch.testing.assert_close(ixg.attribute(x, target="Coat"), ixg.attribute(x, target=4))
    rise = bcosnet.attribution.get("rise", model, n_masks=8)
    torch.testing.assert_close(rise.attribute(x, target=["Coat", "T-shirt", "Dress"]),
                               rise.attribute(x, target=[4, 0, 3]))
    # 'pred' stays the keyword
    assert torch.equal(bcosnet.explain(model, x, target="pred").targets[:, 0],
                       model(x).argmax(1))


def test_class_name_errors():
    model = _tiny_model(n_classes=5)
    x = torch.rand(1, 3, 8, 8, dtype=torch.float64)
    with pytest.raises(ValueError, match="records no class names.*class index"):
        bcosnet.explain(model, x, target="Coat")
    model.class_names = list(NAMES)
    with pytest.raises(ValueError, match="did you mean 'Coat'"):
        bcosnet.explain(model, x, target="Cot")
    with pytest.raises(ValueError, match="did you mean 'Dress'"):
        bcosnet.attribution.get("grad", model).attribute(x, target=["dress"])


def test_explanation_repr_is_a_short_summary():
    model = _tiny_model(n_classes=5)
    model.class_names = list(NAMES)
    x = torch.rand(10, 3, 32, 32, dtype=torch.float64)
    ex = bcosnet.explain(model, x, target=[[4, 0]] * 10)
    text = repr(ex)
    assert len(text) < 600 and "\n" not in text, text
    assert "10 images × 2 targets" in text and "10×2×6×32×32 float64" in text
    assert "[4 'Coat', 0 'T-shirt']" in text and "(6 more)" in text
    logits = model(x).detach()
    assert f"{logits[0, 4].item():.4g}" in text
    err = (ex.contributions.sum((-2, -1)) + ex.bias - logits[:, [4, 0]]).abs().max().item()
    shown = float(re.search(r"max \|completeness error\| ([^)]+)\)", text).group(1))
    assert shown == pytest.approx(err, rel=0.06, abs=1e-15) and err < 1e-12
    neuron = bcosnet.explain(model, x[:1], layer="1", channel=[0, 3])
    assert "1 image × 2 channels" in repr(neuron) and "Coat" not in repr(neuron)
