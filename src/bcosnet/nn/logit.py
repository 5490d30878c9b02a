"""The logit layer ``out / T + b`` (docs/protocol.md §1)."""

from __future__ import annotations

import math

from torch import Tensor, nn

__all__ = ["LogitLayer"]


class LogitLayer(nn.Module):
    """``logits = x / temperature + bias`` with a fixed temperature T and bias b.

    ``bias`` is the constant term of a B-cos network's logits:
    ``Σ contributions + bias = logit``.
    """

    def __init__(self, temperature: float = 1.0, bias: float = 0.0) -> None:
        super().__init__()
        if not math.isfinite(temperature) or temperature <= 0:
            raise ValueError(f"temperature must be a finite positive number, got {temperature}")
        if not math.isfinite(bias):
            raise ValueError(f"bias must be finite, got {bias}")
        self.temperature = float(temperature)
        self.bias = float(bias)

    def forward(self, x: Tensor) -> Tensor:
        if self.temperature != 1.0:
            x = x / self.temperature
        if self.bias != 0.0:
            x = x + self.bias
        return x

    def extra_repr(self) -> str:
        return f"temperature={self.temperature:g}, bias={self.bias:.6g}"
