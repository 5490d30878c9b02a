"""Weights belong to the registry (the torchvision way).

A :class:`Weights` entry names a released set of weights of one registered
model: where it comes from, its SHA-256 prefix, the input transform it was
trained with and the accuracy its release reports.  ``create_model(name,
weights=...)`` loads

* a registered entry by name (``"bcos_v2_imagenet"``, or ``"DEFAULT"``: the
  model's first entry) — downloaded once into torch's hub cache and checked
  against its hash;
* a file: a bcosnet training checkpoint (``.pt``, its EMA weights when present),
  a bcosnet ``.safetensors`` export, a plain ``state_dict()`` saved with
  ``torch.save`` (ours or a ``bcos`` v2 one: its ``*.linear.weight`` keys are
  renamed), or a URL of such a file;
* a state dict already in memory.

Every file is read as data: ``torch.load(weights_only=True)`` or safetensors.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import torch
from torch import Tensor, nn

__all__ = ["ReadWeights", "Weights", "WeightsSource", "check_fits", "create_finetune_model",
           "freeze_backbone", "get_weights", "guess_model_names", "list_weights", "load_weights",
           "read_checkpoint_file", "read_state_dict", "read_weights", "register_weights",
           "saved_record"]


@dataclass(frozen=True)
class Weights:
    """A released set of weights of one registered model.

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
    preprocess: Any = None
    dataset: Any = None
    classes: tuple[str, ...] = ()


#: ``weights=`` accepts: an entry name or "DEFAULT", a :class:`Weights`, a path,
#: a URL or a state dict.
WeightsSource = Union[str, os.PathLike, Weights, Mapping[str, Any]]  # noqa: UP007

_WEIGHTS: dict[str, dict[str, Weights]] = {}
_URL_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_HASH_RE = re.compile(r"-([a-f0-9]{6,})\.")
# What a bcosnet checkpoint / export records besides the weights.
_META_KEYS = ("model_info", "model_name", "model_options", "num_classes", "classes")
# Containers some training code wraps the weights in.
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")


def register_weights(model: str, weights: Weights) -> Weights:
    """Attach ``weights`` to the registered model ``model``."""
    entries = _WEIGHTS.setdefault(model, {})
    if weights.name in entries:
        raise ValueError(f"{model!r} already has weights named {weights.name!r}")
    entries[weights.name] = weights
    return weights


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


# ----------------------------------------------------------------------------- reading
def read_checkpoint_file(path: Path, map_location: Any = "cpu") -> Mapping[str, Any]:
    """A ``.pt``/``.pth`` (``torch.load(weights_only=True)``) or ``.safetensors`` file
    as a mapping; a clear ``ValueError`` for a missing, corrupt or unsafe file."""
    if not path.is_file():
        raise ValueError(f"weights file {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device=str(map_location))
        except Exception as e:
            raise ValueError(f"could not read {str(path)!r} as safetensors: {e}") from e
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # corrupt file, pickle with code objects, ...
        first = str(e).splitlines()[0] if str(e) else ""
        raise ValueError(
            f"could not read checkpoint {str(path)!r} as tensors only ({type(e).__name__}: "
            f"{first}); the file is corrupt, truncated, not a weights-only torch checkpoint, "
            f"or holds code (only weights load)"
        ) from e
    if not isinstance(obj, Mapping):
        raise ValueError(f"{str(path)!r} holds a {type(obj).__name__}, not a state dict")
    return obj


def _download(url: str, *, check_hash: bool, model_dir: str | os.PathLike | None,
              progress: bool) -> Mapping[str, Any]:
    try:
        return torch.hub.load_state_dict_from_url(
            url, model_dir=None if model_dir is None else str(model_dir), map_location="cpu",
            progress=progress,
            check_hash=check_hash and bool(_HASH_RE.search(url.rsplit("/", 1)[-1])),
            weights_only=True,
        )
    except RuntimeError as e:
        if "invalid hash value" in str(e):
            raise ValueError(
                f"the file downloaded from {url} does not match the SHA-256 prefix in its "
                f"name ({e}); it is corrupt or not the expected checkpoint — retry, or check "
                f"the URL"
            ) from e
        raise ValueError(f"could not load a state dict from {url}: {e}") from e
    except Exception as e:  # unpickling errors, bad zip files, network errors
        raise ValueError(f"could not load a state dict from {url} ({type(e).__name__}: {e})"
                         ) from e


def read_state_dict(
    source: str | os.PathLike | Mapping[str, Any],
    *,
    use_ema: bool = True,
    check_hash: bool = True,
    model_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read weights from a path, URL or mapping: ``(state_dict, meta)``.

    ``meta`` holds what a bcosnet training checkpoint or export records
    (``model_info``: the model record, :meth:`bcosnet.models.ModelInfo.to_dict`;
    the older keys ``model_name``, ``model_options``, ``num_classes``,
    ``classes``; a checkpoint's training ``config``), empty for a plain state
    dict.  Training checkpoints give their EMA weights when present and ``use_ema``.
    """
    if isinstance(source, Mapping):
        obj: Mapping[str, Any] = source
    elif isinstance(source, str) and _URL_RE.match(source):
        obj = _download(source, check_hash=check_hash, model_dir=model_dir, progress=progress)
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        obj = read_checkpoint_file(path)
        if path.suffix == ".safetensors":
            import json

            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                raw = f.metadata() or {}
            meta = {}
            for k, v in raw.items():
                if k in _META_KEYS:
                    try:
                        meta[k] = json.loads(v)
                    except ValueError as e:
                        raise ValueError(
                            f"{path}: its metadata {k!r} is not valid JSON ({e}); the file's "
                            f"model record is damaged or was edited") from None
            return dict(obj), meta
    else:
        raise TypeError(
            f"weights must be a registered name, a path, a URL or a state dict, got "
            f"{type(source).__name__}"
        )
    meta: dict[str, Any] = {}
    if "model_name" in obj and isinstance(obj.get("model"), Mapping):  # a training checkpoint
        meta = {k: obj.get(k) for k in (*_META_KEYS, "config") if k in obj}
        ema = obj.get("ema")
        obj = ema if (use_ema and isinstance(ema, Mapping)) else obj["model"]
    else:
        for key in _WRAPPER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(
                isinstance(v, Tensor) for v in inner.values()
            ):
                obj = inner
                break
    bad = [k for k, v in obj.items() if not isinstance(v, Tensor)]
    if bad:
        raise ValueError(
            f"a state dict maps names to tensors; these entries are not tensors: {bad[:5]} — "
            f"is this a checkpoint of another tool? Extract its model state dict first"
        )
    return dict(obj), meta


def _looks_like_bcos_v2(state: Mapping[str, Tensor], target: Mapping[str, Tensor]) -> bool:
    return any(k.endswith(".linear.weight") and k not in target for k in state)


@dataclass
class ReadWeights:
    """Weights read from a source, not yet loaded into a model (what
    :func:`read_weights` returns; ``create_model(name, weights=...)`` takes it).

    Attributes:
        state: the state dict.
        meta: what the file records besides the weights (see :func:`read_state_dict`).
        what: the source in words (a path, a URL, an entry), for messages.
        key_format: ``"bcos_v2"`` / ``"bcosnet"`` when known.
        record: the saved model record (:class:`bcosnet.models.ModelInfo`) — read
            from the file, or for files of an earlier bcosnet derived from what they
            hold (with a warning saying what was assumed); ``None`` for a plain
            state dict.
        entry: the registered :class:`Weights` entry, when the source is one.
    """

    state: dict[str, Tensor]
    meta: dict[str, Any]
    what: str
    key_format: str | None = None
    record: Any = None
    entry: Weights | None = None


def read_weights(
    weights: WeightsSource,
    *,
    model_name: str | None = None,
    use_ema: bool = True,
    check_hash: bool = True,
    model_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> ReadWeights:
    """Read ``weights`` (an entry name of ``model_name``, a :class:`Weights`, a path,
    a URL or a state dict) and the model record it carries.

    Raises ``ValueError`` for an unreadable file, a record that is damaged or of
    an unknown format, or a file recorded for another model than ``model_name``.
    """
    if isinstance(weights, str) and model_name is not None and not _URL_RE.match(weights) \
            and not Path(weights).exists() \
            and (weights == "DEFAULT" or weights in list_weights(model_name)
                 or not any(c in weights for c in "/\\.")):
        weights = get_weights(model_name, weights)
    if isinstance(weights, Weights):
        state, meta = read_state_dict(weights.url, check_hash=check_hash, model_dir=model_dir,
                                      progress=progress)
        return ReadWeights(state, meta, f"weights {weights.name!r} ({weights.source})",
                           weights.key_format, None, weights)
    what = str(weights) if isinstance(weights, (str, os.PathLike)) else "weights"
    state, meta = read_state_dict(weights, use_ema=use_ema, check_hash=check_hash,
                                  model_dir=model_dir, progress=progress)
    record = saved_record(meta, what)
    if record is not None and model_name is not None and record.name != model_name:
        raise ValueError(
            f"{what} was trained as {record.name!r}, not {model_name!r} — build "
            f"{record.name!r} (or load it with bcosnet.training.load_checkpoint_model)"
        )
    return ReadWeights(state, meta, what, None, record)


def saved_record(meta: Mapping[str, Any], what: str = "the weights file") -> Any:
    """The :class:`~bcosnet.models.ModelInfo` a checkpoint's / export's ``meta``
    records, or ``None`` (a plain state dict).

    Files of bcosnet 0.1 hold no record: it is derived from their model name,
    options, class names and (checkpoints) training config, and a warning says
    what was assumed.  A damaged or edited record is a ``ValueError``.
    """
    import warnings
    from dataclasses import replace

    from ..data.builder import DatasetRecord, eval_preprocess
    from .registry import ModelInfo, model_info

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


def load_weights(
    model: nn.Module,
    weights: WeightsSource | ReadWeights,
    *,
    model_name: str,
    use_ema: bool = True,
    check_hash: bool = True,
    model_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Load ``weights`` into ``model`` (built as ``model_name``) strictly; return the
    checkpoint's metadata.  Raises ``ValueError`` naming missing/unexpected keys,
    shape mismatches, or a checkpoint recorded for another model."""
    from .bcos_v2 import convert_bcos_v2_state_dict

    read = weights if isinstance(weights, ReadWeights) else read_weights(
        weights, model_name=model_name, use_ema=use_ema, check_hash=check_hash,
        model_dir=model_dir, progress=progress)
    state, meta, what, key_format = read.state, read.meta, read.what, read.key_format
    found = read.record.name if read.record is not None else None
    if found and found != model_name:
        raise ValueError(
            f"{what} was trained as {found!r}, not {model_name!r} — build {found!r} (or "
            f"load it with bcosnet.training.load_checkpoint_model)"
        )
    target = model.state_dict()
    try:
        if key_format == "bcos_v2" or (key_format is None and _looks_like_bcos_v2(state, target)):
            try:
                state = convert_bcos_v2_state_dict(state, target)
            except ValueError as e:
                raise ValueError(f"{what} ({model_name}): {e}") from e
            model.load_state_dict(state, strict=False)  # strictness checked by the converter
            return meta
        check_fits(model, state, what, model_name=model_name)
    except ValueError as e:
        if found:  # the checkpoint says how its model was built
            raise ValueError(
                f"{e} The checkpoint records num_classes={read.record.num_classes} and "
                f"model_options={read.record.extra or {}}: pass those to create_model (or "
                f"leave them out: create_model takes them from the file), or use "
                f"bcosnet.training.load_checkpoint_model(path)") from e.__cause__
        raise ValueError(f"{e}{_found_hint(state, model_name)}") from e.__cause__
    model.load_state_dict(state)
    return meta


def create_finetune_model(
    name: str,
    num_classes: int,
    weights: WeightsSource,
    *,
    reset_head: bool = False,
    **options: Any,
) -> nn.Module:
    """Build ``name`` with ``num_classes`` outputs, starting from ``weights`` trained
    for the same or *another* class count — the fine-tuning entry point.

    Every weight is loaded (strictly, as :func:`bcosnet.create_model` does); when the
    weights were trained for another class count, or ``reset_head=True``, the
    classifier's last layer is replaced by a freshly initialised one
    (``model.reset_classifier(num_classes)``, drawn from torch's global RNG: seed it
    for a reproducible head) and everything before it is kept.  The class count of
    the weights is read from a bcosnet checkpoint's record, a registered entry, or the
    classifier's weight shape.
    Returned in training mode.
    """
    from .registry import create_model

    try:
        model = create_model(name, num_classes, weights=weights, **options)
    except ValueError as e:
        error = e
    else:
        if reset_head:
            model.reset_classifier(num_classes)
        return model.train()
    source_classes = _weights_class_count(name, num_classes, weights, options)
    if source_classes is None or source_classes == num_classes:
        raise error
    model = create_model(name, source_classes, weights=weights, **options)
    model.reset_classifier(num_classes)
    return model.train()


def _weights_class_count(name: str, num_classes: int, weights: WeightsSource,
                         options: Mapping[str, Any]) -> int | None:
    """The class count ``weights`` were trained for, or None if it cannot be told."""
    from .registry import create_model

    if isinstance(weights, Weights):
        return weights.num_classes
    if isinstance(weights, str) and (weights == "DEFAULT" or weights in list_weights(name)):
        return get_weights(name, weights).num_classes
    try:
        state, meta = read_state_dict(weights, progress=False)
    except (OSError, ValueError, TypeError):
        return None
    if isinstance(meta.get("num_classes"), int):
        return meta["num_classes"]
    with torch.device("meta"):
        model = create_model(name, num_classes, **options)
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    if head is None:
        return None
    layers = [m for m in head.modules() if getattr(m, "weight", None) is not None]
    if not layers:
        return None
    last = layers[-1].weight
    key = next((k for k, p in model.named_parameters() if p is last), None)
    if key is None:
        return None
    stripped = {k.removeprefix("module."): v for k, v in state.items()}
    found = stripped.get(key, stripped.get(key.replace(".weight", ".linear.weight")))
    if found is None or found.ndim == 0 or found.shape[0] * num_classes % last.shape[0]:
        return None
    return found.shape[0] * num_classes // last.shape[0]


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


def _key_set(keys: Any) -> frozenset[str]:
    """Parameter names with the ``bcos`` v2 ``.linear.weight`` spelling folded in and
    a wrapper prefix (``module.``) dropped, so that both releases compare equal."""
    out = set()
    for k in keys:
        k = k[len("module."):] if k.startswith("module.") else k
        out.add(k[: -len(".linear.weight")] + ".weight" if k.endswith(".linear.weight") else k)
    return frozenset(out)


_KEYSETS: dict[str, frozenset[str]] = {}


def guess_model_names(state: Mapping[str, Any]) -> list[str]:
    """Registered models whose parameter names are exactly those of ``state``
    (built on the ``meta`` device: no memory, ~0.1 s a model; used only to word
    an error message)."""
    from .registry import create_model, list_models

    want = _key_set(state)
    found = []
    for name in list_models():
        if name not in _KEYSETS:
            try:
                with torch.device("meta"):
                    _KEYSETS[name] = _key_set(create_model(name).state_dict())
            except Exception:  # a model that cannot be built on meta: not a candidate
                _KEYSETS[name] = frozenset()
        if _KEYSETS[name] == want:
            found.append(name)
    return found


def _found_hint(state: Mapping[str, Any], expected: str) -> str:
    try:
        found = guess_model_names(state)
    except Exception:  # the hint is a nicety; the error itself must come through
        return ""
    others = [n for n in found if n != expected]
    if not others:
        return f" (expected a {expected!r} state dict; it matches no registered model's names)" \
            if not found else ""
    return (f" — expected {expected!r}, found the parameter names of "
            f"{', '.join(repr(n) for n in others)}: pass --model/create_model that name")


def check_fits(model: nn.Module, state: Mapping[str, Tensor], what: str, *,
               model_name: str | None = None) -> None:
    """Raise a ``ValueError`` listing missing/unexpected keys and shape mismatches of
    ``state`` against ``model`` (named ``model_name`` in the message when given)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: model {tuple(own[k].shape)} vs {what} {tuple(state[k].shape)}"
              for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or shapes:
        def fmt(items: list[str]) -> str:
            return ", ".join(items[:8]) + (f" (+{len(items) - 8} more)" if len(items) > 8 else "")

        parts = [f"{label}: {fmt(items)}" for label, items in (
            ("missing keys", missing), ("unexpected keys", unexpected),
            ("shape mismatches", shapes)) if items]
        raise ValueError(
            f"{what} does not fit the model "
            f"({repr(model_name) + ', ' if model_name else ''}{type(model).__name__}): "
            + "; ".join(parts)
            + ". Build the model with the name/options/num_classes the weights were trained "
              "with."
        )
