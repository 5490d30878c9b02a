"""Helpers about modules: eval mode, outputs, layers, parameters and buffers.

One copy of each, used by explanations, attribution, evaluation and training.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
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


def first_output(out: Any) -> Tensor:
    """The logits of a model's output: the tensor itself, or the first field of a
    tuple/namedtuple (e.g. Inception's ``InceptionOutputs`` in training mode)."""
    if isinstance(out, Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], Tensor):
        return out[0]
    raise TypeError(f"expected the model to return a tensor of logits, got {type(out).__name__}")


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


@contextlib.contextmanager
def frozen_params(model: nn.Module) -> Iterator[None]:
    """Parameters need no gradients while explaining (faster, and leaves no
    ``.grad``); their ``requires_grad`` flags are restored afterwards."""
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p, r in zip(params, flags):
            p.requires_grad_(r)
