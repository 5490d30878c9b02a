"""Model-inherent explanations: ``explain()`` and its result (docs/protocol.md §3).

In explanation mode a B-cos network is ``f(x) = W(x)·x + b`` with ``W(x)``
held constant by autograd, so the gradient of output ``c`` with respect to the
encoded input ``x`` is the row ``W_c(x)`` exactly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Union

import torch
from torch import Tensor, nn

from .._utils.gradients import target_gradients
from .._utils.modules import (
    find_input_encoding,
    first_output,
    frozen_params,
    preserved_buffers,
    resolve_layer,
    this_thread_only,
    uncompiled,
)
from .._utils.validate import check_image_batch, check_int, did_you_mean, is_int
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

#: What to explain, the library's one target rule (:func:`resolve_targets`): an int or a
#: class name, N ints or names, an N×T tensor or N lists, ``"pred"`` or ``("topk", k)``.
Target = Union[int, str, Sequence[int], Sequence[str], Sequence[Sequence[int]], Tensor,  # noqa: UP007
               tuple]

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
    names = getattr(uncompiled(model), "class_names", None)
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
    if isinstance(target, str) or _is_topk(target):
        t = _ranked_targets(target, logits)
    elif isinstance(target, bool):
        raise TypeError(f"target must be {_TARGET_FORMS}; got a bool")
    elif isinstance(target, int):
        t = torch.full((n, 1), target, dtype=torch.long, device=dev)
    elif isinstance(target, Tensor):
        t = _tensor_targets(target, n, dev)
    elif isinstance(target, Sequence):
        t = _list_targets(target, n, dev)
    else:
        raise TypeError(f"target must be {_TARGET_FORMS}; got {type(target).__name__}")
    if t.numel() and t.min() < 0:
        raise ValueError(f"target {t.min().item()} is out of range: class indices are >= 0")
    if k is not None and t.numel() and t.max() >= k:
        bad = t[t >= k][0].item()
        raise ValueError(f"target {bad} is out of range: the model has {k} outputs (0..{k - 1})")
    return t.contiguous()


def _ranked_targets(target: str | tuple, logits: Tensor | None) -> Tensor:
    """``"pred"`` (N×1) or ``("topk", k)`` (N×k) from the logits."""
    if isinstance(target, str):
        if target != "pred":
            raise ValueError(f"target string must be 'pred' (or use ('topk', k)), got {target!r}")
        if logits is None:
            raise ValueError("target='pred' needs the model's logits")
        return logits.argmax(1, keepdim=True)
    k = logits.shape[1] if logits is not None else None
    try:
        kk = check_int("k", target[1], 1, k)
    except ValueError:
        raise ValueError(f"('topk', k) needs 1 <= k <= {k if k is not None else 'K'}, "
                         f"got k={target[1]!r}") from None
    if logits is None:
        raise ValueError("target=('topk', k) needs the model's logits")
    return logits.topk(kk, dim=1).indices


def _tensor_targets(target: Tensor, n: int, dev: torch.device | None) -> Tensor:
    """N×T targets from a 0-d, (N,) or (N, T) integer tensor."""
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
        return t[:, None]
    if t.dim() != 2 or t.shape[0] != n or t.shape[1] == 0:
        raise ValueError(
            f"a target tensor must have shape ({n},) (one class per image) or ({n}, T) "
            f"(T classes per image), got {tuple(target.shape)}"
        )
    return t


def _list_targets(target: Sequence, n: int, dev: torch.device | None) -> Tensor:
    """N×T targets from a list of N ints or of N lists of T ints."""
    if len(target) != n:
        raise ValueError(
            f"a target list needs one class per image ({n} entries), got {len(target)}; "
            "pass an int for the same class on every image, or an N×T tensor for several "
            "classes per image"
        )
    if all(is_int(v) for v in target):
        return torch.tensor(list(target), dtype=torch.long, device=dev)[:, None]
    if not all(isinstance(v, Sequence) and not isinstance(v, str) for v in target):
        raise TypeError(f"a target list must hold ints (or lists of ints), got {target!r}")
    rows = [list(v) for v in target]
    if not all(is_int(v) for r in rows for v in r):
        raise TypeError(f"a target list must hold ints (or lists of ints), got {target!r}")
    if len({len(r) for r in rows}) != 1 or not rows[0]:
        raise ValueError("a list of per-image target lists needs the same number "
                         f"(>= 1) of classes for every image, got {target!r}")
    return torch.tensor(rows, dtype=torch.long, device=dev)


def _neuron_values(
    act: Tensor, channel: int | Sequence[int], location: tuple[int, int] | None
) -> Tensor:
    """N×T neuron values from an N×C×... activation."""
    channels = [channel] if isinstance(channel, int) else list(channel)
    c = act.shape[1]
    for ch in channels:
        if not is_int(ch) or not 0 <= ch < c:
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


class _Probe:
    """The forward hooks of one explanation (acting in its own thread only): the
    output of the model's input encoding becomes the explained leaf ``x`` (its
    first use; zeros while the constant term is computed), and the output of
    ``layer`` is kept."""

    def __init__(self, model: nn.Module, layer: nn.Module | None) -> None:
        self.encoding = find_input_encoding(model)
        self.layer = layer
        self.zero_input = False
        self.captured: dict[str, Tensor] = {}
        self._handles: list[Any] = []

    def __enter__(self) -> _Probe:
        if self.encoding is not None:
            self._handles.append(
                self.encoding.register_forward_hook(this_thread_only(self._encoded)))
        if self.layer is not None:
            self._handles.append(
                self.layer.register_forward_hook(this_thread_only(self._activation)))
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()

    def _encoded(self, _m: nn.Module, _inp: tuple, out: Tensor) -> Tensor:
        if "x" in self.captured:  # the encoding is used more than once: explain the first use
            return out
        leaf = torch.zeros_like(out) if self.zero_input else out.detach()
        self.captured["x"] = leaf.requires_grad_(True)
        return self.captured["x"]

    def _activation(self, _m: nn.Module, _inp: tuple, out: Tensor) -> None:
        self.captured.setdefault("act", out)

    def explained_values(self, channel: Any, location: Any) -> Tensor:
        """The N×T layer neurons of the forward pass just run."""
        if "act" not in self.captured:
            raise RuntimeError("the layer to explain was not called in the forward pass")
        return _neuron_values(self.captured["act"], channel, location)


@contextlib.contextmanager
def _memory_errors(images: Tensor) -> Iterator[None]:
    """An out-of-memory ``RuntimeError`` becomes a ``MemoryError`` that says what to do."""
    try:
        yield
    except RuntimeError as e:
        # torch.OutOfMemoryError: the GPU's; the CPU allocator raises a RuntimeError
        # "can't allocate memory" (Linux) / "not enough memory" (Windows).
        text = str(e).lower()
        if isinstance(e, torch.OutOfMemoryError) or any(
                s in text for s in ("can't allocate memory", "not enough memory", "out of memory")):
            raise MemoryError(
                f"explaining {images.shape[0]} image(s) of {images.shape[-2]}×"
                f"{images.shape[-1]} pixels needs more memory than is free ({e}); pass fewer "
                "images at a time (split the batch) or downscale them"
            ) from e
        raise


def explain(
    model: nn.Module,
    images: Tensor,
    target: Target = "pred",
    *,
    layer: str | nn.Module | None = None,
    channel: int | Sequence[int] | None = None,
    location: tuple[int, int] | None = None,
) -> Explanation:
    """Explain ``model``'s outputs on ``images`` exactly (docs/protocol.md §3).

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
            forward pass and the T targets' backward passes
            (:func:`bcosnet._utils.gradients.target_gradients`), plus a forward
            pass of one image for the constant term.
        layer: explain an intermediate neuron instead of a logit: a module name
            or module whose output holds the neuron.
        channel: the neuron's channel (int or list) of ``layer``'s output, summed
            over locations unless ``location`` is given.
        location: ``(h, w)``: the neuron at that location of the channel.

    Returns:
        An :class:`Explanation`.  The model's parameters receive no gradients,
        its train/eval mode and buffers are left as they were.
    """
    return _explain(model, images, target, layer=layer, channel=channel, location=location)


def _explain(
    model: nn.Module,
    images: Tensor,
    target: Target,
    *,
    layer: str | nn.Module | None = None,
    channel: int | Sequence[int] | None = None,
    location: tuple[int, int] | None = None,
    constant: bool = True,
) -> Explanation:
    """:func:`explain`; ``constant=False`` skips the forward pass of the constant
    term (``bias`` is then NaN): the ``bcos`` attribution method needs the weights only."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    check_image_batch(images, finite=True)
    if layer is None and (channel is not None or location is not None):
        raise ValueError("channel/location explain an intermediate neuron: also pass layer=")
    if layer is not None and channel is None:
        raise ValueError("explaining a layer needs channel= (an int or a list of ints)")
    model = uncompiled(model)
    check_bcos_model(model, "bcosnet.explain")
    names = model_class_names(model) if layer is None else None
    if layer is None:
        target = _names_to_indices(target, names)  # names checked before any pass
    layer_module = resolve_layer(model, layer) if layer is not None else None
    with _memory_errors(images), _Probe(model, layer_module) as probe, frozen_params(model), \
            preserved_buffers(model), explanation_mode(model), torch.enable_grad():
        x, values, targets, all_logits = _explained_pass(model, images, target, probe,
                                                         channel, location)
        weights = target_gradients(values, x)
        bias = (_constant_term(model, images, x, targets, probe, channel, location)
                if constant else torch.full_like(values, float("nan")))
    x = x.detach()
    return Explanation(
        weights=weights.detach(),
        inputs=x,
        contributions=(weights * x.unsqueeze(1)).sum(2).detach(),
        logits=values.detach(),
        bias=bias.detach(),
        targets=targets,
        all_logits=all_logits,
        class_names=names,
    )


def _explained_pass(
    model: nn.Module, images: Tensor, target: Target, probe: _Probe, channel: Any, location: Any
) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """The forward pass in explanation mode: (the explained input ``x``, the N×T
    explained values, the N×T targets, the N×K logits or None for neurons)."""
    if probe.encoding is None:
        x = images.detach().clone().requires_grad_(True)
        out = model(x)
    else:
        out = model(images)
        if "x" not in probe.captured:
            raise RuntimeError("the model's input encoding was not called in forward")
        x = probe.captured["x"]
    if probe.layer is not None:
        values = probe.explained_values(channel, location)
        chans = [channel] if isinstance(channel, int) else list(channel)
        targets = torch.tensor(chans, device=values.device).expand(values.shape[0], -1)
        return x, values, targets.contiguous(), None
    logits = first_output(out, logits=True)
    targets = resolve_targets(target, logits.shape[0], logits=logits.detach())
    return x, logits.gather(1, targets), targets, logits.detach()


def _constant_term(
    model: nn.Module, images: Tensor, x: Tensor, targets: Tensor, probe: _Probe,
    channel: Any, location: Any,
) -> Tensor:
    """N×T constant term: f(0) in explanation mode, f being dynamic linear (one
    forward pass of one image, whose encoded input the probe replaces by zeros)."""
    probe.captured.clear()
    probe.zero_input = True
    with torch.no_grad():
        out0 = model(torch.zeros_like(x[:1]) if probe.encoding is None else images[:1])
        if probe.layer is not None:
            return probe.explained_values(channel, location).expand(x.shape[0], -1)
        return first_output(out0).expand(x.shape[0], -1).gather(1, targets)
