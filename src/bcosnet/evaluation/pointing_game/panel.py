"""A Fig. A2-style panel: one grid image and every method's map of one cell's
class side by side, the explained cell framed."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from torch import Tensor, nn

from ..._utils.io import save_figure
from ..._utils.modules import eval_mode
from ._model import model_device_dtype
from .game import grid_maps
from .grids import GridDataset
from .methods import _normalise_methods, make_attribution_fn
from .scoring import cell_scores

__all__ = ["plot_method_panel"]


def plot_method_panel(
    rows: Mapping[str, tuple[nn.Module, Any]],
    grids: GridDataset,
    *,
    grid: int = 0,
    cell: int | None = None,
    method_settings: Mapping[str, Mapping[str, Any]] | None = None,
    smoothing: int | None = None,
    class_names: Sequence[str] | None = None,
    path: str | os.PathLike | None = None,
    dpi: int = 120,
) -> Any:
    """Draw grid ``grid`` and, per row (network), every method's map of ``cell``'s class.

    Args:
        rows: label -> ``(model, methods)`` (methods as for
            :func:`grid_pointing_game`), e.g. ``{"B-cos": (bcos_net, ["bcos", "ixg"]),
            "standard": (twin, ["ixg"])}``.
        grids: the grids; every row explains the same grid image and cell.
        grid: which grid.
        cell: which cell of it (default: the centre cell).
        method_settings: method name -> settings for ``attribution.get``.
        smoothing: as in the game, applied to the shown maps and their scores.
        class_names: the data set's class names (index → name), shown as the explained
            cell's class; None: "class k".
        path: if given, the figure is saved there atomically.

    Returns:
        The matplotlib ``Figure``.  Each map is the per-pixel attribution
        (summed over channels) in a red (positive) / blue (negative) colour map
        scaled to its own largest magnitude; its title gives the method and the
        cell's score.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    if not 0 <= grid < len(grids):
        raise ValueError(f"grid must lie in 0..{len(grids) - 1}, got {grid}")
    sq = grids.n * grids.n
    cell = sq // 2 if cell is None else cell
    if not 0 <= cell < sq:
        raise ValueError(f"cell must lie in 0..{sq - 1}, got {cell}")
    image = grids.get_images([grid])  # 1×C×H×W
    target = grids.classes[grid, cell].reshape(1, 1)
    k = int(target)
    if class_names is not None and not 0 <= k < len(class_names):
        raise ValueError(f"class_names has {len(class_names)} names, but the framed cell's "
                         f"class is {k}: pass the names of every class of the grids' data set")
    class_text = str(class_names[k]) if class_names is not None else f"class {k}"
    ch, cw = grids.cell_size
    r, c = divmod(cell, grids.n)

    table = [(label, _maps_and_scores(model, methods, image, target, cell, grids.n,
                                      dict(method_settings or {}), smoothing))
             for label, (model, methods) in rows.items()]
    cols = 1 + max(len(e) for _, e in table)
    fig = Figure(figsize=(1.6 * cols, 1.75 * len(table) + 0.3))
    FigureCanvasAgg(fig)
    img = image[0].permute(1, 2, 0).double().clamp(0, 1).numpy()
    grey = img.shape[2] == 1

    def frame(ax: Any) -> None:
        ax.add_patch(Rectangle((c * cw - 0.5, r * ch - 0.5), cw, ch, fill=False,
                               edgecolor="lime", linewidth=1.8))
        ax.set_xticks([])
        ax.set_yticks([])

    for ri, (label, entries) in enumerate(table):
        ax = fig.add_subplot(len(table), cols, ri * cols + 1)
        ax.imshow(img[..., 0] if grey else img, cmap="gray" if grey else None, vmin=0, vmax=1)
        frame(ax)
        ax.set_title(class_text, fontsize=8)
        ax.set_ylabel(label, fontsize=9)
        for mi, (name, m, score) in enumerate(entries):
            ax = fig.add_subplot(len(table), cols, ri * cols + 2 + mi)
            v = float(np.abs(m).max()) or 1.0
            ax.imshow(m, cmap="bwr", vmin=-v, vmax=v)
            frame(ax)
            ax.set_title(f"{name}\n{score:.2f}", fontsize=8)
    fig.suptitle(f"Grid {grid}: every method's map of the framed cell's class, {class_text} "
                 "(red +, blue −; number: the cell's score)", fontsize=8, y=0.995)
    fig.subplots_adjust(wspace=0.05, hspace=0.45, top=1 - 0.55 / fig.get_figheight())
    if path is not None:
        save_figure(fig, path, dpi=dpi)
    return fig


def _maps_and_scores(model: nn.Module, methods: Any, image: Tensor, target: Tensor, cell: int,
                     n: int, method_settings: dict[str, Any], smoothing: int | None
                     ) -> list[tuple[str, np.ndarray, float]]:
    """``(method, its H×W map of the target, the cell's score)`` per method."""
    device, dtype = model_device_dtype(model)
    x = image.to(device=device, dtype=dtype)
    entries = []
    for name, method in _normalise_methods(methods).items():
        fn = make_attribution_fn(model, method, **dict(method_settings.get(name, {})))
        with eval_mode(model):
            m = grid_maps(fn, x, target.to(device), name=name)[0, 0].double().cpu()
        score = float(cell_scores(m[None], cell, n, smoothing=smoothing)[0])
        entries.append((name, m.numpy(), score))
    return entries
