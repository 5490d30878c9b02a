"""Building models: :func:`create_model`, :func:`create_finetune_model`, and loading
weights into them (timm's ``_builder``/``_factory``).

This module sits above the registry (``registry.py``: names → builders, names →
weights entries, the model record) and the weights loader (``weights.py``: files →
state dicts); neither imports it.  The family files register their models and
weights when ``bcosnet.models`` imports them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Union

import torch
from torch import Tensor, nn

from .._utils.validate import check_int
from ..nn import AddInverse, is_bcos_model
from ._common import ImageNormalize, check_option_names, translate_legacy_options
from .hub import HUB_PREFIX, pretrained_location, read_pretrained
from .registry import (
    ModelInfo,
    Weights,
    get_weights,
    list_models,
    list_weights,
    model_entrypoint,
    model_info,
    saved_record,
    weights_entry,
)
from .weights import is_url, load_state, map_state_keys, read_state_dict

__all__ = ["ReadWeights", "WeightsSource", "create_finetune_model", "create_model",
           "from_pretrained", "guess_model_names", "input_encoding_of", "load_weights",
           "read_weights"]

#: ``weights=`` accepts: an entry name or "DEFAULT", a :class:`Weights`, a path,
#: a URL, a state dict, a ``save_pretrained`` folder or ``"hf-hub:user/repo"``.
WeightsSource = Union[str, os.PathLike, Weights, Mapping[str, Any]]  # noqa: UP007


# ----------------------------------------------------------------------------- reading
@dataclass
class ReadWeights:
    """Weights read from a source, not yet loaded into a model (what
    :func:`read_weights` returns; ``create_model(name, weights=...)`` takes it).

    Attributes:
        state: the state dict.
        meta: what the file records besides the weights (see
            :func:`bcosnet.models.weights.read_state_dict`).
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
    record: ModelInfo | None = None
    entry: Weights | None = None


def _trained_as(what: str, found: str, model_name: str) -> ValueError:
    return ValueError(f"{what} was trained as {found!r}, not {model_name!r} — build {found!r} "
                      f"(or load it with bcosnet.training.load_checkpoint_model)")


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
    a URL, a state dict, a :func:`~bcosnet.models.hub.save_pretrained` folder or a
    Hub repo ``"hf-hub:user/repo"`` — downloaded into ``model_dir``, else
    huggingface_hub's cache) and the model record it carries.

    Raises ``ValueError`` for an unreadable file, a record that is damaged or of
    an unknown format, or a file recorded for another model than ``model_name``.
    """
    if pretrained_location(weights) is not None:
        return _saved_weights(*read_pretrained(weights, cache_dir=model_dir), model_name)
    if isinstance(weights, str) and model_name is not None and not is_url(weights) \
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
    return _saved_weights(state, meta, what, model_name)


def _saved_weights(state: dict[str, Tensor], meta: dict[str, Any], what: str,
                   model_name: str | None) -> ReadWeights:
    """Weights read from a bcosnet file or folder, with the record its ``meta`` holds."""
    record = saved_record(meta, what)
    if record is not None and model_name is not None and record.name != model_name:
        raise _trained_as(what, record.name, model_name)
    return ReadWeights(state, meta, what, None, record)


# ----------------------------------------------------------------------------- loading
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
    read = weights if isinstance(weights, ReadWeights) else read_weights(
        weights, model_name=model_name, use_ema=use_ema, check_hash=check_hash,
        model_dir=model_dir, progress=progress)
    found = read.record.name if read.record is not None else None
    if found and found != model_name:
        raise _trained_as(read.what, found, model_name)
    try:
        load_state(model, read.state, read.what, key_format=read.key_format,
                   model_name=model_name)
    except ValueError as e:
        if read.record is not None:  # the checkpoint says how its model was built
            raise ValueError(
                f"{e} The checkpoint records num_classes={read.record.num_classes} and "
                f"model_options={read.record.extra or {}}: pass those to create_model (or "
                f"leave them out: create_model takes them from the file), or use "
                f"bcosnet.training.load_checkpoint_model(path)") from e.__cause__
        raise ValueError(f"{e}{_found_hint(read.state, model_name)}") from e.__cause__
    return read.meta


_KEYSETS: dict[str, frozenset[str]] = {}


def guess_model_names(state: Mapping[str, Any]) -> list[str]:
    """Registered models whose parameter names are those of ``state`` (up to a
    wrapper prefix and the ``bcos`` v2 spelling, :func:`~bcosnet.models.weights.map_state_keys`;
    built on the ``meta`` device: no memory, ~0.1 s a model; used only to word an
    error message)."""
    found = []
    for name in list_models():
        if name not in _KEYSETS:
            try:
                with torch.device("meta"):
                    _KEYSETS[name] = frozenset(create_model(name).state_dict())
            except Exception:  # a model that cannot be built on meta: not a candidate
                _KEYSETS[name] = frozenset()
        own = _KEYSETS[name]
        mapped = map_state_keys(state, own)
        required = {k for k in own if not k.endswith("num_batches_tracked")}
        if own and len(mapped) == len(state) and required <= set(mapped.values()):
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


# ----------------------------------------------------------------------------- building
def input_encoding_of(model: nn.Module) -> dict[str, Any]:
    """What ``model`` does with its [0, 1] input (see :attr:`ModelInfo.input_encoding`)."""
    for m in model.modules():
        if isinstance(m, AddInverse):
            return {"kind": "add_inverse"}
        if isinstance(m, ImageNormalize):
            mean, std = m.stats
            return {"kind": "normalize", "mean": list(mean), "std": list(std)}
    return {"kind": "none"}


def _check_kind(model: nn.Module, info: ModelInfo) -> None:
    """Refuse a registration whose kind contradicts :func:`bcosnet.nn.is_bcos_model`,
    so that ``model_info.is_bcos`` and the library's one rule never disagree."""
    bcos = is_bcos_model(model)
    if bcos != info.is_bcos:
        has = "has B-cos layers" if bcos else "has no B-cos layer"
        raise ValueError(
            f"{info.name!r} is registered as kind {info.kind!r}, but the network it builds "
            f"{has} (bcosnet.nn.is_bcos_model: a module taking part in explanation mode) — "
            f"register it with kind={'bcos' if bcos else 'standard'!r}")


def _weights_source(name: str, weights: Any) -> Weights | ReadWeights | None:
    """A registered entry, or the weights read from a file/URL/state dict."""
    if weights is None:
        return None
    entry = weights_entry(name, weights)
    if entry is not None:
        return entry
    read = weights if isinstance(weights, ReadWeights) else read_weights(weights,
                                                                          model_name=name)
    if read.record is not None and read.record.name != name:
        raise ValueError(f"{read.what} was trained as {read.record.name!r}, not {name!r} — "
                         f"build {read.record.name!r}")
    return read


def _source_record(source: Weights | ReadWeights | None) -> Weights | ModelInfo | None:
    """What describes the weights' training: the entry, or the file's model record."""
    return source.record if isinstance(source, ReadWeights) else source


def create_model(
    name: str,
    num_classes: int | None = None,
    *,
    weights: Any = None,
    **overrides: Any,
) -> nn.Module:
    """Build a registered model, optionally with weights.

    Args:
        name: a name from :func:`list_models` — or, as timm spells it,
            ``"hf-hub:user/repo"``: the model that Hub repo records, with its
            weights.
        num_classes: output count (default: the builder's default, or the
            weights' class count).
        weights: ``None`` (random initialisation), the name of a registered
            weights entry (:func:`bcosnet.models.list_weights`) or ``"DEFAULT"``,
            a :class:`~bcosnet.models.Weights`, a file path or URL (a bcosnet
            checkpoint or ``.safetensors`` export, a ``torch.save``-d state dict —
            ours or a ``bcos`` v2 one), a state dict, a folder written by
            ``model.save_pretrained``, a Hugging Face Hub repo
            ``"hf-hub:user/repo"`` (``@revision`` optional; huggingface_hub's cache
            and offline settings apply), or what
            :func:`bcosnet.models.read_weights` returned.  Loaded weights-only and
            strictly; the model is returned in eval mode.  A bcosnet checkpoint or
            export carries its model record: the model is built with the recorded
            class count and options (unless given here), and ``model.model_info``
            holds the recorded class names, image size and resize rule, and data
            set.
        **overrides: builder options (``in_channels``, ``b``, ``max_out``,
            ``scale``, ``temperature``, ``logit_bias``, ``norm``, ...).
    """
    if isinstance(name, str) and name.startswith(HUB_PREFIX):  # timm: the repo names the model
        if weights is not None:
            raise ValueError(f"create_model({name!r}) loads that repo's weights: leave weights= "
                             f"out, or pass the model's name with weights={name!r}")
        read = read_weights(name)
        return create_model(read.record.name, num_classes, weights=read, **overrides)
    info = model_info(name)
    source = _weights_source(name, weights)
    trained = _source_record(source)
    if trained is not None:  # built as the weights were trained, unless told otherwise
        recorded = trained.model_options if isinstance(trained, Weights) else trained.extra
        overrides = {**recorded, **overrides}
        if num_classes is None:
            num_classes = trained.num_classes
    num_classes = check_int("num_classes", info.num_classes if num_classes is None
                            else num_classes, 1)
    overrides = translate_legacy_options(overrides, name)
    check_option_names(["in_channels", *info.options], list(overrides), name)
    model = model_entrypoint(name)(num_classes=num_classes, **overrides)
    _check_kind(model, info)
    record = replace(info, num_classes=num_classes, extra=dict(overrides),
                     in_channels=overrides.get("in_channels", info.in_channels),
                     input_encoding=input_encoding_of(model))
    if source is not None:
        load_weights(model, source, model_name=name)
        if trained is not None:
            record = replace(record, preprocess=trained.preprocess, dataset=trained.dataset)
            record = record.with_classes(list(trained.classes)[:num_classes]
                                         if len(trained.classes) <= num_classes else [])
        model.eval()
    model.model_info = record  # type: ignore[assignment]
    return model


def from_pretrained(
    source: str | os.PathLike,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
    token: str | None = None,
    use_ema: bool = True,
) -> nn.Module:
    """The model ``source`` records, with its weights: a folder written by
    ``model.save_pretrained`` (``config.json`` + ``model.safetensors``), a Hugging
    Face Hub repo (``"user/name"`` or ``"hf-hub:user/name[@revision]"``), or a
    bcosnet training checkpoint (``.pt``, its EMA weights when ``use_ema``) or
    ``.safetensors`` export.

    Built by :func:`create_model` from the record (name, options, class count) and
    loaded strictly, in eval mode, with ``model.model_info`` the saved record
    (classes, image size and resize rule, data set); the parameters keep the dtype
    they were saved in.  ``revision``, ``cache_dir``, ``local_files_only`` and
    ``token`` are huggingface_hub's download arguments (Hub repos only).

    Raises ``ValueError`` for a source that is none of these, a damaged or edited
    record (naming the file and the field), a download that failed (saying why),
    and files without a model record (plain state dicts: load them with
    ``create_model(NAME, weights=FILE)``).
    """
    if pretrained_location(source, bare_repo_id=True) is not None:
        read = _saved_weights(*read_pretrained(
            source, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only,
            token=token, bare_repo_id=True), None)
    elif isinstance(source, (str, os.PathLike)) and Path(source).is_file():
        read = read_weights(source, use_ema=use_ema)
    else:
        raise ValueError(f"from_pretrained: {str(source)!r} is no folder saved by "
                         f"save_pretrained, no Hugging Face Hub repo ('user/name') and no "
                         f"bcosnet checkpoint or export file")
    if read.record is None:
        raise ValueError(f"{read.what} records no model: it is not a bcosnet checkpoint, export "
                         f"or save_pretrained folder — load a plain state dict with "
                         f"bcosnet.create_model(NAME, weights={str(source)!r})")
    model = create_model(read.record.name, weights=read)
    dtypes = {v.dtype for v in read.state.values() if v.is_floating_point()}
    if len(dtypes) == 1 and (saved := dtypes.pop()) != next(model.parameters()).dtype:
        load_state(model.to(saved), read.state, read.what, model_name=read.record.name)
    return model


# ----------------------------------------------------------------------------- fine-tuning
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

    Every weight is loaded (strictly, as :func:`create_model` does); when the
    weights were trained for another class count, or ``reset_head=True``, the
    classifier's last layer is replaced by a freshly initialised one
    (``model.reset_classifier(num_classes)``, drawn from torch's global RNG: seed it
    for a reproducible head) and everything before it is kept.  The class count of
    the weights is read from a bcosnet checkpoint's record, a registered entry, or the
    classifier's weight shape.
    Returned in training mode.
    """
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
    entry = weights_entry(name, weights)
    if entry is not None:
        return entry.num_classes
    try:
        state, meta = read_state_dict(weights, progress=False)  # type: ignore[arg-type]
    except (OSError, ValueError, TypeError):
        return None
    if isinstance(meta.get("num_classes"), int):
        return meta["num_classes"]
    with torch.device("meta"):
        model = create_model(name, num_classes, **options)
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    layers = [m for m in head.modules() if getattr(m, "weight", None) is not None] \
        if head is not None else []
    if not layers:
        return None
    last = layers[-1].weight
    key = next((k for k, p in model.named_parameters() if p is last), None)
    mapped = {v: k for k, v in map_state_keys(state, model.state_dict()).items()}
    found = state.get(mapped[key]) if key in mapped else None
    if found is None or found.ndim == 0 or found.shape[0] * num_classes % last.shape[0]:
        return None
    return found.shape[0] * num_classes // last.shape[0]
