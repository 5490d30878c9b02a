"""CIFAR-10 networks: the paper's 9-layer B-cos net and CIFAR ResNet-20/56.

``cifar_bcos`` is the fully convolutional network of the v1 CIFAR-10
experiments (B-cos v1 repository, ``experiments/CIFAR10``): eight 3×3 B-cos
convs with 64, 64, 128, 128, 128, 256, 256, 256 channels (stride 2 at the 3rd
and 6th), a 1×1 B-cos classifier conv, global average pooling and the logit
layer.  Every layer has 2 MaxOut units and the fixed output scale
``log10 γ = 1.5·B − 1.75``; the temperature follows the paper's table
(``log10 T = −3, −3, −2, 1, 2, 2, 3`` for ``B = 1 ... 2.5``, see
:func:`~bcosnet.models._common.cifar_v1_temperature`) and the logit bias is
``log(0.1/0.9)`` for 10 classes.  All of these are builder options.

``cifar_resnet20`` / ``cifar_resnet56``: the CIFAR ResNets (3×3 stem, no
pooling, 16-32-64 channels, 3 stages of 3 or 9 basic blocks) as B-cos networks.
The paper has no v1 constants for them; they use 2 MaxOut units, the v1
per-layer scale ``γ = s/√(k²·C_in)`` with s = 25 and T = 1 (chosen here so that
the logits of a freshly initialised model are of order 0.1–1 on random images;
s = 100, the ImageNet ResNet value, makes them explode to 1e3–1e5 at these
widths) and the CIFAR logit bias.

``*_v2``: B = 2, no MaxOut, bias-free uncentred batch norm after every conv but
the classifier, ``T = 1``, ``b = −log(C − 1)`` (``cifar_resnet20_v2`` mirrors the
``bcos`` package's ``cifar10_resnet20`` with that norm).

``standard_*``: conventional twins (ReLU, BatchNorm, biases), normalising with
the CIFAR-10 statistics.

Shapes: ``N×in_channels×H×W`` images in [0, 1] (native 32×32) → ``N×num_classes``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torchvision.models as tvm
from torch import Tensor, nn

from ._common import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    BcosPolicy,
    bcos_policy,
    cifar_v1_scale,
    cifar_v1_temperature,
    make_conv_stack,
    resolve_options,
)
from .base import BcosClassifier, StandardClassifierMixin
from .registry import register_model
from .resnet import BasicBlock, BcosResNet

__all__ = ["CifarBcosNet", "StandardCifarNet", "StandardCifarResNet", "CIFAR_BCOS_LAYERS"]

#: (out_channels, stride) of the eight 3×3 convs of the paper's CIFAR-10 network.
CIFAR_BCOS_LAYERS: tuple[tuple[int, int], ...] = (
    (64, 1), (64, 1), (128, 2), (128, 1), (128, 1), (256, 2), (256, 1), (256, 1),
)
_MIN_SIZE = (8, 8)
_INPUT = (32, 32)
_CIFAR_CLASSES = 10


def _cifar_stats(
    in_channels: int, mean: Sequence[float] | None, std: Sequence[float] | None
) -> tuple[Sequence[float] | None, Sequence[float] | None]:
    """The twins' normalisation: CIFAR-10 statistics for RGB unless given."""
    if mean is None and std is None and in_channels == 3:
        return CIFAR10_MEAN, CIFAR10_STD
    return mean, std


class CifarBcosNet(BcosClassifier):
    """The paper's 9-layer CIFAR-10 B-cos network (optionally with v2 norms).

    Modules: ``encoding`` (AddInverse), ``features`` (convs, each followed by a
    norm when ``norm="bnu"``), ``classifier`` (1×1 B-cos conv), ``avgpool``,
    ``logit_layer``.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        *,
        policy: BcosPolicy,
        layers: Sequence[tuple[int, int]] = CIFAR_BCOS_LAYERS,
        name: str = "cifar_bcos",
    ) -> None:
        super().__init__(num_classes=num_classes, in_channels=in_channels, min_size=_MIN_SIZE,
                         name=name)
        self.features, c = make_conv_stack(policy, 2 * in_channels, layers)
        self.num_features = c
        self._set_head(policy.conv(c, num_classes, 1), policy.temperature, policy.logit_bias)


class StandardCifarNet(StandardClassifierMixin, nn.Module):
    """Conventional twin of :class:`CifarBcosNet`: conv–BN–ReLU ×8, 1×1 conv, pooling."""

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        layers: Sequence[tuple[int, int]] = CIFAR_BCOS_LAYERS,
        name: str = "standard_cifar_bcos",
    ) -> None:
        super().__init__()
        self._set_input(in_channels, _MIN_SIZE, *_cifar_stats(in_channels, mean, std), name)
        mods: list[nn.Module] = []
        c = in_channels
        for out_c, stride in layers:
            mods += [
                nn.Conv2d(c, out_c, 3, stride, 1, bias=False),
                nn.BatchNorm2d(out_c),
                nn.ReLU(inplace=True),
            ]
            c = out_c
        self.features = nn.Sequential(*mods)
        self.classifier = nn.Conv2d(c, num_classes, 1)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.avgpool(self.classifier(self.forward_features(x))).flatten(1)


class StandardCifarResNet(StandardClassifierMixin, nn.Module):
    """Conventional CIFAR ResNet (He et al. 2016, option-B shortcuts) built from
    torchvision's ``BasicBlock``: 3×3 stem, stages of 16/32/64 channels, global
    pooling, linear classifier."""

    def __init__(
        self,
        layers: Sequence[int],
        num_classes: int = 10,
        in_channels: int = 3,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        name: str = "standard_cifar_resnet",
    ) -> None:
        super().__init__()
        self._set_input(in_channels, _MIN_SIZE, *_cifar_stats(in_channels, mean, std), name,
                        last_feature_layer="layer3")
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        inplanes = 16
        stages = []
        for i, n in enumerate(layers):
            planes = 16 * 2**i
            stride = 1 if i == 0 else 2
            blocks = []
            for j in range(n):
                down = None
                if j == 0 and (stride != 1 or inplanes != planes):
                    down = nn.Sequential(
                        nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
                    )
                blocks.append(tvm.resnet.BasicBlock(inplanes, planes, stride if j == 0 else 1,
                                                    down))
                inplanes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(inplanes, num_classes)
        self.classifier_name = "fc"
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: Tensor) -> Tensor:
        """Images in [0, 1] → the last feature map (``layer3``'s output)."""
        x = self.relu(self.bn1(self.conv1(self.normalize(x))))
        return self.layer3(self.layer2(self.layer1(x)))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.avgpool(self.forward_features(x)).flatten(1))


# ----------------------------------------------------------------------------- registry
_COMMON = dict(
    family="cifar", input_size=_INPUT, min_size=_MIN_SIZE, default_num_classes=_CIFAR_CLASSES
)


#: Default options.  cifar_bcos v1: ``scale=None`` → the fixed γ = 10**(1.5·B − 1.75)
#: and ``temperature=None`` → the paper's T for B (supplement C.1.1); the logit bias
#: log(0.1/0.9) for 10 classes.  CIFAR ResNets v1: MaxOut 2, γ = s/√(k²·C_in) with
#: s = 25 and T = 1 (not from the paper; see the module docstring).
CIFAR_BCOS_V1_OPTIONS: dict[str, Any] = dict(
    b=2.0, max_out=2, scale=None, temperature=None, logit_bias=None, cos_eps=0.0
)
CIFAR_RESNET_V1_OPTIONS: dict[str, Any] = dict(
    b=2.0, max_out=2, scale=25.0, temperature=1.0, logit_bias=None, cos_eps=0.0
)
V2_OPTIONS: dict[str, Any] = dict(b=2.0, max_out=1, norm="bnu", temperature=1.0,
                                  logit_bias=None)
STANDARD_OPTIONS: dict[str, Any] = dict(mean=None, std=None)
_CIFAR_RESNETS = {20: 3, 56: 9}


def _create_cifar_bcos(
    variant: str, num_classes: int = _CIFAR_CLASSES, in_channels: int = 3, **options: Any
) -> nn.Module:
    """The 9-layer CIFAR net of ``variant`` ("v1", "v2" or "standard")."""
    name = {"v1": "cifar_bcos", "v2": "cifar_bcos_v2", "standard": "standard_cifar_bcos"}[variant]
    if variant == "standard":
        o = resolve_options(STANDARD_OPTIONS, options, name)
        return StandardCifarNet(num_classes, in_channels, o["mean"], o["std"], name=name)
    if variant == "v1":
        o = resolve_options(CIFAR_BCOS_V1_OPTIONS, options, name)
        if o["scale"] is None:
            o["scale"] = cifar_v1_scale(o["b"])
        if o["temperature"] is None:
            o["temperature"] = cifar_v1_temperature(o["b"])
        p = bcos_policy("v1", o, {}, name=name, num_classes=num_classes, scale_mode="fixed")
    else:
        p = bcos_policy("v2", V2_OPTIONS, options, name=name, num_classes=num_classes)
    return CifarBcosNet(num_classes, in_channels, policy=p, name=name)


def _create_cifar_resnet(
    depth: int, variant: str, num_classes: int = _CIFAR_CLASSES, in_channels: int = 3,
    **options: Any,
) -> nn.Module:
    """CIFAR ResNet-``depth`` of ``variant`` ("v1", "v2" or "standard")."""
    layers = [_CIFAR_RESNETS[depth]] * 3
    name = {"v1": f"cifar_resnet{depth}", "v2": f"cifar_resnet{depth}_v2",
            "standard": f"standard_cifar_resnet{depth}"}[variant]
    if variant == "standard":
        o = resolve_options(STANDARD_OPTIONS, options, name)
        return StandardCifarResNet(layers, num_classes, in_channels, o["mean"], o["std"],
                                   name=name)
    p = bcos_policy(variant, CIFAR_RESNET_V1_OPTIONS if variant == "v1" else V2_OPTIONS,
                    options, name=name, num_classes=num_classes)
    return BcosResNet(
        BasicBlock, layers, num_classes, in_channels, policy=p, inplanes=16, small_inputs=True,
        min_size=_MIN_SIZE, name=name,
    )


@register_model(kind="bcos", options=CIFAR_BCOS_V1_OPTIONS, **_COMMON)
def cifar_bcos(**kw: Any) -> CifarBcosNet:
    """The paper's 9-layer CIFAR-10 B-cos network (v1); see the module docstring."""
    return _create_cifar_bcos("v1", **kw)


@register_model(kind="bcos_v2", options=V2_OPTIONS, **_COMMON)
def cifar_bcos_v2(**kw: Any) -> CifarBcosNet:
    """The 9-layer CIFAR network, v2 style (uncentred BN, no scale, ``b = −log(C−1)``)."""
    return _create_cifar_bcos("v2", **kw)


@register_model(kind="standard", options=STANDARD_OPTIONS, **_COMMON)
def standard_cifar_bcos(**kw: Any) -> StandardCifarNet:
    """Conventional twin of ``cifar_bcos`` (conv–BN–ReLU, biases in the classifier)."""
    return _create_cifar_bcos("standard", **kw)


@register_model(kind="bcos", options=CIFAR_RESNET_V1_OPTIONS, **_COMMON)
def cifar_resnet20(**kw: Any) -> BcosResNet:
    """B-cos CIFAR ResNet-20, v1 style (MaxOut 2, s = 25, T = 1)."""
    return _create_cifar_resnet(20, "v1", **kw)


@register_model(kind="bcos", options=CIFAR_RESNET_V1_OPTIONS, **_COMMON)
def cifar_resnet56(**kw: Any) -> BcosResNet:
    """B-cos CIFAR ResNet-56, v1 style (MaxOut 2, s = 25, T = 1)."""
    return _create_cifar_resnet(56, "v1", **kw)


@register_model(kind="bcos_v2", options=V2_OPTIONS, **_COMMON)
def cifar_resnet20_v2(**kw: Any) -> BcosResNet:
    """B-cos CIFAR ResNet-20, v2 style (uncentred BN, B = 2)."""
    return _create_cifar_resnet(20, "v2", **kw)


@register_model(kind="bcos_v2", options=V2_OPTIONS, **_COMMON)
def cifar_resnet56_v2(**kw: Any) -> BcosResNet:
    """B-cos CIFAR ResNet-56, v2 style (uncentred BN, B = 2)."""
    return _create_cifar_resnet(56, "v2", **kw)


@register_model(kind="standard", options=STANDARD_OPTIONS, **_COMMON)
def standard_cifar_resnet20(**kw: Any) -> StandardCifarResNet:
    """Conventional CIFAR ResNet-20 taking images in [0, 1]."""
    return _create_cifar_resnet(20, "standard", **kw)


@register_model(kind="standard", options=STANDARD_OPTIONS, **_COMMON)
def standard_cifar_resnet56(**kw: Any) -> StandardCifarResNet:
    """Conventional CIFAR ResNet-56 taking images in [0, 1]."""
    return _create_cifar_resnet(56, "standard", **kw)
