"""B-cos VGG-11/13/16/19 (v1 and v2 style) and their conventional twins.

v1 (``vgg11`` ... ``vgg19``, the paper's B-cos VGG-11): every 3×3 conv is a
B-cos conv (B = 2, 2 MaxOut units, output scale ``γ = s/√(k²·C_in)`` with
s = 1000); max-pooling becomes 2×2 average pooling; the fully connected head
becomes B-cos convs applied per location — 7×7 (padding 3) 512→4096, 1×1
4096→4096, 1×1 4096→C — followed by global average pooling and
``logits = out / T + b`` with ``log10 T = −1`` and ``b = log(0.01/0.99)``.
No ReLU, dropout, BatchNorm or biases.  With MaxOut the v1 VGG-11 has ≈ 265 M
parameters (the 7×7 head conv alone ≈ 206 M); ``hidden_features`` shrinks the
head.

v2 (``vgg11_bnu_v2`` ...): B = 2, no MaxOut, no scale, bias-free uncentred
batch norm after every feature conv, ``T = 1``, ``b = −log(C − 1)``; module
names mirror the ``bcos`` package's ``vgg11_bnu`` (``features.<i>``,
``classifier.<i>``, ``logit_layer``).

Twins (``standard_vgg11`` ...): torchvision's VGG (max-pooling, ReLU, dropout,
biases) with an ``ImageNormalize`` first step.

Shapes: ``N×in_channels×H×W`` images in [0, 1] (native 224×224, at least
32×32) → ``N×num_classes``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torchvision.models as tvm
from torch import nn

from ._common import BcosPolicy, bcos_policy, bcos_v2_release, make_conv_stack, resolve_options
from .base import BcosClassifier, StandardClassifierMixin
from .registry import Weights, register_model, register_weights_table

__all__ = ["BcosVGG", "StandardVGG", "VGG_CFGS", "WEIGHTS"]

#: Feature configurations (torchvision's "A", "B", "D", "E"); "M" = 2×2 pooling.
VGG_CFGS: dict[int, list[int | str]] = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
         512, 512, 512, "M"],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
         512, 512, 512, 512, "M"],
}
_MIN_SIZE = (32, 32)  # five 2×2 poolings

#: Default options: v1 ImageNet constants (docs/protocol.md §1 / supplement C.1.2: s = 1000,
#: log10 T = −1, MaxOut 2) and v2 (uncentred BN, no MaxOut/scale, T = 1).
V1_OPTIONS: dict[str, Any] = dict(
    b=2.0, max_out=2, scale=1000.0, temperature=0.1, logit_bias=None, cos_eps=0.0,
    hidden_features=4096,
)
V2_OPTIONS: dict[str, Any] = dict(
    b=2.0, max_out=1, norm="bnu", temperature=1.0, logit_bias=None, hidden_features=4096
)
STANDARD_OPTIONS: dict[str, Any] = dict(mean=None, std=None)
_COMMON = dict(family="vgg", input_size=(224, 224), min_size=_MIN_SIZE)


class BcosVGG(BcosClassifier):
    """A B-cos VGG: ``encoding`` → ``features`` → ``classifier`` (three B-cos convs)
    → global average pooling → ``logit_layer``.

    Args:
        cfg: a :data:`VGG_CFGS` entry.
        num_classes, in_channels: outputs and raw image channels.
        policy: the layers' policy (:func:`~bcosnet.models._common.bcos_policy`): conv factory
            (B, MaxOut, scale), norm (``None`` v1, ``"bnu"`` v2), temperature and logit bias.
        hidden_features: width of the two hidden head convs (4096 as in VGG).
        name: for error messages.
    """

    def __init__(
        self,
        cfg: Sequence[int | str],
        num_classes: int = 1000,
        in_channels: int = 3,
        *,
        policy: BcosPolicy,
        hidden_features: int = 4096,
        name: str = "vgg",
    ) -> None:
        super().__init__(num_classes=num_classes, in_channels=in_channels, min_size=_MIN_SIZE,
                         name=name)
        conv = policy.conv
        # "M": the original's max-pool becomes average pooling (dynamic linear).
        self.features, c = make_conv_stack(policy, 2 * in_channels, cfg)
        self.num_features = c
        # VGG's fully connected head as convolutions applied per location.
        head = nn.Sequential(
            conv(c, hidden_features, 7, 1, 3),
            conv(hidden_features, hidden_features, 1),
            conv(hidden_features, num_classes, 1),
        )
        self._set_head(head, policy.temperature, policy.logit_bias)


class StandardVGG(StandardClassifierMixin, tvm.VGG):
    """torchvision's VGG taking images in [0, 1] (``normalize`` first)."""

    def __init__(
        self,
        cfg: Sequence[int | str],
        num_classes: int = 1000,
        in_channels: int = 3,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        batch_norm: bool = False,
        name: str = "standard_vgg",
    ) -> None:
        features = tvm.vgg.make_layers(list(cfg), batch_norm=batch_norm)
        if in_channels != 3:
            first = features[0]
            features[0] = nn.Conv2d(in_channels, first.out_channels, 3, padding=1)
        super().__init__(features, num_classes=num_classes)
        self._set_input(in_channels, _MIN_SIZE, mean, std, name)


#: Released weights of this family, registered with the models below: the B-cos v2
#: release's ImageNet VGG-11 with uncentred batch norm (top-1 as reported).
WEIGHTS: dict[str, list[Weights]] = {
    "vgg11_bnu_v2": [bcos_v2_release("vgg_11_bnu-34036029f0.pth", top1=69.310)],
}
register_weights_table(WEIGHTS)


def _create(
    depth: int, variant: str, num_classes: int = 1000, in_channels: int = 3, **options: Any
) -> nn.Module:
    """Build VGG-``depth`` of ``variant`` ("v1", "v2" or "standard")."""
    cfg = VGG_CFGS[depth]
    name = {"v1": f"vgg{depth}", "v2": f"vgg{depth}_bnu_v2",
            "standard": f"standard_vgg{depth}"}[variant]
    if variant == "standard":
        o = resolve_options(STANDARD_OPTIONS, options, name)
        return StandardVGG(cfg, num_classes, in_channels, o["mean"], o["std"], name=name)
    p = bcos_policy(variant, V1_OPTIONS if variant == "v1" else V2_OPTIONS, options,
                    name=name, num_classes=num_classes)
    return BcosVGG(
        cfg, num_classes, in_channels, policy=p, hidden_features=p.options["hidden_features"],
        name=name,
    )


# The paper's (v1) B-cos VGGs.
@register_model(kind="bcos", options=V1_OPTIONS, **_COMMON)
def vgg11(**kw: Any) -> BcosVGG:
    """B-cos VGG-11, v1 (paper) style; see the module docstring."""
    return _create(11, "v1", **kw)


@register_model(kind="bcos", options=V1_OPTIONS, **_COMMON)
def vgg13(**kw: Any) -> BcosVGG:
    """B-cos VGG-13, v1 (paper) style."""
    return _create(13, "v1", **kw)


@register_model(kind="bcos", options=V1_OPTIONS, **_COMMON)
def vgg16(**kw: Any) -> BcosVGG:
    """B-cos VGG-16, v1 (paper) style."""
    return _create(16, "v1", **kw)


@register_model(kind="bcos", options=V1_OPTIONS, **_COMMON)
def vgg19(**kw: Any) -> BcosVGG:
    """B-cos VGG-19, v1 (paper) style."""
    return _create(19, "v1", **kw)


# B-cos v2 VGGs with uncentred batch norm (the `bcos` package's vgg*_bnu).
@register_model(kind="bcos_v2", options=V2_OPTIONS, **_COMMON)
def vgg11_bnu_v2(**kw: Any) -> BcosVGG:
    """B-cos VGG-11 with uncentred batch norm, v2 style."""
    return _create(11, "v2", **kw)


@register_model(kind="bcos_v2", options=V2_OPTIONS, **_COMMON)
def vgg13_bnu_v2(**kw: Any) -> BcosVGG:
    """B-cos VGG-13 with uncentred batch norm, v2 style."""
    return _create(13, "v2", **kw)


@register_model(kind="bcos_v2", options=V2_OPTIONS, **_COMMON)
def vgg16_bnu_v2(**kw: Any) -> BcosVGG:
    """B-cos VGG-16 with uncentred batch norm, v2 style."""
    return _create(16, "v2", **kw)


@register_model(kind="bcos_v2", options=V2_OPTIONS, **_COMMON)
def vgg19_bnu_v2(**kw: Any) -> BcosVGG:
    """B-cos VGG-19 with uncentred batch norm, v2 style."""
    return _create(19, "v2", **kw)


# Conventional twins: torchvision's VGGs taking images in [0, 1].
@register_model(kind="standard", options=STANDARD_OPTIONS, **_COMMON)
def standard_vgg11(**kw: Any) -> StandardVGG:
    """torchvision's VGG-11 taking images in [0, 1]."""
    return _create(11, "standard", **kw)


@register_model(kind="standard", options=STANDARD_OPTIONS, **_COMMON)
def standard_vgg13(**kw: Any) -> StandardVGG:
    """torchvision's VGG-13 taking images in [0, 1]."""
    return _create(13, "standard", **kw)


@register_model(kind="standard", options=STANDARD_OPTIONS, **_COMMON)
def standard_vgg16(**kw: Any) -> StandardVGG:
    """torchvision's VGG-16 taking images in [0, 1]."""
    return _create(16, "standard", **kw)


@register_model(kind="standard", options=STANDARD_OPTIONS, **_COMMON)
def standard_vgg19(**kw: Any) -> StandardVGG:
    """torchvision's VGG-19 taking images in [0, 1]."""
    return _create(19, "standard", **kw)

