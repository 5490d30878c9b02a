"""Input encoding ``[x, 1 − x]`` (docs/protocol.md §2)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .._utils.validate import check_int

__all__ = ["AddInverse"]


class AddInverse(nn.Module):
    """Concatenate ``1 − x`` to ``x`` along ``dim``: RGB → 6 channels, grey → 2.

    Marks itself as the model's input encoding (``is_input_encoding = True``):
    :func:`bcosnet.explain` takes explanations with respect to its output.

    Args:
        in_channels: expected channel count of the raw images (``None``: any).
        dim: the channel dimension.
    """

    is_input_encoding = True

    def __init__(self, in_channels: int | None = None, dim: int = 1) -> None:
        super().__init__()
        self.in_channels = None if in_channels is None else check_int("in_channels",
                                                                      in_channels, 1)
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        if self.in_channels is not None:
            if x.dim() != 4:
                raise ValueError(
                    f"expected a 4-D batch of images N×{self.in_channels}×H×W, got shape "
                    f"{tuple(x.shape)}"
                    + (" — add a batch dimension with x.unsqueeze(0)" if x.dim() == 3 else "")
                )
            if x.shape[self.dim] != self.in_channels:
                hint = ""
                if x.shape[self.dim] == 2 * self.in_channels:
                    hint = " — pass raw images in [0, 1]; the model encodes them itself"
                raise ValueError(
                    f"expected {self.in_channels}-channel images in [0, 1], got "
                    f"{x.shape[self.dim]} channels (shape {tuple(x.shape)}){hint}"
                )
        return torch.cat([x, 1.0 - x], dim=self.dim)

    @staticmethod
    def decode(encoded: Tensor, dim: int = 1) -> Tensor:
        """The raw image back from its encoding (the first half of the channels)."""
        c = encoded.shape[dim]
        return encoded.narrow(dim, 0, c // 2)

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}" if self.in_channels is not None else ""
