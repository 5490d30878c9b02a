"""B-cosification: turn a trained conventional network into a B-cos network
(Arya et al., "B-cosification: Transforming Deep Neural Networks to be Inherently
Interpretable", NeurIPS 2024; code: github.com/shrebox/B-cosification).

:func:`bcosify` takes a conventional network and returns a :class:`BcosifiedNet`
with the same weights that computes **the same function** (stage ``"equivalent"``):

* input: images in [0, 1] are encoded ``[x, 1 − x]`` (``AddInverse``); the source's
  mean/std normalisation is folded into the first convolution's weights — with
  ``W`` the source's first-layer weights, the encoded channels get
  ``W·(1 − μ)/σ`` and the inverse channels ``−W·μ/σ``, so
  ``W'·[x, 1 − x] = W·(x − μ)/σ`` at every pixel (zero padding included: a padded
  position is 0 in both).  The B-cosification code instead keeps a normalisation
  layer on the six channels with first-layer weights ``[W, −W]/2``; the function is
  the same, ours needs no layer in front of the first B-cos conv.
* every ``nn.Conv2d`` becomes a :class:`~bcosnet.nn.BcosifiedConv2d` at ``B = 1``
  (the convolution itself, biases kept);
* every ``nn.BatchNorm2d`` becomes an uncentred
  :class:`~bcosnet.nn.BatchNormUncentered2d` whose bias absorbs the running mean
  (``β − γ·μ/σ``; the code's ``BnUncV2``), the same function in eval mode;
* the final linear layer becomes a 1×1 conv applied per location *before* the
  global average pooling (VGG's three linear layers become a 7×7 and two 1×1
  convs after the 7×7 adaptive pooling) — linear maps commute with averaging;
* ReLU, max-pooling and dropout are kept; the logit layer is ``out / 1 + 0``.

:meth:`BcosifiedNet.fine_tuning_form` then makes the changes the paper fine-tunes
with (its ImageNet configs, ``bcos/experiments/ImageNet/bcosification``), all at
the start of fine-tuning (stage ``"fine-tune"``): ``B = 2`` in every layer (set
directly — the paper's default; :meth:`BcosifiedNet.set_b` allows a ramp), every
bias removed (convs, norms, classifier), max-pooling replaced by average pooling
with the same window, and the logit bias ``−log(C − 1)``.  ReLUs stay (the paper's
``act_layer=True``).  The result is dynamic linear without biases:
``Σ contributions + logit bias = logit`` holds exactly.

Supported sources: torchvision ResNet / VGG / DenseNet definitions (``mean``/``std``
give their input normalisation, ImageNet's by default) and bcosnet's conventional
twins (``standard_resnet*``, ``standard_vgg*``, ``standard_densenet*``,
``standard_fmnist_bcos``, ``standard_cifar_bcos``, ``standard_cifar_resnet*``), which
carry their own normalisation.  Each twin also has a registered B-cosified
counterpart, ``bcosified_<name without standard_>`` (e.g. ``bcosified_fmnist_bcos``),
that the trainer can build: ``source_weights`` names the trained twin's weights.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
import torchvision.models as tvm
from torch import nn

from ..nn import AvgPool2d, BatchNormUncentered2d, BcosifiedConv2d, check_b
from ._common import IMAGENET_MEAN, IMAGENET_STD, ImageNormalize, v2_logit_bias
from .base import BcosClassifier
from .cifar import StandardCifarNet, StandardCifarResNet
from .factory import create_model
from .mnist import FMNISTStandardNet
from .registry import list_models, model_info, register_model

__all__ = ["BcosifiedNet", "bcosify", "register_bcosified_models", "SUPPORTED_SOURCES", "STAGES"]

#: What :func:`bcosify` accepts (for error messages and the docs).
SUPPORTED_SOURCES = ("torchvision ResNet", "torchvision VGG", "torchvision DenseNet",
                     "standard_fmnist_bcos", "standard_cifar_bcos", "standard_cifar_resnet*")


class BcosifiedNet(BcosClassifier):
    """A B-cosified network: ``encoding`` → ``features`` (the source's body, its convs
    B-cos) → ``classifier`` (per location) → global average pooling → ``logit_layer``.

    Attributes:
        stage: ``"equivalent"`` (B = 1, biases and max-pooling kept: the source's
            function) or ``"fine-tune"`` (after :meth:`fine_tuning_form`).
        source_name: what it was made from.
    """

    last_feature_layer = "features"

    def __init__(self, features: nn.Module, classifier: nn.Module, *, num_classes: int,
                 in_channels: int, min_size: tuple[int, int], name: str) -> None:
        super().__init__(num_classes=num_classes, in_channels=in_channels, min_size=min_size,
                         name=f"bcosified {name}")
        self.features = features
        first = classifier[0] if isinstance(classifier, nn.Sequential) else classifier
        self.num_features = first.in_channels
        self._set_head(classifier, temperature=1.0, logit_bias=0.0)
        self.source_name = name
        self.stage = "equivalent"

    def bcos_layers(self) -> list[BcosifiedConv2d]:
        """Every B-cos conv of the network, in module order."""
        return [m for m in self.modules() if isinstance(m, BcosifiedConv2d)]

    @property
    def b(self) -> float:
        """The alignment pressure B of the layers (they share one)."""
        return self.bcos_layers()[0].b

    def set_b(self, b: float) -> BcosifiedNet:
        """Set B of every B-cos conv (e.g. a ramp from 1 to 2 over the first epochs)."""
        b = check_b(b)
        for m in self.bcos_layers():
            m.b = b
        return self

    @torch.no_grad()
    def fine_tuning_form(self, b: float = 2.0, *, remove_biases: bool = True,
                         avg_pool: bool = True, logit_bias: float | None = None) -> BcosifiedNet:
        """Make the paper's changes for fine-tuning (in place; returns ``self``).

        **Right after this call every logit is (close to) the logit bias
        −log(C − 1) for every input — intended, the paper's starting point.**
        At B = 2 a :class:`~bcosnet.nn.BcosifiedConv2d` multiplies its
        convolution by ``|conv(x)| / ‖x_patch‖ = ‖w‖·|cos(x, w)|`` (weights not
        normalised, as in the B-cosification code), a factor far below 1 for the
        source's weights; in eval mode the uncentred batch norms still divide by
        the variances measured at B = 1, so nothing restores the scale and the
        class evidence shrinks by that factor at every layer — after a handful
        of layers it is below the rounding of the logit bias.  In training mode
        the batch norms normalise with the batch's statistics, the evidence is
        back at its scale (the logits vary with the input again) and the running
        statistics follow within the first steps: fine-tune (or run a few
        batches in ``train()`` mode) before evaluating.

        Args:
            b: B of every layer (the paper: 2, set at once).
            remove_biases: drop every conv and norm bias (the paper: yes, at once).
            avg_pool: max-pooling → average pooling with the same window.
            logit_bias: the logit layer's bias (``None``: ``−log(C − 1)``, the paper's).
        """
        self.set_b(b)
        if remove_biases:
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, BatchNormUncentered2d)) and m.bias is not None:
                    m.bias = None
        if avg_pool:
            _replace_max_pools(self.features)
        if logit_bias is None:
            logit_bias = v2_logit_bias(self.num_classes)
        self.logit_layer = type(self.logit_layer)(temperature=self.logit_layer.temperature,
                                                  bias=float(logit_bias))
        self.stage = "fine-tune"
        return self

    def extra_repr(self) -> str:
        return f"source={self.source_name!r}, stage={self.stage!r}"


# ----------------------------------------------------------------------------- conversion
def bcosify(
    model: nn.Module,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    min_size: tuple[int, int] | None = None,
    fine_tune: bool = False,
    b: float = 2.0,
) -> BcosifiedNet:
    """Turn a conventional network into a B-cos network with the same weights.

    Args:
        model: a torchvision ResNet / VGG / DenseNet, or a bcosnet conventional twin
            (see :data:`SUPPORTED_SOURCES`).  It is not modified (a copy is converted).
        mean: the input normalisation's mean the source was trained with — only
            for sources without their own (plain torchvision models; default
            ImageNet's for 3 channels, 0.5 otherwise).  The twins carry theirs.
        std: its standard deviation, as ``mean`` (ImageNet's for 3 channels, 0.5
            otherwise).
        min_size: smallest accepted (H, W) (default: the twin's, else 32×32).
        fine_tune: also make the paper's fine-tuning changes
            (:meth:`BcosifiedNet.fine_tuning_form` with ``b``).
        b: B for ``fine_tune=True``.

    Returns:
        A :class:`BcosifiedNet` on the source's device and dtype, in the source's
        train/eval mode.  At ``fine_tune=False`` its logits equal the source's (eval
        mode), up to floating-point rounding.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"bcosify expects a torch.nn.Module, got {type(model).__name__}")
    src = copy.deepcopy(model)
    features, classifier, first_conv_path = _split(src)
    norm = getattr(src, "normalize", None)
    name = getattr(getattr(model, "model_info", None), "name", None) or type(model).__name__
    first = _get(features, first_conv_path)
    in_channels = first.in_channels
    if isinstance(norm, ImageNormalize):
        if mean is not None or std is not None:
            raise ValueError(f"{name} normalises its input itself; do not pass mean/std")
        mu, sd = _applied_stats(norm)
        in_channels, min_size = norm.in_channels, min_size or norm.min_size
    elif _is_fmnist_twin(src):
        if mean is not None or std is not None:
            raise ValueError(f"{name} normalises its input itself ((x − 0.5)/0.5); do not pass "
                             "mean/std")
        mu, sd = [0.5] * in_channels, [0.5] * in_channels
        min_size = min_size or (4, 4)
    else:
        mu = list(mean) if mean is not None else (
            list(IMAGENET_MEAN) if in_channels == 3 else [0.5] * in_channels)
        sd = list(std) if std is not None else (
            list(IMAGENET_STD) if in_channels == 3 else [0.5] * in_channels)
        if len(mu) != in_channels or len(sd) != in_channels:
            raise ValueError(f"mean and std need {in_channels} values (the first conv takes "
                             f"{in_channels} channels), got {len(mu)} and {len(sd)}")
        if any(s <= 0 for s in sd):
            raise ValueError(f"std must be positive, got {tuple(sd)}")
    _fold_normalisation(first, mu, sd)
    _convert(features)
    if isinstance(classifier, nn.Conv2d):
        classifier = BcosifiedConv2d.from_conv(classifier, b=1.0)
    _convert(classifier)
    num_classes = _out_channels(classifier)
    net = BcosifiedNet(features, classifier, num_classes=num_classes, in_channels=in_channels,
                       min_size=tuple(min_size or (32, 32)), name=name)
    p = next(src.parameters())
    net.to(device=p.device, dtype=p.dtype)
    net.train(model.training)
    if fine_tune:
        net.fine_tuning_form(b)
    return net


def _applied_stats(norm: ImageNormalize) -> tuple[list[float], list[float]]:
    """The mean and std ``norm`` actually applies: its buffers, in the model's dtype.

    A twin made in float32 and then ``.double()``-ed holds the float32-rounded
    statistics as float64 values; folding those (not the recorded decimal
    floats) keeps a float64 B-cosified net equal to its source to float64
    rounding.  On the meta device the recorded floats are all there is."""
    if norm.mean.is_meta or norm.std.is_meta:
        return list(norm.stats[0]), list(norm.stats[1])
    return norm.mean.flatten().tolist(), norm.std.flatten().tolist()


def _is_fmnist_twin(model: nn.Module) -> bool:
    return isinstance(model, FMNISTStandardNet)


def _split(m: nn.Module) -> tuple[nn.Module, nn.Module, str]:
    """(features, per-location classifier, path of the first conv in features)."""
    if isinstance(m, tvm.ResNet):
        feats = nn.Sequential()
        for k in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            feats.add_module(k, getattr(m, k))
        return feats, _linear_to_conv(m.fc), "conv1"
    if isinstance(m, StandardCifarResNet):
        feats = nn.Sequential()
        for k in ("conv1", "bn1", "relu", "layer1", "layer2", "layer3"):
            feats.add_module(k, getattr(m, k))
        return feats, _linear_to_conv(m.fc), "conv1"
    if isinstance(m, tvm.VGG):
        feats = nn.Sequential(m.features, m.avgpool)
        pooled = m.avgpool.output_size
        hw = (pooled, pooled) if isinstance(pooled, int) else tuple(pooled)
        head: list[nn.Module] = []
        first_linear = True
        for layer in m.classifier:
            if isinstance(layer, nn.Linear):
                head.append(_linear_to_conv(layer, hw if first_linear else (1, 1)))
                first_linear = False
            else:
                head.append(layer)
        return feats, nn.Sequential(*head), "0.0"
    if isinstance(m, tvm.DenseNet):
        feats = nn.Sequential(m.features, nn.ReLU(inplace=False))
        return feats, _linear_to_conv(m.classifier), "0.conv0"
    if isinstance(m, (FMNISTStandardNet, StandardCifarNet)):
        return m.features, m.classifier, "0"
    raise TypeError(
        f"bcosify does not know how to convert a {type(m).__name__}; supported: "
        + ", ".join(SUPPORTED_SOURCES)
    )


def _get(root: nn.Module, path: str) -> nn.Conv2d:
    mod = root.get_submodule(path)
    if not isinstance(mod, nn.Conv2d):
        raise TypeError(f"expected the first layer to be an nn.Conv2d, got {type(mod).__name__}")
    return mod


def _linear_to_conv(fc: nn.Linear, hw: tuple[int, int] = (1, 1)) -> nn.Conv2d:
    """``nn.Linear`` on a flattened C×h×w map → the equal ``h×w`` conv (1×1 by default)."""
    kh, kw = hw
    conv = nn.Conv2d(fc.in_features // (kh * kw), fc.out_features, (kh, kw),
                     bias=fc.bias is not None, device="meta")
    conv.weight = nn.Parameter(fc.weight.detach().reshape(fc.out_features, -1, kh, kw).clone())
    if fc.bias is not None:
        conv.bias = nn.Parameter(fc.bias.detach().clone())
    return conv


@torch.no_grad()
def _fold_normalisation(conv: nn.Conv2d, mean: Sequence[float], std: Sequence[float]) -> None:
    """Make ``conv`` take ``[x, 1 − x]`` and compute what it computed on ``(x − μ)/σ``."""
    w = conv.weight
    c = w.shape[1] * conv.groups
    if conv.groups != 1:
        raise ValueError("bcosify: the first convolution must not be grouped")
    if len(mean) != c:
        raise ValueError(f"the first conv takes {c} channels, the normalisation has {len(mean)}")
    mu = torch.tensor(mean, dtype=torch.float64).view(1, -1, 1, 1)
    sd = torch.tensor(std, dtype=torch.float64).view(1, -1, 1, 1)
    w64 = w.detach().double()
    new = torch.cat([w64 * (1.0 - mu) / sd, -w64 * mu / sd], 1).to(w.dtype)
    conv.weight = nn.Parameter(new)
    conv.in_channels = 2 * c


def _convert(root: nn.Module) -> None:
    """In place: Conv2d → BcosifiedConv2d (B = 1); BatchNorm2d → uncentred BN with
    the mean folded into its bias (same eval-mode function)."""
    for name, child in list(root.named_children()):
        if isinstance(child, nn.Conv2d) and not isinstance(child, BcosifiedConv2d):
            setattr(root, name, BcosifiedConv2d.from_conv(child, b=1.0))
        elif isinstance(child, nn.BatchNorm2d):
            setattr(root, name, _uncentred(child))
        elif isinstance(child, nn.BatchNorm1d | nn.GroupNorm | nn.LayerNorm):
            raise TypeError(f"bcosify cannot convert {type(child).__name__} layers")
        else:
            _convert(child)


@torch.no_grad()
def _uncentred(bn: nn.BatchNorm2d) -> BatchNormUncentered2d:
    if not bn.track_running_stats or bn.running_var is None:
        raise ValueError("bcosify needs batch norms with running statistics")
    p = bn.running_var
    new = BatchNormUncentered2d(bn.num_features, eps=bn.eps, momentum=bn.momentum or 0.1,
                                affine=True, bias=True, device=p.device, dtype=p.dtype)
    gamma = bn.weight if bn.weight is not None else torch.ones_like(p)
    beta = bn.bias if bn.bias is not None else torch.zeros_like(p)
    std = (bn.running_var.double() + bn.eps).sqrt()
    new.weight.copy_(gamma)
    new.bias.copy_((beta.double() - bn.running_mean.double() / std * gamma.double()).to(p.dtype))
    new.running_var.copy_(bn.running_var)
    new.running_mean.copy_(bn.running_mean)
    if bn.num_batches_tracked is not None:
        new.num_batches_tracked.copy_(bn.num_batches_tracked)
    return new


def _replace_max_pools(root: nn.Module) -> None:
    for name, child in list(root.named_children()):
        if isinstance(child, nn.MaxPool2d):
            if child.dilation not in (1, (1, 1)):
                raise ValueError("bcosify: dilated max-pooling has no average-pooling stand-in")
            setattr(root, name, AvgPool2d(child.kernel_size, child.stride, child.padding,
                                          ceil_mode=child.ceil_mode))
        else:
            _replace_max_pools(child)


def _out_channels(classifier: nn.Module) -> int:
    last = classifier[-1] if isinstance(classifier, nn.Sequential) else classifier
    if not isinstance(last, nn.Conv2d):
        raise TypeError(f"the classifier must end in a conv, got {type(last).__name__}")
    return last.out_channels


# ----------------------------------------------------------------------------- registry
#: Stages a registered ``bcosified_*`` model can be built at.
STAGES = ("equivalent", "fine-tune")


def _register_bcosified(source: str) -> None:
    info = model_info(source)
    name = "bcosified_" + source.removeprefix("standard_")
    options = {**info.options, "source_weights": None, "stage": "fine-tune", "b": 2.0,
               "max_out": 1, "temperature": 1.0, "logit_bias": None}

    def builder(num_classes: int = info.num_classes, **kw: Any) -> BcosifiedNet:
        source_weights = kw.pop("source_weights", None)
        stage = kw.pop("stage", "fine-tune")
        b = kw.pop("b", 2.0)
        temperature = kw.pop("temperature", 1.0)
        logit_bias = kw.pop("logit_bias", None)
        if kw.pop("max_out", 1) != 1:
            raise ValueError(f"{name}: B-cosified networks have no MaxOut (max_out must be 1)")
        if stage not in STAGES:
            raise ValueError(f"{name}: stage must be one of {STAGES}, got {stage!r}")
        src = create_model(source, num_classes, weights=source_weights, **kw)
        net = bcosify(src)
        if stage == "fine-tune":
            net.fine_tuning_form(b, logit_bias=logit_bias)
        if temperature != 1.0:
            net.logit_layer = type(net.logit_layer)(temperature, net.logit_layer.bias)
        net.model_name = name
        return net

    builder.__name__ = name
    builder.__doc__ = (f"``{source}`` B-cosified (:func:`bcosnet.bcosify`); ``source_weights``: "
                       f"the trained twin's weights (any ``create_model`` weights form); "
                       f"``stage``: ``'fine-tune'`` (the paper's changes, B = ``b``) or "
                       f"``'equivalent'`` (B = 1, the twin's function); ``temperature`` and "
                       f"``logit_bias`` (default −log(C − 1)) set the logit layer.")
    # "bcos_v2": the v2 conventions (uncentred norms, no MaxOut, logit bias −log(C − 1)).
    register_model(name, family=info.family, kind="bcos_v2", input_size=info.input_size,
                   min_size=info.min_size, in_channels=info.in_channels,
                   default_num_classes=info.num_classes, options=options)(builder)


def register_bcosified_models() -> None:
    """Register ``bcosified_<name>`` for every registered conventional twin (but
    Inception) that has none yet; ``bcosnet.models`` calls it once all families
    are imported."""
    for source in list_models("standard_*", kind="standard"):
        name = "bcosified_" + source.removeprefix("standard_")
        if "inception" not in source and name not in list_models():
            _register_bcosified(source)
