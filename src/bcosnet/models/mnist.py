"""Compact networks for 28×28 grey images (Fashion-MNIST, MNIST).

``fmnist_bcos`` is a pure B-cos network (v1 style: no biases, no BatchNorm, no
ReLU; MaxOut and the B-cos alignment are the only non-linearities)::

    AddInverse(1)                               1 → 2 channels  [v, 1 − v]
    BcosConv3×3(2→w)   BcosConv3×3(w→w)         28×28
    AvgPool 2                                   14×14
    BcosConv3×3(w→2w)  BcosConv3×3(2w→2w)       14×14
    AvgPool 2                                   7×7
    BcosConv3×3(2w→4w)                          7×7
    BcosConv1×1(4w→K)  (the classifier, applied per location)
    global average pool → LogitLayer(T, b)

Every conv uses MaxOut 2 and the v1 output scale ``γ = scale/sqrt(k²·C_in)`` with
``scale`` = 100 (without it the signal decays ~1e-8 over the 6 layers); temperature
T = 1 (logits are O(1) at initialisation for width 16); the logit bias is
``log(1/K / (1 − 1/K))`` = ``log(0.1/0.9)`` for K = 10 as in the CIFAR-10 v1 preset.

``standard_fmnist_bcos`` is the conventional twin: the same layout with
``nn.Conv2d`` + BatchNorm + ReLU, max pooling and a bias in the classifier.
"""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor, nn

from ..nn import AvgPool2d
from ._common import bcos_conv_factory, resolve_options
from .base import BcosClassifier, StandardClassifierMixin
from .registry import register_model

__all__ = ["FMNISTBcosNet", "FMNISTStandardNet", "fmnist_bcos", "standard_fmnist_bcos"]


class FMNISTBcosNet(BcosClassifier):
    """B-cos network for N×C×28×28 images in [0, 1] (any H, W ≥ 4 work: the
    head is a global average pool).  Output: N×num_classes logits."""

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        *,
        width: int = 16,
        b: float = 2.0,
        max_out: int = 2,
        scale: float = 100.0,
        temperature: float = 1.0,
        logit_bias: float | None = None,
    ) -> None:
        super().__init__(num_classes=num_classes, in_channels=in_channels, min_size=(4, 4),
                         name="fmnist_bcos")
        if logit_bias is None:
            logit_bias = math.log(1.0 / num_classes / (1.0 - 1.0 / num_classes)) if (
                num_classes > 1
            ) else 0.0
        enc = 2 * in_channels
        w1, w2, w3 = width, 2 * width, 4 * width
        factory = bcos_conv_factory(b=b, max_out=max_out, scale=scale)

        def conv(cin: int, cout: int, k: int = 3, **kw: Any) -> nn.Module:
            return factory(cin, cout, k, padding=k // 2, **kw)

        self.features = nn.Sequential(
            conv(enc, w1),
            conv(w1, w1),
            AvgPool2d(2),
            conv(w1, w2),
            conv(w2, w2),
            AvgPool2d(2),
            conv(w2, w3),
        )
        self.num_features = w3
        self._set_head(conv(w3, num_classes, k=1, max_out=1), temperature, logit_bias)


class FMNISTStandardNet(StandardClassifierMixin, nn.Module):
    """Conventional twin of :class:`FMNISTBcosNet`: Conv-BN-ReLU blocks, max
    pooling, a biased 1×1 classifier and global average pooling.  Takes raw
    images in [0, 1] and centres them itself (``(x − 0.5) / 0.5``)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, *, width: int = 16) -> None:
        super().__init__()
        w1, w2, w3 = width, 2 * width, 4 * width

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                    nn.ReLU(inplace=True)]

        self.features = nn.Sequential(
            *block(in_channels, w1),
            *block(w1, w1),
            nn.MaxPool2d(2),
            *block(w1, w2),
            *block(w2, w2),
            nn.MaxPool2d(2),
            *block(w2, w3),
        )
        self.classifier = nn.Conv2d(w3, num_classes, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        # checks the images, then (x − 0.5) / 0.5 (non-persistent buffers)
        self._set_input(in_channels, (4, 4), (0.5,) * in_channels, (0.5,) * in_channels,
                        "standard_fmnist_bcos")

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.classifier(self.forward_features(x))).flatten(1)


#: Default options of ``fmnist_bcos`` (see the module docstring).
BCOS_OPTIONS: dict[str, Any] = dict(
    width=16, b=2.0, max_out=2, scale=100.0, temperature=1.0, logit_bias=None
)
STANDARD_OPTIONS: dict[str, Any] = dict(width=16)
_COMMON = dict(family="small", input_size=(28, 28), min_size=(4, 4), in_channels=1,
               default_num_classes=10)


@register_model(kind="bcos", options=BCOS_OPTIONS, **_COMMON)
def fmnist_bcos(num_classes: int = 10, in_channels: int = 1, **kw: Any) -> FMNISTBcosNet:
    """B-cos network for 28×28 grey images (see :class:`FMNISTBcosNet`)."""
    return FMNISTBcosNet(num_classes, in_channels,
                         **resolve_options(BCOS_OPTIONS, kw, "fmnist_bcos"))


@register_model(kind="standard", options=STANDARD_OPTIONS, **_COMMON)
def standard_fmnist_bcos(
    num_classes: int = 10, in_channels: int = 1, **kw: Any
) -> FMNISTStandardNet:
    """Conventional twin of ``fmnist_bcos`` (same layout, Conv-BN-ReLU)."""
    return FMNISTStandardNet(num_classes, in_channels,
                             **resolve_options(STANDARD_OPTIONS, kw, "standard_fmnist_bcos"))
