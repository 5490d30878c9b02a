"""The two classifier shapes of the zoo, and what they share.

Every B-cos network in the zoo computes, in this order::

    images N×C×H×W in [0, 1]
      → check (clear errors for a wrong channel count or size)
      → encoding      AddInverse: [x, 1 − x], N×2C×H×W
      → features      the family's body (forward_features)
      → classifier    a B-cos conv applied per location (1×1, or VGG's 3-conv head)
      → avgpool       global average pooling                (forward_evidence)
      → logit_layer   out / T + b                           (forward_head)

:class:`BcosClassifier` owns that sequence; a family only builds its modules
and, where its body is not a plain ``self.features`` call, overrides
:meth:`BcosClassifier.forward_body`.  Module *names* stay the family's own
(``fc`` for ResNet and Inception, as in the ``bcos`` package), given by
:attr:`ClassifierMixin.classifier_name`.

The conventional twins (:class:`StandardClassifierMixin`) normalise their input
(:class:`~bcosnet.models._common.ImageNormalize`) before torchvision's forward.
Both shapes share :class:`ClassifierMixin`: ``get_classifier()``,
``reset_classifier(num_classes)`` (one implementation) and ``class_names``.

Which logit bias a B-cos network follows is decided in one place,
:func:`logit_bias_rule`, on top of the library's one rule for "is this a B-cos
network", :func:`bcosnet.nn.is_bcos_model`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from .._utils.validate import check_image_batch, check_int
from ..nn import (
    AddInverse,
    BatchNormUncentered2d,
    BcosifiedConv2d,
    DetachableGroupNorm2d,
    DetachableLayerNorm,
    LogitLayer,
    PositionNorm2d,
    is_bcos_model,
)
from . import hub
from ._common import ImageNormalize, v1_logit_bias, v2_logit_bias

__all__ = ["BcosClassifier", "ClassNamesMixin", "ClassifierMixin", "StandardClassifierMixin",
           "default_logit_bias", "freeze_backbone", "logit_bias_rule"]

# Layers only B-cos v2 networks (and B-cosified ones) have; the v1 networks have no norms.
_V2_LAYERS = (BatchNormUncentered2d, PositionNorm2d, DetachableGroupNorm2d, DetachableLayerNorm,
              BcosifiedConv2d)


# ----------------------------------------------------------------------------- the B-cos rules
def logit_bias_rule(model: nn.Module) -> str | None:
    """Which logit-bias rule ``model`` follows: ``"v2"`` (``−log(C − 1)``), ``"v1"``
    (``log(p/(1 − p))``, ``p = max(1/C, 0.01)``), or ``None`` — the one place the
    library decides it.

    * ``None`` when ``model`` is not a B-cos network by :func:`bcosnet.nn.is_bcos_model`
      (the library's one rule for that): a conventional network has no logit layer.
    * The model's record, when it carries one (``model.model_info``; its kind agrees
      with ``is_bcos_model``, :func:`~bcosnet.models.create_model` makes sure):
      ``"v2"`` for kind ``"bcos_v2"`` (B-cos v2 networks and B-cosified ones),
      ``"v1"`` for ``"bcos"``.
    * Without a record (a network built by hand, :func:`bcosnet.bcosify`'s result):
      ``"v2"`` when it has layers only v2 networks have (uncentred batch, position,
      group or layer norms; B-cosified convolutions), else ``"v1"``.
    """
    if not is_bcos_model(model):
        return None
    info = model.__dict__.get("model_info")
    if info is not None and info.is_bcos:
        return "v2" if info.kind == "bcos_v2" else "v1"
    return "v2" if any(isinstance(m, _V2_LAYERS) for m in model.modules()) else "v1"


def default_logit_bias(model: nn.Module, num_classes: int) -> float:
    """The logit bias :func:`logit_bias_rule` gives ``model`` for ``num_classes``."""
    rule = logit_bias_rule(model)
    if rule is None:
        raise ValueError(f"{type(model).__name__} is not a B-cos network "
                         f"(bcosnet.nn.is_bcos_model): it has no logit bias")
    return v2_logit_bias(num_classes) if rule == "v2" else v1_logit_bias(num_classes)


# ----------------------------------------------------------------------------- shared shape
class ClassNamesMixin:
    """``model.class_names``: the names of ``model.model_info.classes`` (a list;
    empty when not known).  Assigning it updates the record — one source of truth."""

    @property
    def class_names(self) -> list[str]:
        info = self.__dict__.get("model_info")
        return list(info.classes) if info is not None else []

    @class_names.setter
    def class_names(self, names: Sequence[str]) -> None:
        info = self.__dict__.get("model_info")
        if info is None:
            raise AttributeError("this model has no model_info to hold class names; build it "
                                 "with bcosnet.create_model")
        self.model_info = info.with_classes(list(names or []))  # type: ignore[attr-defined]

    def save_pretrained(self, save_directory: str | os.PathLike, *, model_card: bool = True
                        ) -> Path:
        """Write this model into a folder: ``config.json`` (name, options, record) +
        ``model.safetensors`` (huggingface_hub's layout; :func:`bcosnet.models.hub.
        save_pretrained`).  ``bcosnet.from_pretrained(folder)`` reads it back."""
        return hub.save_pretrained(self, save_directory, model_card=model_card)  # type: ignore[arg-type]

    def push_to_hub(self, repo_id: str, **options: Any) -> str:
        """Upload this model to the Hugging Face Hub repo ``repo_id`` as a
        :meth:`save_pretrained` folder (:func:`bcosnet.models.hub.push_to_hub`:
        ``private``, ``token``, ``revision``, ``commit_message``); returns the commit URL."""
        return hub.push_to_hub(self, repo_id, **options)  # type: ignore[arg-type]


class ClassifierMixin(ClassNamesMixin):
    """The fine-tuning API of every model of the zoo: :meth:`get_classifier`,
    :meth:`reset_classifier` and ``class_names``.  ``classifier_name`` names the
    head (a conv/linear layer, B-cos or not, or a ``Sequential`` ending in one)."""

    classifier_name: str = "classifier"

    def get_classifier(self) -> nn.Module:
        """The classification head (``fc`` / ``classifier`` / ``linear_head``)."""
        return getattr(self, self.classifier_name)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head's last layer by a freshly initialised one with
        ``num_classes`` outputs (drawn from torch's global RNG), on the old one's
        device and dtype and with its options (B, MaxOut, scale, kernel, ...); the
        rest of the network — hidden head layers included — is kept."""
        check_int("num_classes", num_classes, 1)
        head = self.get_classifier()
        if isinstance(head, nn.Sequential):
            last = [i for i, m in enumerate(head) if _resizable(m)]
            if not last:
                raise TypeError(f"{type(self).__name__}.{self.classifier_name} has no "
                                f"conv/linear layer to resize")
            head[last[-1]] = _resized_copy(head[last[-1]], num_classes)
        else:
            setattr(self, self.classifier_name, _resized_copy(head, num_classes))
        self.num_classes = num_classes
        info = self.__dict__.get("model_info")
        if info is not None:  # new outputs have no names yet: keep them for the same count
            keep = info.classes if num_classes == info.num_classes else ()
            self.model_info = replace(info, num_classes=num_classes, classes=keep)


def _resizable(layer: nn.Module) -> bool:
    return callable(getattr(layer, "resized", None)) or isinstance(layer, (nn.Conv2d, nn.Linear))


def _resized_copy(layer: nn.Module, out: int) -> nn.Module:
    """A freshly initialised copy of a conv/linear layer (B-cos or not) with ``out``
    output units, on the same device and dtype."""
    resize = getattr(layer, "resized", None)  # the B-cos layers know how to copy themselves
    if callable(resize):
        return resize(out)
    p = next(layer.parameters())
    dd = dict(device=p.device, dtype=p.dtype)
    if isinstance(layer, nn.Conv2d):
        return type(layer)(layer.in_channels, out, layer.kernel_size, layer.stride,
                           layer.padding, layer.dilation, layer.groups,
                           bias=layer.bias is not None, padding_mode=layer.padding_mode, **dd)
    if isinstance(layer, nn.Linear):
        return nn.Linear(layer.in_features, out, bias=layer.bias is not None, **dd)
    raise TypeError(f"cannot resize a classifier layer of type {type(layer).__name__}")


def freeze_backbone(model: nn.Module) -> list[str]:
    """Make only the classifier (``model.get_classifier()``) trainable: every other
    parameter gets ``requires_grad=False``.  Returns the names of the trainable
    parameters.  (Keep the frozen part in eval mode while training the head, so
    that BatchNorm statistics stay as they are: the trainer does this with
    ``trainable="head"``.)"""
    if not hasattr(model, "get_classifier"):
        raise TypeError(f"{type(model).__name__} has no get_classifier(): cannot tell its head "
                        f"from its backbone; train the whole network (trainable='all')")
    head = {id(p) for p in model.get_classifier().parameters()}
    names = []
    for n, p in model.named_parameters():
        p.requires_grad_(id(p) in head)
        if id(p) in head:
            names.append(n)
    if not names:
        raise ValueError(f"{type(model).__name__}.get_classifier() has no parameters to train")
    return names


# ----------------------------------------------------------------------------- B-cos networks
class BcosClassifier(ClassifierMixin, nn.Module):
    """Base class of the zoo's B-cos networks (see the module docstring).

    Subclasses call ``super().__init__(...)`` first (it creates ``encoding``),
    build their body, then :meth:`_set_head` with the per-location classifier.

    Attributes:
        in_channels: raw image channels.
        min_size: smallest accepted (H, W).
        model_name: name used in error messages.
        num_classes: output count.
        num_features: channels of the last feature map (the classifier's input).
        last_feature_layer: name of the module whose output is the last feature
            map — Grad-CAM's layer and the natural layer for neuron statistics.
        classifier_name: attribute name of the per-location classifier.
    """

    last_feature_layer: str = "features"
    num_features: int

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int,
        min_size: tuple[int, int],
        name: str,
    ) -> None:
        super().__init__()
        self.in_channels = check_int("in_channels", in_channels, 1)
        self.min_size = tuple(min_size)
        self.model_name = name
        self.num_classes = check_int("num_classes", num_classes, 1)
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

    def pool_features(self, features: Tensor) -> Tensor:
        """Feature map ``N×F×h×w`` → the pooled features ``N×F`` (global average)."""
        return self.avgpool(features).flatten(1)

    def forward_evidence(self, features: Tensor) -> Tensor:
        """Feature map → pooled class evidence ``N×num_classes``: the classifier
        applied per location, then global average pooling (the logits before the
        logit layer: ``logits = evidence / T + b``)."""
        return self.avgpool(self.get_classifier()(features)).flatten(1)

    def forward_head(self, features: Tensor, pre_logits: bool = False) -> Tensor:
        """Feature map → logits ``N×num_classes`` (:meth:`forward_evidence`, then the
        logit layer).

        ``pre_logits=True`` returns the pooled features ``N×num_features`` instead
        (:meth:`pool_features`), the embedding before the classifier, as in timm.
        The B-cos classifier acts per location *before* the pooling and is not
        linear, so it applied to the pooled features does not give the logits.
        """
        if pre_logits:
            return self.pool_features(features)
        return self.logit_layer(self.forward_evidence(features))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    # ------------------------------------------------------------------ fine-tuning
    def reset_classifier(self, num_classes: int, *, logit_bias: float | None = None) -> None:
        """Replace the classifier's last layer by a freshly initialised one with
        ``num_classes`` outputs (for fine-tuning on a new label set); everything
        before it — :meth:`forward_features` — is kept as it is.

        The new layer takes the old one's options (B, MaxOut, scale, kernel, ...);
        VGG's hidden head convs are kept.  The logit layer keeps its temperature;
        its bias becomes ``logit_bias``, or (``None``) the rule of
        :func:`logit_bias_rule` for the new class count: ``−log(C − 1)`` for v2
        models (and B-cosified ones), the v1 prior ``log(p / (1 − p))``,
        ``p = max(1/C, 0.01)``, otherwise.
        """
        super().reset_classifier(num_classes)
        if logit_bias is None:
            logit_bias = default_logit_bias(self, num_classes)
        self.logit_layer = type(self.logit_layer)(temperature=self.logit_layer.temperature,
                                                  bias=float(logit_bias))


# ----------------------------------------------------------------------------- twins
class StandardClassifierMixin(ClassifierMixin):
    """The conventional twins' shape: ``normalize`` (check the images, then mean/std,
    :class:`~bcosnet.models._common.ImageNormalize`) before the base class's
    (torchvision's) forward, :meth:`forward_features`, and the fine-tuning API
    of :class:`ClassifierMixin`.  Call :meth:`_set_input` in ``__init__``."""

    def _set_input(self, in_channels: int, min_size: tuple[int, int],
                   mean: Sequence[float] | None, std: Sequence[float] | None, name: str,
                   last_feature_layer: str = "features") -> None:
        self.normalize = ImageNormalize(in_channels, min_size, mean, std, model=name)
        self.in_channels = in_channels
        self.last_feature_layer = last_feature_layer

    def forward_features(self, x: Tensor) -> Tensor:
        """Images in [0, 1] → the last feature map (``features``' output)."""
        return self.features(self.normalize(x))  # type: ignore[attr-defined]

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(self.normalize(x))  # type: ignore[misc]
