"""B-cos ConvNeXt (models/convnext.py) against the ``bcos`` package's model on
random weights, and its completeness."""

from __future__ import annotations

import warnings

import pytest
import torch

import bcosnet
from bcosnet.models import load_bcos_v2

from .bcos_reference import assert_same_as_bcos

bcos_convnext = pytest.importorskip("bcos.models.convnext")

SETTING = ((8, 16, 1), (16, None, 2))  # small: two stages, three blocks


def _bcos_reference(num_classes: int = 5):
    cfgs = [bcos_convnext.CNBlockConfig(*s) for s in SETTING]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = bcos_convnext.BcosConvNeXt(cfgs, stochastic_depth_prob=0.0, num_classes=num_classes,
                                         in_chans=6)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # layer scales of O(1) (1e-6 at init would hide the blocks)
        for name, p in ref.named_parameters():
            if name.endswith("layer_scale") or (p.dim() == 1 and "weight" in name):
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
    return ref.double().eval()


def _ours(state_dict, num_classes: int = 5):
    return load_bcos_v2("convnext_atto", state_dict, num_classes=num_classes,
                        block_setting=SETTING, drop_path=0.0).double().eval()


def test_convnext_matches_the_bcos_package() -> None:
    torch.manual_seed(0)
    ref = _bcos_reference()
    ours = _ours(ref.state_dict())
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    assert_same_as_bcos(ours, ref, x, target=3)


def test_convnext_explanations_are_complete_in_float64() -> None:
    torch.manual_seed(0)
    ours = _ours(_bcos_reference().state_dict())
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    ex = bcosnet.explain(ours, x, target=[[0, 4]] * 2)
    torch.testing.assert_close(ex.contributions.sum((-2, -1)) + ex.bias, ex.logits,
                               rtol=1e-10, atol=1e-10)
    assert ex.bias.abs().max() > 0  # the logit bias −log(C − 1)


def test_convnext_registry_and_errors() -> None:
    m = bcosnet.create_model("convnext_atto_v2", num_classes=3, block_setting=SETTING)
    assert m(torch.rand(1, 3, 32, 32)).shape == (1, 3)
    assert bcosnet.models.model_info("convnext_tiny_v2").family == "convnext"
    with pytest.raises(ValueError, match="norm must be"):
        bcosnet.create_model("convnext_atto_v2", block_setting=SETTING, norm="ln")
    bnu = bcosnet.create_model("convnext_atto_v2", block_setting=SETTING, norm="bnu")
    assert bnu(torch.rand(2, 3, 32, 32)).shape == (2, 1000)


def test_depthwise_bcos_conv_gradient_matches_finite_differences() -> None:
    """The B = 2 fast path's backward for depthwise convs (one output per group, as
    in ConvNeXt's 7×7 convs): checked against finite differences."""
    from bcosnet.nn import BcosConv2d

    torch.manual_seed(0)
    conv = BcosConv2d(4, 4, 3, padding=1, groups=4, b=2.0).double()
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(conv, (x,), eps=1e-6, atol=1e-6)


def test_convnext_trains_a_step() -> None:
    torch.manual_seed(0)
    m = bcosnet.create_model("convnext_atto_v2", num_classes=3, block_setting=SETTING).train()
    x = torch.rand(2, 3, 32, 32)
    m(x).sum().backward()
    grads = [p.grad for p in m.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
