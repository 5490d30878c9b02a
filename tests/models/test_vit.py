"""B-cos ViT / ViT-C (models/vit.py) against the ``bcos`` package's SimpleViT on
random weights, and completeness in float64."""

from __future__ import annotations

import math
import warnings
from functools import partial

import pytest
import torch
from torch import nn

import bcosnet
from bcosnet.models import load_bcos_v2

from .bcos_reference import assert_same_as_bcos

pytest.importorskip("einops")
bvit = pytest.importorskip("bcos.models.vit")
from bcos.modules import BcosConv2d, BcosLinear, BcosSequential, LogitLayer, norms  # noqa: E402
from bcos.modules.norms.centered_norms import DetachableGNLayerNorm2d  # noqa: E402

# small configurations: (bcosnet options, image side)
SIMPLE = dict(patch_size=8, dim=16, depth=2, heads=2, mlp_dim=32, conv_stem=None)
VITC = dict(patch_size=1, dim=16, depth=2, heads=2, mlp_dim=32, conv_stem=(8, 16))


def _bcos_reference(opts: dict, side: int, num_classes: int = 5) -> nn.Module:
    """The bcos package's B-cos SimpleViT as its vit_final experiments build it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vit = bvit.SimpleViT(
            image_size=side // (4 if opts["conv_stem"] else 1), patch_size=opts["patch_size"],
            num_classes=num_classes, dim=opts["dim"], depth=opts["depth"],
            heads=opts["heads"], mlp_dim=opts["mlp_dim"], channels=6,
            linear_layer=partial(BcosLinear, b=2, max_out=1),
            conv2d_layer=partial(BcosConv2d, b=2, max_out=1),
            norm_layer=norms.NoBias(norms.DetachableLayerNorm), act_layer=nn.Identity,
            norm2d_layer=norms.NoBias(DetachableGNLayerNorm2d),
            conv_stem=list(opts["conv_stem"]) if opts["conv_stem"] else None)
    model = BcosSequential(vit, LogitLayer(logit_bias=math.log(1 / (num_classes - 1))))
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # norm weights away from 1
        for p in model.parameters():
            if p.dim() == 1:
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
    return model.double().eval()


@pytest.mark.parametrize("arch,opts", [("simple_vit_ti_patch16_224", SIMPLE),
                                       ("vitc_ti_patch1_14", VITC)])
def test_vit_matches_the_bcos_package(arch: str, opts: dict) -> None:
    torch.manual_seed(0)
    ref = _bcos_reference(opts, 16)
    ours = load_bcos_v2(arch, ref.state_dict(), num_classes=5, **opts).double().eval()
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    assert_same_as_bcos(ours, ref, x, target=2)


@pytest.mark.parametrize("opts", [SIMPLE, VITC])
def test_vit_is_dynamic_linear_in_image_and_positional_embedding(opts: dict) -> None:
    """Σ W(x)·x + Σ W_pe(x)·pe + logit bias = logit, float64 (the positional
    embedding is the network's only input-independent term besides the logit bias)."""
    torch.manual_seed(0)
    m = bcosnet.create_model("vitc_ti_patch1_14_v2", num_classes=4, **opts).double().eval()
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() == 1:
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    x6 = m.encoding(x)
    store = {}

    def keep(_mod, _inp, out):
        store["pe"] = out.detach().requires_grad_(True)
        return store["pe"]

    with torch.no_grad():
        logits = m(x)
    # per image: the pe is shared by the batch, so take each image's gradient separately
    per_image = []
    for i in range(2):
        xi = x6[i:i + 1].detach().requires_grad_(True)
        h = m.positional_embedding.register_forward_hook(keep)
        try:
            with bcosnet.explanation_mode(m):
                li = m.forward_head(m.forward_body(xi))
                gxi, gpei = torch.autograd.grad(li[0, 3], (xi, store["pe"]))
        finally:
            h.remove()
        per_image.append((gxi * xi).sum() + (gpei * store["pe"]).sum() + m.logit_layer.bias)
    torch.testing.assert_close(torch.stack(per_image), logits[:, 3], rtol=1e-10, atol=1e-10)


def test_vit_registry_and_reset_classifier() -> None:
    m = bcosnet.create_model("simple_vit_ti_patch16_224_v2", num_classes=3, **SIMPLE)
    x = torch.rand(2, 3, 16, 16)
    feats = m.forward_features(x)
    assert feats.shape == (2, 4, 16) and m(x).shape == (2, 3)
    m.reset_classifier(6)
    assert m(x).shape == (2, 6) and torch.equal(m.forward_features(x), feats)
    assert m.logit_layer.bias == pytest.approx(-math.log(5))
    with pytest.raises(ValueError, match="divisible by the patch size"):
        m(torch.rand(1, 3, 20, 20))
    with pytest.raises(ValueError, match="divisible by heads"):
        bcosnet.create_model("simple_vit_ti_patch16_224_v2", **{**SIMPLE, "heads": 3})
