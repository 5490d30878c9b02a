"""B-cos layers: agreement with the `bcos` reference, patch norms, numerics, errors."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from bcosnet.nn import BcosConv2d, BcosLinear, explanation_mode, v1_scale


@pytest.fixture(scope="module")
def bcos_modules():
    """The `bcos` package's layers: a test-only reference (skips only the tests
    that compare against it when it is not installed)."""
    return pytest.importorskip("bcos.modules")


def _reference_conv(bcos_modules, ours: BcosConv2d, case):
    cin, cout, k, s, p, d, g, b, m = case
    ref = bcos_modules.BcosConv2d(cin, cout, k, s, p, d, g, b=b, max_out=m).double()
    with torch.no_grad():
        ref.linear.weight.copy_(ours.weight)
    return ref


def _run(layer, x, explain_mode: bool):
    x = x.clone().requires_grad_(True)
    ctx = explanation_mode(layer) if explain_mode else torch.enable_grad()
    with ctx:
        out = layer(x)
    g = torch.randn_like(out, generator=torch.Generator().manual_seed(1))
    (grad,) = torch.autograd.grad(out, x, g)
    return out.detach(), grad


CONV_CASES = [
    # (cin, cout, k, stride, padding, dilation, groups, b, max_out)
    (6, 8, 3, 1, 1, 1, 1, 2.0, 1),
    (6, 8, 3, 2, 1, 1, 1, 2.0, 2),
    (6, 8, 1, 1, 0, 1, 1, 2.0, 1),
    (8, 8, 3, 1, 1, 1, 2, 2.0, 2),
    (8, 12, 3, 1, 1, 1, 4, 2.0, 1),
    (6, 8, 3, 1, 2, 2, 1, 2.0, 1),
    (6, 8, 5, 2, 2, 1, 1, 1.0, 3),
    (6, 8, 3, 1, 1, 1, 1, 1.5, 2),
    (6, 8, 3, 1, 1, 1, 1, 2.5, 1),
    (6, 8, (3, 5), (1, 2), (1, 2), 1, 1, 1.25, 1),
]


@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("explain_mode", [False, True])
def test_conv_matches_bcos_reference(bcos_modules, case, explain_mode):
    cin, cout, k, s, p, d, g, b, m = case
    torch.manual_seed(0)
    # The reference adds ε to |cos| for general B (v1/v2 quirk): enable it here.
    cos_eps = 1e-6 if b not in (1.0, 2.0) else 0.0
    ours = BcosConv2d(cin, cout, k, s, p, d, g, b=b, max_out=m, cos_eps=cos_eps).double()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = _reference_conv(bcos_modules, ours, case)
    x = torch.randn(2, cin, 11, 13, dtype=torch.float64)
    out_o, grad_o = _run(ours, x, explain_mode)
    out_r, grad_r = _run(ref, x, explain_mode)
    assert out_o.shape == out_r.shape
    torch.testing.assert_close(out_o, out_r, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(grad_o, grad_r, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("b,m", [(1.0, 1), (2.0, 1), (2.0, 3), (1.5, 2), (2.5, 1)])
@pytest.mark.parametrize("explain_mode", [False, True])
def test_linear_matches_bcos_reference(bcos_modules, b, m, explain_mode):
    torch.manual_seed(0)
    cos_eps = 1e-6 if b not in (1.0, 2.0) else 0.0
    ours = BcosLinear(10, 7, b=b, max_out=m, cos_eps=cos_eps).double()
    ref = bcos_modules.BcosLinear(10, 7, b=b, max_out=m).double()
    with torch.no_grad():
        ref.linear.weight.copy_(ours.weight)
    x = torch.randn(4, 10, dtype=torch.float64)
    out_o, grad_o = _run(ours, x, explain_mode)
    out_r, grad_r = _run(ref, x, explain_mode)
    torch.testing.assert_close(out_o, out_r, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(grad_o, grad_r, rtol=1e-5, atol=1e-7)


def test_scale_matches_bcos_v1_scaled_layer(bcos_modules):
    torch.manual_seed(0)
    gamma = v1_scale(100.0, 6, 3)
    ours = BcosConv2d(6, 8, 3, padding=1, scale=gamma).double()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = bcos_modules.BcosConv2dWithScale(6, 8, 3, padding=1, scale_factor=100.0).double()
    with torch.no_grad():
        ref.linear.weight.copy_(ours.weight)
    x = torch.randn(2, 6, 9, 9, dtype=torch.float64)
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-6, atol=1e-9)


def _brute_force(layer: BcosConv2d, x: torch.Tensor) -> torch.Tensor:
    """Per-patch B-cos from the definition: unfold every window, cosine per unit."""
    # Pad explicitly as nn.Conv2d does ('same' puts the odd pixel at the end).
    if layer.padding == "valid":
        pad = (0, 0, 0, 0)
    elif layer.padding == "same":
        (t, bt), (lf, r) = (
            (d * (k - 1) // 2, d * (k - 1) - d * (k - 1) // 2)
            for d, k in zip(layer.dilation, layer.kernel_size)
        )
        pad = (lf, r, t, bt)
    else:
        ph, pw = layer.padding
        pad = (pw, pw, ph, ph)
    mode = "constant" if layer.padding_mode == "zeros" else layer.padding_mode
    x = F.pad(x, pad, mode=mode)
    padding = (0, 0)
    n, c, h, w = x.shape
    g = layer.groups
    cols = F.unfold(x, layer.kernel_size, layer.dilation, padding, layer.stride)  # N×(C·k²)×L
    kk = layer.kernel_size[0] * layer.kernel_size[1]
    cols = cols.view(n, g, (c // g) * kk, -1)  # per group patch vectors
    w_hat = layer.normalized_weight().flatten(1)  # (O·M)×(C/g·k²)
    om = w_hat.shape[0]
    w_hat = w_hat.view(g, om // g, -1)
    lin = torch.einsum("gok,ngkl->ngol", w_hat, cols)  # N×G×(OM/G)×L
    norms = (cols.square().sum(2, keepdim=True) + layer.norm_eps).sqrt()
    lin = lin.reshape(n, om, -1)
    norms = norms.repeat_interleave(om // g, dim=1).reshape(n, om, -1)
    m = layer.max_out
    lin = lin.view(n, om // m, m, -1)
    idx = lin.argmax(2, keepdim=True)
    lin = lin.gather(2, idx).squeeze(2)
    norms = norms.view(n, om // m, m, -1)[:, :, 0]
    cos = lin / norms
    out = cos.abs().pow(layer.b - 1) * lin
    ho = (h + 2 * padding[0] - layer.dilation[0] * (layer.kernel_size[0] - 1) - 1)
    ho = ho // layer.stride[0] + 1
    return out.view(n, om // m, ho, -1)


@settings(max_examples=40, deadline=None)
@given(
    k=st.sampled_from([1, 2, 3, (2, 3)]),
    stride=st.sampled_from([1, 2]),
    dilation=st.sampled_from([1, 2]),
    groups=st.sampled_from([1, 2]),
    padding=st.sampled_from([0, 1, 3, "same", "valid"]),
    padding_mode=st.sampled_from(["zeros", "reflect", "replicate", "circular"]),
    b=st.sampled_from([1.0, 1.5, 2.0, 2.5]),
    max_out=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_conv_matches_definition(k, stride, dilation, groups, padding, padding_mode, b, max_out,
                                 seed):
    if padding == "same" and stride != 1:
        stride = 1
    torch.manual_seed(seed)
    layer = BcosConv2d(
        4, 6, k, stride, padding, dilation, groups, b=b, max_out=max_out,
        padding_mode=padding_mode,
    ).double()
    x = torch.randn(2, 4, 9, 8, dtype=torch.float64)
    out = layer(x)
    ref_conv = torch.nn.Conv2d(4, 6 * max_out, k, stride, padding, dilation, groups, bias=False,
                               padding_mode=padding_mode).double()
    with torch.no_grad():
        ref_conv.weight.copy_(layer.weight)
    # Same output geometry as nn.Conv2d with the same arguments.
    assert out.shape[2:] == ref_conv(x).shape[2:]
    torch.testing.assert_close(out, _brute_force(layer, x), rtol=1e-9, atol=1e-12)


def test_b1_is_conv_with_unit_norm_rows():
    torch.manual_seed(0)
    layer = BcosConv2d(3, 5, 3, padding="same", b=1.0).double()
    x = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    w = layer.weight / layer.weight.flatten(1).norm(dim=1)[:, None, None, None]
    torch.testing.assert_close(layer(x), F.conv2d(x, w, padding=1))


@pytest.mark.parametrize("b", [1.0, 1.25, 1.5, 2.0, 2.5])
@pytest.mark.parametrize("scale", [0.0, 1e-30, 1e-8])
def test_zero_and_tiny_inputs_are_finite(b, scale):
    torch.manual_seed(0)
    conv = BcosConv2d(4, 6, 3, padding=1, b=b, max_out=2).double()
    lin = BcosLinear(5, 3, b=b).double()
    for layer, x in ((conv, torch.randn(2, 4, 6, 6)), (lin, torch.randn(3, 5))):
        x = (x.double() * scale).requires_grad_(True)
        for mode in (False, True):
            with explanation_mode(layer, mode):
                out = layer(x)
                (g,) = torch.autograd.grad(out.sum(), x)
            assert torch.isfinite(out).all() and torch.isfinite(g).all()
            if scale == 0.0:
                assert (out == 0).all()


@pytest.mark.parametrize("b", [1.0, 1.5, 2.0, 2.5])
def test_gradcheck(b):
    torch.manual_seed(0)
    conv = BcosConv2d(4, 6, 3, stride=2, padding=1, groups=2, b=b, max_out=2).double()
    x = torch.randn(1, 4, 5, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(conv, (x,))
    lin = BcosLinear(5, 3, b=b, max_out=2).double()
    y = torch.randn(2, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lin, (y,))
    # Gradients with respect to the (unnormalised) weights, too.
    assert torch.autograd.gradcheck(
        lambda w: torch.func.functional_call(conv, {"weight": w}, (x.detach(),)),
        (conv.weight.detach().clone().requires_grad_(True),),
    )


def test_explanation_mode_gives_the_dynamic_linear_map():
    """In explanation mode, out = (∂out/∂x)·x: the gradient is the linear map itself."""
    torch.manual_seed(0)
    layer = BcosLinear(6, 4, b=2.5, max_out=2).double()
    x = torch.randn(6, dtype=torch.float64, requires_grad=True)
    with explanation_mode(layer):
        jac = torch.autograd.functional.jacobian(layer, x)
        out = layer(x)
    torch.testing.assert_close(jac @ x, out)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(b=0.5), "b must be"),
        (dict(b=float("nan")), "b must be"),
        (dict(max_out=0), "max_out must be"),
        (dict(scale=-1.0), "scale must be"),
        (dict(groups=4), "divisible by groups"),
        (dict(padding="full"), "padding must be"),
        (dict(padding_mode="mirror"), "padding_mode"),
        (dict(padding="same", stride=2), "same"),
    ],
)
def test_bad_constructor_arguments(kwargs, match):
    args = dict(in_channels=6, out_channels=6, kernel_size=3)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        BcosConv2d(**args)


def test_bad_forward_inputs():
    conv = BcosConv2d(6, 4, 3)
    with pytest.raises(ValueError, match="expects 6 input channels, got 3"):
        conv(torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="4-D input.*unsqueeze"):
        conv(torch.rand(6, 8, 8))
    lin = BcosLinear(5, 3)
    with pytest.raises(ValueError, match="5 features"):
        lin(torch.rand(2, 4))
    with pytest.raises(ValueError, match="b must be"):
        BcosLinear(5, 3, b=0.9)
    with pytest.raises(ValueError, match="max_out must be"):
        BcosLinear(5, 3, max_out=0)


def test_repr_is_readable():
    conv = BcosConv2d(6, 4, 3, padding=1, groups=2, b=1.5, max_out=2, scale=0.5)
    r = repr(conv)
    for part in ("6, 4", "kernel_size=(3, 3)", "groups=2", "b=1.5", "max_out=2", "scale=0.5"):
        assert part in r
