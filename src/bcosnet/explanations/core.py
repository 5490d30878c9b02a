"""Model-inherent explanations: ``explain()`` and its result (SPEC §3).

In explanation mode a B-cos network is ``f(x) = W(x)·x + b`` with ``W(x)``
held constant by autograd, so the gradient of output ``c`` with respect to the
encoded input ``x`` is the row ``W_c(x)`` exactly.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Union

import torch
from torch import Tensor, nn

from .._utils.modules import find_input_encoding, frozen_params, preserved_buffers, resolve_layer
from .._utils.validate import check_image_batch, did_you_mean
from ..nn.explanation_mode import explanation_mode, is_bcos_model

__all__ = [
    "Explanation",
    "Target",
    "check_bcos_model",
    "class_index",
    "explain",
    "find_input_encoding",
    "model_class_names",
    "resolve_targets",
    "target_is_per_image",
]

Target = Union[int, Sequence[int], Tensor, str, tuple]  # noqa: UP007 (runtime alias, py3.10)

#: Images whose targets and logits ``repr(Explanation)`` lists.
_REPR_ROWS = 4


@dataclass(repr=False)
class Explanation:
    """The exact dynamic linear explanation of a batch.

    Attributes (N images, T targets, C encoded channels):
        weights: N×T×C×H×W, ``W_t(x)`` with respect to the encoded input.
        inputs: N×C×H×W, the encoded input ``x`` the weights apply to.
        contributions: N×T×H×W, ``Σ_channels W_t(x) ⊙ x``.
        logits: N×T, the explained outputs (logits, or neuron values).
        bias: N×T, the constant term: ``contributions.sum((-2,-1)) + bias == logits``.
        targets: N×T long, the explained class indices (or channels).
        all_logits: N×K, the model's full output for the batch (None for neurons).
        class_names: the model's class names when it records them (else None).

    ``repr(ex)`` is a one-line summary (shapes, dtype, targets, logits, the largest
    completeness error), not the tensors.
    """

    weights: Tensor
    inputs: Tensor
    contributions: Tensor
    logits: Tensor
    bias: Tensor
    targets: Tensor
    all_logits: Tensor | None = None
    class_names: list[str] | None = None

    @property
    def contributions_full(self) -> Tensor:
        """N×T×C×H×W per-element contributions ``W_t(x) ⊙ x``."""
        return self.weights * self.inputs.unsqueeze(1)

    @property
    def completeness_error(self) -> Tensor:
        """N×T: ``Σ contributions + bias − logits`` (0 up to rounding for a B-cos net)."""
        return self.contributions.sum((-2, -1)) + self.bias - self.logits

    def __len__(self) -> int:
        return self.weights.shape[0]

    def __repr__(self) -> str:
        n, t = self.targets.shape
        shape = "×".join(str(v) for v in self.weights.shape)
        neurons = self.all_logits is None
        what = "channels" if neurons else "targets"

        def rows(values: Tensor, fmt: Callable[[Any], str]) -> str:
            shown = [ "[" + ", ".join(fmt(v) for v in row) + "]"
                      for row in values[:_REPR_ROWS].tolist()]
            more = f", … ({n - _REPR_ROWS} more)" if n > _REPR_ROWS else ""
            return "[" + ", ".join(shown) + more + "]"

        def target(c: int) -> str:
            if not neurons and self.class_names and 0 <= c < len(self.class_names):
                return f"{c} {self.class_names[c]!r}"
            return str(c)

        err = self.completeness_error.abs().max().item() if self.logits.numel() else 0.0
        return (f"Explanation({n} image{'s' * (n != 1)} × {t} {what[:-1] if t == 1 else what}, "
                f"weights {shape} {str(self.weights.dtype).removeprefix('torch.')} on "
                f"{self.weights.device}, {what} {rows(self.targets, target)}, "
                f"{'values' if neurons else 'logits'} {rows(self.logits, lambda v: f'{v:.4g}')}, "
                f"max |completeness error| {err:.2g})")


def _check_images(images: Tensor) -> None:
    check_image_batch(images, finite=True)


def check_bcos_model(model: nn.Module, caller: str) -> None:
    """Raise ``ValueError`` unless ``model`` is a B-cos network (the library's one
    rule, :func:`bcosnet.nn.is_bcos_model`); ``caller`` names what refuses
    (``"bcosnet.explain"``, ``"attribution 'bcos'"``).  ``explain`` and the
    ``bcos`` attribution method give the same answer with the same message."""
    if not is_bcos_model(model):
        raise ValueError(
            f"{caller} explains B-cos networks, but {type(model).__name__} has no B-cos "
            "layers (no module taking part in explanation mode): its gradient would not be "
            "an exact W(x), only Input×Gradient — for a conventional network use "
            "bcosnet.attribution.get('ixg', model).attribute(images, target) (or another "
            "post-hoc method)"
        )


def model_class_names(model: nn.Module) -> list[str] | None:
    """The class names ``model`` records (index → name), or None.

    The one place the library reads them (``model.class_names``, which bcosnet
    checkpoints and ``create_model(weights=...)`` set); class-name targets of
    :func:`explain` and every ``attribute`` go through it.
    """
    names = getattr(_uncompiled(model), "class_names", None)
    return [str(c) for c in names] if names else None


def class_index(name: str, class_names: Sequence[str] | None) -> int:
    """The index of class ``name`` in ``class_names`` (exact match).

    Raises ``ValueError`` with a did-you-mean when the name is unknown, and
    says how to name a class when there are no names."""
    if not class_names:
        raise ValueError(
            f"target {name!r} is not 'pred' and cannot be a class name: the model records no "
            "class names — pass a class index (an int), 'pred' or ('topk', k), or set "
            "model.class_names to the list of names (bcosnet checkpoints record them)"
        )
    names = list(class_names)
    if name in names:
        return names.index(name)
    shown = ", ".join(map(repr, names[:12])) + (
        f", … ({len(names)} in all)" if len(names) > 12 else "")
    raise ValueError(
        f"target {name!r} is not one of the model's class names"
        f"{did_you_mean(name, names)} (classes: {shown}); the other string forms are 'pred' "
        "and ('topk', k)"
    )


def _is_name_list(v: object) -> bool:
    return isinstance(v, Sequence) and not isinstance(v, str) and any(
        isinstance(u, str) for u in v)


def _names_to_indices(target: Target, class_names: Sequence[str] | None) -> Target:
    """``target`` with every class name replaced by its index (same form otherwise):
    a string other than ``"pred"``, a list of N names, a list of N lists of names."""
    if isinstance(target, str):
        return target if target == "pred" else class_index(target, class_names)
    if _is_topk(target) or isinstance(target, Tensor) or not isinstance(target, Sequence):
        return target
    if not any(isinstance(v, str) or _is_name_list(v) for v in target):
        return target
    out: list[Any] = []
    for v in target:
        if isinstance(v, str):
            out.append(class_index(v, class_names))
        elif _is_name_list(v):
            out.append([class_index(u, class_names) if isinstance(u, str) else u for u in v])
        else:
            out.append(v)
    return out


_TARGET_FORMS = (
    "an int or a class name (the same class for every image), a list or 1-D tensor of N ints "
    "or names (one class per image), an N×T tensor or list of N lists (T classes per image), "
    "'pred' or ('topk', k)"
)


def _is_topk(target: object) -> bool:
    return isinstance(target, tuple) and len(target) == 2 and target[0] == "topk"


def target_is_per_image(target: Target) -> bool:
    """True when ``target`` names one class per image (an int, a 0-d/1-D tensor, a
    flat list of ints, ``"pred"``), False when it names T classes per image (an
    N×T tensor, a list of N lists, ``("topk", k)``).  Decided by the form alone."""
    if isinstance(target, str) or isinstance(target, bool):
        return True
    if _is_topk(target):
        return False
    if isinstance(target, Tensor):
        return target.dim() <= 1
    if isinstance(target, Sequence) and len(target) and all(
        isinstance(v, (Sequence, Tensor)) and not isinstance(v, str) for v in target
    ):
        return False
    return True


def resolve_targets(
    target: Target,
    n: int,
    *,
    logits: Tensor | None = None,
    device: torch.device | None = None,
    class_names: Sequence[str] | None = None,
) -> Tensor:
    """The library's one target rule (captum's), as an N×T long tensor.

    * an int: the same class for every image (T = 1);
    * a list / tuple / 1-D tensor of N ints (or a 0-d tensor): one class per image (T = 1);
    * an N×T tensor, or a list of N lists of T ints: T classes per image;
    * ``"pred"``: the arg-max class (T = 1); ``("topk", k)``: the k largest (T = k).

    Wherever an int may stand, a class name may too (``"Coat"``, ``["Coat",
    "Bag"]``, ``[["Coat", "Bag"]] * N``), looked up in ``class_names`` (the
    model's, :func:`model_class_names`); an unknown name is a ValueError with a
    did-you-mean.  ``"pred"`` is the keyword, not a class name.

    ``logits`` (N×K) are needed for ``"pred"`` / ``("topk", k)`` and to
    range-check the indices; without them only the form is checked.  Whether
    the caller should drop the T axis is :func:`target_is_per_image`.
    """
    target = _names_to_indices(target, class_names)
    dev = logits.device if logits is not None else device
    k = logits.shape[1] if logits is not None else None
    if isinstance(target, str):
        if target != "pred":
            raise ValueError(f"target string must be 'pred' (or use ('topk', k)), got {target!r}")
        if logits is None:
            raise ValueError("target='pred' needs the model's logits")
        t = logits.argmax(1, keepdim=True)
    elif _is_topk(target):
        kk = target[1]  # type: ignore[index]
        if isinstance(kk, bool) or not isinstance(kk, int) or kk < 1 or (k is not None and kk > k):
            raise ValueError(f"('topk', k) needs 1 <= k <= {k if k is not None else 'K'}, "
                             f"got k={kk!r}")
        if logits is None:
            raise ValueError("target=('topk', k) needs the model's logits")
        t = logits.topk(kk, dim=1).indices
    elif isinstance(target, bool):
        raise TypeError(f"target must be {_TARGET_FORMS}; got a bool")
    elif isinstance(target, int):
        t = torch.full((n, 1), target, dtype=torch.long, device=dev)
    elif isinstance(target, Tensor):
        if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
            raise TypeError(f"target tensor must hold integers, got dtype {target.dtype}")
        t = target.to(device=dev, dtype=torch.long)
        if t.dim() == 0:
            t = t.expand(n)
        if t.dim() == 1:
            if t.shape[0] != n:
                raise ValueError(
                    f"a 1-D target tensor needs one class per image, shape ({n},), got "
                    f"{tuple(target.shape)}; for the same T classes on every image pass "
                    f"torch.tensor([...]).expand({n}, -1) (an N×T tensor)"
                )
            t = t[:, None]
        elif t.dim() != 2 or t.shape[0] != n or t.shape[1] == 0:
            raise ValueError(
                f"a target tensor must have shape ({n},) (one class per image) or ({n}, T) "
                f"(T classes per image), got {tuple(target.shape)}"
            )
    elif isinstance(target, Sequence):
        if len(target) != n:
            raise ValueError(
                f"a target list needs one class per image ({n} entries), got {len(target)}; "
                "pass an int for the same class on every image, or an N×T tensor for several "
                "classes per image"
            )
        if all(isinstance(v, int) and not isinstance(v, bool) for v in target):
            t = torch.tensor(list(target), dtype=torch.long, device=dev)[:, None]
        elif all(isinstance(v, Sequence) and not isinstance(v, str) for v in target):
            rows = [list(v) for v in target]
            if not all(isinstance(v, int) and not isinstance(v, bool) for r in rows for v in r):
                raise TypeError(f"a target list must hold ints (or lists of ints), got {target!r}")
            if len({len(r) for r in rows}) != 1 or not rows[0]:
                raise ValueError("a list of per-image target lists needs the same number "
                                 f"(>= 1) of classes for every image, got {target!r}")
            t = torch.tensor(rows, dtype=torch.long, device=dev)
        else:
            raise TypeError(f"a target list must hold ints (or lists of ints), got {target!r}")
    else:
        raise TypeError(f"target must be {_TARGET_FORMS}; got {type(target).__name__}")
    if t.numel() and t.min() < 0:
        raise ValueError(f"target {t.min().item()} is out of range: class indices are >= 0")
    if k is not None and t.numel() and t.max() >= k:
        bad = t[t >= k][0].item()
        raise ValueError(f"target {bad} is out of range: the model has {k} outputs (0..{k - 1})")
    return t.contiguous()


def _neuron_values(
    act: Tensor, channel: int | Sequence[int], location: tuple[int, int] | None
) -> Tensor:
    """N×T neuron values from an N×C×... activation."""
    channels = [channel] if isinstance(channel, int) else list(channel)
    c = act.shape[1]
    for ch in channels:
        if not isinstance(ch, int) or isinstance(ch, bool) or not 0 <= ch < c:
            raise ValueError(f"channel {ch!r} is out of range: the layer has {c} channels")
    sel = act[:, channels]
    if location is not None:
        if act.dim() != 4:
            raise ValueError("location needs a layer with spatial (N×C×H×W) output")
        h, w = location
        if not (0 <= h < act.shape[2] and 0 <= w < act.shape[3]):
            raise ValueError(
                f"location {location} is outside the layer's {act.shape[2]}×{act.shape[3]} output"
            )
        return sel[:, :, h, w]
    return sel.flatten(2).sum(2) if sel.dim() > 2 else sel


def _uncompiled(model: nn.Module) -> nn.Module:
    """The eager module behind a ``torch.compile``-d one.

    explain() registers fresh forward hooks on every call; graphs that dynamo
    compiled before do not see them (it does not guard on module hooks by
    default), so a compiled model is explained through its original module:
    same parameters and buffers, exact result, eager speed."""
    while type(model).__name__ == "OptimizedModule" and isinstance(
        getattr(model, "_orig_mod", None), nn.Module
    ):
        model = model._orig_mod
    return model


def _target_gradients(values: Tensor, x: Tensor) -> Tensor:
    """N×T×(x's shape) gradients of each column of the N×T ``values`` w.r.t. ``x``.

    Several targets go through one batched backward pass (``is_grads_batched``,
    vmap over the output gradients) instead of T passes; when an op of the model
    has no batching rule, the per-target loop (``retain_graph``) is the fallback.
    """
    t_count = values.shape[1]
    if t_count > 1:
        eye = torch.eye(t_count, dtype=values.dtype, device=values.device)
        grad_outputs = eye[:, None, :].expand(t_count, *values.shape)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", UserWarning)  # vmap's slow fallback: use the loop
                (g,) = torch.autograd.grad(values, x, grad_outputs=grad_outputs,
                                           retain_graph=True, allow_unused=True,
                                           is_grads_batched=True)
        except (RuntimeError, NotImplementedError, UserWarning):
            pass
        else:
            return torch.zeros((values.shape[0], t_count, *x.shape[1:]), dtype=x.dtype,
                               device=x.device) if g is None else g.transpose(0, 1)
    grads = []
    for t in range(t_count):
        (g,) = torch.autograd.grad(
            values[:, t].sum(), x, retain_graph=t < t_count - 1, allow_unused=True
        )
        grads.append(torch.zeros_like(x) if g is None else g)
    return torch.stack(grads, 1)


def explain(
    model: nn.Module,
    images: Tensor,
    target: Target = "pred",
    *,
    layer: str | nn.Module | None = None,
    channel: int | Sequence[int] | None = None,
    location: tuple[int, int] | None = None,
) -> Explanation:
    """Explain ``model``'s outputs on ``images`` exactly.

    Args:
        model: a B-cos network (any module using the explanation-mode protocol,
            :func:`bcosnet.nn.is_bcos_model`).  Any other network is a
            ValueError, as for ``attribution.get("bcos", model)``: its gradient
            is not an exact ``W(x)`` — use ``attribution.get("ixg", model)``
            for Input×Gradient.  If it contains an input encoding (:class:`bcosnet.nn.AddInverse`),
            ``images`` are raw images in [0, 1] and the explanation is taken with
            respect to the encoding's output; otherwise ``images`` are taken to be
            the encoded input.
        images: N×C×H×W float tensor.
        target: which logits, by the library's one rule (captum's, see
            :func:`resolve_targets`): an int (the same class for every image),
            a list / tuple / 1-D tensor of N ints (one class per image), an N×T
            tensor or a list of N lists (T classes per image), ``"pred"`` or
            ``("topk", k)``; class names (``"Coat"``, a list of names) where
            the model records them (:func:`model_class_names`).  The result
            always has the T axis (T = 1 for the one-per-image forms).  One
            forward pass, one backward pass per target.
        layer, channel, location: explain an intermediate neuron instead of a
            logit: ``channel`` (int or list) of the output of ``layer`` (a module
            name or module), summed over locations, or at ``location=(h, w)``.

    Returns:
        An :class:`Explanation`.  The model's parameters receive no gradients,
        its train/eval mode and buffers are left as they were.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    _check_images(images)
    if layer is None and (channel is not None or location is not None):
        raise ValueError("channel/location explain an intermediate neuron: also pass layer=")
    if layer is not None and channel is None:
        raise ValueError("explaining a layer needs channel= (an int or a list of ints)")

    model = _uncompiled(model)
    check_bcos_model(model, "bcosnet.explain")
    names = model_class_names(model) if layer is None else None
    if layer is None:
        target = _names_to_indices(target, names)  # names checked before any pass
    encoding = find_input_encoding(model)
    layer_module = resolve_layer(model, layer) if layer is not None else None
    captured: dict[str, Tensor] = {}
    zero_input = False

    def encoding_hook(_m: nn.Module, _inp: tuple, out: Tensor) -> Tensor:
        if "x" in captured:  # the encoding is used more than once: explain the first use
            return out
        leaf = out.detach()
        if zero_input:
            leaf = torch.zeros_like(leaf)
        leaf.requires_grad_(True)
        captured["x"] = leaf
        return leaf

    def layer_hook(_m: nn.Module, _inp: tuple, out: Tensor) -> None:
        if "act" not in captured:
            captured["act"] = out

    handles = []
    if encoding is not None:
        handles.append(encoding.register_forward_hook(encoding_hook))
    if layer_module is not None:
        handles.append(layer_module.register_forward_hook(layer_hook))

    try:
        with frozen_params(model), preserved_buffers(model), explanation_mode(model), \
                torch.enable_grad():
            if encoding is None:
                x = images.detach().clone().requires_grad_(True)
                out = model(x)
            else:
                out = model(images)
                if "x" not in captured:
                    raise RuntimeError("the model's input encoding was not called in forward")
                x = captured["x"]
            if isinstance(out, (tuple, list)):  # e.g. Inception's (logits, aux) in training
                out = out[0]
            if layer_module is None:
                if out.dim() != 2:
                    raise ValueError(f"model output must be N×K logits, got {tuple(out.shape)}")
                targets = resolve_targets(target, out.shape[0], logits=out.detach())
                values = out.gather(1, targets)
                all_logits = out.detach()
            else:
                if "act" not in captured:
                    raise RuntimeError(f"layer {layer!r} was not called in the forward pass")
                values = _neuron_values(captured["act"], channel, location)  # type: ignore[arg-type]
                n = values.shape[0]
                chans = [channel] if isinstance(channel, int) else list(channel)  # type: ignore[arg-type]
                targets = torch.tensor(chans, device=values.device).expand(n, -1).contiguous()
                all_logits = None

            weights = _target_gradients(values, x)

            # The constant term: f(0) in explanation mode, f being dynamic linear.
            captured.clear()
            zero_input = True
            with torch.no_grad():
                if encoding is None:
                    out0 = model(torch.zeros_like(x[:1]))
                else:
                    out0 = model(images[:1])
                if isinstance(out0, (tuple, list)):
                    out0 = out0[0]
                if layer_module is None:
                    bias = out0.expand(x.shape[0], -1).gather(1, targets)
                else:
                    bias = _neuron_values(captured["act"], channel, location).expand(  # type: ignore[arg-type]
                        x.shape[0], -1
                    )
    except RuntimeError as e:
        if "not enough memory" in str(e) or "out of memory" in str(e).lower():
            raise MemoryError(
                f"explaining {images.shape[0]} image(s) of {images.shape[-2]}×"
                f"{images.shape[-1]} pixels needs more memory than is free ({e}); pass fewer "
                "images at a time (split the batch) or downscale them"
            ) from e
        raise
    finally:
        for h in handles:
            h.remove()

    x = x.detach()
    contributions = (weights * x.unsqueeze(1)).sum(2)
    return Explanation(
        weights=weights.detach(),
        inputs=x,
        contributions=contributions.detach(),
        logits=values.detach(),
        bias=bias.detach(),
        targets=targets,
        all_logits=all_logits,
        class_names=names,
    )
