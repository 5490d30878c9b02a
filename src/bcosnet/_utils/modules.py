"""Helpers about modules: eval mode, outputs, layers, parameters and buffers.

One copy of each, used by explanations, attribution, evaluation and training.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from .validate import did_you_mean

__all__ = [
    "eval_mode",
    "find_input_encoding",
    "first_output",
    "frozen_params",
    "preserved_buffers",
    "resolve_layer",
    "this_thread_only",
    "uncompiled",
]


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model.eval()`` for the block; afterwards every submodule gets back its own
    ``training`` flag (a model mixing train and eval submodules keeps the mix),
    also on error."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, t in flags:
            m.training = t


def first_output(out: Any, *, logits: bool = False) -> Tensor:
    """The tensor of a model's output: the tensor itself, or the first field of a
    tuple/namedtuple (e.g. Inception's ``InceptionOutputs`` in training mode).

    A ``TypeError`` when there is no tensor; with ``logits=True`` also a
    ``ValueError`` unless it is N×K logits.  The library's one reading of a
    model's output (explanations, attribution, evaluation, training)."""
    if isinstance(out, (tuple, list)) and out:
        out = out[0]
    if not isinstance(out, Tensor):
        raise TypeError(
            f"expected the model to return a tensor of logits, got {type(out).__name__}")
    if logits and out.dim() != 2:
        raise ValueError(f"model output must be N×K logits, got {tuple(out.shape)}")
    return out


def uncompiled(model: nn.Module) -> nn.Module:
    """The eager module behind a ``torch.compile``-d one (``model`` itself otherwise).

    Methods that register forward hooks per call (``explain``, DeepLIFT) run the
    original module: graphs dynamo compiled before do not see new module hooks
    (it does not guard on them by default).  Same parameters and buffers, exact
    result, eager speed."""
    while type(model).__name__ == "OptimizedModule" and isinstance(
        getattr(model, "_orig_mod", None), nn.Module
    ):
        model = model._orig_mod
    return model


def find_input_encoding(model: nn.Module) -> nn.Module | None:
    """The first submodule marked ``is_input_encoding`` (e.g. :class:`AddInverse`), or None."""
    for m in model.modules():
        if getattr(m, "is_input_encoding", False):
            return m
    return None


def resolve_layer(model: nn.Module, layer: str | nn.Module) -> nn.Module:
    """The submodule named ``layer`` (or ``layer`` itself, checked to be part of
    ``model``); a ``ValueError`` with close names otherwise."""
    if isinstance(layer, nn.Module):
        if not any(m is layer for m in model.modules()):
            raise ValueError("layer module is not part of the model")
        return layer
    if not isinstance(layer, str):
        raise TypeError(f"layer must be a module name (str) or a module, got "
                        f"{type(layer).__name__}")
    modules = dict(model.named_modules())
    if layer not in modules:
        raise ValueError(f"model has no layer named {layer!r}"
                         + did_you_mean(layer, [n for n in modules if n], n=5))
    return modules[layer]


def this_thread_only(hook: Callable[..., Any]) -> Callable[..., Any]:
    """``hook`` acting only in the thread that wraps it, a no-op (``None``) in any
    other: the per-call hooks of an explanation or attribution leave alone the
    forward passes other threads run through the same model meanwhile."""
    owner = threading.get_ident()

    @functools.wraps(hook)
    def hook_in_owner_thread(*args: Any) -> Any:
        return hook(*args) if threading.get_ident() == owner else None

    return hook_in_owner_thread


@contextlib.contextmanager
def preserved_buffers(model: nn.Module) -> Iterator[None]:
    """Restore buffers (e.g. BatchNorm running stats) a train-mode forward would change."""
    if not any(m.training for m in model.modules()):
        yield
        return
    saved = [(b, b.detach().clone()) for b in model.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, v in saved:
                b.copy_(v)


#: Parameters frozen by running ``frozen_params`` blocks: id → (parameter, its own
#: flag, how many blocks hold it).  Blocks may nest and run in several threads at once.
_FROZEN: dict[int, tuple[nn.Parameter, bool, int]] = {}
_FROZEN_LOCK = threading.Lock()


@contextlib.contextmanager
def frozen_params(model: nn.Module) -> Iterator[None]:
    """Parameters need no gradients while explaining (faster, and leaves no
    ``.grad``); their ``requires_grad`` flags are restored when the last block
    holding them ends — also when explanations of one model run in several
    threads at once, or nest."""
    params = list(model.parameters())
    with _FROZEN_LOCK:
        for p in params:
            _, flag, held = _FROZEN.get(id(p), (p, p.requires_grad, 0))
            _FROZEN[id(p)] = (p, flag, held + 1)
            p.requires_grad_(False)
    try:
        yield
    finally:
        with _FROZEN_LOCK:
            for p in params:
                _, flag, held = _FROZEN[id(p)]
                if held == 1:
                    del _FROZEN[id(p)]
                    p.requires_grad_(flag)
                else:
                    _FROZEN[id(p)] = (p, flag, held - 1)
