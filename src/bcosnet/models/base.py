"""One shape for every B-cos classifier.

Every B-cos network in the zoo computes, in this order::

    images N×C×H×W in [0, 1]
      → check (clear errors for a wrong channel count or size)
      → encoding      AddInverse: [x, 1 − x], N×2C×H×W
      → features      the family's body (forward_features)
      → classifier    a B-cos conv applied per location (1×1, or VGG's 3-conv head)
      → avgpool       global average pooling
      → logit_layer   out / T + b                       (forward_head)

:class:`BcosClassifier` owns that sequence; a family only builds its modules
and, where its body is not a plain ``self.features`` call, overrides
:meth:`BcosClassifier.forward_body`.  Module *names* stay the family's own
(``fc`` for ResNet and Inception, as in the ``bcos`` package), given by
:attr:`BcosClassifier.classifier_name`.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ..nn import AddInverse, LogitLayer
from ._common import check_images

__all__ = ["BcosClassifier"]


class BcosClassifier(nn.Module):
    """Base class of the zoo's B-cos networks (see the module docstring).

    Subclasses call ``super().__init__(...)`` first (it creates ``encoding``),
    build their body, then :meth:`_set_head` with the per-location classifier.

    Attributes:
        in_channels: raw image channels.
        min_size: smallest accepted (H, W).
        model_name: name used in error messages.
        num_classes: output count.
        last_feature_layer: name of the module whose output is the last feature
            map — Grad-CAM's layer and the natural layer for neuron statistics.
        classifier_name: attribute name of the per-location classifier.
    """

    last_feature_layer: str = "features"
    classifier_name: str = "classifier"

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int,
        min_size: tuple[int, int],
        name: str,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.min_size = tuple(min_size)
        self.model_name = name
        self.num_classes = num_classes
        self.encoding = AddInverse(in_channels)

    def _set_head(self, classifier: nn.Module, temperature: float, logit_bias: float) -> None:
        """Register the classifier (under :attr:`classifier_name`), pooling and logit layer."""
        setattr(self, self.classifier_name, classifier)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.logit_layer = LogitLayer(temperature=temperature, bias=logit_bias)

    # ------------------------------------------------------------------ the forward pass
    def check_input(self, x: Any) -> None:
        """Raise a clear error unless ``x`` is an ``N×in_channels×H×W`` batch, large enough."""
        check_images(x, in_channels=self.in_channels, min_size=self.min_size,  # type: ignore[arg-type]
                     model=self.model_name, like=self)

    def forward_body(self, x: Tensor) -> Tensor:
        """Encoded input ``N×2C×H×W`` → last feature map (``self.features`` by default)."""
        return self.features(x)

    def forward_features(self, x: Tensor) -> Tensor:
        """Images ``N×C×H×W`` in [0, 1] → last feature map ``N×F×h×w`` (checked, encoded)."""
        self.check_input(x)
        return self.forward_body(self.encoding(x))

    def forward_head(self, features: Tensor, pre_logits: bool = False) -> Tensor:
        """Feature map → logits ``N×num_classes``: classifier per location, global
        average pooling, logit layer.  ``pre_logits=True`` stops before the logit
        layer (the pooled class evidence)."""
        x = self.avgpool(self.get_classifier()(features)).flatten(1)
        return x if pre_logits else self.logit_layer(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        """The per-location classifier module."""
        return getattr(self, self.classifier_name)
