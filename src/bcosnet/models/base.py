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

from .._utils.validate import check_image_batch
from ..nn import AddInverse, LogitLayer
from .registry import ClassNamesMixin

__all__ = ["BcosClassifier"]


class BcosClassifier(ClassNamesMixin, nn.Module):
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
        check_image_batch(x, in_channels=self.in_channels, min_size=self.min_size,  # type: ignore[arg-type]
                          model=self.model_name, allow_empty=True, like=self)

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

    # ------------------------------------------------------------------ fine-tuning
    def get_classifier(self) -> nn.Module:
        """The per-location classifier module (a B-cos conv, or VGG's 3-conv head)."""
        return getattr(self, self.classifier_name)

    def reset_classifier(self, num_classes: int, *, logit_bias: float | None = None) -> None:
        """Replace the classifier's last layer by a freshly initialised one with
        ``num_classes`` outputs (for fine-tuning on a new label set); everything
        before it — :meth:`forward_features` — is kept as it is.

        The new layer takes the old one's options (B, MaxOut, scale, kernel, ...);
        VGG's hidden head convs are kept.  The logit layer keeps its temperature;
        its bias becomes ``logit_bias``, or (``None``) the family's rule for the new
        class count: ``−log(C − 1)`` for v2 models (and B-cosified ones), the v1
        prior ``log(p / (1 − p))``, ``p = max(1/C, 0.01)``, otherwise.
        """
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        from ._common import v1_logit_bias, v2_logit_bias

        head = self.get_classifier()
        parent, attr, last = self, self.classifier_name, head
        if isinstance(head, nn.Sequential):
            parent, attr, last = head, list(head._modules)[-1], head[-1]
        new = _resized_copy(last, num_classes)
        setattr(parent, attr, new)
        self.num_classes = num_classes
        if logit_bias is None:
            logit_bias = (v2_logit_bias(num_classes) if self._logit_rule() == "v2"
                          else v1_logit_bias(num_classes))
        self.logit_layer = type(self.logit_layer)(temperature=self.logit_layer.temperature,
                                                  bias=float(logit_bias))
        _reset_record(self, num_classes)

    def _logit_rule(self) -> str:
        """``"v2"`` or ``"v1"``: which logit-bias rule this model follows."""
        info = getattr(self, "model_info", None)
        if info is not None:
            return "v2" if info.kind == "bcos_v2" else "v1"
        from ..nn import BatchNormUncentered2d

        return "v2" if any(isinstance(m, BatchNormUncentered2d) for m in self.modules()) else "v1"


def _reset_record(model: nn.Module, num_classes: int) -> None:
    """After a new head: the record's class count; its class names only if the
    count is the same (new outputs have no names yet)."""
    info = model.__dict__.get("model_info")
    if info is not None:
        from dataclasses import replace

        keep = info.classes if num_classes == info.num_classes else ()
        model.model_info = replace(info, num_classes=num_classes, classes=keep)


def _resized_copy(layer: nn.Module, out: int) -> nn.Module:
    """A freshly initialised copy of a conv/linear layer (B-cos or not) with ``out``
    output units, on the same device and dtype."""
    from ..nn import BcosConv2d, BcosLinear

    p = next(layer.parameters())
    dd = dict(device=p.device, dtype=p.dtype)
    if isinstance(layer, BcosConv2d):
        return BcosConv2d(layer.in_channels, out, layer.kernel_size, layer.stride, layer.padding,
                          layer.dilation, layer.groups, b=layer.b, max_out=layer.max_out,
                          scale=layer.scale, padding_mode=layer.padding_mode,
                          norm_eps=layer.norm_eps, cos_eps=layer.cos_eps, **dd)
    if isinstance(layer, BcosLinear):
        return BcosLinear(layer.in_features, out, b=layer.b, max_out=layer.max_out,
                          scale=layer.scale, norm_eps=layer.norm_eps, cos_eps=layer.cos_eps, **dd)
    resize = getattr(layer, "resized", None)
    if callable(resize):
        return resize(out)
    if isinstance(layer, nn.Conv2d):
        return type(layer)(layer.in_channels, out, layer.kernel_size, layer.stride,
                           layer.padding, layer.dilation, layer.groups,
                           bias=layer.bias is not None, padding_mode=layer.padding_mode, **dd)
    if isinstance(layer, nn.Linear):
        return nn.Linear(layer.in_features, out, bias=layer.bias is not None, **dd)
    raise TypeError(f"cannot resize a classifier layer of type {type(layer).__name__}")
