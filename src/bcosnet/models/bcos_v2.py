"""Import checkpoints of the B-cos v2 release (PyPI package ``bcos``).

:func:`load_bcos_v2` builds the matching bcosnet ``*_v2`` model and loads a v2
state dict into it.  Every ``*_v2`` model mirrors the module names of the
``bcos`` package's model of the same architecture, so the mapping is generic:
the ``bcos`` B-cos layers keep their weight in a ``linear`` sub-module
(``<prefix>.linear.weight``), ours directly (``<prefix>.weight``); everything
else (uncentred batch norms' ``weight``/``running_*`` buffers, ...) is
identical.  Checkpoints are data: they are read with ``weights_only=True``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from .._utils.validate import did_you_mean
from ..data.builder import DatasetRecord, eval_preprocess
from .registry import create_model
from .weights import Weights, get_weights, load_weights, register_weights

__all__ = ["V2_ARCHS", "V2_URLS", "load_bcos_v2", "convert_bcos_v2_state_dict"]

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

_BASE = "https://github.com/B-cos/B-cos-v2/releases/download/v0.0.1-weights"
#: The official ImageNet weights of the v2 release (``bcos.models.pretrained``);
#: the part after the last ``-`` of each file name is a SHA-256 prefix that
#: :func:`torch.hub.load_state_dict_from_url` checks.
V2_URLS: dict[str, str] = {
    "resnet18": f"{_BASE}/resnet_18-68b4160fff.pth",
    "resnet34": f"{_BASE}/resnet_34-a63425a03e.pth",
    "resnet50": f"{_BASE}/resnet_50-ead259efe4.pth",
    "resnet101": f"{_BASE}/resnet_101-84c3658278.pth",
    "resnet152": f"{_BASE}/resnet_152-42051a77c1.pth",
    "densenet121": f"{_BASE}/densenet_121-b8daf96afb.pth",
    "densenet161": f"{_BASE}/densenet_161-9e9ea51353.pth",
    "densenet169": f"{_BASE}/densenet_169-7037ee0604.pth",
    "densenet201": f"{_BASE}/densenet_201-00ac87066f.pth",
    "vgg11_bnu": f"{_BASE}/vgg_11_bnu-34036029f0.pth",
}

_HASH_RE = re.compile(r"-([a-f0-9]+)\.")  # torch.hub's hash-prefix convention
# "0.": the bcos ViTs wrapped with their logit layer (BcosSequential(model, LogitLayer)).
_PREFIXES = ("", "module.", "model.", "_orig_mod.", "0.")


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


def convert_bcos_v2_state_dict(
    state_dict: Mapping[str, Any], target: Mapping[str, Tensor]
) -> dict[str, Tensor]:
    """Rename a ``bcos`` v2 state dict to the keys of ``target`` (a bcosnet
    model's ``state_dict()``) and check it.

    ``<prefix>.linear.weight`` becomes ``<prefix>.weight``; a common wrapper
    prefix (``module.``, ``model.``) is stripped.  Raises ``ValueError`` listing
    missing keys, unexpected keys and shape mismatches.
    """
    bad = [k for k, v in state_dict.items() if not isinstance(v, Tensor)]
    if bad:
        raise ValueError(f"state dict entries must be tensors; not tensors: {bad[:5]}")

    def rename(key: str, prefix: str) -> str:
        key = key[len(prefix):]
        if key not in target and key.endswith(".linear.weight"):
            key = key[: -len(".linear.weight")] + ".weight"
        return key

    # Pick the wrapper prefix that explains most keys.
    best_prefix, best_hits = "", -1
    for prefix in _PREFIXES:
        hits = sum(1 for k in state_dict if k.startswith(prefix) and rename(k, prefix) in target)
        if hits > best_hits:
            best_prefix, best_hits = prefix, hits

    out: dict[str, Tensor] = {}
    unexpected: list[str] = []
    mismatched: list[str] = []
    mismatched_targets: set[str] = set()
    for k, v in state_dict.items():
        nk = rename(k, best_prefix) if k.startswith(best_prefix) else None
        if nk is None or nk not in target:
            unexpected.append(k)
        elif tuple(target[nk].shape) != tuple(v.shape):
            mismatched.append(
                f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(target[nk].shape)}"
            )
            mismatched_targets.add(nk)
        else:
            out[nk] = v
    # Batch-norm step counters are optional; everything else is required.
    missing = [
        k for k in target
        if k not in out and k not in mismatched_targets and not k.endswith("num_batches_tracked")
    ]
    if unexpected or mismatched or missing:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s): {', '.join(missing[:8])}"
                         + (" ..." if len(missing) > 8 else ""))
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): {', '.join(unexpected[:8])}"
                         + (" ..." if len(unexpected) > 8 else ""))
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatch(es): {'; '.join(mismatched[:5])}"
                         + (" ..." if len(mismatched) > 5 else ""))
        raise ValueError("the checkpoint does not fit the model — " + " | ".join(parts))
    return out


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


#: ImageNet top-1 (%) the B-cos v2 release reports for its weights (bcos 0.1.3,
#: ``bcos.models.pretrained`` docstrings); not measured here.
V2_REPORTED_TOP1: dict[str, float] = {
    "resnet18": 68.736, "resnet34": 72.284, "resnet50": 75.882, "resnet101": 76.532,
    "resnet152": 76.484, "densenet121": 73.612, "densenet161": 76.622,
    "densenet169": 75.186, "densenet201": 75.480, "vgg11_bnu": 69.310,
}

for _arch, _url in V2_URLS.items():
    register_weights(V2_ARCHS[_arch], Weights(
        name="bcos_v2_imagenet",
        url=_url,
        sha256_prefix=_HASH_RE.search(_url.rsplit("/", 1)[-1]).group(1),  # type: ignore[union-attr]
        source="B-cos v2 release v0.0.1-weights (github.com/B-cos/B-cos-v2)",
        num_classes=1000,
        key_format="bcos_v2",
        transforms="Resize(256), CenterCrop(224), images in [0, 1] (no mean/std: the model "
                   "encodes them)",
        metrics={"imagenet_top1": V2_REPORTED_TOP1[_arch]},
        preprocess=eval_preprocess("imagenet", 224),
        dataset=DatasetRecord("imagenet", None, "train", "val"),
    ))
