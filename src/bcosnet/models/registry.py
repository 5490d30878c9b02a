"""The model registry: ``register_model``, ``create_model``, ``list_models``.

Every registered builder takes ``num_classes`` and ``in_channels`` (plus its own
options) and returns an ``nn.Module`` that takes images in [0, 1].
:func:`create_model` attaches a :class:`ModelInfo` as ``model.model_info``.
"""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from torch import nn

__all__ = ["ModelInfo", "register_model", "create_model", "list_models", "model_info"]


@dataclass(frozen=True)
class ModelInfo:
    """What a caller needs to feed a model.

    Attributes:
        name: registry name.
        family: "vgg", "resnet", "densenet", "inception", "small", ...
        kind: "bcos" (v1 style), "bcos_v2" or "standard" (conventional twin).
        input_size: native (H, W).
        min_size: smallest (H, W) the model accepts.
        in_channels: raw image channels (3 RGB, 1 grey).
        num_classes: output count.
        extra: the options given to :func:`create_model` (beyond the defaults).
        options: the builder's options and their defaults (the table of a
            family's variants: ``b``, ``max_out``, ``scale``, ``temperature``,
            ``logit_bias``, ``norm``, ...).
    """

    name: str
    family: str
    kind: str
    input_size: tuple[int, int]
    min_size: tuple[int, int]
    in_channels: int = 3
    num_classes: int = 1000
    extra: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def is_bcos(self) -> bool:
        return self.kind.startswith("bcos")


@dataclass(frozen=True)
class _Entry:
    builder: Callable[..., nn.Module]
    info: ModelInfo


_REGISTRY: dict[str, _Entry] = {}


def register_model(
    name: str | None = None,
    *,
    family: str,
    kind: str = "bcos",
    input_size: tuple[int, int] = (224, 224),
    min_size: tuple[int, int] | None = None,
    in_channels: int = 3,
    default_num_classes: int = 1000,
    options: dict[str, Any] | None = None,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering a model builder under ``name`` (default: its ``__name__``).

    ``options``: the builder's options with their defaults (besides
    ``num_classes`` and ``in_channels``); without it they are read off the
    builder's signature.
    """
    if kind not in ("bcos", "bcos_v2", "standard"):
        raise ValueError(f"kind must be 'bcos', 'bcos_v2' or 'standard', got {kind!r}")

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or fn.__name__
        if key in _REGISTRY:
            raise ValueError(f"a model named {key!r} is already registered")
        info = ModelInfo(
            name=key,
            family=family,
            kind=kind,
            input_size=tuple(input_size),  # type: ignore[arg-type]
            min_size=tuple(min_size or input_size),  # type: ignore[arg-type]
            in_channels=in_channels,
            num_classes=default_num_classes,
            options=dict(options) if options is not None else _signature_options(fn),
        )
        _REGISTRY[key] = _Entry(fn, info)
        return fn

    return deco


def _lookup(name: str) -> _Entry:
    if name not in _REGISTRY:
        from .._utils.validate import did_you_mean

        raise ValueError(
            f"unknown model {name!r}{did_you_mean(name, list(_REGISTRY), n=5, cutoff=0.5)}; "
            f"see bcosnet.list_models() for all {len(_REGISTRY)} names"
        )
    return _REGISTRY[name]


def model_info(name: str) -> ModelInfo:
    """The registered :class:`ModelInfo` of ``name`` (defaults, before overrides)."""
    return _lookup(name).info


def create_model(
    name: str,
    num_classes: int | None = None,
    *,
    weights: Any = None,
    **overrides: Any,
) -> nn.Module:
    """Build a registered model, optionally with weights.

    Args:
        name: a name from :func:`list_models`.
        num_classes: output count (default: the builder's default, or the
            registered weights' class count).
        weights: ``None`` (random initialisation), the name of a registered
            weights entry (:func:`bcosnet.models.list_weights`) or ``"DEFAULT"``,
            a :class:`~bcosnet.models.Weights`, a file path or URL (a bcosnet
            checkpoint or ``.safetensors`` export, a ``torch.save``-d state dict —
            ours or a ``bcos`` v2 one), or a state dict.  Loaded weights-only and
            strictly; the model is returned in eval mode.
        **overrides: builder options (``in_channels``, ``b``, ``max_out``,
            ``scale``, ``temperature``, ``logit_bias``, ``norm``, ...).
    """
    entry = _lookup(name)
    entry_weights = None
    if weights is not None:
        from .weights import Weights, get_weights, list_weights

        if isinstance(weights, Weights):
            entry_weights = weights
        elif isinstance(weights, str) and (weights == "DEFAULT" or weights in list_weights(name)):
            entry_weights = get_weights(name, weights)
        if entry_weights is not None:
            overrides = {**entry_weights.model_options, **overrides}
            if num_classes is None:
                num_classes = entry_weights.num_classes
    if num_classes is None:
        num_classes = entry.info.num_classes
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    from ._common import check_option_names, translate_legacy_options

    overrides = translate_legacy_options(overrides, name)
    check_option_names(["in_channels", *entry.info.options], list(overrides), name)
    model = entry.builder(num_classes=num_classes, **overrides)
    in_ch = overrides.get("in_channels", entry.info.in_channels)
    info = replace(entry.info, num_classes=num_classes, in_channels=in_ch, extra=dict(overrides))
    model.model_info = info  # type: ignore[assignment]
    if weights is not None:
        from .weights import load_weights

        meta = load_weights(model, entry_weights or weights, model_name=name)
        if meta.get("classes"):
            model.class_names = list(meta["classes"])  # type: ignore[assignment]
        model.eval()
    return model


def _signature_options(fn: Callable[..., nn.Module]) -> dict[str, Any]:
    return {
        k: p.default for k, p in inspect.signature(fn).parameters.items()
        if k not in ("num_classes", "in_channels")
        and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def list_models(pattern: str | None = None, *, kind: str | None = None) -> list[str]:
    """Sorted registered names, optionally filtered by a glob ``pattern`` and ``kind``."""
    names = sorted(_REGISTRY)
    if pattern is not None:
        names = [n for n in names if fnmatch.fnmatch(n, pattern)]
    if kind is not None:
        names = [n for n in names if _REGISTRY[n].info.kind == kind]
    return names
