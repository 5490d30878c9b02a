"""Shared helpers for the model files (not a public module; the API is kept stable).

Below the classifier shapes (``base.py``) and the family files; it imports no
model module.  What every family needs:

* the paper's constants as functions of the options: :func:`v1_logit_bias`,
  :func:`v2_logit_bias`, :func:`cifar_v1_scale`, :func:`cifar_v1_temperature`;
* :func:`bcos_conv_factory` — a ``conv(in, out, kernel_size, stride, padding, ...)``
  callable that builds :class:`~bcosnet.nn.BcosConv2d` layers with a family's
  ``b``/``max_out``/scale policy (v1: ``γ = s/√(k²·C_in)`` per layer);
* :func:`make_norm` — the optional uncentred, bias-free norm of v2 models
  (``nn.Identity`` when off);
* :class:`ImageNormalize` — first module of the conventional ("standard") twins:
  checks the input like the B-cos models do, then applies mean/std normalisation;
* the option vocabulary (:func:`resolve_options`, :data:`LEGACY_OPTIONS`);
* :func:`bcos_v2_release` — a weights entry of the B-cos v2 release (the family
  files declare their weights with it).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .._utils.validate import check_image_batch, did_you_mean
from ..data.builder import DatasetRecord, eval_preprocess
from ..nn import AvgPool2d, BatchNormUncentered2d, BcosConv2d, check_scale, v1_scale
from .registry import Weights
from .weights import sha256_prefix_of

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "BcosPolicy",
    "ConvFactory",
    "ImageNormalize",
    "bcos_conv_factory",
    "bcos_policy",
    "check_option_names",
    "cifar_v1_scale",
    "cifar_v1_temperature",
    "count_parameters",
    "LEGACY_OPTIONS",
    "bcos_v2_release",
    "make_conv_stack",
    "make_norm",
    "resolve_options",
    "translate_legacy_options",
    "v1_logit_bias",
    "v2_logit_bias",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

#: A callable building a B-cos conv: ``conv(in_ch, out_ch, kernel_size, stride=1,
#: padding=0, dilation=1, groups=1, **layer_overrides)``.
ConvFactory = Callable[..., BcosConv2d]


# ----------------------------------------------------------------------------- constants
def v1_logit_bias(num_classes: int, prior: float | None = None) -> float:
    """The v1 logit bias ``log(p / (1 − p))`` (docs/protocol.md §1): sigmoid of a zero
    input is ``p``.

    The paper used ``p = 0.01`` on ImageNet (1000 classes) and ``p = 0.1`` on
    CIFAR-10; the default ``p = max(1/C, 0.01)`` reproduces both and gives a
    uniform prior for small ``C``.  ``num_classes = 1`` (or ``p = 0.5``) gives 0.
    """
    if prior is None:
        prior = max(1.0 / num_classes, 0.01)
    if not 0.0 < prior < 1.0:
        if prior == 1.0:  # one class: no sensible prior, use no offset
            return 0.0
        raise ValueError(f"prior must be in (0, 1), got {prior}")
    return math.log(prior / (1.0 - prior))


def v2_logit_bias(num_classes: int) -> float:
    """The v2 logit bias ``−log(C − 1)`` (0 for one or two classes)."""
    return -math.log(num_classes - 1) if num_classes > 2 else 0.0


def cifar_v1_scale(b: float) -> float:
    """CIFAR-10 (v1) per-layer output scale: ``log10 γ = 1.5·B − 1.75`` (supplement C.1.1)."""
    return 10.0 ** (1.5 * float(b) - 1.75)


_CIFAR_V1_LOG10_T = ((1.0, -3.0), (1.25, -3.0), (1.5, -2.0), (1.75, 1.0), (2.0, 2.0),
                     (2.25, 2.0), (2.5, 3.0))


def cifar_v1_temperature(b: float) -> float:
    """CIFAR-10 (v1) logit temperature T for alignment pressure ``b``.

    The paper gives ``log10 T = −3, −3, −2, 1, 2, 2, 3`` for
    ``B = 1, 1.25, 1.5, 1.75, 2, 2.25, 2.5``; other B are interpolated linearly
    in ``log10 T`` (clamped outside [1, 2.5]).
    """
    b = float(b)
    pts = _CIFAR_V1_LOG10_T
    if b <= pts[0][0]:
        return 10.0 ** pts[0][1]
    for (b0, t0), (b1, t1) in zip(pts, pts[1:]):
        if b <= b1:
            return 10.0 ** (t0 + (t1 - t0) * (b - b0) / (b1 - b0))
    return 10.0 ** pts[-1][1]


# ----------------------------------------------------------------------------- layers
def bcos_conv_factory(
    *,
    b: float = 2.0,
    max_out: int = 1,
    scale: float | None = None,
    scale_mode: str = "fan_in",
    cos_eps: float = 0.0,
) -> ConvFactory:
    """A builder of :class:`~bcosnet.nn.BcosConv2d` layers sharing one policy.

    Args:
        b: alignment pressure B of every layer.
        max_out: MaxOut units per output channel.
        scale: the v1 output scale; ``None``: no scale (v2).
        scale_mode: how ``scale`` acts.  ``"fan_in"`` (v1 ImageNet): every layer's
            output is multiplied by ``γ = scale / sqrt(k_h·k_w·C_in/groups)``;
            ``"fixed"`` (v1 CIFAR-10): every layer's output is multiplied by ``scale``.
        cos_eps: the v1 ``|cos| + ε`` quirk (0 = off).

    The returned callable takes ``(in_ch, out_ch, kernel_size, stride=1, padding=0,
    dilation=1, groups=1, **overrides)``; ``overrides`` (e.g. ``max_out=1`` for one
    layer) win over the policy.
    """
    if scale_mode not in ("fan_in", "fixed"):
        raise ValueError(f"scale_mode must be 'fan_in' or 'fixed', got {scale_mode!r}")
    check_scale(scale)  # here, not when the first layer is built

    def conv(
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int] = 1,
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] | str = 0,
        dilation: int | Sequence[int] = 1,
        groups: int = 1,
        **overrides: Any,
    ) -> BcosConv2d:
        kw: dict[str, Any] = dict(b=b, max_out=max_out, cos_eps=cos_eps)
        if scale is not None:
            kw["scale"] = (v1_scale(scale, in_channels // groups, kernel_size)
                           if scale_mode == "fan_in" else float(scale))
        kw.update(overrides)
        return BcosConv2d(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, **kw
        )

    conv.policy = dict(b=b, max_out=max_out, scale=scale, scale_mode=scale_mode)  # type: ignore[attr-defined]
    return conv


#: Option names of earlier bcosnet versions → today's (one vocabulary: ``b``,
#: ``max_out``, ``scale``, ``temperature``, ``logit_bias``, ``norm``).  Each old name
#: meant, in the one family that had it, exactly what the new one means there.
LEGACY_OPTIONS: dict[str, str] = {
    "s": "scale",  # fmnist_bcos: γ = s/√(k²·C_in)
    "scale_s": "scale",  # ImageNet v1 and CIFAR ResNets: the same
    "gamma": "scale",  # CIFAR v1 nets: a fixed γ (scale_mode "fixed")
    "log10_temperature": "temperature",  # fmnist_bcos: T = 10 ** value
}


def translate_legacy_options(options: dict[str, Any], model: str = "model") -> dict[str, Any]:
    """Rename options of earlier versions (see :data:`LEGACY_OPTIONS`), with a warning.

    Checkpoints written by earlier versions store their model options; they
    load through this.  Giving both an old and the new name is an error.
    """
    out = dict(options)
    for old, new in LEGACY_OPTIONS.items():
        if old not in out:
            continue
        if new in options:
            raise ValueError(f"{model}: give {new!r} only ({old!r} is its old name)")
        value = out.pop(old)
        if old == "log10_temperature":
            value = 10.0 ** float(value)
        warnings.warn(
            f"{model}: option {old!r} is now {new!r}"
            + (" (temperature = 10 ** log10_temperature)" if old == "log10_temperature" else ""),
            FutureWarning, stacklevel=3,
        )
        out[new] = value
    return out


def check_option_names(valid: Sequence[str], given: Sequence[str], model: str) -> None:
    """Raise a ``ValueError`` for names in ``given`` not in ``valid``, with a
    did-you-mean and the list of valid names."""
    unknown = [k for k in given if k not in valid]
    if unknown:
        hints = "".join(did_you_mean(k, sorted(valid), n=1) for k in unknown)
        raise ValueError(
            f"model {model!r} does not take option(s) {', '.join(map(repr, unknown))}{hints}"
            f"; valid options: {', '.join(sorted(valid))}"
        )


def resolve_options(
    defaults: dict[str, Any], options: dict[str, Any], model: str = "model"
) -> dict[str, Any]:
    """``defaults`` updated by ``options`` after translating old names; unknown
    names raise a ``ValueError`` listing the valid ones (with a did-you-mean)."""
    options = translate_legacy_options(options, model)
    check_option_names(["num_classes", "in_channels", *defaults], list(options), model)
    return {**defaults, **options}


@dataclass(frozen=True)
class BcosPolicy:
    """What a B-cos family builder needs, resolved from a variant's options.

    Attributes:
        options: every option with its value (defaults filled in).
        conv: the conv factory (B, MaxOut, scale).
        norm: ``None`` (v1) or the v2 norm name.
        temperature, logit_bias: the logit layer ``out / T + b``.
    """

    options: dict[str, Any]
    conv: ConvFactory
    norm: str | None
    temperature: float
    logit_bias: float


def bcos_policy(
    variant: str,
    defaults: dict[str, Any],
    options: dict[str, Any],
    *,
    name: str,
    num_classes: int,
    scale_mode: str = "fan_in",
) -> BcosPolicy:
    """Resolve ``options`` against a variant's ``defaults`` (see :func:`resolve_options`).

    ``variant`` "v1": no norm, scale ``options["scale"]`` (``scale_mode``), the
    v1 logit prior; "v2": no scale, ``options["norm"]``, ``b = −log(C − 1)``.
    ``logit_bias`` / ``temperature`` of ``None`` take the variant's rule
    (``defaults`` may hold ``None`` for them).
    """
    o = resolve_options(defaults, options, name)
    if variant == "v1":
        conv = bcos_conv_factory(b=o["b"], max_out=o["max_out"], scale=o.get("scale"),
                                 scale_mode=scale_mode, cos_eps=o.get("cos_eps", 0.0))
        norm, bias = None, v1_logit_bias(num_classes)
    elif variant == "v2":
        conv = bcos_conv_factory(b=o["b"], max_out=o["max_out"])
        norm, bias = o.get("norm"), v2_logit_bias(num_classes)
    else:
        raise ValueError(f"variant must be 'v1' or 'v2', got {variant!r}")
    return BcosPolicy(
        options=o, conv=conv, norm=norm, temperature=o["temperature"],
        logit_bias=bias if o["logit_bias"] is None else o["logit_bias"],
    )


def make_conv_stack(
    policy: BcosPolicy, in_channels: int, layers: Sequence[int | tuple[int, int] | str]
) -> tuple[nn.Sequential, int]:
    """A plain stack of 3×3 B-cos convs (padding 1), each followed by the policy's
    norm (if any): ``layers`` items are ``C`` (stride 1), ``(C, stride)`` or ``"M"``
    (2×2 average pooling, the B-cos stand-in for max-pooling).  Returns the stack
    and its output channels."""
    mods: list[nn.Module] = []
    c = in_channels
    for item in layers:
        if item == "M":
            mods.append(AvgPool2d(kernel_size=2, stride=2))
            continue
        out_c, stride = item if isinstance(item, tuple) else (int(item), 1)
        mods.append(policy.conv(c, out_c, 3, stride, 1))
        if policy.norm is not None:
            mods.append(make_norm(policy.norm, out_c))
        c = out_c
    return nn.Sequential(*mods), c


def make_norm(norm: str | None, num_features: int) -> nn.Module:
    """The optional norm layer after a B-cos conv.

    ``None`` → ``nn.Identity()`` (v1: no normalisation); ``"bnu"`` → bias-free
    :class:`~bcosnet.nn.BatchNormUncentered2d` (v2; its parameter and buffer names
    match the ``bcos`` package's ``BatchNormUncentered2d`` with ``NoBias``).
    """
    if norm is None:
        return nn.Identity()
    if norm == "bnu":
        return BatchNormUncentered2d(num_features, bias=False)
    raise ValueError(f"norm must be None or 'bnu' (uncentred batch norm), got {norm!r}")


# ----------------------------------------------------------------------------- input normalisation
class ImageNormalize(nn.Module):
    """First module of a conventional twin: check the images, then ``(x − mean) / std``.

    Args:
        in_channels: raw image channels.
        min_size: smallest accepted (H, W).
        mean, std: per-channel statistics (default: ImageNet for 3 channels,
            0.5/0.5 otherwise).
        model: the model's name, for error messages.
    """

    def __init__(
        self,
        in_channels: int = 3,
        min_size: tuple[int, int] = (1, 1),
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        model: str = "model",
    ) -> None:
        super().__init__()
        if mean is None:
            mean = IMAGENET_MEAN if in_channels == 3 else (0.5,) * in_channels
        if std is None:
            std = IMAGENET_STD if in_channels == 3 else (0.5,) * in_channels
        if len(mean) != in_channels or len(std) != in_channels:
            raise ValueError(
                f"mean and std need {in_channels} values (one per channel), got "
                f"{len(mean)} and {len(std)}"
            )
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be positive, got {tuple(std)}")
        self.in_channels = in_channels
        self.min_size = tuple(min_size)
        self.model_name = model
        #: the statistics as Python floats (readable also on the meta device)
        self.stats = (tuple(float(m) for m in mean), tuple(float(s) for s in std))
        # Buffers (not parameters): follow .to(device/dtype), never trained.
        # Non-persistent: torchvision checkpoints load into the twins unchanged.
        self.register_buffer(
            "mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False
        )
        self.register_buffer(
            "std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False
        )

    def forward(self, x: Tensor) -> Tensor:
        check_image_batch(x, in_channels=self.in_channels, min_size=self.min_size,  # type: ignore[arg-type]
                          model=self.model_name, allow_empty=True, like=self.mean)
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}"


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (not buffers) of ``model``."""
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------- weights data
_V2_RELEASE = "https://github.com/B-cos/B-cos-v2/releases/download/v0.0.1-weights"


def bcos_v2_release(file_name: str, top1: float) -> Weights:
    """The ``bcos_v2_imagenet`` entry of a B-cos v2 release file (ImageNet, 1000
    classes, the ``bcos`` package's key names; 224 px after resizing to 256 and a
    centre crop).  ``top1``: the ImageNet top-1 (%) the release reports (bcos 0.1.3,
    ``bcos.models.pretrained`` docstrings), not measured here."""
    url = f"{_V2_RELEASE}/{file_name}"
    prefix = sha256_prefix_of(url)
    if prefix is None:
        raise ValueError(f"{file_name!r} carries no SHA-256 prefix (name-<hex>.pth)")
    return Weights(
        name="bcos_v2_imagenet", url=url, sha256_prefix=prefix,
        source="B-cos v2 release v0.0.1-weights (github.com/B-cos/B-cos-v2)",
        num_classes=1000, key_format="bcos_v2",
        transforms="Resize(256), CenterCrop(224), images in [0, 1] (no mean/std: the model "
                   "encodes them)",
        metrics={"imagenet_top1": top1}, preprocess=eval_preprocess("imagenet", 224),
        dataset=DatasetRecord("imagenet", None, "train", "val"),
    )
