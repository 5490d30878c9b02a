"""Uncentred, bias-free normalisation for v2-style B-cos networks.

Dividing by a (detachable) standard deviation without subtracting a mean keeps
the network dynamic linear: ``x / σ`` with σ treated as a constant in
explanation mode.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .explanation_mode import ExplainableModule

__all__ = ["BatchNormUncentered2d", "DetachableGroupNorm2d", "DetachableLayerNorm",
           "PositionNorm2d"]


class _BNUncenteredTrain(torch.autograd.Function):
    """Training-mode ``y = x · w / sqrt(var_batch(x) + eps)`` with a fused backward.

    Autograd's version spends six passes over the activation in backward
    (``g·f``, ``g·x``, the reduction, ``x − mean``, the scaling and the sum of
    the two input gradients); here it is ``Σ g·x`` plus one ``addcmul`` chain:
    ``gx = g·f + k·(x − mean)`` with ``k = ∂L/∂var · 2/n`` per channel.
    Returns ``(y, var, mean)`` (the statistics for the running buffers).
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor | None, eps: float):  # type: ignore[override]
        var, mean = torch.var_mean(x, dim=(0, 2, 3), unbiased=False)
        inv_std = (var + eps).rsqrt()
        factor = inv_std if weight is None else weight * inv_std
        y = x * factor[None, :, None, None]
        ctx.save_for_backward(x, weight, mean, inv_std)
        ctx.mark_non_differentiable(var, mean)
        return y, var, mean

    @staticmethod
    def backward(ctx, gy: Tensor, _gvar: Tensor | None, _gmean: Tensor | None):  # type: ignore[override]
        x, weight, mean, inv_std = ctx.saved_tensors
        w = torch.ones_like(inv_std) if weight is None else weight
        n = x.numel() / x.shape[1]
        gxy = (gy * x).sum((0, 2, 3))  # Σ g·x per channel
        # y = x·w·inv_std; ∂L/∂inv_std = w·Σg·x; ∂inv_std/∂var = −½·inv_std³
        g_var = gxy * w * inv_std.pow(3) * -0.5
        k = g_var * (2.0 / n)
        factor = w * inv_std
        gx = None
        if ctx.needs_input_grad[0]:
            gx = torch.addcmul((-k * mean)[None, :, None, None], gy, factor[None, :, None, None])
            gx.addcmul_(x, k[None, :, None, None])
        gw = gxy * inv_std if weight is not None and ctx.needs_input_grad[1] else None
        return gx, gw, None


class BatchNormUncentered2d(ExplainableModule):
    """Batch norm without centring: ``y = weight · x / sqrt(var + eps) [+ bias]``.

    ``var`` is the per-channel (centred) batch variance in training, the running
    variance in evaluation — as in the B-cos v2 package.  ``bias`` defaults to
    off: a bias breaks ``Σ contributions + bias = logit`` (it is an
    input-independent term in the middle of the network).

    The parameter/buffer names (``weight``, ``bias``, ``running_mean``,
    ``running_var``, ``num_batches_tracked``) match :class:`torch.nn.BatchNorm2d`
    so checkpoints map one to one; ``running_mean`` is tracked but unused.
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float = 0.1,
        affine: bool = True,
        bias: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if num_features < 1:
            raise ValueError(f"num_features must be positive, got {num_features}")
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        kw = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.ones(num_features, **kw)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_features, **kw)) if (affine and bias) else None
        self.register_buffer("running_mean", torch.zeros(num_features, **kw))
        self.register_buffer("running_var", torch.ones(num_features, **kw))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.num_features:
            raise ValueError(
                f"BatchNormUncentered2d expects N×{self.num_features}×H×W, got {tuple(x.shape)}"
            )
        if (self.training and not self.is_in_explanation_mode and torch.is_grad_enabled()
                and self.bias is None and x.dtype in (torch.float32, torch.float64)):
            y, var, mean = _BNUncenteredTrain.apply(x, self.weight, self.eps)
            self._update_running(var, mean, x)
            return y
        if self.training:
            stats_in = x.detach() if self.is_in_explanation_mode else x
            # One pass for both moments; the mean only feeds running_mean (kept for
            # checkpoint compatibility with nn.BatchNorm2d).
            var, mean = torch.var_mean(stats_in, dim=(0, 2, 3), unbiased=False)
            self._update_running(var, mean, x)
        else:
            var = self.running_var
        std = (var + self.eps).sqrt()
        if self.is_in_explanation_mode:
            std = std.detach()
        # weight/σ folded into one per-channel factor: a single pass over x.
        factor = std.reciprocal() if self.weight is None else self.weight / std
        y = x * factor[None, :, None, None]
        if self.bias is not None:
            y = y + self.bias[None, :, None, None]
        return y

    @torch.no_grad()
    def _update_running(self, var: Tensor, mean: Tensor, x: Tensor) -> None:
        n = x.numel() / x.shape[1]
        self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), self.momentum)
        unbiased = var.detach() * (n / max(n - 1, 1))
        self.running_var.lerp_(unbiased.to(self.running_var.dtype), self.momentum)
        self.num_batches_tracked.add_(1)

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"affine={self.weight is not None}, bias={self.bias is not None}"
        )


class PositionNorm2d(ExplainableModule):
    """Layer norm over the channels at every position (B-cos v2's
    ``DetachablePositionNorm2d``, the ConvNeXt norm): ``y = weight · (x − μ) / σ``
    with μ, σ the mean and standard deviation over C at each (h, w).

    Centring is linear, so the network stays dynamic linear; in explanation mode
    σ is detached.  ``bias`` defaults to off (the v2 models' ``NoBias``).  Parameter
    names (``weight``, ``bias``) match the ``bcos`` package's.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True,
                 bias: bool = False, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        if num_features < 1:
            raise ValueError(f"num_features must be positive, got {num_features}")
        self.num_features = num_features
        self.eps = eps
        kw = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.ones(num_features, **kw)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_features, **kw)) if (affine and bias) else None

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.num_features:
            raise ValueError(
                f"PositionNorm2d expects N×{self.num_features}×H×W, got {tuple(x.shape)}")
        var, mean = torch.var_mean(x, dim=1, unbiased=False, keepdim=True)
        if self.is_in_explanation_mode:
            var = var.detach()
        y = (x - mean) / (var + self.eps).sqrt()
        if self.weight is not None:
            y = y * self.weight[None, :, None, None]
        if self.bias is not None:
            y = y + self.bias[None, :, None, None]
        return y

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, affine={self.weight is not None}, "
                f"bias={self.bias is not None}")


class DetachableLayerNorm(ExplainableModule):
    """Layer norm over the last dimension (tokens of a transformer), B-cos v2 style:
    ``y = weight · (x − μ) / σ`` with σ detached in explanation mode (centring is
    linear).  ``bias`` defaults to off (``NoBias``); names match ``nn.LayerNorm``."""

    def __init__(self, num_features: int, eps: float = 1e-5, bias: bool = False,
                 device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.num_features, self.eps = num_features, eps
        kw = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.ones(num_features, **kw))
        self.bias = nn.Parameter(torch.zeros(num_features, **kw)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        var, mean = torch.var_mean(x, dim=-1, unbiased=False, keepdim=True)
        if self.is_in_explanation_mode:
            var = var.detach()
        y = (x - mean) / (var + self.eps).sqrt() * self.weight
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, bias={self.bias is not None}"


class DetachableGroupNorm2d(ExplainableModule):
    """Group norm of N×C×H×W maps (``num_groups=1``: a layer norm over C, H, W), σ
    detached in explanation mode, ``bias`` off by default (B-cos v2's ViT-C stem)."""

    def __init__(self, num_channels: int, num_groups: int = 1, eps: float = 1e-5,
                 bias: bool = False, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        if num_channels % num_groups:
            raise ValueError(f"num_channels ({num_channels}) must be divisible by num_groups "
                             f"({num_groups})")
        self.num_channels, self.num_groups, self.eps = num_channels, num_groups, eps
        kw = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.ones(num_channels, **kw))
        self.bias = nn.Parameter(torch.zeros(num_channels, **kw)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        n, c = x.shape[:2]
        g = x.reshape(n, self.num_groups, c // self.num_groups, *x.shape[2:])
        var, mean = torch.var_mean(g, dim=tuple(range(2, g.dim())), unbiased=False,
                                   keepdim=True)
        if self.is_in_explanation_mode:
            var = var.detach()
        y = ((g - mean) / (var + self.eps).sqrt()).reshape(x.shape)
        y = y * self.weight[None, :, None, None]
        return y if self.bias is None else y + self.bias[None, :, None, None]

    def extra_repr(self) -> str:
        return f"{self.num_channels}, groups={self.num_groups}, eps={self.eps}"
