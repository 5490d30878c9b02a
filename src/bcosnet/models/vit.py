"""B-cos ViTs: the B-cos v2 code's simple ViT and ViT-C (``bcos.models.vit``).

A simple ViT (Beyer et al. 2022: sin-cos 2-D positional embedding, mean pooling of
the tokens, no class token) whose linear layers are B-cos linear layers (B = 2),
with bias-free layer norms, no GELU (the B-cos transform is the non-linearity)
and, for ViT-C (Xiao et al. 2021), a stem of 3×3 B-cos convs with a bias-free
layer norm (group norm with one group) after each.  In the attention, the
``to_qkv`` projection is a plain linear map; in explanation mode the queries and
keys are detached, so the attention matrix acts as a fixed linear map on the
values (B-cos v2).  ``logits = out + b`` with ``b = −log(C − 1)``.

Note on completeness: the positional embedding is an input-independent term
added to the patch embedding, so the network is dynamic linear in the pair
(encoded image, positional embedding), not in the image alone:
``Σ W(x)·x + Σ W_pe(x)·pe + b = logit`` (tested), while
:func:`bcosnet.explain`'s constant term ``f(0)`` does not hold the
``W_pe(x)·pe`` part — as in the B-cos v2 code.

Module names mirror the ``bcos`` package's ``SimpleViT`` (``to_patch_embedding``,
``transformer.encoder_<i>.attn``/``.ff``, ``linear_head``), so
:func:`bcosnet.models.load_bcos_v2` loads its state dicts (also when wrapped with
the logit layer, keys ``0.*``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..nn import BcosLinear, DetachableGroupNorm2d, DetachableLayerNorm
from ..nn.explanation_mode import ExplainableModule
from ._common import bcos_conv_factory, resolve_options, v2_logit_bias
from .base import BcosClassifier
from .registry import register_model

__all__ = ["BcosViT", "VIT_CFGS"]


class PosEmbSinCos2d(nn.Module):
    """The 2-D sin-cos positional embedding of an ``N×h×w×d`` token grid → ``(h·w)×d``."""

    def __init__(self, temperature: float = 10_000.0) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, patches: Tensor) -> Tensor:
        h, w, dim = patches.shape[-3:]
        if dim % 4:
            raise ValueError(f"the embedding dimension must be a multiple of 4, got {dim}")
        y, x = torch.meshgrid(torch.arange(h, device=patches.device),
                              torch.arange(w, device=patches.device), indexing="ij")
        omega = torch.arange(dim // 4, device=patches.device) / (dim // 4 - 1)
        omega = 1.0 / (self.temperature ** omega)
        y = y.flatten()[:, None] * omega[None, :]
        x = x.flatten()[:, None] * omega[None, :]
        return torch.cat((x.sin(), x.cos(), y.sin(), y.cos()), dim=1).to(patches.dtype)


class Patchify(nn.Module):
    """``N×C×(h·p1)×(w·p2)`` → ``N×h×w×(p1·p2·C)``
    (einops: ``b c (h p1) (w p2) -> b h w (p1 p2 c)``)."""

    def __init__(self, p1: int, p2: int) -> None:
        super().__init__()
        self.p1, self.p2 = p1, p2

    def forward(self, x: Tensor) -> Tensor:
        n, c, hh, ww = x.shape
        if hh % self.p1 or ww % self.p2:
            raise ValueError(f"image size {hh}×{ww} is not divisible by the patch size "
                             f"{self.p1}×{self.p2}")
        x = x.reshape(n, c, hh // self.p1, self.p1, ww // self.p2, self.p2)
        return x.permute(0, 2, 4, 3, 5, 1).reshape(n, hh // self.p1, ww // self.p2, -1)


class Attention(ExplainableModule):
    """Multi-head self-attention; queries and keys detached in explanation mode."""

    def __init__(self, dim: int, heads: int, dim_head: int, linear: Any) -> None:
        super().__init__()
        inner = dim_head * heads
        self.heads, self.scale = heads, dim_head ** -0.5
        self.norm = DetachableLayerNorm(dim)
        self.to_qkv = nn.Linear(dim, inner * 3, bias=False)
        self.to_out = linear(inner, dim)

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm(x)
        n, t, _ = x.shape
        q, k, v = (z.reshape(n, t, self.heads, -1).transpose(1, 2)
                   for z in self.to_qkv(x).chunk(3, dim=-1))
        if self.is_in_explanation_mode:
            q, k = q.detach(), k.detach()
        attn = torch.softmax(q @ k.transpose(-1, -2) * self.scale, dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(n, t, -1)
        return self.to_out(out)


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, linear: Any) -> None:
        super().__init__()
        self.net = nn.Sequential(OrderedDict(
            norm=DetachableLayerNorm(dim), linear1=linear(dim, hidden), act=nn.Identity(),
            linear2=linear(hidden, dim)))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class Encoder(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int, mlp_dim: int, linear: Any) -> None:
        super().__init__()
        self.attn = Attention(dim, heads, dim_head, linear)
        self.ff = FeedForward(dim, mlp_dim, linear)

    def forward(self, x: Tensor) -> Tensor:
        x = self.attn(x) + x
        return self.ff(x) + x


class BcosViT(BcosClassifier):
    """A B-cos simple ViT (``conv_stem=None``) or ViT-C (see the module docstring).

    Args:
        patch_size: patch side (after the stem).
        dim, depth, heads, mlp_dim: the transformer.
        conv_stem: output channels of the stem's 3×3 convs (stride 2 when the
            channels grow), or None.
        b, max_out: of every B-cos layer.
        temperature, logit_bias: the logit layer (``logit_bias=None``: −log(C − 1)).
    """

    def __init__(self, *, patch_size: int, dim: int, depth: int, heads: int, mlp_dim: int,
                 num_classes: int = 1000, in_channels: int = 3,
                 conv_stem: Sequence[int] | None = None, b: float = 2.0, max_out: int = 1,
                 temperature: float = 1.0, logit_bias: float | None = None,
                 name: str = "vit") -> None:
        stride = 1
        c = 2 * in_channels
        for out_c in conv_stem or ():
            stride *= 2 if out_c > c else 1
            c = out_c
        super().__init__(num_classes=num_classes, in_channels=in_channels,
                         min_size=(patch_size * stride, patch_size * stride), name=name)
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")

        def linear(i: int, o: int) -> BcosLinear:
            return BcosLinear(i, o, b=b, max_out=max_out)

        conv = bcos_conv_factory(b=b, max_out=max_out)
        parts: dict[str, nn.Module] = {}
        if conv_stem:
            stem: list[nn.Module] = []
            c = 2 * in_channels
            for out_c in conv_stem:
                stem += [conv(c, out_c, 3, 2 if out_c > c else 1, 1),
                         DetachableGroupNorm2d(out_c), nn.Identity()]
                c = out_c
            parts["conv_stem"] = nn.Sequential(*stem)
        patch_dim = (c if conv_stem else 2 * in_channels) * patch_size * patch_size
        parts["rearrage"] = Patchify(patch_size, patch_size)  # the bcos package's name
        parts["linear"] = linear(patch_dim, dim)
        self.to_patch_embedding = nn.Sequential(OrderedDict(parts))
        self.positional_embedding = PosEmbSinCos2d()
        self.transformer = nn.Sequential(OrderedDict(
            (f"encoder_{i}", Encoder(dim, heads, dim // heads, mlp_dim, linear))
            for i in range(depth)))
        self.num_features = dim
        self.classifier_name = "linear_head"
        self.linear_head = nn.Sequential(OrderedDict(norm=DetachableLayerNorm(dim),
                                                     linear=linear(dim, num_classes)))
        self.last_feature_layer = "transformer"
        self._set_head(self.linear_head, temperature,
                       v2_logit_bias(num_classes) if logit_bias is None else logit_bias)
        del self.avgpool  # tokens are averaged in forward_head

    def forward_body(self, x: Tensor) -> Tensor:
        """Encoded images → tokens ``N×T×dim``."""
        x = self.to_patch_embedding(x)
        pe = self.positional_embedding(x)
        return self.transformer(x.flatten(1, 2) + pe)

    def pool_features(self, features: Tensor) -> Tensor:
        """Tokens ``N×T×dim`` → the mean token ``N×dim`` (the head's input)."""
        return features.mean(dim=1)

    def forward_evidence(self, features: Tensor) -> Tensor:
        """Tokens → mean token → norm + B-cos linear: ``N×num_classes`` before the logit layer."""
        return self.linear_head(self.pool_features(features))


# ----------------------------------------------------------------------------- registry
#: (patch size, dim, depth, heads, mlp_dim, conv stem) of the ``bcos`` package's ViTs.
VIT_CFGS: dict[str, tuple[int, int, int, int, int, tuple[int, ...] | None]] = {
    "simple_vit_ti_patch16_224": (16, 192, 12, 3, 768, None),
    "simple_vit_s_patch16_224": (16, 384, 12, 6, 1536, None),
    "simple_vit_b_patch16_224": (16, 768, 12, 12, 3072, None),
    "simple_vit_l_patch16_224": (16, 1024, 14, 16, 4096, None),
    "vitc_ti_patch1_14": (1, 192, 11, 3, 768, (24, 48, 96, 192)),
    "vitc_s_patch1_14": (1, 384, 11, 6, 1536, (48, 96, 192, 384)),
    "vitc_b_patch1_14": (1, 768, 11, 12, 3072, (64, 128, 128, 256, 256, 512)),
    "vitc_l_patch1_14": (1, 1024, 13, 16, 4096, (64, 128, 128, 256, 256, 512)),
}
OPTIONS: dict[str, Any] = dict(b=2.0, max_out=1, temperature=1.0, logit_bias=None,
                               patch_size=None, dim=None, depth=None, heads=None,
                               mlp_dim=None, conv_stem=None)


def _register(arch: str) -> None:
    name = f"{arch}_v2"
    patch, dim, depth, heads, mlp, stem = VIT_CFGS[arch]
    defaults = dict(patch_size=patch, dim=dim, depth=depth, heads=heads, mlp_dim=mlp,
                    conv_stem=stem)
    options = {**OPTIONS, **defaults}

    def builder(num_classes: int = 1000, in_channels: int = 3, **kw: Any) -> BcosViT:
        o = resolve_options(options, kw, name)
        return BcosViT(num_classes=num_classes, in_channels=in_channels, name=name, **o)

    builder.__name__ = name
    builder.__doc__ = f"B-cos {arch} (B-cos v2 code); see the module docstring."
    register_model(name, family="vit", kind="bcos_v2", options=options, input_size=(224, 224),
                   min_size=(16, 16))(builder)


for _arch in VIT_CFGS:
    _register(_arch)
