"""Uncentred, bias-free normalisation for v2-style B-cos networks.

Dividing by a (detachable) standard deviation without subtracting a mean keeps
the network dynamic linear: ``x / σ`` with σ treated as a constant in
explanation mode.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .explanation_mode import ExplainableModule

__all__ = ["BatchNormUncentered2d"]


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
        if self.training:
            stats_in = x.detach() if self.is_in_explanation_mode else x
            # One pass for both moments; the mean only feeds running_mean (kept for
            # checkpoint compatibility with nn.BatchNorm2d).
            var, mean = torch.var_mean(stats_in, dim=(0, 2, 3), unbiased=False)
            with torch.no_grad():
                n = x.numel() / x.shape[1]
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), self.momentum)
                unbiased = var.detach() * (n / max(n - 1, 1))
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), self.momentum)
                self.num_batches_tracked.add_(1)
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

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"affine={self.weight is not None}, bias={self.bias is not None}"
        )
