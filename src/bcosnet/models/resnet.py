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

import torchvision.models as tvm
from torch import Tensor, nn

from ..nn import AddInverse, LogitLayer
from ._common import (
    ConvFactory,
    ImageNormalize,
    bcos_conv_factory,
    check_images,
    make_norm,
    v1_logit_bias,
    v2_logit_bias,
)
from .registry import register_model

__all__ = ["BcosResNet", "BasicBlock", "Bottleneck", "StandardResNet"]


class BasicBlock(nn.Module):
    """Two 3×3 B-cos convs (each optionally followed by a norm) plus the shortcut."""

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        *,
        conv: ConvFactory,
        norm: str | None = None,
    ) -> None:
        super().__init__()
        self.conv1 = conv(inplanes, planes, 3, stride, 1)
        self.bn1 = make_norm(norm, planes)
        self.conv2 = conv(planes, planes, 3, 1, 1)
        self.bn2 = make_norm(norm, planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv2(self.bn1(self.conv1(x))))
        identity = x if self.downsample is None else self.downsample(x)
        # A sum of dynamic linear maps is dynamic linear: no ReLU needed.
        return out + identity


class Bottleneck(nn.Module):
    """1×1 → 3×3 (strided, "ResNet v1.5") → 1×1 B-cos convs plus the shortcut."""

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        *,
        conv: ConvFactory,
        norm: str | None = None,
    ) -> None:
        super().__init__()
        width = planes
        self.conv1 = conv(inplanes, width, 1)
        self.bn1 = make_norm(norm, width)
        self.conv2 = conv(width, width, 3, stride, 1)
        self.bn2 = make_norm(norm, width)
        self.conv3 = conv(width, planes * self.expansion, 1)
        self.bn3 = make_norm(norm, planes * self.expansion)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn1(self.conv1(x))
        out = self.bn2(self.conv2(out))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return out + identity


class BcosResNet(nn.Module):
    """A B-cos ResNet (ImageNet layout, or CIFAR layout with ``small_inputs=True``).

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        layers: blocks per stage (3 or 4 stages).
        num_classes: output count.
        in_channels: raw image channels (encoded to ``2·in_channels`` by ``AddInverse``).
        conv: B-cos conv factory (:func:`~bcosnet.models._common.bcos_conv_factory`).
        norm: ``None`` (v1) or ``"bnu"`` (v2 uncentred batch norm).
        temperature, logit_bias: the logit layer ``out / T + b``.
        inplanes: width of the first stage (64 ImageNet, 16 CIFAR).
        small_inputs: CIFAR stem (3×3 conv, stride 1, no pooling) instead of
            the 7×7/2 conv + 3×3/2 average pool.
        min_size: smallest accepted (H, W).
        name: model name used in error messages.

    Module names (``conv1``, ``bn1``, ``pool``, ``layer1``..``layer4``, ``fc``,
    ``logit_layer``) mirror the ``bcos`` package's ``BcosResNet``.
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: Sequence[int],
        num_classes: int = 1000,
        in_channels: int = 3,
        *,
        conv: ConvFactory,
        norm: str | None = None,
        temperature: float = 1.0,
        logit_bias: float = 0.0,
        inplanes: int = 64,
        small_inputs: bool = False,
        min_size: tuple[int, int] = (32, 32),
        name: str = "resnet",
    ) -> None:
        super().__init__()
        if len(layers) not in (3, 4):
            raise ValueError(f"layers must list 3 or 4 stages, got {list(layers)}")
        self.in_channels = in_channels
        self.min_size = tuple(min_size)
        self.model_name = name
        self.num_classes = num_classes
        self.encoding = AddInverse(in_channels)
        enc = 2 * in_channels
        if small_inputs:
            self.conv1 = conv(enc, inplanes, 3, 1, 1)
            self.pool: nn.Module = nn.Identity()
        else:
            self.conv1 = conv(enc, inplanes, 7, 2, 3)
            # The original's max-pool: average pooling keeps the network dynamic linear.
            self.pool = nn.AvgPool2d(kernel_size=3, stride=2, padding=1)
        self.bn1 = make_norm(norm, inplanes)

        self._inplanes = inplanes
        stages = []
        for i, n_blocks in enumerate(layers):
            stages.append(
                self._make_layer(block, inplanes * 2**i, n_blocks, 1 if i == 0 else 2, conv, norm)
            )
        self.layer1, self.layer2, self.layer3 = stages[:3]
        self.layer4 = stages[3] if len(stages) == 4 else None
        self.num_features = inplanes * 2 ** (len(layers) - 1) * block.expansion
        self.fc = conv(self.num_features, num_classes, 1)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.logit_layer = LogitLayer(temperature=temperature, bias=logit_bias)
        #: the module whose output is the last feature map (e.g. for Grad-CAM).
        self.last_feature_layer = "layer4" if self.layer4 is not None else "layer3"

    def _make_layer(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        planes: int,
        blocks: int,
        stride: int,
        conv: ConvFactory,
        norm: str | None,
    ) -> nn.Sequential:
        downsample = None
        if stride != 1 or self._inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv(self._inplanes, planes * block.expansion, 1, stride),
                make_norm(norm, planes * block.expansion),
            )
        mods = [block(self._inplanes, planes, stride, downsample, conv=conv, norm=norm)]
        self._inplanes = planes * block.expansion
        for _ in range(1, blocks):
            mods.append(block(self._inplanes, planes, conv=conv, norm=norm))
        return nn.Sequential(*mods)

    def forward_features(self, x: Tensor) -> Tensor:
        """Encoded input ``N×2C×H×W`` → last feature map ``N×num_features×h×w``."""
        x = self.pool(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        if self.layer4 is not None:
            x = self.layer4(x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        check_images(x, in_channels=self.in_channels, min_size=self.min_size,  # type: ignore[arg-type]
                     model=self.model_name)
        x = self.forward_features(self.encoding(x))
        # Classifier per location, then global average pooling (v1 and v2).
        x = self.avgpool(self.fc(x)).flatten(1)
        return self.logit_layer(x)


class StandardResNet(tvm.ResNet):
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
        self.normalize = ImageNormalize(in_channels, min_size, mean, std, model=name)
        self.in_channels = in_channels
        self.last_feature_layer = "layer4"

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(self.normalize(x))


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

#: v1 ImageNet constants (SPEC §1 / supplement C.1.2).
V1_RESNET_SCALE_S = 100.0
V1_RESNET_TEMPERATURE = 10.0  # log10 T = 1
V1_MAX_OUT = 2


def _register_depth(depth: int) -> None:
    block, layers = _RESNET_CFGS[depth]

    def v1(
        num_classes: int = 1000,
        in_channels: int = 3,
        b: float = 2.0,
        max_out: int = V1_MAX_OUT,
        scale_s: float | None = V1_RESNET_SCALE_S,
        temperature: float = V1_RESNET_TEMPERATURE,
        logit_bias: float | None = None,
        cos_eps: float = 0.0,
    ) -> BcosResNet:
        conv = bcos_conv_factory(b=b, max_out=max_out, scale_s=scale_s, cos_eps=cos_eps)
        return BcosResNet(
            block, layers, num_classes, in_channels, conv=conv, norm=None,
            temperature=temperature,
            logit_bias=v1_logit_bias(num_classes) if logit_bias is None else logit_bias,
            min_size=_MIN_SIZE, name=f"resnet{depth}",
        )

    def v2(
        num_classes: int = 1000,
        in_channels: int = 3,
        b: float = 2.0,
        max_out: int = 1,
        norm: str | None = "bnu",
        temperature: float = 1.0,
        logit_bias: float | None = None,
    ) -> BcosResNet:
        conv = bcos_conv_factory(b=b, max_out=max_out)
        return BcosResNet(
            block, layers, num_classes, in_channels, conv=conv, norm=norm,
            temperature=temperature,
            logit_bias=v2_logit_bias(num_classes) if logit_bias is None else logit_bias,
            min_size=_MIN_SIZE, name=f"resnet{depth}_v2",
        )

    def standard(
        num_classes: int = 1000,
        in_channels: int = 3,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> StandardResNet:
        return StandardResNet(
            _TV_BLOCK[block], layers, num_classes, in_channels, mean, std,
            min_size=_MIN_SIZE, name=f"standard_resnet{depth}",
        )

    v1.__doc__ = f"B-cos ResNet-{depth}, v1 (paper) style; see the module docstring."
    v2.__doc__ = f"B-cos ResNet-{depth}, v2 style (uncentred BN, B=2, no MaxOut)."
    standard.__doc__ = f"torchvision's ResNet-{depth} taking images in [0, 1]."
    common = dict(family="resnet", input_size=(224, 224), min_size=_MIN_SIZE)
    register_model(f"resnet{depth}", kind="bcos", **common)(v1)
    register_model(f"resnet{depth}_v2", kind="bcos_v2", **common)(v2)
    register_model(f"standard_resnet{depth}", kind="standard", **common)(standard)


for _depth in _RESNET_CFGS:
    _register_depth(_depth)
