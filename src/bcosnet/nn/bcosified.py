"""The convolution of a B-cosified network (Arya et al., "B-cosification", NeurIPS 2024).

:class:`BcosifiedConv2d` is an :class:`torch.nn.Conv2d` (same parameters, same state
dict keys, optional bias) whose output is rescaled B-cos style::

    out = conv(x) · |conv(x) / ‖x_patch‖|^(B − 1)

At ``B = 1`` it *is* the convolution, so a conventional network whose convs are
swapped for these computes exactly what it computed before; fine-tuning then
raises B.  As in the B-cosification code (``BcosifyConv2d``) the weights are
**not** normalised to unit norm (the batch norms that follow take care of the
scale), so the factor is ``(‖w‖·|cos(x, w)|)^(B − 1)``; a bias, while there, is
part of ``conv(x)``.  In explanation mode the factor is detached, as in every
B-cos layer.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from .bcos import DEFAULT_NORM_EPS, bcos_scaling, check_b
from .explanation_mode import ExplainableModule

__all__ = ["BcosifiedConv2d"]


class BcosifiedConv2d(nn.Conv2d, ExplainableModule):
    """``nn.Conv2d`` with the B-cos alignment factor ``|cos|^(B − 1)`` (B-cosification).

    Accepts what :class:`torch.nn.Conv2d` accepts, plus ``b`` (alignment pressure,
    ``>= 1``; 1 = the plain convolution) and ``norm_eps`` (ε in ``sqrt(Σx² + ε)``).
    :meth:`from_conv` converts an existing convolution (weights shared, not copied).
    """

    def __init__(self, *args: Any, b: float = 1.0, norm_eps: float = DEFAULT_NORM_EPS,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.b = check_b(b)
        self.norm_eps = float(norm_eps)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, *, b: float = 1.0) -> BcosifiedConv2d:
        """A :class:`BcosifiedConv2d` with ``conv``'s hyper-parameters and its
        parameters (the same tensors)."""
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"from_conv expects an nn.Conv2d, got {type(conv).__name__}")
        new = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                  conv.padding, conv.dilation, conv.groups, bias=conv.bias is not None,
                  padding_mode=conv.padding_mode, device="meta", b=b)
        new.weight = conv.weight
        new.bias = conv.bias
        return new

    def resized(self, out_channels: int) -> BcosifiedConv2d:
        """A freshly initialised layer like this one with ``out_channels`` outputs."""
        w = self.weight
        return type(self)(self.in_channels, out_channels, self.kernel_size, self.stride,
                          self.padding, self.dilation, self.groups, bias=self.bias is not None,
                          padding_mode=self.padding_mode, b=self.b, norm_eps=self.norm_eps,
                          device=w.device, dtype=w.dtype)

    def patch_sq_norms(self, x: Tensor) -> Tensor:
        """``Σ_window Σ_group-channels x² + ε`` (N×G×H'×W'), padded as the conv pads."""
        g = self.groups
        sq = x.square()
        sq = sq.sum(1, keepdim=True) if g == 1 else sq.unflatten(1, (g, -1)).sum(2)
        ones = sq.new_ones(g, 1, *self.kernel_size)
        if self.padding_mode != "zeros":
            sq = F.pad(sq, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            padding: Any = 0
        else:
            padding = self.padding
        return F.conv2d(sq, ones, None, self.stride, padding, self.dilation, g) + self.norm_eps

    def forward(self, x: Tensor) -> Tensor:
        out = super().forward(x)
        if self.b == 1.0:
            return out
        sq = self.patch_sq_norms(x)
        if self.groups > 1:
            sq = sq.repeat_interleave(self.out_channels // self.groups, dim=1)
        return bcos_scaling(out, sq, self.b, detach=self._explanation_mode)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", b={self.b:g}"

