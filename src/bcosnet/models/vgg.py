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

__all__ = ["BcosVGG", "StandardVGG", "VGG_CFGS"]

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

#: v1 ImageNet constants (SPEC §1 / supplement C.1.2).
V1_VGG_SCALE_S = 1000.0
V1_VGG_TEMPERATURE = 0.1  # log10 T = −1
V1_MAX_OUT = 2


class BcosVGG(nn.Module):
    """A B-cos VGG: ``encoding`` → ``features`` → ``classifier`` (three B-cos convs)
    → global average pooling → ``logit_layer``.

    Args:
        cfg: a :data:`VGG_CFGS` entry.
        num_classes, in_channels: outputs and raw image channels.
        conv: B-cos conv factory.
        norm: ``None`` (v1) or ``"bnu"`` (v2, after every feature conv).
        hidden_features: width of the two hidden head convs (4096 as in VGG).
        temperature, logit_bias: the logit layer.
        name: for error messages.
    """

    def __init__(
        self,
        cfg: Sequence[int | str],
        num_classes: int = 1000,
        in_channels: int = 3,
        *,
        conv: ConvFactory,
        norm: str | None = None,
        hidden_features: int = 4096,
        temperature: float = 1.0,
        logit_bias: float = 0.0,
        name: str = "vgg",
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.min_size = _MIN_SIZE
        self.model_name = name
        self.num_classes = num_classes
        self.encoding = AddInverse(in_channels)
        mods: list[nn.Module] = []
        c = 2 * in_channels
        for v in cfg:
            if v == "M":
                # The original's max-pool: average pooling keeps the network dynamic linear.
                mods.append(nn.AvgPool2d(kernel_size=2, stride=2))
            else:
                mods.append(conv(c, int(v), 3, 1, 1))
                if norm is not None:
                    mods.append(make_norm(norm, int(v)))
                c = int(v)
        self.features = nn.Sequential(*mods)
        # VGG's fully connected head as convolutions applied per location.
        self.classifier = nn.Sequential(
            conv(c, hidden_features, 7, 1, 3),
            conv(hidden_features, hidden_features, 1),
            conv(hidden_features, num_classes, 1),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.logit_layer = LogitLayer(temperature=temperature, bias=logit_bias)
        self.last_feature_layer = "features"

    def forward(self, x: Tensor) -> Tensor:
        check_images(x, in_channels=self.in_channels, min_size=self.min_size,  # type: ignore[arg-type]
                     model=self.model_name)
        x = self.classifier(self.features(self.encoding(x)))
        return self.logit_layer(self.avgpool(x).flatten(1))


class StandardVGG(tvm.VGG):
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
        self.normalize = ImageNormalize(in_channels, _MIN_SIZE, mean, std, model=name)
        self.in_channels = in_channels
        self.last_feature_layer = "features"

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(self.normalize(x))


def _register_depth(depth: int) -> None:
    cfg = VGG_CFGS[depth]

    def v1(
        num_classes: int = 1000,
        in_channels: int = 3,
        b: float = 2.0,
        max_out: int = V1_MAX_OUT,
        scale_s: float | None = V1_VGG_SCALE_S,
        temperature: float = V1_VGG_TEMPERATURE,
        logit_bias: float | None = None,
        hidden_features: int = 4096,
        cos_eps: float = 0.0,
    ) -> BcosVGG:
        conv = bcos_conv_factory(b=b, max_out=max_out, scale_s=scale_s, cos_eps=cos_eps)
        return BcosVGG(
            cfg, num_classes, in_channels, conv=conv, norm=None,
            hidden_features=hidden_features, temperature=temperature,
            logit_bias=v1_logit_bias(num_classes) if logit_bias is None else logit_bias,
            name=f"vgg{depth}",
        )

    def v2(
        num_classes: int = 1000,
        in_channels: int = 3,
        b: float = 2.0,
        max_out: int = 1,
        norm: str | None = "bnu",
        temperature: float = 1.0,
        logit_bias: float | None = None,
        hidden_features: int = 4096,
    ) -> BcosVGG:
        return BcosVGG(
            cfg, num_classes, in_channels, conv=bcos_conv_factory(b=b, max_out=max_out),
            norm=norm, hidden_features=hidden_features, temperature=temperature,
            logit_bias=v2_logit_bias(num_classes) if logit_bias is None else logit_bias,
            name=f"vgg{depth}_bnu_v2",
        )

    def standard(
        num_classes: int = 1000,
        in_channels: int = 3,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> StandardVGG:
        return StandardVGG(cfg, num_classes, in_channels, mean, std,
                           name=f"standard_vgg{depth}")

    v1.__doc__ = f"B-cos VGG-{depth}, v1 (paper) style; see the module docstring."
    v2.__doc__ = f"B-cos VGG-{depth} with uncentred batch norm, v2 style."
    standard.__doc__ = f"torchvision's VGG-{depth} taking images in [0, 1]."
    common = dict(family="vgg", input_size=(224, 224), min_size=_MIN_SIZE)
    register_model(f"vgg{depth}", kind="bcos", **common)(v1)
    register_model(f"vgg{depth}_bnu_v2", kind="bcos_v2", **common)(v2)
    register_model(f"standard_vgg{depth}", kind="standard", **common)(standard)


for _depth in VGG_CFGS:
    _register_depth(_depth)
