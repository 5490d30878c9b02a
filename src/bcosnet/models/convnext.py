"""B-cos ConvNeXt (the B-cos v2 code's ``bcos.models.convnext``).

torchvision's ConvNeXt with every conv a B-cos conv (B = 2, no MaxOut, no bias),
the GELU dropped (the B-cos transform is the non-linearity), bias-free norms —
position norm (layer norm over the channels at every position, ``norm="pn"``,
the default) or uncentred batch norm (``"bnu"``) — and the classifier (norm +
1×1 B-cos conv) applied per location before global average pooling;
``logits = out + b`` with ``b = −log(C − 1)``.  Each block computes
``x + layer_scale · block(x)`` (stochastic depth in training).

Module names mirror the ``bcos`` package's ``BcosConvNeXt`` (``features.<i>``,
``block.<j>``, ``layer_scale``, ``classifier``), so :func:`bcosnet.models.load_bcos_v2`
loads its state dicts one to one.

Shapes: ``N×in_channels×H×W`` images in [0, 1] (native 224×224, at least 32×32)
→ ``N×num_classes``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.ops import StochasticDepth

from ..nn import BatchNormUncentered2d, BcosConv2d, PositionNorm2d
from ._common import bcos_conv_factory, resolve_options, v2_logit_bias
from .base import BcosClassifier
from .registry import register_model

__all__ = ["BcosConvNeXt", "CNBlock", "CONVNEXT_CFGS"]

#: (input channels, output channels of the downsampling after the stage or None,
#: blocks) per stage, as in the ``bcos`` package.
CONVNEXT_CFGS: dict[str, tuple[tuple[int, int | None, int], ...]] = {
    "atto": ((40, 80, 2), (80, 160, 2), (160, 320, 6), (320, None, 2)),
    "tiny": ((96, 192, 3), (192, 384, 3), (384, 768, 9), (768, None, 3)),
    "small": ((96, 192, 3), (192, 384, 3), (384, 768, 27), (768, None, 3)),
    "base": ((128, 256, 3), (256, 512, 3), (512, 1024, 27), (1024, None, 3)),
    "large": ((192, 384, 3), (384, 768, 3), (768, 1536, 27), (1536, None, 3)),
}
#: Default stochastic depth of each size (the ``bcos`` package's).
_DROP_PATH = {"atto": 0.1, "tiny": 0.1, "small": 0.4, "base": 0.5, "large": 0.5}


def _norm(kind: str, c: int) -> nn.Module:
    if kind == "pn":
        return PositionNorm2d(c, eps=1e-6)
    if kind == "bnu":
        return BatchNormUncentered2d(c, eps=1e-6)
    raise ValueError(f"norm must be 'pn' (position norm) or 'bnu' (uncentred batch norm), "
                     f"got {kind!r}")


class CNBlock(nn.Module):
    """Depthwise 7×7 B-cos conv → norm → 1×1 (×4) → 1×1; ``x + layer_scale · block(x)``."""

    def __init__(self, dim: int, layer_scale: float, drop_path: float, conv: Any,
                 norm: str) -> None:
        super().__init__()
        self.block = nn.Sequential(
            conv(dim, dim, 7, 1, 3, groups=dim),
            _norm(norm, dim),
            conv(dim, 4 * dim, 1),
            conv(4 * dim, dim, 1),
        )
        self.layer_scale = nn.Parameter(torch.ones(dim, 1, 1) * layer_scale)
        self.stochastic_depth = StochasticDepth(drop_path, "row")

    def forward(self, x: Tensor) -> Tensor:
        return self.stochastic_depth(self.layer_scale * self.block(x)) + x


class BcosConvNeXt(BcosClassifier):
    """A B-cos ConvNeXt (see the module docstring).

    Args:
        block_setting: per stage ``(channels, channels after downsampling or None,
            blocks)`` (:data:`CONVNEXT_CFGS`).
        num_classes, in_channels: outputs and raw image channels.
        b, max_out: the B-cos convs' B and MaxOut.
        norm: ``"pn"`` or ``"bnu"``.
        layer_scale: initial layer scale (1e-6).
        drop_path: stochastic depth of the last block (linear in depth from 0).
        temperature, logit_bias: the logit layer (``logit_bias=None``: −log(C − 1)).
    """

    def __init__(self, block_setting: Sequence[Sequence[int | None]], num_classes: int = 1000,
                 in_channels: int = 3, *, b: float = 2.0, max_out: int = 1, norm: str = "pn",
                 layer_scale: float = 1e-6, drop_path: float = 0.1, temperature: float = 1.0,
                 logit_bias: float | None = None, name: str = "convnext") -> None:
        super().__init__(num_classes=num_classes, in_channels=in_channels, min_size=(32, 32),
                         name=name)
        if not block_setting:
            raise ValueError("block_setting must list at least one stage")
        stages = [tuple(s) for s in block_setting]
        if any(len(s) != 3 for s in stages):
            raise ValueError(f"each stage is (channels, out channels or None, blocks), got "
                             f"{block_setting}")
        conv = bcos_conv_factory(b=b, max_out=max_out)
        first = int(stages[0][0])  # type: ignore[arg-type]
        layers: list[nn.Module] = [conv(2 * in_channels, first, 4, 4, 0), _norm(norm, first)]
        total, k = sum(int(s[2]) for s in stages), 0  # type: ignore[arg-type]
        for c_in, c_out, n in stages:
            blocks = []
            for _ in range(int(n)):  # type: ignore[arg-type]
                p = drop_path * k / (total - 1.0) if total > 1 else 0.0
                blocks.append(CNBlock(int(c_in), layer_scale, p, conv, norm))  # type: ignore[arg-type]
                k += 1
            layers.append(nn.Sequential(*blocks))
            if c_out is not None:
                layers.append(nn.Sequential(_norm(norm, int(c_in)),  # type: ignore[arg-type]
                                            conv(int(c_in), int(c_out), 2, 2)))  # type: ignore[arg-type]
        self.features = nn.Sequential(*layers)
        last = stages[-1][1] if stages[-1][1] is not None else stages[-1][0]
        self.num_features = int(last)  # type: ignore[arg-type]
        head = nn.Sequential(_norm(norm, self.num_features), conv(self.num_features,
                                                                  num_classes, 1))
        self._set_head(head, temperature,
                       v2_logit_bias(num_classes) if logit_bias is None else logit_bias)
        for m in self.modules():  # the bcos package's initialisation
            if isinstance(m, BcosConv2d):
                nn.init.trunc_normal_(m.weight, std=0.02)


# ----------------------------------------------------------------------------- registry
#: Default options (the ``bcos`` package's ImageNet ConvNeXts).
OPTIONS: dict[str, Any] = dict(b=2.0, max_out=1, norm="pn", layer_scale=1e-6, drop_path=None,
                               temperature=1.0, logit_bias=None, block_setting=None)


def _create(size: str, num_classes: int = 1000, in_channels: int = 3,
            **options: Any) -> BcosConvNeXt:
    name = f"convnext_{size}_v2"
    o = resolve_options(OPTIONS, options, name)
    setting = o.pop("block_setting") or CONVNEXT_CFGS[size]
    dp = o.pop("drop_path")
    return BcosConvNeXt(setting, num_classes, in_channels,
                        drop_path=_DROP_PATH[size] if dp is None else dp, name=name, **o)


def _register(size: str) -> None:
    def builder(**kw: Any) -> BcosConvNeXt:
        return _create(size, **kw)

    builder.__name__ = f"convnext_{size}_v2"
    builder.__doc__ = f"B-cos ConvNeXt-{size} (B-cos v2 code); see the module docstring."
    register_model(builder.__name__, family="convnext", kind="bcos_v2", options=OPTIONS,
                   input_size=(224, 224), min_size=(32, 32))(builder)


for _size in CONVNEXT_CFGS:
    _register(_size)
