"""The hand-written fast paths of the B-cos layers agree with from-the-definition
autograd computations (float64): the fused B = 2 scaling, the channel sum of
squares, MaxOut over piece-major halves, the uncentred batch norm's backward,
and the no-grad inference path."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from bcosnet.nn import BatchNormUncentered2d, BcosConv2d
from bcosnet.nn.bcos import _box_sum_same, _BoxSumSame


def _reference_bcos_conv(layer: BcosConv2d, x: torch.Tensor) -> torch.Tensor:
    """From the definition: unfold patches, normalise rows, max over pieces, |cos|·lin·γ."""
    w = layer.weight
    w_hat = w / w.flatten(1).norm(dim=1)[:, None, None, None]
    lin = F.conv2d(x, w_hat, None, layer.stride, layer.padding)
    n, _, h, wd = lin.shape
    lin = lin.view(n, layer.out_channels, layer.max_out, h, wd).max(2).values
    patches = F.unfold(x, layer.kernel_size, padding=layer.padding, stride=layer.stride)
    norm = (patches.square().sum(1) + layer.norm_eps).sqrt().view(n, 1, h, wd)
    cos = lin / norm
    out = cos.abs().pow(layer.b - 1) * lin
    return out * (layer.scale or 1.0)


def test_bcos_conv_maxout_scale_forward_and_gradients_match_definition():
    torch.manual_seed(0)
    layer = BcosConv2d(5, 6, 3, padding=1, stride=2, b=2, max_out=2, scale=3.0).double()
    x = torch.randn(3, 5, 9, 9, dtype=torch.float64, requires_grad=True)
    out = layer(x)
    ref = _reference_bcos_conv(layer, x)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    g = torch.randn_like(out)
    gx, gw = torch.autograd.grad(out, (x, layer.weight), g)
    rx, rw = torch.autograd.grad(ref, (x, layer.weight), g)
    torch.testing.assert_close(gx, rx, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(gw, rw, rtol=1e-9, atol=1e-11)
    with torch.no_grad():  # the in-place inference path
        torch.testing.assert_close(layer(x), ref.detach(), rtol=1e-10, atol=1e-12)


def test_bcos_conv_general_b_no_grad_path_matches_definition():
    torch.manual_seed(1)
    layer = BcosConv2d(4, 3, 3, padding=1, b=2.5, max_out=3).double()
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), _reference_bcos_conv(layer, x),
                                   rtol=1e-10, atol=1e-12)


def test_uncentred_batchnorm_fused_backward_matches_autograd():
    torch.manual_seed(2)
    bn = BatchNormUncentered2d(4).double().train()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2.0)
    x = torch.randn(3, 4, 5, 5, dtype=torch.float64, requires_grad=True)
    y = bn(x)
    var = x.var(dim=(0, 2, 3), unbiased=False)
    ref = x * (bn.weight / (var + bn.eps).sqrt())[None, :, None, None]
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(y)
    gx, gw = torch.autograd.grad(y, (x, bn.weight), g)
    rx, rw = torch.autograd.grad(ref, (x, bn.weight), g)
    torch.testing.assert_close(gx, rx, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gw, rw, rtol=1e-10, atol=1e-12)
    # running statistics as nn.BatchNorm2d's
    ref_bn = torch.nn.BatchNorm2d(4).double().train()
    ref_bn(x.detach())
    torch.testing.assert_close(bn.running_var, ref_bn.running_var)
    torch.testing.assert_close(bn.running_mean, ref_bn.running_mean)


def test_several_targets_in_one_batched_backward_equal_single_target_explanations():
    import bcosnet

    torch.manual_seed(3)
    model = bcosnet.create_model("fmnist_bcos").double().eval()
    x = torch.rand(3, 1, 12, 12, dtype=torch.float64)
    many = bcosnet.explain(model, x, [[7, 2, 5]] * 3)  # three classes for every image
    for j, t in enumerate([7, 2, 5]):
        one = bcosnet.explain(model, x, t)
        torch.testing.assert_close(many.weights[:, j], one.weights[:, 0], rtol=1e-10, atol=0)
    # and each is the gradient of that logit in explanation mode (autograd, per image)
    from bcosnet.nn.explanation_mode import explanation_mode

    enc = torch.cat([x, 1 - x], 1).requires_grad_(True)
    with explanation_mode(model):
        logits = model.forward_head(model.forward_body(enc))
    (g,) = torch.autograd.grad(logits[:, 2].sum(), enc)
    torch.testing.assert_close(many.weights[:, 1], g, rtol=1e-10, atol=1e-14)
    # the pass batched over the targets (vmap through the layers' own backward
    # functions; the default off the CPU) gives the same weights
    from bcosnet._utils.gradients import target_gradients

    enc = torch.cat([x, 1 - x], 1).requires_grad_(True)
    with explanation_mode(model):
        logits = model.forward_head(model.forward_body(enc))
    t = torch.tensor([[7, 2, 5]] * 3)
    batched = target_gradients(logits, enc, t, batched=True)
    torch.testing.assert_close(many.weights, batched, rtol=1e-10, atol=1e-14)


# ----------------------------------------------------------------- the window sum


@settings(max_examples=40, deadline=None)
@given(kh=st.sampled_from([1, 3, 5, 7]), kw=st.sampled_from([1, 3, 5, 7]),
       h=st.integers(1, 9), w=st.integers(1, 9), c=st.integers(1, 3),
       channels_last=st.booleans(), seed=st.integers(0, 2**16))
def test_box_sum_and_its_backward_equal_sum_pooling(kh, kw, h, w, c, channels_last, seed):
    """The separable window sum (stride 1, 'same' zero padding) equals
    avg_pool2d(divisor_override=1), and its hand-written adjoint equals
    avg_pool2d's autograd backward — for windows larger than the image too."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, c, h, w, dtype=torch.float64, generator=g)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    if kh // 2 > h or kw // 2 > w:  # avg_pool2d refuses padding beyond half the window
        return
    ref = F.avg_pool2d(x, (kh, kw), 1, (kh // 2, kw // 2), divisor_override=1)
    out = _BoxSumSame.apply(x, kh, kw)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(_box_sum_same(x.detach(), kh, kw), ref.detach(),
                               rtol=1e-12, atol=1e-12)
    up = torch.randn(ref.shape, dtype=torch.float64, generator=g)
    (gr,) = torch.autograd.grad(ref, x, up)
    (go,) = torch.autograd.grad(out, x, up)
    torch.testing.assert_close(go, gr, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------ channels-last models


def test_stride1_maxout_layer_matches_definition_in_both_memory_formats():
    """The stride-1 'same' path (separable window sum, float MaxOut mask) against
    the unfold definition, NCHW and channels-last; channels-last stays channels-last
    through the forward and the input gradient."""
    torch.manual_seed(4)
    layer = BcosConv2d(5, 6, 3, padding=1, b=2, max_out=2, scale=3.0).double()
    x0 = torch.randn(3, 5, 8, 7, dtype=torch.float64)
    ref_x = x0.clone().requires_grad_(True)
    ref = _reference_bcos_conv(layer, ref_x)
    g = torch.randn_like(ref)
    rx, rw = torch.autograd.grad(ref, (ref_x, layer.weight), g)
    for fmt in (torch.contiguous_format, torch.channels_last):
        layer.to(memory_format=fmt)
        x = x0.contiguous(memory_format=fmt).requires_grad_(True)
        out = layer(x)
        torch.testing.assert_close(out, ref.detach(), rtol=1e-10, atol=1e-12)
        gx, gw = torch.autograd.grad(out, (x, layer.weight), g.contiguous(memory_format=fmt))
        torch.testing.assert_close(gx, rx, rtol=1e-9, atol=1e-11)
        torch.testing.assert_close(gw, rw, rtol=1e-9, atol=1e-11)
        if fmt == torch.channels_last:
            assert out.is_contiguous(memory_format=torch.channels_last)
            assert gx.is_contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            torch.testing.assert_close(layer(x), ref.detach(), rtol=1e-10, atol=1e-12)


def test_channels_last_model_gives_the_same_logits_gradients_and_explanations():
    """model.to(memory_format=torch.channels_last) — what the main job evaluates
    with — changes no result: logits, plain input gradients (IntGrad's
    ingredient) and the B-cos explanation (with its completeness) equal the
    NCHW model's in float64."""
    import bcosnet

    torch.manual_seed(5)
    model = bcosnet.create_model("fmnist_bcos").double().eval()
    x = torch.rand(4, 1, 20, 20, dtype=torch.float64)

    def results(m):
        xx = x.clone().requires_grad_(True)
        logits = m(xx)
        (grad,) = torch.autograd.grad(logits[:, 3].sum(), xx)
        e = bcosnet.explain(m, x, [[1, 3]] * 4)
        return logits.detach(), grad, e

    l0, g0, e0 = results(model)
    l1, g1, e1 = results(model.to(memory_format=torch.channels_last))
    assert model.features[0].weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(l1, l0, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(g1, g0, rtol=1e-8, atol=1e-12)
    torch.testing.assert_close(e1.weights, e0.weights, rtol=1e-8, atol=1e-12)
    torch.testing.assert_close(e1.contributions, e0.contributions, rtol=1e-8, atol=1e-12)
    assert e1.completeness_error.abs().max() < 1e-9 * e1.logits.abs().max()


# ------------------------------------------------------------------- 2×2 average pooling


@settings(max_examples=40, deadline=None)
@given(h=st.integers(1, 10), w=st.integers(1, 10), c=st.integers(1, 4),
       channels_last=st.booleans(), ceil_mode=st.booleans(), seed=st.integers(0, 2**16))
def test_avgpool2d_fast_path_equals_torch_avgpool_values_and_gradients(
        h, w, c, channels_last, ceil_mode, seed):
    """bcosnet.nn.AvgPool2d(2) = torch.nn.AvgPool2d(2) (outputs and input gradients,
    float64) for every size — even sizes take the strided-slice path, odd ones
    torch's — in both memory formats, keeping the input's memory format."""
    from bcosnet.nn import AvgPool2d

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, c, h, w, dtype=torch.float64, generator=g)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    if h < 2 or w < 2:
        return  # no 2×2 window fits (torch refuses such inputs too)
    fast, ref = AvgPool2d(2, ceil_mode=ceil_mode), torch.nn.AvgPool2d(2, ceil_mode=ceil_mode)
    xf, xr = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    out, expected = fast(xf), ref(xr)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-14)
    up = torch.randn(expected.shape, dtype=torch.float64, generator=g)
    (gf,) = torch.autograd.grad(out, xf, up)
    (gr,) = torch.autograd.grad(expected, xr, up)
    torch.testing.assert_close(gf, gr, rtol=1e-12, atol=1e-14)
    even = h % 2 == 0 and w % 2 == 0
    assert (type(out.grad_fn).__name__ == "_AvgPool2x2Backward") == even
    with torch.no_grad():
        torch.testing.assert_close(fast(x), expected.detach(), rtol=1e-12, atol=1e-14)
    if channels_last and even and c > 1:
        assert out.is_contiguous(memory_format=torch.channels_last)
        assert gf.is_contiguous(memory_format=torch.channels_last)


def test_avgpool2d_fast_path_second_derivatives_and_batched_gradients():
    """The hand-written backward is itself differentiable (gradgradcheck) and works
    under vmap (several explanation targets in one batched backward)."""
    from bcosnet.nn.pool import avg_pool_2x2

    x = torch.randn(2, 3, 4, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(avg_pool_2x2, (x,))
    assert torch.autograd.gradgradcheck(avg_pool_2x2, (x,))
    y = avg_pool_2x2(x)
    ups = torch.randn(5, *y.shape, dtype=torch.float64)
    (batched,) = torch.autograd.grad(y, x, ups, is_grads_batched=True, retain_graph=True)
    for i in range(5):
        (one,) = torch.autograd.grad(y, x, ups[i], retain_graph=True)
        torch.testing.assert_close(batched[i], one, rtol=0, atol=0)


def test_avgpool2d_other_settings_use_torch_and_odd_sizes_are_refused_by_the_function():
    from bcosnet.nn import AvgPool2d
    from bcosnet.nn.pool import avg_pool_2x2

    x = torch.randn(1, 2, 9, 9, dtype=torch.float64)
    for kw in (dict(kernel_size=3, stride=2, padding=1), dict(kernel_size=2, stride=1),
               dict(kernel_size=2, divisor_override=3)):
        torch.testing.assert_close(AvgPool2d(**kw)(x), torch.nn.AvgPool2d(**kw)(x))
    assert isinstance(AvgPool2d(2), torch.nn.AvgPool2d)
    import pytest

    with pytest.raises(ValueError, match="even H and W"):
        avg_pool_2x2(x)


def test_window_sum_takes_the_shifted_slice_path_on_cpu_only(monkeypatch):
    """Other devices (a GPU; here the meta device) keep avg_pool2d's single kernel."""
    import bcosnet.nn.bcos as bcos_mod

    calls = []
    real = bcos_mod._box_sum_same
    monkeypatch.setattr(bcos_mod, "_box_sum_same", lambda *a: calls.append(1) or real(*a))
    cpu = bcos_mod._window_sum(torch.ones(1, 1, 5, 5), (3, 3), (1, 1), (1, 1))
    assert calls and cpu[0, 0, 2, 2] == 9 and cpu[0, 0, 0, 0] == 4
    calls.clear()
    meta = bcos_mod._window_sum(torch.ones(1, 1, 5, 5, device="meta"), (3, 3), (1, 1), (1, 1))
    assert not calls and meta.shape == (1, 1, 5, 5)
