"""Quantus's ``explain_func`` for every bcosnet attribution method."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import attribution
from .._utils.validate import check_choice
from ..evaluation.pointing_game._model import model_device_dtype
from ._shared import encoded_to_raw

#: The keyword arguments Quantus (or a user's ``explain_func_kwargs``) may pass at call time.
_CALL_KWARGS = ("device", "channel_first", "reduce_axes", "keepdims")


def quantus_explain_func(method: str = "bcos", **settings: Any) -> Callable[..., np.ndarray]:
    """An ``explain_func`` for Quantus metrics, computing ``method``'s maps.

    ``method`` is any name of :func:`bcosnet.attribution.available` (``"bcos"``,
    ``"grad"``, ``"ixg"``, ``"intgrad"``, ``"deeplift"``, ``"gradcam"``, ``"lime"``,
    ``"rise"``, ``"occlusion"``); ``settings`` are that method's (e.g.
    ``n_steps=16`` for ``"intgrad"``), checked now (an unknown setting is a
    TypeError listing the method's settings).

    The returned function follows Quantus's convention,
    ``explain_func(model=model, inputs=x, targets=y, **explain_func_kwargs)``:

    * ``inputs``: N×C×H×W numpy array (or tensor) of raw images in [0, 1] —
      what the model takes; Quantus gives its metrics' ``x_batch`` channel first.
      ``channel_first=False`` takes (and returns) N×H×W×C instead.
    * ``targets``: N class indices (numpy, list or tensor) or one int.
    * Returns a float numpy array in the model's dtype, reduced like Quantus's
      own ``quantus.explain``: summed over ``reduce_axes`` (default ``(1,)``, the
      channels) with ``keepdims=True`` — N×1×H×W, the per-pixel map.
      ``reduce_axes=()`` keeps the channels: N×C×H×W, the encoded input's two
      halves of a B-cos model added per raw channel
      (:func:`bcosnet.interop.encoded_to_raw`); per-pixel methods (``gradcam``,
      ``lime``, ``rise``, ``occlusion``) stay N×1×H×W, which Quantus broadcasts.
    * ``device``: accepted (Quantus passes it); the maps are computed where the
      model's parameters are.  Other keyword arguments are a TypeError.
    """
    if not isinstance(method, str):
        raise TypeError(f"method must be a name of bcosnet.attribution.available(), got "
                        f"{type(method).__name__}")
    key = check_choice("method", method.lower(), attribution.METHODS)
    accepted = [p for p in inspect.signature(attribution.METHODS[key].__init__).parameters
                if p not in ("self", "model")]
    unknown = sorted(set(settings) - set(accepted))
    if unknown:
        raise TypeError(f"{method!r} has no setting {', '.join(unknown)}; it accepts: "
                        f"{', '.join(accepted) or 'no settings'}")
    return _ExplainFunc(key, settings)


class _ExplainFunc:
    """The callable :func:`quantus_explain_func` returns (picklable, with a readable repr)."""

    def __init__(self, method: str, settings: dict[str, Any]) -> None:
        self.method = method
        self.settings = dict(settings)

    def __repr__(self) -> str:
        args = "".join(f", {k}={v!r}" for k, v in self.settings.items())
        return f"quantus_explain_func({self.method!r}{args})"

    def __call__(self, model: nn.Module, inputs: Any, targets: Any, **kwargs: Any
                 ) -> np.ndarray:
        unknown = sorted(set(kwargs) - set(_CALL_KWARGS))
        if unknown:
            raise TypeError(
                f"{self!r} got explain_func_kwargs {', '.join(unknown)}; it accepts "
                f"{', '.join(_CALL_KWARGS)} — the method's settings go to "
                f"quantus_explain_func({self.method!r}, setting=...)")
        channel_first = kwargs.get("channel_first", True)
        device, dtype = model_device_dtype(model)
        x = inputs.detach() if isinstance(inputs, torch.Tensor) else np.asarray(inputs)
        x = torch.as_tensor(x, device=device).to(dtype)
        if x.dim() != 4:
            raise ValueError(f"inputs must be a batch of images N×C×H×W, got shape "
                             f"{tuple(x.shape)}")
        if not channel_first:
            x = x.permute(0, 3, 1, 2)
        target = _targets(targets, x.shape[0], device)
        maps = attribution.get(self.method, model, **self.settings).attribute(
            x.contiguous(), target=target)
        maps = encoded_to_raw(maps, model, x.shape[1])
        if not channel_first:
            maps = maps.permute(0, 2, 3, 1)
        out = maps.detach().cpu().numpy()
        axes = tuple(kwargs.get("reduce_axes", (1,) if channel_first else (-1,)))
        if 0 in axes:
            raise ValueError("reduce_axes must not contain 0, the batch axis")
        return out.sum(axis=axes, keepdims=kwargs.get("keepdims", True)) if axes else out


def _targets(targets: Any, n: int, device: torch.device) -> Any:
    """Quantus's ``y_batch`` (numpy ints, a list, a tensor, one int) in the library's
    target rule: one class per image (class names and ``"pred"`` pass as they are)."""
    if isinstance(targets, str) or (isinstance(targets, (list, tuple))
                                    and any(isinstance(v, str) for v in targets)):
        return targets
    if isinstance(targets, torch.Tensor):
        targets = targets.detach().cpu().numpy()
    t = np.asarray(targets)
    if t.dtype.kind == "f" and np.array_equal(t, np.round(t)):
        t = t.astype(np.int64)  # labels stored as floats
    if t.dtype.kind not in "iu":
        raise TypeError(f"targets must be class indices (N ints or one int), got {targets!r}")
    if t.ndim == 0:
        return int(t)
    return torch.as_tensor(t.reshape(-1) if t.size == n else t, device=device).long()
