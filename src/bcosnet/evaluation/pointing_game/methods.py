"""Attribution callables the game plays: ``"bcos"``, ``bcosnet.attribution``
names, or the caller's own functions."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import Tensor, nn

__all__ = ["AttributionFn", "make_attribution_fn", "supports_multi_target"]

#: ``(images N×C×H×W, targets N) -> maps N×H×W or N×C'×H×W`` (and, for callables with
#: ``supports_multi_target = True``, ``targets N×T -> maps N×T×[C'×]H×W``).
AttributionFn = Callable[[Tensor, Tensor], Tensor]
MethodSpec = str | AttributionFn


def supports_multi_target(fn: AttributionFn) -> bool:
    """Whether ``fn(images N×C×H×W, targets N×T)`` returns all N×T maps in one call.

    A callable says so with an attribute ``supports_multi_target = True``; it
    then returns N×T×H×W or N×T×C×H×W maps for an N×T target tensor (and
    N×[C×]H×W for a 1-D one).  Without it the game calls it once per cell.
    """
    return bool(getattr(fn, "supports_multi_target", False))


def make_attribution_fn(model: nn.Module, method: MethodSpec, **settings: Any) -> AttributionFn:
    """An attribution callable ``(images N×C×H×W, targets) -> maps`` for ``method``.

    ``method`` is a callable (returned as is; ``settings`` must be empty) or a
    name, resolved with ``bcosnet.attribution.get(method, model,
    **settings).attribute(images, target=targets)`` — ``"bcos"`` is the
    model-inherent explanation, ``W(x) ⊙ x`` from :func:`bcosnet.explain`.

    ``targets`` is N (one class per image; maps N×[C×]H×W) or, where
    :func:`supports_multi_target` holds for the returned callable, N×T (maps
    N×T×[C×]H×W): ``"bcos"`` and every ``bcosnet.attribution`` method (the
    library's target rule), unless a method class sets
    ``supports_multi_target = False``.
    """
    if callable(method):
        if settings:
            raise ValueError("settings apply to named methods only; bind them into your callable")
        return method
    if not isinstance(method, str):
        raise TypeError(f"method must be a name or a callable, got {type(method).__name__}")
    try:
        from ... import attribution as _attribution

        get = _attribution.get  # type: ignore[attr-defined]
    except (ImportError, AttributeError) as e:
        raise ValueError(
            f"method {method!r} needs bcosnet.attribution.get, which is not available ({e}); "
            "pass an attribution callable (images, targets) -> maps instead"
        ) from e
    impl = get(method, model, **settings)
    if "progress" not in settings and hasattr(impl, "progress"):
        impl.progress = False  # the caller's loop shows progress, not each call

    def fn(images: Tensor, targets: Tensor) -> Tensor:
        return impl.attribute(images, target=targets)

    fn.__name__ = method
    # bcosnet.attribution follows one target rule: an N×T target tensor gives N×T maps
    # from one set of passes; a method class may still opt out with the attribute False.
    fn.supports_multi_target = bool(  # type: ignore[attr-defined]
        getattr(impl, "supports_multi_target", True))
    return fn


def _method_name(method: MethodSpec) -> str:
    if isinstance(method, str):
        return method
    return getattr(method, "__name__", None) or type(method).__name__


def _normalise_methods(methods: Any) -> dict[str, MethodSpec]:
    if isinstance(methods, str) or callable(methods):
        return {_method_name(methods): methods}
    if isinstance(methods, Mapping):
        out = dict(methods)
    elif isinstance(methods, Sequence):
        out = {}
        for m in methods:
            name = _method_name(m)
            if name in out:
                raise ValueError(f"method name {name!r} appears twice; pass a dict name -> method")
            out[name] = m
    else:
        raise TypeError(
            "methods must be a name, a callable, a list of them, or a dict name -> method, "
            f"got {type(methods).__name__}"
        )
    if not out:
        raise ValueError("no methods given: pass at least one method name (e.g. 'bcos', "
                         "'grad'), attribution callable or a dict name -> method")
    for name, m in out.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"method names must be non-empty strings, got {name!r}")
        if not (isinstance(m, str) or callable(m)):
            raise TypeError(f"method {name!r} must be a name or a callable, got {type(m).__name__}")
    return out


