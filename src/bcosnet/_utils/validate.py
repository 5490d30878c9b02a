"""Argument checks with messages that say what to change: ints, names (with a
did-you-mean), image batches."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

__all__ = ["check_choice", "check_image_batch", "check_int", "check_record_fields",
           "did_you_mean", "is_int"]


def did_you_mean(name: str, choices: Iterable[str], n: int = 3, cutoff: float = 0.6) -> str:
    """``"; did you mean 'a', 'b'?"`` for the choices close to ``name`` (else "")."""
    close = difflib.get_close_matches(str(name), list(choices), n=n, cutoff=cutoff)
    return f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def check_record_fields(d: Any, known: Iterable[str], what: str) -> dict[str, Any]:
    """``d`` if it is a mapping with no keys outside ``known``; a ``ValueError``
    naming ``what`` (e.g. "the data-set record") and the bad fields otherwise."""
    if not isinstance(d, dict):
        raise ValueError(f"{what} must be a mapping, got {type(d).__name__}")
    unknown = sorted(set(d) - set(known))
    if unknown:
        raise ValueError(f"unknown field(s) {unknown} in {what}")
    return d


def check_choice(name: str, value: Any, choices: Iterable[Any], hint: str = "") -> Any:
    """``value`` if it is one of ``choices``; a ``ValueError`` listing them (with a
    did-you-mean for a string, then ``hint``) otherwise."""
    choices = list(choices)
    if value in choices:
        return value
    close = did_you_mean(value, [str(c) for c in choices]) if isinstance(value, str) else ""
    raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}"
                     f"{close}{hint}")


def is_int(value: Any) -> bool:
    """True for an int that is not a bool (``True`` is an int to Python, not a count)."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_int(name: str, value: Any, minimum: int | None = None,
              maximum: int | None = None) -> int:
    """``value`` if it is an int (not a bool) in ``[minimum, maximum]`` (either
    bound optional); a ``ValueError`` naming ``name`` and the range otherwise."""
    if not is_int(value) or (minimum is not None and value < minimum) or (
            maximum is not None and value > maximum):
        if minimum is not None and maximum is not None:
            bound = f" in {minimum}..{maximum}"
        elif minimum is not None:
            bound = f" >= {minimum}"
        else:
            bound = f" <= {maximum}" if maximum is not None else ""
        raise ValueError(f"{name} must be an int{bound}, got {value!r}")
    return value


def check_image_batch(
    x: Any,
    *,
    in_channels: int | None = None,
    min_size: tuple[int, int] | None = None,
    model: str | None = None,
    allow_empty: bool = False,
    finite: bool = False,
    like: Any = None,
) -> None:
    """Raise a clear error unless ``x`` is a floating-point ``N×C×H×W`` image batch.

    Args:
        in_channels: the raw channel count the model takes (hints for a 6-channel
            encoded input, grey vs RGB).
        min_size: smallest accepted (H, W).
        model: the model's name, for the message.
        allow_empty: accept N = 0.
        finite: also refuse NaN/Inf (costs a pass over the data).
        like: a model (its first floating-point parameter or buffer) or a tensor
            whose dtype and device the images must have.
    """
    who = model or "images"
    if not isinstance(x, Tensor):
        raise TypeError(f"{who} expects a torch.Tensor of images, got {type(x).__name__}")
    shape = f"N×{in_channels if in_channels is not None else 'C'}×H×W"
    if x.dim() != 4:
        raise ValueError(
            f"{who} expects a 4-D batch {shape} of images in [0, 1], got shape "
            f"{tuple(x.shape)}"
            + (" — add a batch dimension with x.unsqueeze(0)" if x.dim() == 3 else "")
        )
    if x.shape[0] == 0 and not allow_empty:
        raise ValueError(f"{who}: the batch is empty (N = 0)")
    if not x.is_floating_point():
        raise TypeError(
            f"{who} expects floating-point images in [0, 1], got dtype {x.dtype} — convert "
            f"with x.float() / 255"
        )
    if in_channels is not None and x.shape[1] != in_channels:
        c = x.shape[1]
        hint = ""
        if c == 2 * in_channels:
            hint = " — pass raw images in [0, 1]; the model encodes them itself"
        elif in_channels == 1 and c == 3:
            hint = " — convert to grey, or build the model with in_channels=3"
        elif in_channels == 3 and c == 1:
            hint = (" — repeat the grey channel (x.expand(-1, 3, -1, -1)) or build the model "
                    "with in_channels=1")
        raise ValueError(
            f"{who} expects {in_channels}-channel images in [0, 1], got {c} channels "
            f"(shape {tuple(x.shape)}){hint}"
        )
    if min_size is not None:
        h, w = x.shape[-2:]
        if h < min_size[0] or w < min_size[1]:
            raise ValueError(
                f"{who} needs images of at least {min_size[0]}×{min_size[1]} pixels, got "
                f"{h}×{w} — resize the images (e.g. torchvision.transforms.Resize)"
            )
    ref = _reference_tensor(like)
    if ref is not None and (x.dtype != ref.dtype or x.device != ref.device):
        what = "dtype" if x.dtype != ref.dtype else "device"
        have, want = (x.dtype, ref.dtype) if what == "dtype" else (x.device, ref.device)
        raise TypeError(
            f"{who}: the images' {what} is {have} but the model's weights are {want} — "
            f"convert the images (x.to({_to_arg(want)})) or the model (model.to({_to_arg(have)}))"
        )
    if finite and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{who}: the images contain NaN or Inf values; pass finite pixels")


def _to_arg(v: Any) -> str:
    return str(v) if isinstance(v, torch.dtype) else repr(str(v))


def _reference_tensor(like: Any) -> Tensor | None:
    if like is None or isinstance(like, Tensor):
        return like
    for t in (*like.parameters(), *like.buffers()):
        if t.is_floating_point():
            return t
    return None
