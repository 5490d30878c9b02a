"""B-cos Inception-v3 (v1, CVPR 2022) and its conventional twin.

The layout is torchvision's ``Inception3`` (Szegedy et al. 2016), changed as in
the B-cos paper (supplement C.1.2, and the v1 code):

* every ``BasicConv2d`` (Conv + BatchNorm + ReLU) becomes one B-cos conv with
  MaxOut (``max_out`` units, default 2), no bias, no norm, output scale
  ``γ = s/sqrt(kh·kw·C_in)`` with s = 200;
* every max-pooling layer becomes average pooling of the same size/stride;
* the final ``Linear`` (and the auxiliary head's) becomes a 1×1 B-cos conv
  applied per location *before* global average pooling; no dropout;
* the input is encoded as ``[x, 1 − x]`` (6 channels for RGB) and the logits
  are ``out / T + b`` with ``log10 T = 0`` and ``b = log(0.01/0.99)`` (1000 classes).

Native input 299×299.  With ``aux_logits=True`` (default) the model returns
``InceptionOutputs(logits, aux_logits)`` in training mode, as torchvision does,
and plain logits in eval mode.  The auxiliary logits go through the same logit
layer (the v1 code fed them to the BCE loss without the bias; with T = 1 that is
the only difference).  The auxiliary head needs a 17×17 ``Mixed_6e`` map, i.e.
at least 299×299 images in training; without it (eval, or ``aux_logits=False``)
75×75 suffice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torchvision.models as tvm
from torch import Tensor, nn

from ..nn import AvgPool2d
from ._common import BcosPolicy, ConvFactory, bcos_policy, resolve_options
from .base import BcosClassifier, StandardClassifierMixin
from .registry import register_model

__all__ = [
    "BcosInception3",
    "StandardInception3",
    "InceptionOutputs",
    "INCEPTION_MIN_SIZE",
    "INCEPTION_AUX_MIN_SIZE",
]

#: Training-mode output ``(logits, aux_logits)``, N×K each: torchvision's namedtuple,
#: so B-cos and standard Inception outputs are handled alike.
InceptionOutputs = tvm.inception.InceptionOutputs

#: Smallest input without the auxiliary head (the last 3×3/2 stages need ≥ 1×1 maps).
INCEPTION_MIN_SIZE = (75, 75)
#: Smallest input for the auxiliary head (5×5/3 pool then a 5×5 conv on Mixed_6e).
INCEPTION_AUX_MIN_SIZE = (299, 299)


def _check_aux_input(x: Tensor, name: str) -> None:
    h, w = x.shape[-2:]
    mh, mw = INCEPTION_AUX_MIN_SIZE
    if h < mh or w < mw:
        raise ValueError(
            f"{name}'s auxiliary head needs images of at least {mh}×{mw} pixels in training "
            f"mode, got {h}×{w} — resize the images, call model.eval(), or build the model "
            "with aux_logits=False"
        )


class InceptionA(nn.Module):
    def __init__(self, cin: int, pool_features: int, conv: ConvFactory) -> None:
        super().__init__()
        self.branch1x1 = conv(cin, 64, 1)
        self.branch5x5_1 = conv(cin, 48, 1)
        self.branch5x5_2 = conv(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = conv(cin, 64, 1)
        self.branch3x3dbl_2 = conv(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = conv(96, 96, 3, padding=1)
        self.pool = AvgPool2d(3, stride=1, padding=1)
        self.branch_pool = conv(cin, pool_features, 1)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(self.pool(x))
        return torch.cat([b1, b5, b3, bp], 1)


class InceptionB(nn.Module):
    def __init__(self, cin: int, conv: ConvFactory) -> None:
        super().__init__()
        self.branch3x3 = conv(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = conv(cin, 64, 1)
        self.branch3x3dbl_2 = conv(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = conv(96, 96, 3, stride=2)
        self.pool = AvgPool2d(3, stride=2)  # max-pool in the original

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([b3, bd, self.pool(x)], 1)


class InceptionC(nn.Module):
    def __init__(self, cin: int, channels_7x7: int, conv: ConvFactory) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = conv(cin, 192, 1)
        self.branch7x7_1 = conv(cin, c7, 1)
        self.branch7x7_2 = conv(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = conv(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = conv(cin, c7, 1)
        self.branch7x7dbl_2 = conv(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = conv(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = conv(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = conv(c7, 192, (1, 7), padding=(0, 3))
        self.pool = AvgPool2d(3, stride=1, padding=1)
        self.branch_pool = conv(cin, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_1(x)
        for m in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                  self.branch7x7dbl_5):
            bd = m(bd)
        bp = self.branch_pool(self.pool(x))
        return torch.cat([b1, b7, bd, bp], 1)


class InceptionD(nn.Module):
    def __init__(self, cin: int, conv: ConvFactory) -> None:
        super().__init__()
        self.branch3x3_1 = conv(cin, 192, 1)
        self.branch3x3_2 = conv(192, 320, 3, stride=2)
        self.branch7x7x3_1 = conv(cin, 192, 1)
        self.branch7x7x3_2 = conv(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = conv(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = conv(192, 192, 3, stride=2)
        self.pool = AvgPool2d(3, stride=2)  # max-pool in the original

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_1(x)
        for m in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            b7 = m(b7)
        return torch.cat([b3, b7, self.pool(x)], 1)


class InceptionE(nn.Module):
    def __init__(self, cin: int, conv: ConvFactory) -> None:
        super().__init__()
        self.branch1x1 = conv(cin, 320, 1)
        self.branch3x3_1 = conv(cin, 384, 1)
        self.branch3x3_2a = conv(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = conv(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = conv(cin, 448, 1)
        self.branch3x3dbl_2 = conv(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = conv(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = conv(384, 384, (3, 1), padding=(1, 0))
        self.pool = AvgPool2d(3, stride=1, padding=1)
        self.branch_pool = conv(cin, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        bp = self.branch_pool(self.pool(x))
        return torch.cat([b1, b3, bd, bp], 1)


class InceptionAux(nn.Module):
    """Auxiliary head on Mixed_6e (N×768×17×17): AvgPool5/3 → 1×1 conv (128) →
    5×5 conv (768) → 1×1 B-cos classifier per location → global average pool."""

    def __init__(self, cin: int, num_classes: int, conv: ConvFactory) -> None:
        super().__init__()
        self.pool = AvgPool2d(5, stride=3)
        self.conv0 = conv(cin, 128, 1)
        self.conv1 = conv(128, 768, 5)
        self.fc = conv(768, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(self.conv0(self.pool(x)))
        return self.fc(x).mean((2, 3))


class BcosInception3(BcosClassifier):
    """B-cos Inception-v3 for N×in_channels×H×W images in [0, 1] (native 299×299).

    Args:
        num_classes: K.
        in_channels: raw image channels (the encoding doubles them).
        policy: the layers' policy (:func:`~bcosnet.models._common.bcos_policy`): conv factory
            (B, MaxOut, scale), norm (``None`` v1, ``"bnu"`` v2), temperature and logit bias.
        aux_logits: build the auxiliary head (used in training mode only).
        name: model name used in error messages.

    Output: N×K logits in eval mode (or without the auxiliary head), else
    ``InceptionOutputs(logits, aux_logits)``.  Module names follow torchvision's
    ``Inception3`` (each ``BasicConv2d`` is a single B-cos conv).
    """

    classifier_name = "fc"
    last_feature_layer = "Mixed_7c"

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        *,
        policy: BcosPolicy,
        aux_logits: bool = True,
        name: str = "inception_v3",
    ) -> None:
        super().__init__(num_classes=num_classes, in_channels=in_channels,
                         min_size=INCEPTION_MIN_SIZE, name=name)
        self.aux_logits = bool(aux_logits)
        conv = policy.conv
        self.Conv2d_1a_3x3 = conv(2 * in_channels, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = conv(32, 32, 3)
        self.Conv2d_2b_3x3 = conv(32, 64, 3, padding=1)
        self.avgpool1 = AvgPool2d(3, stride=2)  # max-pool in the original
        self.Conv2d_3b_1x1 = conv(64, 80, 1)
        self.Conv2d_4a_3x3 = conv(80, 192, 3)
        self.avgpool2 = AvgPool2d(3, stride=2)  # max-pool in the original
        self.Mixed_5b = InceptionA(192, 32, conv)
        self.Mixed_5c = InceptionA(256, 64, conv)
        self.Mixed_5d = InceptionA(288, 64, conv)
        self.Mixed_6a = InceptionB(288, conv)
        self.Mixed_6b = InceptionC(768, 128, conv)
        self.Mixed_6c = InceptionC(768, 160, conv)
        self.Mixed_6d = InceptionC(768, 160, conv)
        self.Mixed_6e = InceptionC(768, 192, conv)
        self.AuxLogits = InceptionAux(768, num_classes, conv) if self.aux_logits else None
        self.Mixed_7a = InceptionD(768, conv)
        self.Mixed_7b = InceptionE(1280, conv)
        self.Mixed_7c = InceptionE(2048, conv)
        # The classifier is a 1×1 B-cos conv applied at every location, pooled afterwards.
        self.num_features = 2048
        self._set_head(conv(2048, num_classes, 1), policy.temperature, policy.logit_bias)

    def _uses_aux(self) -> bool:
        return self.training and self.AuxLogits is not None

    def _stem_to_6e(self, x: Tensor) -> Tensor:
        for m in (self.Conv2d_1a_3x3, self.Conv2d_2a_3x3, self.Conv2d_2b_3x3, self.avgpool1,
                  self.Conv2d_3b_1x1, self.Conv2d_4a_3x3, self.avgpool2, self.Mixed_5b,
                  self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                  self.Mixed_6d, self.Mixed_6e):
            x = m(x)
        return x

    def forward_body(self, x: Tensor) -> Tensor:
        return self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(self._stem_to_6e(x))))

    def forward(self, x: Tensor) -> Tensor | InceptionOutputs:
        """Images in [0, 1] → N×K logits (eval) or ``InceptionOutputs`` (training)."""
        if not self._uses_aux():
            return super().forward(x)
        self.check_input(x)
        _check_aux_input(x, self.model_name)
        x = self._stem_to_6e(self.encoding(x))
        aux = self.AuxLogits(x)
        logits = self.forward_head(self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x))))
        return InceptionOutputs(logits, self.logit_layer(aux))


#: torchvision's Inception3 body, stem to Mixed_7c, in the order its forward runs it.
_TV_BODY = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1",
            "Conv2d_4a_3x3", "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a",
            "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c")


class StandardInception3(StandardClassifierMixin, tvm.Inception3):
    """torchvision's Inception-v3 taking images in [0, 1]: ``normalize`` (ImageNet
    mean/std) then the usual forward; ``transform_input`` is off.  Its head is ``fc``
    (``get_classifier()`` / ``reset_classifier(num_classes)``; the auxiliary head is
    kept as it is).

    Like torchvision's, its training-mode forward with the auxiliary head needs a
    batch of at least 2 (the head's BatchNorm sees a 1×1 map) and 299×299 images.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        aux_logits: bool = True,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        dropout: float = 0.5,
        name: str = "standard_inception_v3",
    ) -> None:
        # init_weights=False: torchvision's truncated-normal init takes seconds.
        super().__init__(num_classes=num_classes, aux_logits=aux_logits, transform_input=False,
                         init_weights=False, dropout=dropout)
        if in_channels != 3:
            self.Conv2d_1a_3x3.conv = nn.Conv2d(in_channels, 32, kernel_size=3, stride=2,
                                                bias=False)
        self._set_input(in_channels, INCEPTION_MIN_SIZE, mean, std, name,
                        last_feature_layer="Mixed_7c")

    classifier_name = "fc"

    def forward_features(self, x: Tensor) -> Tensor:
        """Images in [0, 1] → the last feature map (``Mixed_7c``'s output, N×2048×h×w)."""
        x = self.normalize(x)
        for name in _TV_BODY:
            x = getattr(self, name)(x)
        return x

    def forward(self, x: Tensor):  # noqa: ANN201 - Tensor or InceptionOutputs, as torchvision
        x = self.normalize(x)
        if self.training and self.AuxLogits is not None:
            _check_aux_input(x, self.normalize.model_name)
            if x.shape[0] < 2:
                raise ValueError(
                    f"{self.normalize.model_name} in training mode needs a batch of at least 2 "
                    "images (the auxiliary head's BatchNorm sees a 1×1 map) — use a larger "
                    "batch, call model.eval(), or build the model with aux_logits=False"
                )
        return tvm.Inception3.forward(self, x)  # (the mixin's forward would normalise again)


# ----------------------------------------------------------------------------- registry
#: Default options: v1 ImageNet constants (supplement C.1.2: s = 200, log10 T = 0,
#: MaxOut 2); ``logit_bias=None``: log(0.01/0.99) for 1000 classes.
V1_OPTIONS: dict[str, Any] = dict(
    aux_logits=True, b=2.0, max_out=2, scale=200.0, temperature=1.0, logit_bias=None,
    cos_eps=0.0,
)
STANDARD_OPTIONS: dict[str, Any] = dict(aux_logits=True, mean=None, std=None, dropout=0.5)
_COMMON = dict(family="inception", input_size=(299, 299), min_size=INCEPTION_MIN_SIZE)


@register_model(kind="bcos", options=V1_OPTIONS, **_COMMON)
def inception_v3(num_classes: int = 1000, in_channels: int = 3, **kw: Any) -> BcosInception3:
    """B-cos Inception-v3 (v1): MaxOut 2, s = 200, log10 T = 0, auxiliary head."""
    p = bcos_policy("v1", V1_OPTIONS, kw, name="inception_v3", num_classes=num_classes)
    return BcosInception3(
        num_classes, in_channels, policy=p, aux_logits=p.options["aux_logits"],
    )


@register_model(kind="standard", options=STANDARD_OPTIONS, **_COMMON)
def standard_inception_v3(
    num_classes: int = 1000, in_channels: int = 3, **kw: Any
) -> StandardInception3:
    """torchvision's Inception-v3 taking images in [0, 1] (normalised inside)."""
    o = resolve_options(STANDARD_OPTIONS, kw, "standard_inception_v3")
    return StandardInception3(num_classes, in_channels, o["aux_logits"], o["mean"], o["std"],
                              o["dropout"])
