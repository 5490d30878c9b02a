"""Gradient-based attributions: ``bcos``, ``grad``, ``ixg``, ``intgrad``, ``deeplift``.

All return N×C_enc×H×W maps with respect to the model's explained input (the
output of its input encoding, see :mod:`bcosnet.attribution.base`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn.explanation_mode import explanation_mode
from .base import (
    AttributionMethod,
    Baseline,
    EncodedModel,
    Target,
    check_positive_int,
    make_baseline,
    resolve_targets,
)

__all__ = ["Bcos", "DeepLift", "Grad", "InputXGradient", "IntegratedGradients"]


class Bcos(AttributionMethod):
    """The model-inherent explanation of a B-cos network (SPEC §3): ``W_t(x) ⊙ x``
    w.r.t. the encoded input — the same map as
    ``bcosnet.explain(model, images, t).contributions_full[:, 0]`` (tested), from
    one forward and one backward pass in explanation mode; ``explain``'s extra
    forward for the constant term is skipped (the map does not need it).

    Args:
        model: a B-cos network.  On a model without explanation-mode modules
            (a conventional network) nothing is detached and the map is plain
            Input×Gradient w.r.t. the explained input.
        output: ``"contributions"`` (``W ⊙ x``, default; summed over channels
            and pixels it equals ``logit − bias``) or ``"weights"`` (``W``).

    Returns N×C_enc×H×W (6 channels for an RGB model with ``AddInverse``).
    """

    name = "bcos"

    def __init__(self, model: nn.Module, *, output: str = "contributions") -> None:
        super().__init__(model)
        if output not in ("contributions", "weights"):
            raise ValueError(f"output must be 'contributions' or 'weights', got {output!r}")
        self.output = output

    def _attribute(self, images: Tensor, target: Target) -> Tensor:
        em = EncodedModel(self.model, images.shape[1])
        with explanation_mode(self.model):
            with torch.no_grad():
                enc = em.encode(images)
            w, _, _ = _input_gradient(em, enc, target)
        return w if self.output == "weights" else w * enc


def _input_gradient(
    enc_model: EncodedModel, encoded: Tensor, target: Target
) -> tuple[Tensor, Tensor, Tensor]:
    """(gradient of the target logit w.r.t. ``encoded``, targets (N,), logits N×K)."""
    x = encoded.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = enc_model(x)
        t = resolve_targets(target, x.shape[0], logits=logits.detach())
        (g,) = torch.autograd.grad(logits.gather(1, t[:, None]).sum(), x)
    return g, t, logits.detach()


class Grad(AttributionMethod):
    """Vanilla gradient (signed): ``∂ logit_t / ∂ x`` w.r.t. the explained input.

    One forward, one backward.  Returns N×C_enc×H×W.
    """

    name = "grad"

    def _attribute(self, images: Tensor, target: Target) -> Tensor:
        em = EncodedModel(self.model, images.shape[1])
        with torch.no_grad():
            enc = em.encode(images)
        g, _, _ = _input_gradient(em, enc, target)
        return g


class InputXGradient(AttributionMethod):
    """Input×Gradient: ``x ⊙ ∂ logit_t / ∂ x`` with ``x`` the explained (encoded) input.

    On a B-cos network (normal mode) with every layer positively homogeneous
    of degree 1 (B-cos layers, MaxOut, scales, pooling, eval-mode uncentred
    norms), Euler's theorem gives ``Σ IxG = logit − bias = Σ bcos map`` (up
    to the ``norm_eps`` guard); per element the two differ.  For a single
    B-cos layer ``f(x) = |cos|^(B−1) ŵᵀx``:
    ``x ⊙ ∇f = B·(W(x) ⊙ x) − (B−1)·f(x)·x² / (‖x‖² + ε)``.

    One forward, one backward.  Returns N×C_enc×H×W.
    """

    name = "ixg"

    def _attribute(self, images: Tensor, target: Target) -> Tensor:
        em = EncodedModel(self.model, images.shape[1])
        with torch.no_grad():
            enc = em.encode(images)
        g, _, _ = _input_gradient(em, enc, target)
        return g * enc


class IntegratedGradients(AttributionMethod):
    """Integrated Gradients (captum), w.r.t. the explained input, from the
    encoding of a baseline *image* to the encoding of the image.

    Args:
        n_steps: integration steps (50, the paper's setting).
        baseline: see :func:`make_baseline` (default black).
        method: captum's integration rule (``"gausslegendre"``, ``"riemann_trapezoid"``, ...).
        batch_size: images per forward/backward pass (bounds memory); at least N.

    Completeness: ``map.sum() ≈ f(x) − f(baseline)``.  Cost: one forward for
    the targets, then ``n_steps`` forwards and backwards per image.
    Returns N×C_enc×H×W.
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
    ) -> None:
        super().__init__(model)
        self.n_steps = check_positive_int("n_steps", n_steps)
        self.baseline = baseline
        self.method = method
        self.batch_size = check_positive_int("batch_size", batch_size)

    def _attribute(self, images: Tensor, target: Target) -> Tensor:
        from captum.attr import IntegratedGradients as _IG

        t = self._targets(images, target)
        em = EncodedModel(self.model, images.shape[1])
        with torch.no_grad():
            enc = em.encode(images)
            enc0 = em.encode(make_baseline(images, self.baseline))
        ig = _IG(em)
        with torch.enable_grad():
            attr = ig.attribute(
                enc,
                baselines=enc0,
                target=t,
                n_steps=self.n_steps,
                method=self.method,
                internal_batch_size=max(self.batch_size, images.shape[0]),
            )
        return attr.detach()


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


class DeepLift(AttributionMethod):
    """DeepLIFT (rescale rule) w.r.t. the explained input, from the encoding of
    a baseline *image* (black by default).

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

    Returns N×C_enc×H×W.
    """

    name = "deeplift"

    def __init__(
        self, model: nn.Module, *, baseline: Baseline = "black", eps: float = 1e-10
    ) -> None:
        super().__init__(model)
        self.baseline = baseline
        self.eps = float(eps)

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
        em = EncodedModel(self.model, images.shape[1])
        with torch.no_grad():
            enc = em.encode(images)
            enc0 = em.encode(make_baseline(images, self.baseline))
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
                logits = em(x)
                t = resolve_targets(target, n, logits=logits[:n].detach())
                sel = logits.gather(1, torch.cat([t, t])[:, None]).sum()
                (g,) = torch.autograd.grad(sel, x)
        finally:
            for m in patched:
                del m.forward
        return (enc - enc0) * g[:n]
