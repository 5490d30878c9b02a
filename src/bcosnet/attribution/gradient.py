"""Gradient-based attributions: ``bcos``, ``grad``, ``ixg``, ``intgrad``, ``deeplift``.

``grad``, ``ixg``, ``intgrad`` and ``deeplift`` differentiate with respect to
the raw image by default (``input_space="raw"``, the paper's code) or the
model's encoded input (``input_space="encoded"``, the B-cos v2 code); ``bcos``
always explains the encoded input (see :mod:`bcosnet.attribution.base`).
With T targets every method runs its forward pass(es) once and one backward
pass per target.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._utils.progress import CallProgress
from ..explanations.core import check_bcos_model
from ..nn.explanation_mode import explanation_mode
from .base import (
    AttributionMethod,
    Baseline,
    EncodedModel,
    Target,
    check_input_space,
    check_positive_int,
    first_output,
    make_baseline,
    resolve_targets,
)

__all__ = ["Bcos", "DeepLift", "Grad", "InputXGradient", "IntegratedGradients"]


def _grads_per_target(values: Tensor, x: Tensor) -> Tensor:
    """N×T×(x's shape[1:]): the gradient of ``values[:, j].sum()`` w.r.t. ``x`` for
    every target j, one backward pass each through the same graph."""
    t_count = values.shape[1]
    grads = []
    for j in range(t_count):
        (g,) = torch.autograd.grad(
            values[:, j].sum(), x, retain_graph=j < t_count - 1, allow_unused=True
        )
        grads.append(torch.zeros_like(x) if g is None else g)
    return torch.stack(grads, 1)


def _input_gradients(
    fn: Callable[[Tensor], Tensor], x: Tensor, target: Target
) -> tuple[Tensor, Tensor]:
    """(N×T gradients of the target logits w.r.t. ``x``, targets N×T) from one forward."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = fn(x)
        t = resolve_targets(target, x.shape[0], logits=logits.detach())
        g = _grads_per_target(logits.gather(1, t), x)
    return g, t


class _SpaceMixin:
    """The differentiated input: the raw image or the model's encoded input."""

    model: nn.Module
    input_space: str

    def _space(
        self, images: Tensor
    ) -> tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]:
        """(function of the differentiated input returning logits, map from a raw
        image to the differentiated input)."""
        if self.input_space == "encoded":
            em = EncodedModel(self.model, images.shape[1])
            if em.has_encoding:

                def encode(img: Tensor) -> Tensor:
                    with torch.no_grad():
                        return em.encode(img)

                return em, encode
        return (lambda x: first_output(self.model(x))), (lambda img: img)


class Bcos(AttributionMethod):
    """The model-inherent explanation of a B-cos network (SPEC §3): ``W_t(x) ⊙ x``
    w.r.t. the encoded input — the same map as
    ``bcosnet.explain(model, images, t).contributions_full`` (tested), from
    one forward pass in explanation mode and one backward pass per target;
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
        em = EncodedModel(self.model, images.shape[1])
        with explanation_mode(self.model):
            with torch.no_grad():
                enc = em.encode(images)
            w, _ = _input_gradients(em, enc, target)
        return w if self.output == "weights" else w * enc[:, None]


class Grad(_SpaceMixin, AttributionMethod):
    """Vanilla gradient (signed): ``∂ logit_t / ∂ x``.

    Args:
        input_space: ``"raw"`` (default, the paper's code: the image the model
            is given) or ``"encoded"`` (the model's encoded input, as the B-cos
            v2 code).

    One forward, one backward per target.  Returns N×C×H×W (C: channels of
    the differentiated input).
    """

    name = "grad"

    def __init__(self, model: nn.Module, *, input_space: str = "raw") -> None:
        super().__init__(model)
        self.input_space = check_input_space(input_space)

    def _attribute(self, images: Tensor, target: Target) -> Tensor:
        fn, to_space = self._space(images)
        return _input_gradients(fn, to_space(images), target)[0]


class InputXGradient(_SpaceMixin, AttributionMethod):
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

    One forward, one backward per target.  Returns N×C×H×W.
    """

    name = "ixg"

    def __init__(self, model: nn.Module, *, input_space: str = "raw") -> None:
        super().__init__(model)
        self.input_space = check_input_space(input_space)

    def _attribute(self, images: Tensor, target: Target) -> Tensor:
        fn, to_space = self._space(images)
        x = to_space(images)
        return _input_gradients(fn, x, target)[0] * x[:, None]


class IntegratedGradients(_SpaceMixin, AttributionMethod):
    """Integrated Gradients from a baseline *image* to the image, along the
    straight path in the differentiated input space (raw by default; the
    encoding is affine, so the encoded path is the encoding of the raw path
    and the two maps agree once summed per pixel).

    Args:
        n_steps: integration steps (50, the paper's setting).
        baseline: see :func:`make_baseline` (default black).
        method: captum's integration rule (``"gausslegendre"``, ``"riemann_trapezoid"``, ...);
            the points and weights are captum's.
        batch_size: path images per forward pass (bounds memory); at least N.
        input_space: ``"raw"`` (default) or ``"encoded"``; see :class:`Grad`.
        progress: ``None`` (default): a progress bar on a terminal when the call
            is expected to take more than a couple of seconds (big batches);
            ``True``: always; ``False``: never.

    Completeness: ``map.sum() ≈ f(x) − f(baseline)``.  Cost: one forward for
    the targets, then ``n_steps`` forwards per image and one backward per
    target and forward.  Returns N×C×H×W.
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
        super().__init__(model)
        self.n_steps = check_positive_int("n_steps", n_steps)
        self.progress = progress
        self.baseline = baseline
        self.method = method
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.input_space = check_input_space(input_space)

    def _attribute(self, images: Tensor, target: Target) -> Tensor:
        from captum.attr._utils.approximation_methods import approximation_parameters

        t = self._targets(images, target)  # N×T
        fn, to_space = self._space(images)
        x = to_space(images)
        x0 = to_space(make_baseline(images, self.baseline))
        step_sizes_fn, alphas_fn = approximation_parameters(self.method)
        steps, alphas = step_sizes_fn(self.n_steps), alphas_fn(self.n_steps)
        n, tt = t.shape
        total = x.new_zeros(n, tt, *x.shape[1:])
        per = max(1, self.batch_size // n)
        starts = range(0, self.n_steps, per)
        bar = CallProgress(len(starts), "IntGrad", self.progress)
        for lo in starts:
            a = x.new_tensor(alphas[lo : lo + per])
            w = x.new_tensor(steps[lo : lo + per])
            k = a.shape[0]
            shape = (k, 1) + (1,) * (x.dim() - 1)
            path = (x0[None] + a.view(shape) * (x - x0)[None]).flatten(0, 1)  # (k·N)×C×H×W
            path = path.detach().requires_grad_(True)
            with torch.enable_grad():
                logits = fn(path)
                g = _grads_per_target(logits.gather(1, t.repeat(k, 1)), path)  # (k·N)×T×...
            total += (w.view((k, 1, 1) + (1,) * (x.dim() - 1)) * g.view(k, n, *g.shape[1:])).sum(0)
            bar.update()
        bar.close()
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
            out = torch.zeros_like(flat)
            out.scatter_add_(2, ind.flatten(2), v.flatten(2))
            return out.view_as(dx)

        ymax = torch.maximum(y, y0)
        routed = route(g[:n] * (ymax - y0), idx[:n]) + route(g[n:] * (y - ymax), idx[n:])
        ok = dx.abs() >= ctx.eps
        ratio = routed / torch.where(ok, dx, 1.0)
        top = torch.where(ok, ratio, route(g[:n], idx[:n]))
        bottom = torch.where(ok, ratio, route(g[n:], idx[n:]))
        return torch.cat([top, bottom]), None, None


class DeepLift(_SpaceMixin, AttributionMethod):
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

    Returns N×C×H×W; with T targets one forward of ``[x; x̄]`` and one
    backward per target.
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
        super().__init__(model)
        self.baseline = baseline
        self.eps = float(eps)
        self.input_space = check_input_space(input_space)

    def _rule(self, m: nn.Module) -> Callable[[Tensor], Tensor] | None:
        """The forward replacing ``m``'s during the attribution, or None."""
        eps = self.eps
        fn = _elementwise_fn(m)
        if fn is not None:

            def rescale(x: Tensor) -> Tensor:
                return _Rescale.apply(x, fn, eps)

            return rescale
        if type(m) is nn.MaxPool2d and not m.return_indices:

            def maxpool(x: Tensor) -> Tensor:
                return _MaxPoolRule.apply(x, m, eps)

            return maxpool
        return None

    def _attribute(self, images: Tensor, target: Target) -> Tensor:
        fn, to_space = self._space(images)
        enc = to_space(images)
        enc0 = to_space(make_baseline(images, self.baseline))
        n = images.shape[0]
        patched: list[nn.Module] = []
        for m in self.model.modules():
            rule = self._rule(m)
            if rule is None:
                continue
            if "forward" in m.__dict__:
                warnings.warn(f"{m} already has an instance forward; DeepLIFT leaves it as is",
                              stacklevel=2)
                continue
            m.forward = rule  # type: ignore[method-assign]
            patched.append(m)
        try:
            x = torch.cat([enc, enc0]).detach().requires_grad_(True)
            with torch.enable_grad():
                logits = fn(x)
                t = resolve_targets(target, n, logits=logits[:n].detach())
                g = _grads_per_target(logits.gather(1, torch.cat([t, t])), x)
        finally:
            for m in patched:
                del m.forward
        return (enc - enc0)[:, None] * g[:n]
