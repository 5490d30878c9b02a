"""B-cos DenseNets (121/161/169/201), v1 and v2 style, and their conventional twins.

Layout (DenseNet-BC, Huang et al. 2017), changed as in the B-cos papers::

    AddInverse(in_channels)                          RGB → 6 channels [x, 1 − x]
    conv0  BcosConv7×7/2 (6 → F0)   [norm0]          H/2
    pool0  AvgPool3×3/2  (max-pool in the original)  H/4
    denseblock1..4: layer l: [norm1] BcosConv1×1 (C → bn·g) [norm2] BcosConv3×3 (bn·g → g),
                    output concatenated to its input (C grows by g per layer)
    transition1..3: [norm] BcosConv1×1 (C → C/2), AvgPool2×2/2
    [norm5]
    classifier  BcosConv1×1 (C → K), applied per location
    global average pool → LogitLayer: logits = out / T + b

* ``kind="bcos"`` (``densenet121`` ...; CVPR 2022, supplement C.1.2): no norm
  layers (the bracketed slots are parameter-free ``nn.Identity``), MaxOut with
  ``max_out`` units in *every* B-cos conv (conv0 and the classifier included;
  default 2 as in Fig. B3/Tab. B1), output scale ``γ = s/sqrt(k²·C_in)`` with
  s = 100, ``log10 T = −3``, ``b = log(p/(1 − p))`` with ``p = max(1/K, 0.01)``
  (``log(0.01/0.99)`` for ImageNet).  The stem keeps ``F0 = 64`` features (96
  for DenseNet-161) whatever the growth rate g: with that, the parameter counts
  of Tab. B1 are reproduced (see ``tests/models/test_densenet.py``).
* ``kind="bcos_v2"`` (``densenet121_v2`` ...; the ``bcos`` package's released
  ImageNet models): B = 2, no MaxOut, no scale, bias-free *uncentred* batch norm
  in the bracketed places, T = 1, ``b = −log(K − 1)``.  Module names mirror the
  ``bcos`` package, so its checkpoints load after renaming ``*.linear.weight``
  → ``*.weight``.
* ``kind="standard"`` (``standard_densenet121`` ...): torchvision's DenseNet,
  taking images in [0, 1] and normalising them with the ImageNet statistics.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
import torchvision.models as tvm
from torch import Tensor, nn

from .._utils.validate import check_int
from ..nn import AvgPool2d
from ._common import (
    BcosPolicy,
    ConvFactory,
    bcos_policy,
    bcos_v2_release,
    make_norm,
    resolve_options,
)
from .base import BcosClassifier, StandardClassifierMixin
from .registry import Weights, register_model, register_weights_table

__all__ = ["BcosDenseNet", "StandardDenseNet", "DENSENET_CONFIGS", "DENSENET_MIN_SIZE",
           "WEIGHTS"]

#: name → (growth rate g, layers per dense block, stem features F0), as torchvision.
DENSENET_CONFIGS: dict[str, tuple[int, tuple[int, ...], int]] = {
    "densenet121": (32, (6, 12, 24, 16), 64),
    "densenet161": (48, (6, 12, 36, 24), 96),
    "densenet169": (32, (6, 12, 32, 32), 64),
    "densenet201": (32, (6, 12, 48, 32), 64),
}

#: Smallest input side for which the last feature map is still ≥ 1×1:
#: conv0 (7/2, pad 3) → pool0 (3/2, pad 1) → three 2×2/2 average pools.
DENSENET_MIN_SIZE = (29, 29)

#: Default options: v1 ImageNet constants (supplement C.1.2, Fig. B3: s = 100,
#: log10 T = −3, MaxOut 2) and v2 (uncentred BN, no MaxOut/scale, T = 1); the
#: architecture options (growth rate, blocks, stem width) come from DENSENET_CONFIGS.
V1_OPTIONS: dict[str, Any] = dict(
    b=2.0, max_out=2, scale=100.0, temperature=1e-3, logit_bias=None, cos_eps=0.0, bn_size=4
)
V2_OPTIONS: dict[str, Any] = dict(
    b=2.0, max_out=1, norm="bnu", temperature=1.0, logit_bias=None, bn_size=4
)
STANDARD_OPTIONS: dict[str, Any] = dict(mean=None, std=None, drop_rate=0.0)


def _arch_options(arch: str) -> dict[str, Any]:
    g, blocks, f0 = DENSENET_CONFIGS[arch]
    return dict(growth_rate=g, block_config=blocks, num_init_features=f0)


class _DenseLayer(nn.Module):
    """norm1 → conv1 (1×1, C → bn·g) → norm2 → conv2 (3×3, bn·g → g).

    Takes the list of all earlier feature maps of the block (concatenated here,
    as in torchvision and ``bcos``)."""

    def __init__(
        self, num_input_features: int, growth_rate: int, bn_size: int, conv: ConvFactory,
        norm: str | None,
    ) -> None:
        super().__init__()
        mid = bn_size * growth_rate
        self.norm1 = make_norm(norm, num_input_features)
        self.conv1 = conv(num_input_features, mid, 1)
        self.norm2 = make_norm(norm, mid)
        self.conv2 = conv(mid, growth_rate, 3, 1, 1)

    def forward(self, features: list[Tensor]) -> Tensor:
        x = self.conv1(self.norm1(torch.cat(features, 1)))
        return self.conv2(self.norm2(x))


class _DenseBlock(nn.ModuleDict):
    """``num_layers`` dense layers; each sees the concatenation of all earlier outputs.
    Output: ``C_in + num_layers·g`` channels."""

    def __init__(
        self, num_layers: int, num_input_features: int, bn_size: int, growth_rate: int,
        conv: ConvFactory, norm: str | None,
    ) -> None:
        super().__init__()
        for i in range(num_layers):
            self.add_module(
                f"denselayer{i + 1}",
                _DenseLayer(num_input_features + i * growth_rate, growth_rate, bn_size, conv, norm),
            )

    def forward(self, x: Tensor) -> Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class BcosDenseNet(BcosClassifier):
    """B-cos DenseNet-BC for N×in_channels×H×W images in [0, 1] (H, W ≥ 29).

    Args:
        growth_rate: g, channels added per dense layer.
        block_config: layers per dense block.
        num_init_features: channels after the stem conv (F0).
        bn_size: bottleneck width factor (the 1×1 conv outputs ``bn_size·g``).
        num_classes: K.
        in_channels: raw image channels (the encoding doubles them).
        policy: the layers' policy (:func:`~bcosnet.models._common.bcos_policy`): conv factory
            (B, MaxOut, scale), norm (``None`` v1, ``"bnu"`` v2), temperature and logit bias.
        min_size: smallest accepted (H, W).
        name: model name used in error messages.

    Output: N×K logits.  Module names (``features.conv0``, ``features.norm0``,
    ``features.denseblockI.denselayerJ.{norm1,conv1,norm2,conv2}``,
    ``features.transitionI.{norm,conv,pool}``, ``features.norm5``, ``classifier``,
    ``logit_layer``) mirror the ``bcos`` package's ``BcosDenseNet``; with
    ``norm=None`` the norm slots are parameter-free ``nn.Identity`` modules.
    """

    def __init__(
        self,
        growth_rate: int = 32,
        block_config: Sequence[int] = (6, 12, 24, 16),
        num_init_features: int = 64,
        bn_size: int = 4,
        num_classes: int = 1000,
        in_channels: int = 3,
        *,
        policy: BcosPolicy,
        min_size: tuple[int, int] = DENSENET_MIN_SIZE,
        name: str = "densenet",
    ) -> None:
        for nm, v in (("growth_rate", growth_rate), ("num_init_features", num_init_features),
                      ("bn_size", bn_size)):
            check_int(nm, v, 1)
        if len(block_config) == 0:
            raise ValueError("block_config must list the layers of at least one dense block")
        for n in block_config:
            check_int("every block_config entry (layers per dense block)", n, 1)
        super().__init__(num_classes=num_classes, in_channels=in_channels, min_size=min_size,
                         name=name)
        conv, norm = policy.conv, policy.norm
        self.features = nn.Sequential(OrderedDict([
            ("conv0", conv(2 * in_channels, num_init_features, 7, 2, 3)),
            ("norm0", make_norm(norm, num_init_features)),
            # The original's max-pool: average pooling keeps the network dynamic linear.
            ("pool0", AvgPool2d(kernel_size=3, stride=2, padding=1)),
        ]))
        c = num_init_features
        for i, n_layers in enumerate(block_config):
            self.features.add_module(
                f"denseblock{i + 1}", _DenseBlock(n_layers, c, bn_size, growth_rate, conv, norm)
            )
            c += n_layers * growth_rate
            if i != len(block_config) - 1:
                self.features.add_module(f"transition{i + 1}", nn.Sequential(OrderedDict([
                    ("norm", make_norm(norm, c)),
                    ("conv", conv(c, c // 2, 1)),
                    ("pool", AvgPool2d(kernel_size=2, stride=2)),
                ])))
                c //= 2
        self.features.add_module("norm5", make_norm(norm, c))
        self.num_features = c
        # The classifier is a 1×1 B-cos conv applied at every location, pooled afterwards.
        self._set_head(conv(c, num_classes, 1), policy.temperature, policy.logit_bias)


class StandardDenseNet(StandardClassifierMixin, tvm.DenseNet):
    """torchvision's DenseNet taking images in [0, 1]: ``normalize`` then the usual
    forward (BatchNorm, ReLU, max-pooling, linear classifier with bias).

    ``in_channels != 3`` replaces the stem conv; everything else (and the state
    dict keys) is torchvision's.
    """

    def __init__(
        self,
        growth_rate: int,
        block_config: Sequence[int],
        num_init_features: int,
        num_classes: int = 1000,
        in_channels: int = 3,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        drop_rate: float = 0.0,
        min_size: tuple[int, int] = DENSENET_MIN_SIZE,
        name: str = "standard_densenet",
    ) -> None:
        super().__init__(growth_rate, tuple(block_config), num_init_features,
                         drop_rate=drop_rate, num_classes=num_classes)
        if in_channels != 3:
            self.features.conv0 = nn.Conv2d(
                in_channels, num_init_features, kernel_size=7, stride=2, padding=3, bias=False
            )
            nn.init.kaiming_normal_(self.features.conv0.weight)
        self._set_input(in_channels, min_size, mean, std, name)


# ----------------------------------------------------------------------------- registry
_COMMON = dict(family="densenet", input_size=(224, 224), min_size=DENSENET_MIN_SIZE)

#: Released weights of this family, registered with the models below: the B-cos v2
#: release's ImageNet DenseNets (depth, the file's SHA-256 prefix, reported top-1 %).
WEIGHTS: dict[str, list[Weights]] = {
    f"densenet{depth}_v2": [bcos_v2_release(f"densenet_{depth}-{sha}.pth", top1=top1)]
    for depth, sha, top1 in ((121, "b8daf96afb", 73.612), (161, "9e9ea51353", 76.622),
                             (169, "7037ee0604", 75.186), (201, "00ac87066f", 75.480))}
register_weights_table(WEIGHTS)


def _v1(arch: str) -> dict[str, Any]:
    return {**_arch_options(arch), **V1_OPTIONS}


def _v2(arch: str) -> dict[str, Any]:
    return {**_arch_options(arch), **V2_OPTIONS}


def _standard(arch: str) -> dict[str, Any]:
    return {**_arch_options(arch), **STANDARD_OPTIONS}


def _create(
    arch: str, variant: str, num_classes: int = 1000, in_channels: int = 3, **options: Any
) -> nn.Module:
    """Build ``arch`` (a DENSENET_CONFIGS key) of ``variant`` ("v1", "v2", "standard")."""
    name = {"v1": arch, "v2": f"{arch}_v2", "standard": f"standard_{arch}"}[variant]
    if variant == "standard":
        o = resolve_options(_standard(arch), options, name)
        return StandardDenseNet(
            o["growth_rate"], o["block_config"], o["num_init_features"], num_classes,
            in_channels, o["mean"], o["std"], drop_rate=o["drop_rate"], name=name,
        )
    defaults = _v1(arch) if variant == "v1" else _v2(arch)
    p = bcos_policy(variant, defaults, options, name=name, num_classes=num_classes)
    o = p.options
    return BcosDenseNet(
        o["growth_rate"], o["block_config"], o["num_init_features"], o["bn_size"], num_classes,
        in_channels, policy=p, name=name,
    )


# The paper's (v1) B-cos DenseNets: no norms, MaxOut 2, s = 100, log10 T = −3.
@register_model(kind="bcos", options=_v1("densenet121"), **_COMMON)
def densenet121(**kw: Any) -> BcosDenseNet:
    """B-cos DenseNet-121, v1 (paper) style; see the module docstring."""
    return _create("densenet121", "v1", **kw)


@register_model(kind="bcos", options=_v1("densenet161"), **_COMMON)
def densenet161(**kw: Any) -> BcosDenseNet:
    """B-cos DenseNet-161, v1 (paper) style."""
    return _create("densenet161", "v1", **kw)


@register_model(kind="bcos", options=_v1("densenet169"), **_COMMON)
def densenet169(**kw: Any) -> BcosDenseNet:
    """B-cos DenseNet-169, v1 (paper) style."""
    return _create("densenet169", "v1", **kw)


@register_model(kind="bcos", options=_v1("densenet201"), **_COMMON)
def densenet201(**kw: Any) -> BcosDenseNet:
    """B-cos DenseNet-201, v1 (paper) style."""
    return _create("densenet201", "v1", **kw)


# B-cos v2 DenseNets (uncentred BN, B = 2, no MaxOut).
@register_model(kind="bcos_v2", options=_v2("densenet121"), **_COMMON)
def densenet121_v2(**kw: Any) -> BcosDenseNet:
    """B-cos DenseNet-121, v2 style."""
    return _create("densenet121", "v2", **kw)


@register_model(kind="bcos_v2", options=_v2("densenet161"), **_COMMON)
def densenet161_v2(**kw: Any) -> BcosDenseNet:
    """B-cos DenseNet-161, v2 style."""
    return _create("densenet161", "v2", **kw)


@register_model(kind="bcos_v2", options=_v2("densenet169"), **_COMMON)
def densenet169_v2(**kw: Any) -> BcosDenseNet:
    """B-cos DenseNet-169, v2 style."""
    return _create("densenet169", "v2", **kw)


@register_model(kind="bcos_v2", options=_v2("densenet201"), **_COMMON)
def densenet201_v2(**kw: Any) -> BcosDenseNet:
    """B-cos DenseNet-201, v2 style."""
    return _create("densenet201", "v2", **kw)


# Conventional twins: torchvision's DenseNets taking images in [0, 1].
@register_model(kind="standard", options=_standard("densenet121"), **_COMMON)
def standard_densenet121(**kw: Any) -> StandardDenseNet:
    """torchvision's DenseNet-121 taking images in [0, 1]."""
    return _create("densenet121", "standard", **kw)


@register_model(kind="standard", options=_standard("densenet161"), **_COMMON)
def standard_densenet161(**kw: Any) -> StandardDenseNet:
    """torchvision's DenseNet-161 taking images in [0, 1]."""
    return _create("densenet161", "standard", **kw)


@register_model(kind="standard", options=_standard("densenet169"), **_COMMON)
def standard_densenet169(**kw: Any) -> StandardDenseNet:
    """torchvision's DenseNet-169 taking images in [0, 1]."""
    return _create("densenet169", "standard", **kw)


@register_model(kind="standard", options=_standard("densenet201"), **_COMMON)
def standard_densenet201(**kw: Any) -> StandardDenseNet:
    """torchvision's DenseNet-201 taking images in [0, 1]."""
    return _create("densenet201", "standard", **kw)

