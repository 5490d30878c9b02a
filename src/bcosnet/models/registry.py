"""The model registry: two tables and the records they hold (timm's ``_registry``).

* name → builder (``@register_model``, :func:`list_models`, :func:`model_info`);
* name → released weights (:class:`Weights` entries, :func:`register_weights`,
  :func:`list_weights`, :func:`get_weights`), declared as data in each family's file
  beside its models;
* :class:`ModelInfo`, the record a model carries (:meth:`ModelInfo.to_dict` /
  :meth:`~ModelInfo.from_dict`, :func:`saved_record` for a file's metadata).

This module builds and loads nothing: it imports only the data records
(:class:`~bcosnet.data.Preprocess`, :class:`~bcosnet.data.DatasetRecord`).  Every
registered builder takes ``num_classes`` and ``in_channels`` (plus its own options)
and returns an ``nn.Module`` taking images in [0, 1]; :func:`bcosnet.models.create_model`
(``models/factory.py``, above this module and the weights loader) builds one and
attaches its :class:`ModelInfo` as ``model.model_info``: the architecture and its
options, and — once trained, or loaded from a file that records it — the class
names, the image size and resize rule it was tested with, and its data set.
"""

from __future__ import annotations

import fnmatch
import inspect
import json
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from torch import nn

from .._utils.validate import check_int, check_record_fields, did_you_mean
from ..data.builder import DatasetRecord, eval_preprocess
from ..data.images import Preprocess

__all__ = ["KINDS", "RECORD_FORMAT", "ModelInfo", "Weights", "get_weights", "list_models",
           "list_weights", "model_entrypoint", "model_info", "record_meta", "register_model",
           "register_weights", "register_weights_table", "saved_record", "weights_entry"]

#: What a registered model is: B-cos v1 (the paper's), B-cos v2, or a conventional twin.
KINDS = ("bcos", "bcos_v2", "standard")

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
        """Whether the model is a B-cos network (``kind`` "bcos" or "bcos_v2").

        The library's one rule is :func:`bcosnet.nn.is_bcos_model` (a module taking
        part in explanation mode); :func:`~bcosnet.models.create_model` refuses a
        registration whose kind contradicts it, so for every built model
        ``model.model_info.is_bcos == is_bcos_model(model)``."""
        return self.kind != "standard"

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
            if kind not in KINDS:
                raise ValueError(f"kind {kind!r} is not 'bcos', 'bcos_v2' or 'standard'")
            num_classes = check_int("num_classes", d["num_classes"], 1)
            in_channels = check_int("in_channels", d["in_channels"], 1)
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


def _check_size(v: Any, what: str) -> tuple[int, int]:
    if not isinstance(v, (list, tuple)) or len(v) != 2:
        raise ValueError(f"{what} must be [H, W], got {v!r}")
    return (check_int(what, v[0], 1), check_int(what, v[1], 1))


def _check_classes(v: Any, num_classes: int) -> tuple[str, ...]:
    if isinstance(v, str) or not isinstance(v, (list, tuple)) or not all(
            isinstance(c, str) for c in v):
        raise ValueError(f"classes must be a list of names (strings), got {v!r}")
    if len(v) > num_classes:
        raise ValueError(f"{len(v)} class names for a model of {num_classes} classes")
    return tuple(v)


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
    if kind not in KINDS:
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
        raise ValueError(
            f"unknown model {name!r}{did_you_mean(name, list(_REGISTRY), n=5, cutoff=0.5)}; "
            f"see bcosnet.list_models() for all {len(_REGISTRY)} names"
        )
    return _REGISTRY[name]


def model_info(name: str) -> ModelInfo:
    """The registered :class:`ModelInfo` of ``name`` (defaults, before overrides)."""
    return _lookup(name).info


def model_entrypoint(name: str) -> Callable[..., nn.Module]:
    """The registered builder of ``name`` (a ``ValueError`` with close names otherwise)."""
    return _lookup(name).builder


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


# ----------------------------------------------------------------------------- weights
@dataclass(frozen=True)
class Weights:
    """A released set of weights of one registered model (data: nothing is loaded here).

    Attributes:
        name: the entry's name (``create_model(model, weights=name)``).
        url: where the file is downloaded from.
        sha256_prefix: the hash prefix the download must match (torch.hub's
            convention: it is also the part after the last ``-`` of the file name).
        source: who released it, where (for citation).
        num_classes: classes of the checkpoint.
        key_format: ``"bcos_v2"`` (the ``bcos`` package's key names, renamed on
            load) or ``"bcosnet"``.
        transforms: the evaluation transform the weights expect, in words.
        metrics: accuracy the release reports (e.g. ``{"imagenet_top1": 68.736}``);
            reported by the source, not measured here.
        model_options: options the model must be built with for these weights.
        preprocess: the evaluation transform as a record
            (:class:`bcosnet.data.Preprocess`); recorded in the loaded model.
        dataset: the data set they were trained on (:class:`bcosnet.data.DatasetRecord`).
        classes: class names of the outputs (empty: not bundled).
    """

    name: str
    url: str
    sha256_prefix: str
    source: str
    num_classes: int
    key_format: str = "bcosnet"
    transforms: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    model_options: dict[str, Any] = field(default_factory=dict)
    preprocess: Preprocess | None = None
    dataset: DatasetRecord | None = None
    classes: tuple[str, ...] = ()


_WEIGHTS: dict[str, dict[str, Weights]] = {}


def register_weights(model: str, weights: Weights) -> Weights:
    """Attach ``weights`` to the model named ``model`` (a family file declares its
    entries beside its models and registers them when imported)."""
    entries = _WEIGHTS.setdefault(model, {})
    if weights.name in entries:
        raise ValueError(f"{model!r} already has weights named {weights.name!r}")
    entries[weights.name] = weights
    return weights


def register_weights_table(table: Mapping[str, Sequence[Weights]]) -> None:
    """Register a family's weights, declared as data beside its models: model name →
    its entries (the first is the model's ``"DEFAULT"``)."""
    for model, entries in table.items():
        for weights in entries:
            register_weights(model, weights)


def list_weights(model: str) -> list[str]:
    """Names of the registered weights of ``model`` (first = ``"DEFAULT"``)."""
    return list(_WEIGHTS.get(model, {}))


def get_weights(model: str, name: str) -> Weights:
    """The entry ``name`` (or ``"DEFAULT"``) of ``model``; a clear error otherwise."""
    entries = _WEIGHTS.get(model, {})
    if not entries:
        raise ValueError(
            f"{model!r} has no registered weights; pass weights= a file path, a URL or a "
            f"state dict"
        )
    if name == "DEFAULT":
        return next(iter(entries.values()))
    if name not in entries:
        raise ValueError(
            f"{model!r} has no weights named {name!r}; registered: {', '.join(entries)} "
            f"(or 'DEFAULT'), or pass a file path / URL / state dict"
        )
    return entries[name]


def weights_entry(model: str, weights: Any) -> Weights | None:
    """The registered entry ``weights`` stands for — a :class:`Weights`, ``"DEFAULT"``
    or an entry name of ``model`` — or ``None`` (a file, URL or state dict)."""
    if isinstance(weights, Weights):
        return weights
    if isinstance(weights, str) and (weights == "DEFAULT" or weights in list_weights(model)):
        return get_weights(model, weights)
    return None


# ----------------------------------------------------------------------------- saved records
def record_meta(info: ModelInfo) -> dict[str, Any]:
    """What a bcosnet file records of ``info`` besides the weights — the inverse of
    :func:`saved_record`: ``model_info`` (:meth:`ModelInfo.to_dict`) and, for readers
    of bcosnet 0.1, ``model_name``, ``model_options``, ``num_classes`` and ``classes``
    (the keys of a ``save_pretrained`` folder's ``config.json`` and of its
    ``model.safetensors`` metadata)."""
    return {"model_name": info.name, "model_options": _jsonable(info.extra),
            "num_classes": info.num_classes, "classes": list(info.classes),
            "model_info": info.to_dict()}


def saved_record(meta: Mapping[str, Any], what: str = "the weights file") -> ModelInfo | None:
    """The :class:`ModelInfo` a checkpoint's / export's ``meta`` records (what
    :func:`bcosnet.models.weights.read_state_dict` returns beside the weights), or
    ``None`` (a plain state dict).

    Files of bcosnet 0.1 hold no record: it is derived from their model name,
    options, class names and (checkpoints) training config, and a warning says
    what was assumed.  A damaged or edited record is a ``ValueError``.
    """
    if meta.get("model_info") is not None:
        rec = ModelInfo.from_dict(meta["model_info"], source=what)
        for key, value in (("model_name", rec.name), ("num_classes", rec.num_classes)):
            if meta.get(key) is not None and meta[key] != value:
                raise ValueError(
                    f"{what}: its model record says {key} {value!r}, the file's {key} entry "
                    f"{meta[key]!r} — the file's model record is damaged or was edited; "
                    f"re-export the model from its training checkpoint")
        return rec
    name = meta.get("model_name")
    if not name:
        return None
    if not isinstance(name, str):
        raise ValueError(f"{what}: its model_name {name!r} is not a name; the file is damaged")
    base = model_info(name)
    opts = dict(meta.get("model_options") or {})
    num = meta.get("num_classes") or base.num_classes
    rec = replace(base, num_classes=num, in_channels=opts.get("in_channels", base.in_channels),
                  extra=opts).with_classes(list(meta.get("classes") or []))
    cfg = meta.get("config")
    data = cfg.get("data") if isinstance(cfg, Mapping) else None
    if isinstance(data, Mapping):
        dataset = DatasetRecord.from_config(dict(data))
        pre = eval_preprocess(dataset.name, data.get("image_size"))
        rec = replace(rec, dataset=dataset, preprocess=pre)
        note = (f"derived from its training config: data set {dataset.describe()}, input "
                f"{pre.describe()}")
    else:
        h, w = base.input_size
        note = (f"it records neither its image size nor its data set: {name}'s native "
                f"{h}×{w} input is assumed (another: image_size=N), and the data set must be "
                f"named where one is needed (dataset=NAME, root=DIR)")
    warnings.warn(f"{what} was saved by an earlier bcosnet, without a model record; {note}",
                  UserWarning, stacklevel=3)
    return rec
