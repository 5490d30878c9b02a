"""Scoring: the share of positive attribution inside the explained cell, and
the smoothing rule."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..._utils.validate import check_int, is_int

__all__ = ["cell_scores", "paper_smoothing"]

#: The paper's smoothing: a 15×15 average pool on maps of 224-px cells (ImageNet).
PAPER_SMOOTHING_224 = 15


def paper_smoothing(cell_size: int | tuple[int, int]) -> int | None:
    """The smoothing kernel for cells of ``cell_size`` pixels (``smoothing="auto"``).

    The paper smooths ImageNet maps (224-px cells) with a 15×15 average pool
    and does not smooth at CIFAR-10 size (32-px cells).  The rule that gives
    both: the largest odd integer ≤ 15·s/224, s the cell's shorter side; 1
    means no smoothing.  So 224 px → 15, 112 → 7, 64 → 3, 32 and 28 → None.
    """
    s = min(cell_size) if isinstance(cell_size, (tuple, list)) else int(cell_size)
    if isinstance(s, bool) or s < 1:
        raise ValueError(f"cell size must be a positive number of pixels, got {cell_size!r}")
    k = int(PAPER_SMOOTHING_224 * s // 224)  # floor(15·s/224), exact in integers
    if k % 2 == 0:
        k -= 1
    return k if k > 1 else None


def _check_smoothing(smoothing: int | str | None, cell_size: Any = None) -> int | None:
    if smoothing == "auto":
        if cell_size is None:
            raise ValueError("smoothing='auto' needs the cell size; pass an int or None here")
        return paper_smoothing(cell_size)
    if isinstance(smoothing, str):
        raise ValueError(f"smoothing must be 'auto', None or an odd int, got {smoothing!r}")
    if smoothing is None or smoothing == 1:
        return None
    if not is_int(smoothing) or smoothing < 1:
        raise ValueError(f"smoothing must be None or an odd kernel size >= 1, got {smoothing!r}")
    if smoothing % 2 == 0:
        raise ValueError(
            f"smoothing kernel size must be odd (so the map keeps its size), got {smoothing}; "
            f"use {smoothing + 1}"
        )
    return smoothing


def cell_scores(
    maps: Tensor, cells: Tensor | Sequence[int] | int, n: int, *, smoothing: int | None = None
) -> Tensor:
    """Pointing-game scores of attribution maps for their target cells.

    Args:
        maps: B×H×W or B×C×H×W attributions of B grid images (summed over C);
            H and W must be divisible by ``n``.
        cells: B cell indices (row-major, 0..n²−1) or one index for all maps: the
            cell whose class each map explains.
        n: cells per side.
        smoothing: None, or an odd box-filter size k: the summed map is averaged
            over k×k windows (stride 1, zero padding, same size) before clamping.

    Returns:
        B float64 scores in [0, 1]: ``Σ_cell max(A, 0) / Σ_grid max(A, 0)``, 0 when
        the map has no positive attribution.
    """
    n = check_int("n", n, 1)
    k = _check_smoothing(smoothing)
    if not isinstance(maps, Tensor):
        raise TypeError(f"maps must be a tensor, got {type(maps).__name__}")
    if maps.dim() == 4:
        a = maps.double().sum(1)
    elif maps.dim() == 3:
        a = maps.double()
    else:
        raise ValueError(f"maps must be B×H×W or B×C×H×W, got shape {tuple(maps.shape)}")
    b, h, w = a.shape
    if h % n or w % n:
        raise ValueError(f"map size {h}×{w} is not divisible into a {n}×{n} grid")
    cells_t = torch.as_tensor(cells, dtype=torch.long, device=a.device).reshape(-1)
    if cells_t.numel() == 1:
        cells_t = cells_t.expand(b)
    if cells_t.numel() != b:
        raise ValueError(f"need one cell index per map ({b}), got {cells_t.numel()}")
    if b and (cells_t.min() < 0 or cells_t.max() >= n * n):
        raise ValueError(f"cell indices must lie in 0..{n * n - 1}")
    if not torch.isfinite(a).all():
        raise ValueError("attribution maps contain NaN or Inf")
    if k is not None:
        a = F.avg_pool2d(a[:, None], k, stride=1, padding=k // 2, count_include_pad=True)[:, 0]
    pos = a.clamp(min=0)
    # B×n×(H/n)×n×(W/n) -> positive mass per cell, B×n²
    per_cell = pos.reshape(b, n, h // n, n, w // n).sum((2, 4)).reshape(b, n * n)
    total = per_cell.sum(1)
    inside = per_cell.gather(1, cells_t[:, None])[:, 0]
    return torch.where(total > 0, inside / total.clamp(min=torch.finfo(a.dtype).tiny), 0.0)


