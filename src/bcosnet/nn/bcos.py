"""B-cos layers: ``BcosConv2d`` and ``BcosLinear`` (docs/protocol.md §1).

A B-cos unit computes ``|cos(x, ŵ)|^(B-1) · ŵᵀx``: a linear map with unit-norm
rows, rescaled by how well each row aligns with its input.  In explanation
mode the rescaling factor is detached, so the backward pass yields the
dynamic linear weights exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._utils.validate import check_int, is_int
from .explanation_mode import ExplainableModule

__all__ = ["BcosConv2d", "BcosLinear", "DEFAULT_NORM_EPS", "check_b", "check_max_out",
           "check_scale", "v1_scale"]

#: ε inside the square root of the input norm, ``sqrt(Σx² + ε)`` (v1 and v2 use 1e-6).
DEFAULT_NORM_EPS = 1e-6


def v1_scale(s: float, in_channels: int, kernel_size: int | Sequence[int] = 1) -> float:
    """The v1 output scale ``γ = s / sqrt(d)`` with ``d = kh·kw·C_in`` (docs/protocol.md §1)."""
    kh, kw = _pair(kernel_size, "kernel_size")
    return float(s) / math.sqrt(kh * kw * in_channels)


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    if is_int(value):
        return (value, value)
    if isinstance(value, Sequence) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return (int(value[0]), int(value[1]))
    raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_b(b: float) -> float:
    """``b`` as a float if it is a finite number ``>= 1`` (the alignment pressure of
    every B-cos layer, B-cosified convolutions included); a ``ValueError`` otherwise."""
    if not _is_number(b) or not math.isfinite(b) or b < 1:
        raise ValueError(f"b must be a finite number >= 1 (b=1 is a linear layer), got {b!r}")
    return float(b)


def check_max_out(max_out: int) -> int:
    """``max_out`` if it is an int ``>= 1`` (1 means no MaxOut)."""
    return check_int("max_out", max_out, 1)


def check_scale(scale: float | None) -> float | None:
    """``scale`` as a float (``None`` stays ``None``) if it is finite and positive."""
    if scale is None:
        return None
    if not _is_number(scale) or not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be a finite positive number or None, got {scale!r}")
    return float(scale)


class _BcosB2(torch.autograd.Function):
    """``out = γ · lin · |lin| / sqrt(sq)`` (B = 2) with a hand-written backward.

    Fewer passes over the (large) activation tensors than autograd's chain of
    abs/mul/div: this layer's extra cost over a plain convolution is memory
    traffic, not arithmetic.  The output scale γ is folded into the per-location
    factor (no separate pass for it).
    """

    @staticmethod
    def forward(ctx, lin: Tensor, sq: Tensor, scale: float) -> Tensor:  # type: ignore[override]
        inv = sq.rsqrt()
        a = lin.abs().mul_(inv * scale)  # γ|cos|; d out / d lin = 2a
        out = a * lin
        ctx.save_for_backward(lin, a, inv)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor | None, None]:  # type: ignore[override]
        lin, a, inv = ctx.saved_tensors
        # grad · 2a in one pass (a separate ×2 would be a second pass)
        t = torch.addcmul(grad.new_zeros(()), grad, a, value=2.0)
        grad_sq = None
        if ctx.needs_input_grad[1]:
            # d out / d sq = −½ · out · inv², and t·lin = 2 · grad · out
            reduce_dims = [i for i, (s_out, s_sq) in enumerate(zip(lin.shape, inv.shape))
                           if s_sq == 1 and s_out != 1]
            tl = t * lin
            # (an empty dim list would make sum() reduce over everything: depthwise convs)
            tl = tl.sum(reduce_dims, keepdim=True) if reduce_dims else tl
            grad_sq = tl.mul_(inv.square()).mul_(-0.25)
        return t, grad_sq, None


class _ChannelSqSum(torch.autograd.Function):
    """``Σ_c x²`` over dim 1 (keepdim) with a one-pass backward ``2·x·g``
    (``linalg.vector_norm(...).square()`` costs a slower reduction and, in
    backward, a division, a mask and an extra pass)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return x.square().sum(1, keepdim=True)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return x * (2.0 * grad)


def _channel_sq_sum(x: Tensor) -> Tensor:
    if torch.is_grad_enabled() and x.requires_grad:
        return _ChannelSqSum.apply(x)
    return x.square().sum(1, keepdim=True)


class _MaxOut2(torch.autograd.Function):
    """MaxOut over the two halves of dim 1, ``max(z[:, :C], z[:, C:])``; the
    backward routes the gradient with a saved 0/1 mask in the input's dtype
    (a multiply and a subtract: ``torch.where`` with a boolean mask is several
    times slower on CPU).  vmap-able (batched explanation targets)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(z: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        c = z.shape[1] // 2
        first, second = z[:, :c], z[:, c:]
        # 1 where the first piece wins (ties included: the gradient goes there);
        # written straight into the float mask (a bool result converted afterwards
        # costs ≈ 7× as much on CPU)
        try:
            mask = torch.empty(first.shape, dtype=z.dtype, device=z.device,
                               memory_format=_memory_format(z))
            torch.ge(first, second, out=mask)
        except RuntimeError:  # under vmap: out= has no batching rule
            mask = torch.ge(first, second).to(z.dtype)
        return torch.maximum(first, second), mask

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:  # type: ignore[override]
        ctx.save_for_backward(output[1])
        ctx.mark_non_differentiable(output[1])
        # no zero-filled gradient for the mask output (a full pass over C channels)
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx, grad: Tensor | None,  # type: ignore[override]
                 _gmask: Tensor | None = None) -> Tensor | None:
        if grad is None:
            return None
        (mask,) = ctx.saved_tensors
        c = grad.shape[1]
        if not torch.is_grad_enabled():
            # in the gradient's memory format: a channels-last gradient handed to a
            # channels-last convolution's backward as NCHW takes a slow mixed path
            try:
                gz = torch.empty((grad.shape[0], 2 * c, *grad.shape[2:]), dtype=grad.dtype,
                                 device=grad.device, memory_format=_memory_format(grad))
                first = torch.mul(grad, mask, out=gz[:, :c])  # one write per element, no cat
                torch.sub(grad, first, out=gz[:, c:])
                return gz
            except RuntimeError:  # under vmap (batched targets): out= has no batching rule
                pass
        first = grad * mask
        return torch.cat([first, grad - first], 1)


def _is_channels_last(t: Tensor) -> bool:
    """True for a 4-D tensor strictly in channels-last layout (not also NCHW-contiguous)."""
    return (t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last)
            and not t.is_contiguous())


def _memory_format(t: Tensor) -> torch.memory_format:
    return torch.channels_last if _is_channels_last(t) else torch.contiguous_format


def _box_sum_same(x: Tensor, kh: int, kw: int) -> Tensor:
    """Sum over a ``kh×kw`` window at stride 1 with zero padding ``k // 2`` (odd
    k: the output has the input's size), as two separable passes of shifted
    slices — several times faster on CPU than ``avg_pool2d(divisor_override=1)``."""
    ph, pw = kh // 2, kw // 2
    if ph or pw:
        x = F.pad(x, (pw, pw, ph, ph))
    h, w = x.shape[-2] - 2 * ph, x.shape[-1] - 2 * pw
    if kw > 1:
        r = x[..., :, 0:w].clone()
        for j in range(1, kw):
            r += x[..., :, j:j + w]
        x = r
    if kh > 1:
        r = x[..., 0:h, :].clone()
        for i in range(1, kh):
            r += x[..., i:i + h, :]
        x = r
    return x


class _BoxSumSame(torch.autograd.Function):
    """:func:`_box_sum_same` with its backward: for a symmetric window at stride 1
    with 'same' zero padding the adjoint is the same window sum."""

    @staticmethod
    def forward(ctx, x: Tensor, kh: int, kw: int) -> Tensor:  # type: ignore[override]
        ctx.k = (kh, kw)
        return _box_sum_same(x, kh, kw)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        return _BoxSumSame.apply(grad, *ctx.k), None, None


def _window_sum(sq: Tensor, kernel_size: tuple[int, int], stride: tuple[int, int],
                padding: tuple[int, int]) -> Tensor:
    """Zero-padded window sums of ``sq`` (N×G×H×W) as the convolution's windows.

    The separable sum of shifted slices is the CPU path only: on a GPU its
    padding, copies and additions (7 kernels for 3×3) cost more launches than
    ``avg_pool2d``'s one (the H200 figures of benchmarks/README.md §6 were
    measured with ``avg_pool2d``)."""
    kh, kw = kernel_size
    if (sq.device.type == "cpu" and tuple(stride) == (1, 1) and kh % 2 == 1 and kw % 2 == 1
            and tuple(padding) == (kh // 2, kw // 2)):
        if torch.is_grad_enabled() and sq.requires_grad:
            return _BoxSumSame.apply(sq, kh, kw)
        return _box_sum_same(sq, kh, kw)
    return F.avg_pool2d(sq, kernel_size, stride, padding, divisor_override=1)


def _maxout_pieces(z: Tensor, max_out: int) -> Tensor:
    """MaxOut for the *piece-major* channel layout ``[piece 0 of every unit, piece 1 ...]``."""
    if max_out == 1:
        return z
    c = z.shape[1] // max_out
    if max_out == 2:
        if torch.is_grad_enabled() and z.requires_grad:
            return _MaxOut2.apply(z)[0]
        return torch.maximum(z[:, :c], z[:, c:])
    return z.unflatten(1, (max_out, c)).max(dim=1).values


def bcos_scaling(
    linear_out: Tensor,
    sq_norm: Tensor,
    b: float,
    *,
    detach: bool,
    cos_eps: float = 0.0,
    scale: float = 1.0,
) -> Tensor:
    """Apply the B-cos non-linearity ``|cos|^(B-1) · linear_out`` with
    ``cos = linear_out / sqrt(sq_norm)``; ``sq_norm`` is the squared input norm
    (ε included), broadcastable to ``linear_out``.

    ``detach=True`` treats the factor ``|cos|^(B-1)`` as a constant (explanation mode).
    ``scale`` multiplies the result (the fixed output scale γ, folded in).
    The formulas are arranged so that the output and its gradient stay finite at
    ``linear_out = 0`` for every ``B >= 1``.
    """
    if b == 1.0:
        return linear_out * scale if scale != 1.0 else linear_out
    if not torch.is_grad_enabled() or not (linear_out.requires_grad or sq_norm.requires_grad):
        # No autograd graph: in-place arithmetic, two temporaries less.
        with torch.no_grad():
            if b == 2.0 and not cos_eps:
                f = sq_norm.rsqrt()
                if scale != 1.0:
                    f.mul_(scale)
                return linear_out.abs().mul_(f).mul_(linear_out)
            detach = True  # same values as the detached formula below
    if detach:
        # (the norm may be float32 for half-precision outputs: keep the output's dtype)
        cos = (linear_out.detach().abs() * sq_norm.detach().rsqrt()).to(linear_out.dtype)
        if b == 2.0 and not cos_eps:
            return linear_out * (cos.mul_(scale) if scale != 1.0 else cos)
        if cos_eps:
            cos = cos + cos_eps
        f = cos.pow_(b - 1.0)
        return linear_out * (f.mul_(scale) if scale != 1.0 else f)
    if b == 2.0 and not cos_eps:
        return _BcosB2.apply(linear_out, sq_norm, float(scale))
    norm = sq_norm.sqrt()
    if cos_eps:
        # v1 quirk: |cos| + ε inside the power.
        out = linear_out * (linear_out.abs() / norm + cos_eps).pow(b - 1.0)
    else:
        # sgn(l)·|l|^B / n^(B-1): same value as |l/n|^(B-1)·l, but the gradient at
        # l = 0 is 0 instead of 0·∞ for 1 < B < 2.
        out = torch.sign(linear_out) * linear_out.abs().pow(b) / norm.pow(b - 1.0)
    return out * scale if scale != 1.0 else out


def _maxout(out: Tensor, dim: int, max_out: int) -> Tensor:
    if max_out == 1:
        return out
    size = out.shape[dim]
    # max(dim).values: its backward is a cheap scatter of the argmax, unlike amax's
    # (which spreads the gradient over ties and is several times slower on CPU).
    grouped = out.unflatten(dim, (size // max_out, max_out))
    return grouped.max(dim=dim + 1 if dim >= 0 else dim).values


class _BcosLayer(ExplainableModule):
    """What :class:`BcosConv2d` and :class:`BcosLinear` share: the options ``b``,
    ``max_out``, ``scale``, ``norm_eps`` and ``cos_eps`` (checked), torch's default
    initialisation (the per-unit weight norm makes its scale irrelevant), and
    :meth:`resized` (a fresh layer like this one with another output count)."""

    weight: nn.Parameter

    def _set_options(self, b: float, max_out: int, scale: float | None, norm_eps: float,
                     cos_eps: float) -> None:
        self.b = check_b(b)
        self.max_out = check_max_out(max_out)
        self.scale = check_scale(scale)
        self.norm_eps = float(norm_eps)
        self.cos_eps = float(cos_eps)

    def _options(self) -> dict[str, Any]:
        w = self.weight
        return dict(b=self.b, max_out=self.max_out, scale=self.scale, norm_eps=self.norm_eps,
                    cos_eps=self.cos_eps, device=w.device, dtype=w.dtype)

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def _options_repr(self) -> str:
        s = f", b={self.b:g}"
        if self.max_out != 1:
            s += f", max_out={self.max_out}"
        if self.scale is not None:
            s += f", scale={self.scale:.4g}"
        return s


class BcosConv2d(_BcosLayer):
    """2-D B-cos convolution.

    Accepts what :class:`torch.nn.Conv2d` accepts (int/tuple/``"same"``/``"valid"``
    padding, dilation, groups, ``padding_mode``), always without bias, plus:

    Args:
        b: alignment pressure ``B >= 1`` (fast paths for 1 and 2).
        max_out: number of MaxOut units per output channel; the convolution
            produces ``out_channels·max_out`` channels, consecutive groups of
            ``max_out`` are reduced by max before the cosine scaling.
        scale: fixed output multiplier γ (v1: :func:`v1_scale`); ``None`` = 1.
        norm_eps: ε in ``sqrt(Σx² + ε)``.
        cos_eps: v1 quirk, ε added to ``|cos|`` for general B (off by default).

    Shapes: input ``N×C_in×H×W`` → output ``N×C_out×H'×W'``.  The stored
    ``weight`` (``C_out·max_out × C_in/groups × kh × kw``) is unnormalised; it is
    normalised per output unit in every forward pass.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] | str = 0,
        dilation: int | Sequence[int] = 1,
        groups: int = 1,
        *,
        b: float = 2.0,
        max_out: int = 1,
        scale: float | None = None,
        padding_mode: str = "zeros",
        norm_eps: float = DEFAULT_NORM_EPS,
        cos_eps: float = 0.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        for name, v in (("in_channels", in_channels), ("out_channels", out_channels),
                        ("groups", groups)):
            check_int(name, v, 1)
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"in_channels ({in_channels}) and out_channels ({out_channels}) must both be "
                f"divisible by groups ({groups})"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = _pair(stride, "stride")
        self.dilation = _pair(dilation, "dilation")
        self.groups = groups
        if padding_mode not in ("zeros", "reflect", "replicate", "circular"):
            raise ValueError(
                f"padding_mode must be 'zeros', 'reflect', 'replicate' or 'circular', "
                f"got {padding_mode!r}"
            )
        self.padding_mode = padding_mode
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(
                    f"padding must be an int, a pair, 'same' or 'valid', got {padding!r}"
                )
            if padding == "same" and self.stride != (1, 1):
                raise ValueError("padding='same' is not supported for strided convolutions "
                                 "(as in nn.Conv2d); pass explicit padding")
            self.padding: tuple[int, int] | str = padding
        else:
            self.padding = _pair(padding, "padding")
        self._set_options(b, max_out, scale, norm_eps, cos_eps)
        self.weight = nn.Parameter(
            torch.empty(
                out_channels * self.max_out,
                in_channels // groups,
                *self.kernel_size,
                device=device,
                dtype=dtype,
            )
        )
        self._explicit_pad = self._compute_explicit_pad()
        self.reset_parameters()

    def resized(self, out_channels: int) -> BcosConv2d:
        """A freshly initialised layer like this one with ``out_channels`` outputs."""
        return type(self)(self.in_channels, out_channels, self.kernel_size, self.stride,
                          self.padding, self.dilation, self.groups,
                          padding_mode=self.padding_mode, **self._options())

    def _compute_explicit_pad(self) -> tuple[int, int, int, int] | None:
        """F.pad tuple (left, right, top, bottom) when the input must be padded
        explicitly (non-zero padding mode, asymmetric 'same'); else None."""
        if self.padding == "valid":
            return None
        if self.padding == "same":
            pads = []
            for d, k in zip(self.dilation, self.kernel_size):
                total = d * (k - 1)
                pads.append((total // 2, total - total // 2))
            (top, bottom), (left, right) = pads
            if self.padding_mode == "zeros" and top == bottom and left == right:
                return None
            return (left, right, top, bottom)
        ph, pw = self.padding  # type: ignore[misc]
        if self.padding_mode == "zeros":
            return None
        return (pw, pw, ph, ph)

    def _conv_padding(self) -> tuple[int, int]:
        if self._explicit_pad is not None or self.padding == "valid":
            return (0, 0)
        if self.padding == "same":
            return tuple(d * (k - 1) // 2 for d, k in zip(self.dilation, self.kernel_size))  # type: ignore[return-value]
        return self.padding  # type: ignore[return-value]

    def normalized_weight(self) -> Tensor:
        """Weights with unit L2 norm per output unit."""
        w = self.weight
        return w / torch.linalg.vector_norm(w, dim=(1, 2, 3), keepdim=True)

    def patch_sq_norms(self, x: Tensor) -> Tensor:
        """``Σ_window Σ_group-channels x² + ε``: N×G×H'×W' for the already
        padded (if needed) input."""
        n, c, h, w = x.shape
        g = self.groups
        if x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()  # reduced precision (autocast): the norm in float32
        if g == 1:
            sq = _channel_sq_sum(x)
        else:
            sq = x.unflatten(1, (g, c // g)).square().sum(2)
        padding = self._conv_padding()
        kh, kw = self.kernel_size
        if (
            self.dilation == (1, 1)
            and padding[0] <= kh // 2
            and padding[1] <= kw // 2
        ):
            # Sum over the window (zeros of the padding counted).
            s = _window_sum(sq, self.kernel_size, self.stride, padding)
        else:
            ones = sq.new_ones(g, 1, kh, kw)
            s = F.conv2d(sq, ones, None, self.stride, padding, self.dilation, g)
        return s + self.norm_eps

    def _check_input(self, x: Tensor) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"{type(self).__name__} expects a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4:
            raise ValueError(
                f"{type(self).__name__} expects a 4-D input N×C×H×W, got shape {tuple(x.shape)}"
                + (" — add a batch dimension with x.unsqueeze(0)" if x.dim() == 3 else "")
            )
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"{type(self).__name__} expects {self.in_channels} input channels, "
                f"got {x.shape[1]} (input shape {tuple(x.shape)})"
            )

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        if self._explicit_pad is not None:
            mode = "constant" if self.padding_mode == "zeros" else self.padding_mode
            x = F.pad(x, self._explicit_pad, mode=mode)
        w = self.weight
        max_out = self.max_out
        piece_major = max_out > 1 and self.groups == 1
        if piece_major:
            # Rows [unit 0 piece 0, unit 0 piece 1, ...] → [piece 0 of every unit,
            # piece 1 of every unit, ...]: MaxOut becomes an elementwise max of
            # contiguous channel blocks (a strided max over pairs is several times
            # slower on CPU).  The stored weight keeps the checkpoint layout.
            w = w.unflatten(0, (self.out_channels, max_out)).transpose(0, 1).flatten(0, 1)
        # channels-last when the module or its input is (model.to(memory_format=
        # torch.channels_last)): the permuted weight and a 1-channel-ambiguous
        # input would otherwise fall back to NCHW; on CPU the channels-last
        # convolutions are up to 2× faster at small channel counts
        channels_last = _is_channels_last(self.weight) or _is_channels_last(x)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        inv_w = torch.linalg.vector_norm(w, dim=(1, 2, 3)).reciprocal()
        # conv(x, w/‖w‖) = conv(x, w)/‖w‖: normalise whichever tensor is smaller.
        n_out = x.shape[0] * w.shape[0] * (x.shape[2] // self.stride[0]) * (
            x.shape[3] // self.stride[1]
        )
        scale_output = n_out < w.numel()
        if not scale_output:
            w = w * inv_w[:, None, None, None]
        if channels_last:
            w = w.contiguous(memory_format=torch.channels_last)
        out = F.conv2d(x, w, None, self.stride, self._conv_padding(), self.dilation, self.groups)
        if scale_output:
            out = out * inv_w[None, :, None, None]
        out = _maxout_pieces(out, max_out) if piece_major else _maxout(out, 1, max_out)
        scale = 1.0 if self.scale is None else self.scale
        if self.b == 1.0:
            return out * scale if scale != 1.0 else out
        detach = self.is_in_explanation_mode
        if detach:  # the norm is a constant: no graph, nothing saved for backward
            with torch.no_grad():
                norm = self.patch_sq_norms(x)
        else:
            norm = self.patch_sq_norms(x)
        g = self.groups
        if g == 1:
            return bcos_scaling(out, norm, self.b, detach=detach, cos_eps=self.cos_eps,
                                scale=scale)
        return bcos_scaling(
            out.unflatten(1, (g, self.out_channels // g)),
            norm.unsqueeze(2),
            self.b,
            detach=detach,
            cos_eps=self.cos_eps,
            scale=scale,
        ).flatten(1, 2)

    def extra_repr(self) -> str:
        s = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}"
        )
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode!r}"
        return s + self._options_repr()


class BcosLinear(_BcosLayer):
    """B-cos linear layer: ``|cos(x, ŵ)|^(B-1) · ŵᵀx`` per output unit.

    Input ``*×in_features`` → output ``*×out_features``.  See
    :class:`BcosConv2d` for ``b``, ``max_out``, ``scale``, ``norm_eps`` and ``cos_eps``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        b: float = 2.0,
        max_out: int = 1,
        scale: float | None = None,
        norm_eps: float = DEFAULT_NORM_EPS,
        cos_eps: float = 0.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.in_features = check_int("in_features", in_features, 1)
        self.out_features = check_int("out_features", out_features, 1)
        self._set_options(b, max_out, scale, norm_eps, cos_eps)
        self.weight = nn.Parameter(
            torch.empty(out_features * self.max_out, in_features, device=device, dtype=dtype)
        )
        self.reset_parameters()

    def resized(self, out_features: int) -> BcosLinear:
        """A freshly initialised layer like this one with ``out_features`` outputs."""
        return type(self)(self.in_features, out_features, **self._options())

    def normalized_weight(self) -> Tensor:
        w = self.weight
        return w / torch.linalg.vector_norm(w, dim=1, keepdim=True)

    def forward(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor):
            raise TypeError(f"BcosLinear expects a torch.Tensor, got {type(x).__name__}")
        if x.dim() == 0 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"BcosLinear expects inputs with {self.in_features} features in the last "
                f"dimension, got shape {tuple(x.shape)}"
            )
        out = F.linear(x, self.normalized_weight())
        out = _maxout(out, -1, self.max_out)
        if self.b != 1.0:
            norm = x.square().sum(-1, keepdim=True) + self.norm_eps
            return bcos_scaling(
                out, norm, self.b, detach=self.is_in_explanation_mode, cos_eps=self.cos_eps,
                scale=1.0 if self.scale is None else self.scale,
            )
        if self.scale is not None:
            out = out * self.scale
        return out

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}" + self._options_repr()
