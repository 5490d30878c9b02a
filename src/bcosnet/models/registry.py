"""The model registry: ``register_model``, ``create_model``, ``list_models`` — and
the record a model carries (:class:`ModelInfo`).

Every registered builder takes ``num_classes`` and ``in_channels`` (plus its own
options) and returns an ``nn.Module`` that takes images in [0, 1].
:func:`create_model` attaches a :class:`ModelInfo` as ``model.model_info``: the
architecture and its options, and — once trained, or loaded from a file that
records it — the class names, the image size and resize rule it was tested
with, and its data set.  Checkpoints and exports save it (:meth:`ModelInfo.to_dict`).
"""

from __future__ import annotations

import fnmatch
import inspect
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from torch import nn

from ..data.builder import DatasetRecord
from ..data.images import Preprocess

__all__ = ["RECORD_FORMAT", "ClassNamesMixin", "ModelInfo", "register_model", "create_model",
           "list_models", "model_info"]

#: Version tag of :meth:`ModelInfo.to_dict` (written into every checkpoint and export).
RECORD_FORMAT = "bcosnet-model-record-1"
_RECORD_KEYS = ("format", "name", "family", "kind", "input_size", "min_size", "in_channels",
                "num_classes", "model_options", "classes", "preprocess", "dataset",
                "input_encoding")
_ENCODINGS = ("add_inverse", "normalize", "none")


@dataclass(frozen=True)
class ModelInfo:
    """What a caller needs to feed a model — the one record a saved model carries.

    Attributes:
        name: registry name.
        family: "vgg", "resnet", "densenet", "inception", "small", ...
        kind: "bcos" (v1 style), "bcos_v2" or "standard" (conventional twin).
        input_size: the architecture's native (H, W) (the registry's; the size a
            trained model was fed is :attr:`image_size`).
        min_size: smallest (H, W) the model accepts.
        in_channels: raw image channels (3 RGB, 1 grey).
        num_classes: output count.
        extra: the options given to :func:`create_model` (beyond the defaults);
            saved as ``model_options``.
        options: the builder's options and their defaults (the table of a
            family's variants: ``b``, ``max_out``, ``scale``, ``temperature``,
            ``logit_bias``, ``norm``, ...).
        classes: class names of the outputs (``classes[i]`` names output ``i``;
            empty when not known).  ``model.class_names`` reads and writes this.
        preprocess: how an image becomes this model's input — the evaluation
            transform of its data (:class:`bcosnet.data.Preprocess`: size, resize
            rule, normalisation); ``None`` when not recorded (an untrained model
            or weights without a record: the native size is assumed).
        dataset: the data set it was trained and tested on
            (:class:`bcosnet.data.DatasetRecord`), or ``None``.
        input_encoding: what the model does with its [0, 1] input:
            ``{"kind": "add_inverse"}`` (B-cos: encodes ``[x, 1 − x]``),
            ``{"kind": "normalize", "mean": [...], "std": [...]}`` (a conventional
            twin normalises inside), ``{"kind": "none"}``; empty when not known.
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
    classes: tuple[str, ...] = ()
    preprocess: Preprocess | None = None
    dataset: DatasetRecord | None = None
    input_encoding: dict[str, Any] = field(default_factory=dict)

    @property
    def is_bcos(self) -> bool:
        return self.kind.startswith("bcos")

    @property
    def image_size(self) -> tuple[int, int]:
        """The (H, W) the model is fed: the recorded size, else the native size."""
        return self.preprocess.size if self.preprocess is not None else self.input_size

    def with_classes(self, classes: Sequence[str]) -> ModelInfo:
        """A copy with these class names (at most ``num_classes``; strings)."""
        return replace(self, classes=_check_classes(classes, self.num_classes))

    def summary(self) -> str:
        """One line: model, classes, input, data set (what the CLI prints)."""
        names = ", ".join(self.classes[:6]) + (", ..." if len(self.classes) > 6 else "")
        cls = f"{self.num_classes} classes" + (f" ({names})" if names else "")
        pre = (self.preprocess.describe() if self.preprocess is not None else
               f"{self.input_size[0]}×{self.input_size[1]} px (the native size: no size "
               f"recorded), shorter side scaled, centre crop")
        data = self.dataset.describe() if self.dataset is not None else "not recorded"
        return (f"{self.name}: {cls}; input {self.in_channels}×{pre}; data set {data}")

    # ------------------------------------------------------------------ record
    def to_dict(self) -> dict[str, Any]:
        """The record as JSON-able data, tagged with :data:`RECORD_FORMAT`."""
        d = {
            "format": RECORD_FORMAT, "name": self.name, "family": self.family,
            "kind": self.kind, "input_size": list(self.input_size),
            "min_size": list(self.min_size), "in_channels": self.in_channels,
            "num_classes": self.num_classes, "model_options": _jsonable(self.extra),
            "classes": list(self.classes),
            "preprocess": None if self.preprocess is None else self.preprocess.to_dict(),
            "dataset": None if self.dataset is None else self.dataset.to_dict(),
            "input_encoding": _jsonable(self.input_encoding),
        }
        json.dumps(d)  # fail here, not when a checkpoint is half written
        return d

    @classmethod
    def from_dict(cls, d: Any, *, source: str = "the model record") -> ModelInfo:
        """The inverse of :meth:`to_dict`.  A ``ValueError`` names ``source`` and
        the field when the record is of an unknown format (a newer bcosnet?),
        incomplete, or inconsistent (tampered with)."""
        def bad(msg: str) -> ValueError:
            return ValueError(f"{source}: {msg} — the file's model record is damaged or was "
                              f"edited; re-export the model from its training checkpoint")

        from .._utils.validate import check_record_fields

        try:
            check_record_fields(d, _RECORD_KEYS, "the model record")
        except ValueError as e:
            raise bad(str(e)) from None
        fmt = d.get("format")
        if fmt != RECORD_FORMAT:
            raise ValueError(
                f"{source}: model record format {fmt!r} is not one this bcosnet reads "
                f"({RECORD_FORMAT!r}); it was written by another (newer?) bcosnet version — "
                f"upgrade bcosnet, or load the weights with create_model(NAME, weights=...) "
                f"and the options it was built with")
        missing = [k for k in ("name", "family", "kind", "input_size", "min_size",
                               "in_channels", "num_classes") if k not in d]
        if missing:
            raise bad(f"missing field(s) {missing}")
        try:
            name, family, kind = (_check_str(d[k], k) for k in ("name", "family", "kind"))
            if kind not in ("bcos", "bcos_v2", "standard"):
                raise ValueError(f"kind {kind!r} is not 'bcos', 'bcos_v2' or 'standard'")
            num_classes = _check_pos_int(d["num_classes"], "num_classes")
            in_channels = _check_pos_int(d["in_channels"], "in_channels")
            sizes = [_check_size(d[k], k) for k in ("input_size", "min_size")]
            extra = d.get("model_options") or {}
            if not isinstance(extra, dict) or not all(isinstance(k, str) for k in extra):
                raise ValueError(f"model_options must map option names to values, got {extra!r}")
            classes = _check_classes(d.get("classes") or [], num_classes)
            pre = d.get("preprocess")
            pre = None if pre is None else Preprocess.from_dict(pre)
            data = d.get("dataset")
            data = None if data is None else DatasetRecord.from_dict(data)
            enc = d.get("input_encoding") or {}
            if not isinstance(enc, dict) or (enc and enc.get("kind") not in _ENCODINGS):
                raise ValueError(f"input_encoding must be {{'kind': one of {_ENCODINGS}}}, "
                                 f"got {enc!r}")
        except (TypeError, ValueError) as e:
            raise bad(str(e)) from None
        if pre is not None and in_channels and pre.mean is not None \
                and len(pre.mean) != in_channels:
            raise bad(f"preprocess normalises {len(pre.mean)} channels, the model takes "
                      f"{in_channels}")
        registered = _REGISTRY.get(name)
        options = dict(registered.info.options) if registered is not None else {}
        return cls(name=name, family=family, kind=kind, input_size=sizes[0],
                   min_size=sizes[1], in_channels=in_channels, num_classes=num_classes,
                   extra=dict(extra), options=options, classes=classes, preprocess=pre,
                   dataset=data, input_encoding=dict(enc))


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"a model record holds only finite numbers, got {v}")
        return v
    raise TypeError(f"the model record cannot hold a {type(v).__name__} ({v!r}); model "
                    f"options must be numbers, strings, lists or dicts")


def _check_str(v: Any, what: str) -> str:
    if not isinstance(v, str) or not v:
        raise ValueError(f"{what} must be a non-empty string, got {v!r}")
    return v


def _check_pos_int(v: Any, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{what} must be a positive int, got {v!r}")
    return v


def _check_size(v: Any, what: str) -> tuple[int, int]:
    if not isinstance(v, (list, tuple)) or len(v) != 2:
        raise ValueError(f"{what} must be [H, W], got {v!r}")
    return (_check_pos_int(v[0], what), _check_pos_int(v[1], what))


def _check_classes(v: Any, num_classes: int) -> tuple[str, ...]:
    if isinstance(v, str) or not isinstance(v, (list, tuple)) or not all(
            isinstance(c, str) for c in v):
        raise ValueError(f"classes must be a list of names (strings), got {v!r}")
    if len(v) > num_classes:
        raise ValueError(f"{len(v)} class names for a model of {num_classes} classes")
    return tuple(v)


def input_encoding_of(model: nn.Module) -> dict[str, Any]:
    """What ``model`` does with its [0, 1] input (see :attr:`ModelInfo.input_encoding`)."""
    from ..nn import AddInverse
    from ._common import ImageNormalize

    for m in model.modules():
        if isinstance(m, AddInverse):
            return {"kind": "add_inverse"}
        if isinstance(m, ImageNormalize):
            mean, std = m.stats
            return {"kind": "normalize", "mean": list(mean), "std": list(std)}
    return {"kind": "none"}


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
            weights' class count).
        weights: ``None`` (random initialisation), the name of a registered
            weights entry (:func:`bcosnet.models.list_weights`) or ``"DEFAULT"``,
            a :class:`~bcosnet.models.Weights`, a file path or URL (a bcosnet
            checkpoint or ``.safetensors`` export, a ``torch.save``-d state dict —
            ours or a ``bcos`` v2 one), a state dict, or what
            :func:`bcosnet.models.read_weights` returned.  Loaded weights-only and
            strictly; the model is returned in eval mode.  A bcosnet checkpoint or
            export carries its model record: the model is built with the recorded
            class count and options (unless given here), and ``model.model_info``
            holds the recorded class names, image size and resize rule, and data
            set.
        **overrides: builder options (``in_channels``, ``b``, ``max_out``,
            ``scale``, ``temperature``, ``logit_bias``, ``norm``, ...).
    """
    entry = _lookup(name)
    entry_weights = None
    read = None
    if weights is not None:
        from .weights import ReadWeights, Weights, get_weights, list_weights, read_weights

        if isinstance(weights, Weights):
            entry_weights = weights
        elif isinstance(weights, str) and (weights == "DEFAULT" or weights in list_weights(name)):
            entry_weights = get_weights(name, weights)
        if entry_weights is not None:
            overrides = {**entry_weights.model_options, **overrides}
            if num_classes is None:
                num_classes = entry_weights.num_classes
        else:
            read = weights if isinstance(weights, ReadWeights) else read_weights(
                weights, model_name=name)
            if read.record is not None:
                if read.record.name != name:
                    raise ValueError(f"{read.what} was trained as {read.record.name!r}, not "
                                     f"{name!r} — build {read.record.name!r}")
                overrides = {**read.record.extra, **overrides}
                if num_classes is None:
                    num_classes = read.record.num_classes
    if num_classes is None:
        num_classes = entry.info.num_classes
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    from ._common import check_option_names, translate_legacy_options

    overrides = translate_legacy_options(overrides, name)
    check_option_names(["in_channels", *entry.info.options], list(overrides), name)
    model = entry.builder(num_classes=num_classes, **overrides)
    in_ch = overrides.get("in_channels", entry.info.in_channels)
    info = replace(entry.info, num_classes=num_classes, in_channels=in_ch, extra=dict(overrides),
                   input_encoding=input_encoding_of(model))
    if weights is not None:
        from .weights import load_weights

        load_weights(model, entry_weights or read, model_name=name)
        source = entry_weights if entry_weights is not None else read.record
        if source is not None:
            info = replace(info, preprocess=source.preprocess, dataset=source.dataset)
            info = info.with_classes(list(source.classes)[:num_classes]
                                     if len(source.classes) <= num_classes else [])
        model.eval()
    model.model_info = info  # type: ignore[assignment]
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
