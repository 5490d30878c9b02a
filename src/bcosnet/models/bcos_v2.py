"""Import checkpoints of the B-cos v2 release (PyPI package ``bcos``) by its names.

:func:`load_bcos_v2` builds the matching bcosnet ``*_v2`` model and loads a v2
state dict into it.  Every ``*_v2`` model mirrors the module names of the
``bcos`` package's model of the same architecture, so the mapping is generic
(:func:`bcosnet.models.weights.map_state_keys`): the ``bcos`` B-cos layers keep
their weight in a ``linear`` sub-module (``<prefix>.linear.weight``), ours
directly (``<prefix>.weight``); everything else (uncentred batch norms'
``weight``/``running_*`` buffers, ...) is identical.  Checkpoints are data: they
are read with ``weights_only=True``.  The release's ImageNet weights are
registered entries (``bcos_v2_imagenet``) declared beside their models in
``resnet.py``, ``densenet.py`` and ``vgg.py``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from torch import nn

from .._utils.validate import did_you_mean
from .densenet import WEIGHTS as _DENSENET_WEIGHTS
from .factory import create_model, load_weights
from .registry import Weights, get_weights
from .resnet import WEIGHTS as _RESNET_WEIGHTS
from .vgg import WEIGHTS as _VGG_WEIGHTS
from .weights import convert_bcos_v2_state_dict

__all__ = ["V2_ARCHS", "V2_REPORTED_TOP1", "V2_URLS", "load_bcos_v2",
           "convert_bcos_v2_state_dict"]

#: ``bcos`` architecture name → bcosnet model name.
V2_ARCHS: dict[str, str] = {
    "resnet18": "resnet18_v2",
    "resnet34": "resnet34_v2",
    "resnet50": "resnet50_v2",
    "resnet101": "resnet101_v2",
    "resnet152": "resnet152_v2",
    "densenet121": "densenet121_v2",
    "densenet161": "densenet161_v2",
    "densenet169": "densenet169_v2",
    "densenet201": "densenet201_v2",
    "vgg11_bnu": "vgg11_bnu_v2",
    # CIFAR-10 ResNets (bcos.models.resnet.cifar10_resnet*, with uncentred BN);
    # the v2 release has no official weights for them.
    "cifar10_resnet20": "cifar_resnet20_v2",
    "cifar10_resnet56": "cifar_resnet56_v2",
    # ConvNeXts (bcos.models.convnext; the release's "convnext_tiny"/"convnext_base" are
    # the position-norm ones, "*_bnu" pass norm="bnu").
    "convnext_atto": "convnext_atto_v2",
    "convnext_tiny": "convnext_tiny_v2",
    "convnext_small": "convnext_small_v2",
    "convnext_base": "convnext_base_v2",
    "convnext_large": "convnext_large_v2",
    # ViTs (bcos.models.vit, the "bcos_*" experiments of vit_final).
    **{a: f"{a}_v2" for a in (
        "simple_vit_ti_patch16_224", "simple_vit_s_patch16_224", "simple_vit_b_patch16_224",
        "simple_vit_l_patch16_224", "vitc_ti_patch1_14", "vitc_s_patch1_14",
        "vitc_b_patch1_14", "vitc_l_patch1_14")},
}

_RELEASED = {**_RESNET_WEIGHTS, **_DENSENET_WEIGHTS, **_VGG_WEIGHTS}
_ENTRIES = {arch: next(w for w in _RELEASED[name] if w.name == "bcos_v2_imagenet")
            for arch, name in V2_ARCHS.items() if name in _RELEASED}
#: The official ImageNet weights of the v2 release (``bcos.models.pretrained``), by
#: ``bcos`` architecture: read off the registered ``bcos_v2_imagenet`` entries.
V2_URLS: dict[str, str] = {arch: w.url for arch, w in _ENTRIES.items()}
#: ImageNet top-1 (%) the B-cos v2 release reports for its weights (not measured here).
V2_REPORTED_TOP1: dict[str, float] = {arch: w.metrics["imagenet_top1"]
                                      for arch, w in _ENTRIES.items()}


def _resolve_arch(arch: str) -> str:
    if not isinstance(arch, str):
        raise TypeError(f"arch must be a str, got {type(arch).__name__}")
    if arch in V2_ARCHS:
        return arch
    for k, v in V2_ARCHS.items():  # accept bcosnet names and bcos' "resnet_18" spelling
        bcos_exp_name = k.replace("resnet", "resnet_").replace("densenet", "densenet_")
        if arch in (v, bcos_exp_name.replace("vgg", "vgg_")):
            return k
    hint = did_you_mean(arch, list(V2_ARCHS) + list(V2_ARCHS.values()))
    raise ValueError(
        f"unknown B-cos v2 architecture {arch!r}{hint}; supported: {', '.join(V2_ARCHS)}"
    )


def load_bcos_v2(
    arch: str,
    source: str | os.PathLike | Mapping[str, Any] | None = None,
    *,
    num_classes: int | None = None,
    check_hash: bool = True,
    model_dir: str | os.PathLike | None = None,
    progress: bool = True,
    **overrides: Any,
) -> nn.Module:
    """Build the bcosnet model matching a B-cos v2 checkpoint and load it.

    Args:
        arch: a ``bcos`` architecture (``"resnet18"``, ``"resnet34"``, ``"resnet50"``,
            ``"resnet101"``, ``"resnet152"``, ``"densenet121"`` ... ``"vgg11_bnu"``) or
            the bcosnet name (``"resnet18_v2"`` ...); see :data:`V2_ARCHS`.
        source: a local file path, a URL (``https://``, ``file://``; fetched into
            torch's hub cache with :func:`torch.hub.load_state_dict_from_url`, with
            the SHA-256 check when the file name carries a hash prefix), a state
            dict, or ``None`` for the official ImageNet weights (:data:`V2_URLS`).
        num_classes: classes of the checkpoint (default: the model's default, 1000
            for ImageNet architectures, 10 for the CIFAR-10 ResNets).
        check_hash: verify the hash prefix of URL downloads.
        model_dir: download folder (default: torch's hub cache).
        progress: show a download progress bar.
        **overrides: builder options of the bcosnet model, e.g. ``logit_bias`` for a
            checkpoint trained with another bias than ``−log(num_classes − 1)``.

    Returns:
        The model in eval mode, with ``model.model_info`` set.  Its logits and
        explanations equal those of the ``bcos`` model with the same weights.

    Raises:
        ValueError: unknown arch, unreadable or corrupt file, hash mismatch, or a
            checkpoint whose keys/shapes do not fit (missing, unexpected, shape
            mismatches are listed).
    """
    key = _resolve_arch(arch)
    name = V2_ARCHS[key]
    if source is None:
        if key not in V2_URLS:
            raise ValueError(
                f"there are no official B-cos v2 weights for {key!r}; pass source= (a path, "
                f"URL or state dict)"
            )
        source = get_weights(name, "bcos_v2_imagenet")
    if num_classes is None and isinstance(source, Weights):
        num_classes = source.num_classes
    model = create_model(name, num_classes=num_classes, **overrides)
    try:
        load_weights(model, source, model_name=name, check_hash=check_hash, model_dir=model_dir,
                     progress=progress)
    except ValueError as e:
        hint = ""
        if "shape mismatch" in str(e):
            hint = " (if the checkpoint has another number of classes, pass num_classes=...)"
        raise ValueError(f"load_bcos_v2({key!r}): {e}{hint}") from e
    return model.eval()

