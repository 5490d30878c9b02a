"""The explanation-mode protocol.

A module takes part in explanation mode by implementing two members:

* ``set_explanation_mode(active: bool) -> None``
* ``is_in_explanation_mode`` (a bool attribute or property)

In explanation mode a module treats every input-dependent factor of its
dynamic linear map (the ``|cos|^(B-1)`` scaling, patch norms, the variance of
uncentred norms, ...) as a constant, so that one backward pass yields the
linear map itself (docs/protocol.md §3).  The names match the published ``bcos`` package,
so its modules take part too.

The model is walked when the context manager is entered; nothing is cached.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Protocol, runtime_checkable

from torch import nn

__all__ = [
    "SupportsExplanationMode",
    "ExplainableModule",
    "explanation_mode",
    "explanation_modules",
    "is_bcos_model",
]


@runtime_checkable
class SupportsExplanationMode(Protocol):
    """Anything with ``set_explanation_mode`` and ``is_in_explanation_mode``."""

    is_in_explanation_mode: bool

    def set_explanation_mode(self, active: bool = True) -> None: ...


class ExplainableModule(nn.Module):
    """Base class implementing the protocol with a plain flag.

    Subclasses read ``self.is_in_explanation_mode`` in ``forward`` and detach
    their dynamic factors when it is set.
    """

    def __init__(self) -> None:
        super().__init__()
        self._explanation_mode = False

    def set_explanation_mode(self, active: bool = True) -> None:
        self._explanation_mode = bool(active)

    @property
    def is_in_explanation_mode(self) -> bool:
        return self._explanation_mode


def explanation_modules(model: nn.Module) -> list[nn.Module]:
    """All submodules of ``model`` (itself included) that take part in explanation mode."""
    return [
        m
        for m in model.modules()
        if callable(getattr(m, "set_explanation_mode", None))
        and hasattr(m, "is_in_explanation_mode")
    ]


def is_bcos_model(model: nn.Module) -> bool:
    """Whether ``model`` is a B-cos network: the library's one rule.

    True when a submodule (or the model itself) takes part in explanation mode —
    a B-cos layer of bcosnet, a B-cosified convolution, an uncentred norm, or a
    module of the ``bcos`` package — so that one backward pass in explanation
    mode gives the dynamic linear map ``W(x)`` exactly.  ``bcosnet.explain``,
    ``attribution.get("bcos", ...)`` and the perturbation methods' default
    score (sigmoid vs softmax) all decide with this function.
    """
    return bool(explanation_modules(model))


@contextlib.contextmanager
def explanation_mode(model: nn.Module, active: bool = True) -> Iterator[nn.Module]:
    """Context manager: put every explanation-aware module of ``model`` into
    explanation mode (or out of it with ``active=False``).

    The previous state of each module is restored on exit, also when the body
    raises.  Yields the model.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"explanation_mode expects a torch.nn.Module, got {type(model).__name__}")
    modules = explanation_modules(model)
    previous = [bool(m.is_in_explanation_mode) for m in modules]
    try:
        for m in modules:
            m.set_explanation_mode(active)
        yield model
    finally:
        for m, state in zip(modules, previous):
            m.set_explanation_mode(state)
