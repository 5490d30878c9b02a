"""B-cos ResNets (v1 and v2 style) and their conventional twins.

v1 (CVPR 2022, names ``resnet18`` ... ``resnet152``): every conv is a B-cos conv
with B = 2 and 2 MaxOut units, its output scaled by ``γ = s/√(k²·C_in)`` with
s = 100; no ReLU, no BatchNorm, no biases; the stem's max-pool becomes an
average pool; the classifier is a 1×1 B-cos conv applied per location *before*
global average pooling; ``logits = out / T + b`` with ``log10 T = 1`` and
``b = log(0.01/0.99)`` for ImageNet.

v2 (``resnet18_v2`` ...): B = 2, no MaxOut, no scale, bias-free uncentred batch
norm after every conv, ``T = 1``, ``b = −log(C − 1)``.  Module names mirror the
``bcos`` package's models exactly, so :func:`bcosnet.models.load_bcos_v2` maps
their checkpoints one to one.

Twins (``standard_resnet18`` ...): torchvision's ResNets (ReLU, BatchNorm,
biases, max-pooling) with an :class:`~bcosnet.models._common.ImageNormalize`
first step, so they also take images in [0, 1].

Shapes: input ``N×in_channels×H×W`` in [0, 1] → logits ``N×num_classes``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torchvision.models as tvm
from torch import Tensor, nn

from ..nn import AvgPool2d
from ._common import BcosPolicy, bcos_policy, bcos_v2_release, make_norm, resolve_options
from .base import BcosClassifier, StandardClassifierMixin
from .registry import Weights, register_model, register_weights_table

__all__ = ["BcosResNet", "BasicBlock", "Bottleneck", "StandardResNet", "WEIGHTS"]


class _ResidualBlock(nn.Module):
    """``branch(x) + shortcut(x)``: a sum of dynamic linear maps is dynamic linear,
    so no ReLU is needed.  Subclasses build ``branch`` and set ``downsample``."""

    expansion = 1
    downsample: nn.Module | None

    def branch(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return self.branch(x) + identity


class BasicBlock(_ResidualBlock):
    """Two 3×3 B-cos convs (each optionally followed by a norm) plus the shortcut."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None, *, policy: BcosPolicy) -> None:
        super().__init__()
        self.conv1 = policy.conv(inplanes, planes, 3, stride, 1)
        self.bn1 = make_norm(policy.norm, planes)
        self.conv2 = policy.conv(planes, planes, 3, 1, 1)
        self.bn2 = make_norm(policy.norm, planes)
        self.downsample = downsample

    def branch(self, x: Tensor) -> Tensor:
        return self.bn2(self.conv2(self.bn1(self.conv1(x))))


class Bottleneck(_ResidualBlock):
    """1×1 → 3×3 (strided, "ResNet v1.5") → 1×1 B-cos convs plus the shortcut."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None, *, policy: BcosPolicy) -> None:
        super().__init__()
        conv, norm, out = policy.conv, policy.norm, planes * self.expansion
        self.conv1 = conv(inplanes, planes, 1)
        self.bn1 = make_norm(norm, planes)
        self.conv2 = conv(planes, planes, 3, stride, 1)
        self.bn2 = make_norm(norm, planes)
        self.conv3 = conv(planes, out, 1)
        self.bn3 = make_norm(norm, out)
        self.downsample = downsample

    def branch(self, x: Tensor) -> Tensor:
        return self.bn3(self.conv3(self.bn2(self.conv2(self.bn1(self.conv1(x))))))


class BcosResNet(BcosClassifier):
    """A B-cos ResNet (ImageNet layout, or CIFAR layout with ``small_inputs=True``).

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        layers: blocks per stage (3 or 4 stages).
        num_classes: output count.
        in_channels: raw image channels (encoded to ``2·in_channels`` by ``AddInverse``).
        policy: the layers' policy (:func:`~bcosnet.models._common.bcos_policy`): conv factory
            (B, MaxOut, scale), norm (``None`` v1, ``"bnu"`` v2), temperature and logit bias.
        inplanes: width of the first stage (64 ImageNet, 16 CIFAR).
        small_inputs: CIFAR stem (3×3 conv, stride 1, no pooling) instead of
            the 7×7/2 conv + 3×3/2 average pool.
        min_size: smallest accepted (H, W).
        name: model name used in error messages.

    Module names (``conv1``, ``bn1``, ``pool``, ``layer1``..``layer4``, ``fc``,
    ``logit_layer``) mirror the ``bcos`` package's ``BcosResNet``.
    """

    classifier_name = "fc"

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: Sequence[int],
        num_classes: int = 1000,
        in_channels: int = 3,
        *,
        policy: BcosPolicy,
        inplanes: int = 64,
        small_inputs: bool = False,
        min_size: tuple[int, int] = (32, 32),
        name: str = "resnet",
    ) -> None:
        if len(layers) not in (3, 4):
            raise ValueError(f"layers must list 3 or 4 stages, got {list(layers)}")
        super().__init__(num_classes=num_classes, in_channels=in_channels, min_size=min_size,
                         name=name)
        conv, norm = policy.conv, policy.norm
        enc = 2 * in_channels
        if small_inputs:
            self.conv1 = conv(enc, inplanes, 3, 1, 1)
            self.pool: nn.Module = nn.Identity()
        else:
            self.conv1 = conv(enc, inplanes, 7, 2, 3)
            # The original's max-pool: average pooling keeps the network dynamic linear.
            self.pool = AvgPool2d(kernel_size=3, stride=2, padding=1)
        self.bn1 = make_norm(norm, inplanes)

        self._inplanes = inplanes
        stages = []
        for i, n_blocks in enumerate(layers):
            stages.append(
                self._make_layer(block, inplanes * 2**i, n_blocks, 1 if i == 0 else 2, policy)
            )
        self.layer1, self.layer2, self.layer3 = stages[:3]
        self.layer4 = stages[3] if len(stages) == 4 else None
        self.num_features = inplanes * 2 ** (len(layers) - 1) * block.expansion
        self._set_head(conv(self.num_features, num_classes, 1), policy.temperature,
                       policy.logit_bias)
        self.last_feature_layer = "layer4" if self.layer4 is not None else "layer3"

    def _make_layer(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        planes: int,
        blocks: int,
        stride: int,
        policy: BcosPolicy,
    ) -> nn.Sequential:
        conv, norm = policy.conv, policy.norm
        downsample = None
        if stride != 1 or self._inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv(self._inplanes, planes * block.expansion, 1, stride),
                make_norm(norm, planes * block.expansion),
            )
        mods = [block(self._inplanes, planes, stride, downsample, policy=policy)]
        self._inplanes = planes * block.expansion
        for _ in range(1, blocks):
            mods.append(block(self._inplanes, planes, policy=policy))
        return nn.Sequential(*mods)

    def forward_body(self, x: Tensor) -> Tensor:
        x = self.pool(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        if self.layer4 is not None:
            x = self.layer4(x)
        return x


class StandardResNet(StandardClassifierMixin, tvm.ResNet):
    """torchvision's ResNet taking images in [0, 1]: ``normalize`` then the usual forward.

    ``in_channels != 3`` replaces the stem conv; everything else (and the state
    dict keys) is torchvision's.
    """

    def __init__(
        self,
        block: type[tvm.resnet.BasicBlock] | type[tvm.resnet.Bottleneck],
        layers: Sequence[int],
        num_classes: int = 1000,
        in_channels: int = 3,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        min_size: tuple[int, int] = (32, 32),
        name: str = "standard_resnet",
    ) -> None:
        super().__init__(block, list(layers), num_classes=num_classes)
        if in_channels != 3:
            self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
            nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        self._set_input(in_channels, min_size, mean, std, name, last_feature_layer="layer4")

    classifier_name = "fc"

    def forward_features(self, x: Tensor) -> Tensor:
        """Images in [0, 1] → the last feature map (``layer4``'s output)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(self.normalize(x)))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


# ----------------------------------------------------------------------------- registry
_RESNET_CFGS: dict[int, tuple[type[BasicBlock] | type[Bottleneck], list[int]]] = {
    18: (BasicBlock, [2, 2, 2, 2]),
    34: (BasicBlock, [3, 4, 6, 3]),
    50: (Bottleneck, [3, 4, 6, 3]),
    101: (Bottleneck, [3, 4, 23, 3]),
    152: (Bottleneck, [3, 8, 36, 3]),
}
_TV_BLOCK = {BasicBlock: tvm.resnet.BasicBlock, Bottleneck: tvm.resnet.Bottleneck}
_MIN_SIZE = (32, 32)

#: Default options of each variant: v1 ImageNet constants (docs/protocol.md §1 / supplement
#: C.1.2: s = 100, log10 T = 1, MaxOut 2) and v2 (uncentred BN, no MaxOut/scale, T = 1).
#: ``logit_bias=None``: log(0.01/0.99)-style v1 prior / −log(C − 1) for v2.
V1_OPTIONS: dict[str, Any] = dict(
    b=2.0, max_out=2, scale=100.0, temperature=10.0, logit_bias=None, cos_eps=0.0
)
V2_OPTIONS: dict[str, Any] = dict(
    b=2.0, max_out=1, norm="bnu", temperature=1.0, logit_bias=None
)
STANDARD_OPTIONS: dict[str, Any] = dict(mean=None, std=None)
_COMMON = dict(family="resnet", input_size=(224, 224), min_size=_MIN_SIZE)

#: Released weights of this family, registered with the models below: the B-cos v2
#: release's ImageNet ResNets (depth, the file's SHA-256 prefix, reported top-1 %).
WEIGHTS: dict[str, list[Weights]] = {
    f"resnet{depth}_v2": [bcos_v2_release(f"resnet_{depth}-{sha}.pth", top1=top1)]
    for depth, sha, top1 in ((18, "68b4160fff", 68.736), (34, "a63425a03e", 72.284),
                             (50, "ead259efe4", 75.882), (101, "84c3658278", 76.532),
                             (152, "42051a77c1", 76.484))}
register_weights_table(WEIGHTS)


def _create(
    depth: int, variant: str, num_classes: int = 1000, in_channels: int = 3, **options: Any
) -> nn.Module:
    """Build ResNet-``depth`` of ``variant`` ("v1", "v2" or "standard")."""
    block, layers = _RESNET_CFGS[depth]
    name = {"v1": f"resnet{depth}", "v2": f"resnet{depth}_v2",
            "standard": f"standard_resnet{depth}"}[variant]
    if variant == "standard":
        o = resolve_options(STANDARD_OPTIONS, options, name)
        return StandardResNet(_TV_BLOCK[block], layers, num_classes, in_channels, o["mean"],
                              o["std"], min_size=_MIN_SIZE, name=name)
    p = bcos_policy(variant, V1_OPTIONS if variant == "v1" else V2_OPTIONS, options,
                    name=name, num_classes=num_classes)
    return BcosResNet(
        block, layers, num_classes, in_channels, policy=p, min_size=_MIN_SIZE, name=name,
    )


# The paper's (v1) B-cos ResNets.
@register_model(kind="bcos", options=V1_OPTIONS, **_COMMON)
def resnet18(**kw: Any) -> BcosResNet:
    """B-cos ResNet-18, v1 (paper) style; see the module docstring."""
    return _create(18, "v1", **kw)


@register_model(kind="bcos", options=V1_OPTIONS, **_COMMON)
def resnet34(**kw: Any) -> BcosResNet:
    """B-cos ResNet-34, v1 (paper) style."""
    return _create(34, "v1", **kw)


@register_model(kind="bcos", options=V1_OPTIONS, **_COMMON)
def resnet50(**kw: Any) -> BcosResNet:
    """B-cos ResNet-50, v1 (paper) style."""
    return _create(50, "v1", **kw)


@register_model(kind="bcos", options=V1_OPTIONS, **_COMMON)
def resnet101(**kw: Any) -> BcosResNet:
    """B-cos ResNet-101, v1 (paper) style."""
    return _create(101, "v1", **kw)


@register_model(kind="bcos", options=V1_OPTIONS, **_COMMON)
def resnet152(**kw: Any) -> BcosResNet:
    """B-cos ResNet-152, v1 (paper) style."""
    return _create(152, "v1", **kw)


# B-cos v2 ResNets (module names of the `bcos` package: load_bcos_v2 maps them 1:1).
@register_model(kind="bcos_v2", options=V2_OPTIONS, **_COMMON)
def resnet18_v2(**kw: Any) -> BcosResNet:
    """B-cos ResNet-18, v2 style (uncentred BN, B=2, no MaxOut)."""
    return _create(18, "v2", **kw)


@register_model(kind="bcos_v2", options=V2_OPTIONS, **_COMMON)
def resnet34_v2(**kw: Any) -> BcosResNet:
    """B-cos ResNet-34, v2 style."""
    return _create(34, "v2", **kw)


@register_model(kind="bcos_v2", options=V2_OPTIONS, **_COMMON)
def resnet50_v2(**kw: Any) -> BcosResNet:
    """B-cos ResNet-50, v2 style."""
    return _create(50, "v2", **kw)


@register_model(kind="bcos_v2", options=V2_OPTIONS, **_COMMON)
def resnet101_v2(**kw: Any) -> BcosResNet:
    """B-cos ResNet-101, v2 style."""
    return _create(101, "v2", **kw)


@register_model(kind="bcos_v2", options=V2_OPTIONS, **_COMMON)
def resnet152_v2(**kw: Any) -> BcosResNet:
    """B-cos ResNet-152, v2 style."""
    return _create(152, "v2", **kw)


# Conventional twins: torchvision's ResNets taking images in [0, 1].
@register_model(kind="standard", options=STANDARD_OPTIONS, **_COMMON)
def standard_resnet18(**kw: Any) -> StandardResNet:
    """torchvision's ResNet-18 taking images in [0, 1]."""
    return _create(18, "standard", **kw)


@register_model(kind="standard", options=STANDARD_OPTIONS, **_COMMON)
def standard_resnet34(**kw: Any) -> StandardResNet:
    """torchvision's ResNet-34 taking images in [0, 1]."""
    return _create(34, "standard", **kw)


@register_model(kind="standard", options=STANDARD_OPTIONS, **_COMMON)
def standard_resnet50(**kw: Any) -> StandardResNet:
    """torchvision's ResNet-50 taking images in [0, 1]."""
    return _create(50, "standard", **kw)


@register_model(kind="standard", options=STANDARD_OPTIONS, **_COMMON)
def standard_resnet101(**kw: Any) -> StandardResNet:
    """torchvision's ResNet-101 taking images in [0, 1]."""
    return _create(101, "standard", **kw)


@register_model(kind="standard", options=STANDARD_OPTIONS, **_COMMON)
def standard_resnet152(**kw: Any) -> StandardResNet:
    """torchvision's ResNet-152 taking images in [0, 1]."""
    return _create(152, "standard", **kw)

