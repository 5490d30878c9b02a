"""Gradient-based attributions: ``bcos``, ``grad``, ``ixg``, ``intgrad``, ``deeplift``.

``grad``, ``ixg``, ``intgrad`` and ``deeplift`` differentiate with respect to
the raw image by default (``input_space="raw"``, the paper's code) or the
model's encoded input (``input_space="encoded"``, the B-cos v2 code); ``bcos``
always explains the encoded input (see :mod:`bcosnet.attribution.base`).
With T targets every method runs its forward pass(es) once and takes the T
gradients from :func:`bcosnet._utils.gradients.target_gradients` (one backward
pass per target on CPU, one pass batched over the targets on other devices).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._utils.gradients import target_gradients
from .._utils.modules import first_output, this_thread_only, uncompiled
from .._utils.progress import CallProgress
from .._utils.validate import check_choice, check_int
from ..explanations.core import _explain, check_bcos_model
from .base import (
    AttributionMethod,
    Baseline,
    EncodedModel,
    Target,
    check_input_space,
    make_baseline,
    resolve_targets,
)

__all__ = ["Bcos", "DeepLift", "Grad", "InputXGradient", "IntegratedGradients",
           "integration_rule"]


def _input_gradients(
    fn: Callable[[Tensor], Tensor], x: Tensor, target: Target
) -> tuple[Tensor, Tensor]:
    """(N×T gradients of the target logits w.r.t. ``x``, targets N×T) from one forward."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = fn(x)
        t = resolve_targets(target, x.shape[0], logits=logits.detach())
        g = target_gradients(logits, x, t)
    return g, t


class _InputGradientMethod(AttributionMethod):
    """A method differentiating with respect to the raw image (``input_space="raw"``,
    default) or the model's encoded input (``"encoded"``)."""

    def __init__(self, model: nn.Module, *, input_space: str = "raw") -> None:
        super().__init__(model)
        self.input_space = check_input_space(input_space)

    def _space(
        self, images: Tensor, model: nn.Module | None = None
    ) -> tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]:
        """(function of the differentiated input returning logits, map from a raw
        image to the differentiated input), of ``model`` (default ``self.model``)."""
        model = self.model if model is None else model
        if self.input_space == "encoded":
            em = EncodedModel(model, images.shape[1])
            if em.has_encoding:

                def encode(img: Tensor) -> Tensor:
                    with torch.no_grad():
                        return em.encode(img)

                return em, encode
        return (lambda x: first_output(model(x), logits=True)), (lambda img: img)


class Bcos(AttributionMethod):
    """The model-inherent explanation of a B-cos network (docs/protocol.md §3):
    ``W_t(x) ⊙ x`` w.r.t. the encoded input, computed by :func:`bcosnet.explain`
    (``explain(model, images, t).contributions_full``) — one forward pass in
    explanation mode and the targets' backward passes (:func:`target_gradients`);
    ``explain``'s extra forward for the constant term is skipped.

    Args:
        model: a B-cos network.  Any other network (the one rule,
            :func:`bcosnet.nn.is_bcos_model`) is a ValueError, as in
            :func:`bcosnet.explain`: the map would silently be Input×Gradient —
            use ``"ixg"`` for that.
        output: ``"contributions"`` (``W ⊙ x``, default; summed over channels
            and pixels it equals ``logit − bias``) or ``"weights"`` (``W``).

    Returns N×C_enc×H×W (6 channels for an RGB model with ``AddInverse``).
    """

    name = "bcos"

    def __init__(self, model: nn.Module, *, output: str = "contributions") -> None:
        super().__init__(model)
        if output not in ("contributions", "weights"):
            raise ValueError(f"output must be 'contributions' or 'weights', got {output!r}")
        check_bcos_model(model, "attribution 'bcos'")
        self.output = output

    def _attribute(self, images: Tensor, target: Target) -> Tensor:
        ex = _explain(self.model, images, target, constant=False)
        return ex.weights if self.output == "weights" else ex.contributions_full


class Grad(_InputGradientMethod):
    """Vanilla gradient (signed): ``∂ logit_t / ∂ x``.

    Args:
        input_space: ``"raw"`` (default, the paper's code: the image the model
            is given) or ``"encoded"`` (the model's encoded input, as the B-cos
            v2 code).

    One forward, the targets' backward passes.  Returns N×C×H×W (C: channels of
    the differentiated input).
    """

    name = "grad"

    def _attribute(self, images: Tensor, target: Target) -> Tensor:
        fn, to_space = self._space(images)
        return _input_gradients(fn, to_space(images), target)[0]


class InputXGradient(_InputGradientMethod):
    """Input×Gradient: ``x ⊙ ∂ logit_t / ∂ x``, ``x`` the raw image (default)
    or the encoded input (``input_space="encoded"``).

    In the encoded space, on a B-cos network (normal mode) with every layer
    positively homogeneous of degree 1 (B-cos layers, MaxOut, scales,
    pooling, eval-mode uncentred norms), Euler's theorem gives
    ``Σ IxG = logit − bias = Σ bcos map`` (up to the ``norm_eps`` guard); per
    element the two differ.  For a single B-cos layer ``f(x) = |cos|^(B−1) ŵᵀx``:
    ``x ⊙ ∇f = B·(W(x) ⊙ x) − (B−1)·f(x)·x² / (‖x‖² + ε)``.

    Args:
        input_space: ``"raw"`` (default) or ``"encoded"``; see :class:`Grad`.

    One forward, the targets' backward passes.  Returns N×C×H×W.
    """

    name = "ixg"

    def _attribute(self, images: Tensor, target: Target) -> Tensor:
        fn, to_space = self._space(images)
        x = to_space(images)
        return _input_gradients(fn, x, target)[0] * x[:, None]


#: Integration rules of :class:`IntegratedGradients` (captum's names and numbers).
INTEGRATION_RULES = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle",
                     "riemann_trapezoid")


def integration_rule(method: str, n_steps: int) -> tuple[list[float], list[float]]:
    """(weights, points α in [0, 1]) of ``n_steps``-point quadrature of ∫₀¹ g(α) dα.

    ``"gausslegendre"``: Gauss–Legendre nodes and weights moved to [0, 1];
    ``"riemann_left" | "riemann_right" | "riemann_middle"``: ``n_steps`` points
    spaced ``1 / n_steps`` apart, weight ``1 / n_steps`` each;
    ``"riemann_trapezoid"``: ``n_steps`` points from 0 to 1, the end weights
    halved.  The same numbers as captum's ``IntegratedGradients(method=...)``
    (tested); Riemann rules need ``n_steps >= 2``.
    """
    check_choice("method", method, INTEGRATION_RULES)
    n = check_int("n_steps", n_steps, 1 if method == "gausslegendre" else 2)
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(n)
        return (0.5 * weights).tolist(), (0.5 * (1 + nodes)).tolist()
    steps = [1 / n] * n
    if method == "riemann_trapezoid":
        steps[0] /= 2
        steps[-1] /= 2
    lo, hi = {"riemann_left": (0, 1 - 1 / n), "riemann_right": (1 / n, 1),
              "riemann_middle": (1 / (2 * n), 1 - 1 / (2 * n)),
              "riemann_trapezoid": (0, 1)}[method]
    return steps, torch.linspace(lo, hi, n).tolist()  # captum's float32 points


class IntegratedGradients(_InputGradientMethod):
    """Integrated Gradients from a baseline *image* to the image, along the
    straight path in the differentiated input space (raw by default; the
    encoding is affine, so the encoded path is the encoding of the raw path
    and the two maps agree once summed per pixel).

    Args:
        n_steps: integration steps (50, the paper's setting).
        baseline: see :func:`make_baseline` (default black).
        method: the integration rule, :func:`integration_rule`
            (``"gausslegendre"``, default, ``"riemann_trapezoid"``, ...): captum's
            points and weights.
        batch_size: path images per forward pass (bounds memory); at least N.
        input_space: ``"raw"`` (default) or ``"encoded"``; see :class:`Grad`.
        progress: ``None`` (default): a progress bar on a terminal when the call
            is expected to take more than a couple of seconds (big batches);
            ``True``: always; ``False``: never.

    Completeness: ``map.sum() ≈ f(x) − f(baseline)``.  Cost: one forward for
    the targets, then ``n_steps`` forwards per image, in chunks of
    ``batch_size`` path images, and per chunk the T targets' backward passes
    (:func:`target_gradients`).  Returns N×C×H×W.
    """

    name = "intgrad"

    def __init__(
        self,
        model: nn.Module,
        *,
        n_steps: int = 50,
        baseline: Baseline = "black",
        method: str = "gausslegendre",
        batch_size: int = 64,
        input_space: str = "raw",
        progress: bool | None = None,
    ) -> None:
        super().__init__(model, input_space=input_space)
        self.n_steps = check_int("n_steps", n_steps, 1)
        integration_rule(method, n_steps)  # checks method (and n_steps for Riemann rules)
        self.progress = progress
        self.baseline = baseline
        self.method = method
        self.batch_size = check_int("batch_size", batch_size, 1)

    def _attribute(self, images: Tensor, target: Target) -> Tensor:
        t = self._targets(images, target)  # N×T
        fn, to_space = self._space(images)
        x = to_space(images)
        x0 = to_space(make_baseline(images, self.baseline))
        steps, alphas = integration_rule(self.method, self.n_steps)
        n, tt = t.shape
        total = x.new_zeros(n, tt, *x.shape[1:])
        per = max(1, self.batch_size // n)
        starts = range(0, self.n_steps, per)
        with CallProgress(len(starts), "IntGrad", self.progress) as bar:
            for lo in starts:
                a = x.new_tensor(alphas[lo : lo + per])
                w = x.new_tensor(steps[lo : lo + per])
                k = a.shape[0]
                shape = (k, 1) + (1,) * (x.dim() - 1)
                path = (x0[None] + a.view(shape) * (x - x0)[None]).flatten(0, 1)  # (k·N)×C×H×W
                path = path.detach().requires_grad_(True)
                with torch.enable_grad():
                    g = target_gradients(fn(path), path, t.repeat(k, 1))  # (k·N)×T×C×H×W
                total += (w.view((k, 1) + shape[1:]) * g.view(k, n, *g.shape[1:])).sum(0)
                bar.update()
        return (x - x0)[:, None] * total


# ----------------------------------------------------------------------------- DeepLIFT

_ELEMENTWISE: dict[type, Callable[[Tensor], Tensor]] = {
    nn.ReLU: F.relu,
    nn.ReLU6: F.relu6,
    nn.Sigmoid: torch.sigmoid,
    nn.Tanh: torch.tanh,
    nn.SiLU: F.silu,
    nn.Hardswish: F.hardswish,
}


def _elementwise_fn(module: nn.Module) -> Callable[[Tensor], Tensor] | None:
    """The out-of-place function of an element-wise activation module, else None."""
    if isinstance(module, nn.LeakyReLU):
        return lambda x: F.leaky_relu(x, module.negative_slope)
    if isinstance(module, nn.ELU):
        return lambda x: F.elu(x, module.alpha)
    if isinstance(module, nn.Softplus):
        return lambda x: F.softplus(x, module.beta, module.threshold)
    if isinstance(module, nn.GELU):
        return lambda x: F.gelu(x, approximate=module.approximate)
    return _ELEMENTWISE.get(type(module))


class _Rescale(torch.autograd.Function):
    """DeepLIFT's rescale rule on a batch ``[x; x̄]`` (2N): the value is ``fn``,
    the backward multiplier is ``Δy/Δx`` (the gradient at x where ``|Δx| < eps``)."""

    @staticmethod
    def forward(ctx, x: Tensor, fn: Callable[[Tensor], Tensor], eps: float) -> Tensor:  # type: ignore[override]
        y = fn(x)
        n = x.shape[0] // 2
        dx = x[:n] - x[n:]
        dy = y[:n] - y[n:]
        with torch.enable_grad():
            xx = x[:n].detach().requires_grad_(True)
            (local,) = torch.autograd.grad(fn(xx).sum(), xx)
        m = torch.where(dx.abs() > eps, dy / torch.where(dx.abs() > eps, dx, 1.0), local)
        ctx.save_for_backward(torch.cat([m, m]))
        return y

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        (m,) = ctx.saved_tensors
        return g * m, None, None


class _MaxPoolRule(torch.autograd.Function):
    """DeepLIFT's max-pool rule (as captum's): with ``m = max(y, ȳ)``, the part
    ``m − ȳ`` of the output difference goes back to the input's arg-max, the
    part ``y − m`` to the baseline's arg-max, and the sum is divided by the
    input difference (the plain gradient where that is below ``eps``)."""

    @staticmethod
    def forward(ctx, x: Tensor, pool: nn.MaxPool2d, eps: float) -> Tensor:  # type: ignore[override]
        y, idx = F.max_pool2d(
            x, pool.kernel_size, pool.stride, pool.padding, pool.dilation,
            ceil_mode=pool.ceil_mode, return_indices=True,
        )
        n = x.shape[0] // 2
        ctx.save_for_backward(x[:n] - x[n:], y[:n], y[n:], idx)
        ctx.eps = eps
        return y

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        dx, y, y0, idx = ctx.saved_tensors
        n = dx.shape[0]
        flat = dx.flatten(2)

        def route(v: Tensor, ind: Tensor) -> Tensor:
            # scatter_add, not max_unpool: overlapping windows may share an arg-max.
            return torch.zeros_like(flat).scatter_add(2, ind.flatten(2), v.flatten(2)).view_as(dx)

        ymax = torch.maximum(y, y0)
        routed = route(g[:n] * (ymax - y0), idx[:n]) + route(g[n:] * (y - ymax), idx[n:])
        ok = dx.abs() >= ctx.eps
        ratio = routed / torch.where(ok, dx, 1.0)
        top = torch.where(ok, ratio, route(g[:n], idx[:n]))
        bottom = torch.where(ok, ratio, route(g[n:], idx[n:]))
        return torch.cat([top, bottom]), None, None


class DeepLift(_InputGradientMethod):
    """DeepLIFT (rescale rule) from a baseline *image* (black by default), w.r.t.
    the raw image (default) or the encoded input (``input_space="encoded"``;
    the two agree once summed per pixel: the encoding is linear in the image).

    The model runs once on ``[x; x̄]``.  Element-wise activation *modules*
    (ReLU, LeakyReLU, ELU, GELU, SiLU, Sigmoid, Tanh, Softplus, ...) pass
    gradients multiplied by ``Δy/Δx``; ``nn.MaxPool2d`` uses the max-pool rule;
    every other operation passes its ordinary gradient at ``x``.  Same values
    as captum's ``DeepLift`` where captum applies, but modules may be reused
    (torchvision's ResNet reuses its ReLUs) and in-place activations are fine.
    Functional activations (``F.relu`` inside a ``forward``) are not seen.

    On a network of linear maps, such activations and max-pools the map sums
    to ``f(x) − f(x̄)`` (summation-to-delta).  A pure B-cos network has no such
    module, so DeepLIFT there is exactly ``(x − x̄) ⊙ ∇f(x)`` — Input×Gradient
    with the baseline subtracted — and summation-to-delta does not hold.

    The rules are forward hooks on those modules, active only in the thread
    running the attribution: ``model.forward`` and the modules' own forwards
    are left alone, other threads may use the model meanwhile, and a
    ``torch.compile``-d model is attributed through its eager module.

    Returns N×C×H×W; with T targets one forward of ``[x; x̄]`` and the
    targets' backward passes.
    """

    name = "deeplift"

    def __init__(
        self,
        model: nn.Module,
        *,
        baseline: Baseline = "black",
        eps: float = 1e-10,
        input_space: str = "raw",
    ) -> None:
        super().__init__(model, input_space=input_space)
        self.baseline = baseline
        self.eps = float(eps)

    def _attribute(self, images: Tensor, target: Target) -> Tensor:
        model = uncompiled(self.model)
        fn, to_space = self._space(images, model)
        enc = to_space(images)
        enc0 = to_space(make_baseline(images, self.baseline))
        n = images.shape[0]
        x = torch.cat([enc, enc0]).detach().requires_grad_(True)
        with _deeplift_rules(model, self.eps), torch.enable_grad():
            logits = fn(x)
            t = resolve_targets(target, n, logits=logits[:n].detach())
            g = target_gradients(logits, x, torch.cat([t, t]))
        return (enc - enc0)[:, None] * g[:n]


def _rule(m: nn.Module, eps: float) -> Callable[[Tensor], Tensor] | None:
    """DeepLIFT's function of the input of ``m`` (its output value, the rule's
    gradient), or None for a module whose ordinary gradient is used."""
    fn = _elementwise_fn(m)
    if fn is not None:
        return lambda x: _Rescale.apply(x, fn, eps)
    if type(m) is nn.MaxPool2d and not m.return_indices:
        return lambda x: _MaxPoolRule.apply(x, m, eps)
    return None


@contextlib.contextmanager
def _deeplift_rules(model: nn.Module, eps: float) -> Iterator[None]:
    """DeepLIFT's rules on ``model``'s activation and max-pool modules for the
    block, in this thread only: a forward pre-hook keeps each call's input (an
    in-place activation is given a copy, so the input survives), and a forward
    hook, ahead of the user's, replaces the output by the rule's (same value).
    A module used several times in one forward gets the rule at every use."""
    rules = {m: r for m in model.modules() if (r := _rule(m, eps)) is not None}
    inputs: dict[nn.Module, list[Tensor]] = {m: [] for m in rules}

    @this_thread_only
    def keep_input(m: nn.Module, args: tuple) -> tuple | None:
        inputs[m].append(args[0])
        return (args[0].clone(), *args[1:]) if getattr(m, "inplace", False) else None

    @this_thread_only
    def apply_rule(m: nn.Module, _args: tuple, _out: Tensor) -> Tensor:
        return rules[m](inputs[m].pop())

    handles = []
    try:
        for m in rules:
            handles.append(m.register_forward_pre_hook(keep_input))
            handles.append(m.register_forward_hook(apply_rule, prepend=True))
        yield
    finally:
        for h in handles:
            h.remove()
