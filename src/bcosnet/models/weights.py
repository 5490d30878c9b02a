"""The weights loader: files, URLs and state dicts in, checked state dicts out.

It knows nothing of models (timm's ``_hub``): no registry, no builder, only
``torch.nn.Module.state_dict`` keys.  What it reads:

* a bcosnet training checkpoint (``.pt``, its EMA weights when present) or a
  bcosnet ``.safetensors`` export — with what they record besides the weights
  (the model record, see :func:`bcosnet.models.registry.saved_record`);
* a plain ``state_dict()`` saved with ``torch.save`` (ours, or a ``bcos`` v2
  one: its ``*.linear.weight`` keys are renamed, :func:`map_state_keys`), a
  state dict some training code wrapped (``state_dict``/``model`` keys), or a
  URL of such a file (downloaded once into torch's hub cache, hash-checked);
* a state dict already in memory.

Every file is read as data: ``torch.load(weights_only=True)`` or safetensors.
:func:`bcosnet.models.create_model` (``models/factory.py``) builds the model and
loads into it with :func:`load_state`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .._utils.io import atomic_write

__all__ = ["V2_KEY_PREFIXES", "check_fits", "convert_bcos_v2_state_dict", "load_state",
           "looks_like_bcos_v2", "map_state_keys", "read_checkpoint_file", "read_state_dict",
           "sha256_prefix_of", "write_safetensors"]

_URL_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
# torch.hub's convention: the part after the last "-" of a file name is a SHA-256 prefix.
_HASH_RE = re.compile(r"-([a-f0-9]{6,})\.")
# What a bcosnet checkpoint / export records besides the weights.
_META_KEYS = ("model_info", "model_name", "model_options", "num_classes", "classes")
# Containers some training code wraps the weights in.
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")
#: Wrapper prefixes a state dict's keys may carry (DataParallel's ``module.``,
#: ``model.``, torch.compile's ``_orig_mod.``, ``0.``: the ``bcos`` ViTs wrapped with
#: their logit layer).
V2_KEY_PREFIXES = ("", "module.", "model.", "_orig_mod.", "0.")
_V2_SUFFIX = ".linear.weight"


def is_url(source: Any) -> bool:
    """Whether ``source`` is a string with a URL scheme (``https://``, ``file://``)."""
    return isinstance(source, str) and bool(_URL_RE.match(source))


def sha256_prefix_of(url: str) -> str | None:
    """The SHA-256 prefix in a file name by torch.hub's convention (``name-<hex>.pth``)."""
    m = _HASH_RE.search(url.rsplit("/", 1)[-1])
    return m.group(1) if m else None


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
            progress=progress, check_hash=check_hash and sha256_prefix_of(url) is not None,
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


def _safetensors_meta(path: Path) -> dict[str, Any]:
    """The model record a bcosnet ``.safetensors`` export keeps in its metadata."""
    from safetensors import safe_open  # optional dependency, needed for this format only

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
    return meta


def _unwrap(obj: Mapping[str, Any], use_ema: bool) -> tuple[Mapping[str, Any], dict[str, Any]]:
    """The state dict inside a training checkpoint or wrapper, and what it records."""
    if "model_name" in obj and isinstance(obj.get("model"), Mapping):  # a training checkpoint
        meta = {k: obj.get(k) for k in (*_META_KEYS, "config") if k in obj}
        ema = obj.get("ema")
        return (ema if (use_ema and isinstance(ema, Mapping)) else obj["model"]), meta
    for key in _WRAPPER_KEYS:
        inner = obj.get(key)
        if isinstance(inner, Mapping) and inner and all(
            isinstance(v, Tensor) for v in inner.values()
        ):
            return inner, {}
    return obj, {}


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
    elif is_url(source):
        obj = _download(source, check_hash=check_hash, model_dir=model_dir,  # type: ignore[arg-type]
                        progress=progress)
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        obj = read_checkpoint_file(path)
        if path.suffix == ".safetensors":
            return dict(obj), _safetensors_meta(path)
    else:
        raise TypeError(
            f"weights must be a registered name, a path, a URL or a state dict, got "
            f"{type(source).__name__}"
        )
    obj, meta = _unwrap(obj, use_ema)
    bad = [k for k, v in obj.items() if not isinstance(v, Tensor)]
    if bad:
        raise ValueError(
            f"a state dict maps names to tensors; these entries are not tensors: {bad[:5]} — "
            f"is this a checkpoint of another tool? Extract its model state dict first"
        )
    return dict(obj), meta


def write_safetensors(state: Mapping[str, Tensor], path: str | os.PathLike,
                      metadata: Mapping[str, Any]) -> Path:
    """Write ``state`` as a ``.safetensors`` file, atomically (a copy of each tensor on
    the CPU, contiguous); each ``metadata`` value is stored as JSON text (what
    :func:`read_state_dict` reads back for the keys a bcosnet file records).  The
    one writer of bcosnet's ``.safetensors`` files: training exports and
    ``save_pretrained`` folders."""
    from safetensors.torch import save_file  # optional dependency, needed for this format only

    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    meta = {k: json.dumps(v) for k, v in metadata.items()}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


# ----------------------------------------------------------------------------- key names
def map_state_keys(keys: Iterable[str], target: Collection[str]) -> dict[str, str]:
    """Which key of ``target`` (a model's ``state_dict()`` keys) each of ``keys``
    stands for — the one place the ``bcos`` v2 spelling is folded in.

    The ``bcos`` package's B-cos layers keep their weight in a ``linear``
    sub-module (``<prefix>.linear.weight``), ours directly (``<prefix>.weight``);
    a key not in ``target`` ending in ``.linear.weight`` is read as ``.weight``.
    The wrapper prefix of :data:`V2_KEY_PREFIXES` that explains most keys is
    dropped.  Keys that stand for none are left out of the result.
    """
    keys = list(keys)

    def rename(key: str, prefix: str) -> str | None:
        if not key.startswith(prefix):
            return None
        key = key[len(prefix):]
        if key not in target and key.endswith(_V2_SUFFIX):
            key = key[: -len(_V2_SUFFIX)] + ".weight"
        return key if key in target else None

    best: dict[str, str] = {}
    for prefix in V2_KEY_PREFIXES:
        found = {k: nk for k in keys if (nk := rename(k, prefix)) is not None}
        if len(found) > len(best):
            best = found
    return best


def looks_like_bcos_v2(state: Mapping[str, Tensor], target: Mapping[str, Tensor]) -> bool:
    """Whether ``state`` uses the ``bcos`` package's ``.linear.weight`` spelling."""
    return any(k.endswith(_V2_SUFFIX) and k not in target for k in state)


def _fmt(items: list[str], n: int = 8, sep: str = ", ") -> str:
    return sep.join(items[:n]) + (f" (+{len(items) - n} more)" if len(items) > n else "")


def convert_bcos_v2_state_dict(
    state_dict: Mapping[str, Any], target: Mapping[str, Tensor]
) -> dict[str, Tensor]:
    """Rename a ``bcos`` v2 state dict to the keys of ``target`` (a bcosnet
    model's ``state_dict()``, :func:`map_state_keys`) and check it.

    Raises ``ValueError`` listing missing keys, unexpected keys and shape
    mismatches (batch-norm step counters are optional).
    """
    bad = [k for k, v in state_dict.items() if not isinstance(v, Tensor)]
    if bad:
        raise ValueError(f"state dict entries must be tensors; not tensors: {bad[:5]}")
    mapping = map_state_keys(state_dict, target)
    out: dict[str, Tensor] = {}
    unexpected: list[str] = []
    mismatched: list[str] = []
    mismatched_targets: set[str] = set()
    for k, v in state_dict.items():
        nk = mapping.get(k)
        if nk is None:
            unexpected.append(k)
        elif tuple(target[nk].shape) != tuple(v.shape):
            mismatched.append(
                f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(target[nk].shape)}")
            mismatched_targets.add(nk)
        else:
            out[nk] = v
    missing = [
        k for k in target
        if k not in out and k not in mismatched_targets and not k.endswith("num_batches_tracked")
    ]
    if unexpected or mismatched or missing:
        parts = [f"{len(items)} {label}: {_fmt(items, n, sep)}" for label, items, n, sep in (
            ("missing key(s)", missing, 8, ", "), ("unexpected key(s)", unexpected, 8, ", "),
            ("shape mismatch(es)", mismatched, 5, "; ")) if items]
        raise ValueError("the checkpoint does not fit the model — " + " | ".join(parts))
    return out


# ----------------------------------------------------------------------------- loading
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
        parts = [f"{label}: {_fmt(items)}" for label, items in (
            ("missing keys", missing), ("unexpected keys", unexpected),
            ("shape mismatches", shapes)) if items]
        raise ValueError(
            f"{what} does not fit the model "
            f"({repr(model_name) + ', ' if model_name else ''}{type(model).__name__}): "
            + "; ".join(parts)
            + ". Build the model with the name/options/num_classes the weights were trained "
              "with."
        )


def load_state(model: nn.Module, state: Mapping[str, Tensor], what: str, *,
               key_format: str | None = None, model_name: str | None = None) -> None:
    """Load ``state`` into ``model`` strictly.  ``key_format="bcos_v2"`` (or ``None``
    and the ``bcos`` spelling found) renames the keys first
    (:func:`convert_bcos_v2_state_dict`); a ``ValueError`` lists what does not fit."""
    target = model.state_dict()
    if key_format == "bcos_v2" or (key_format is None and looks_like_bcos_v2(state, target)):
        try:
            converted = convert_bcos_v2_state_dict(state, target)
        except ValueError as e:
            raise ValueError(f"{what} ({model_name or type(model).__name__}): {e}") from e
        model.load_state_dict(converted, strict=False)  # strictness checked by the converter
        return
    check_fits(model, state, what, model_name=model_name)
    model.load_state_dict(state)
