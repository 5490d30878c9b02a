"""Results: score summaries, the result container (JSON round trip) and the
Fig. B1/B2-style box plot."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..._utils.io import atomic_write_json, save_figure

__all__ = ["PointingGameResult", "ScoreSummary", "plot_pointing_game"]

_RESULT_VERSION = 1


@dataclass(frozen=True)
class ScoreSummary:
    """Distribution of pointing-game scores (quartiles by linear interpolation)."""

    count: int
    mean: float
    std: float
    median: float
    q1: float
    q3: float
    min: float
    max: float

    @classmethod
    def of(cls, scores: np.ndarray) -> ScoreSummary:
        s = np.asarray(scores, dtype=np.float64).reshape(-1)
        if s.size == 0:
            nan = float("nan")
            return cls(0, nan, nan, nan, nan, nan, nan, nan)
        q1, med, q3 = np.percentile(s, [25, 50, 75])
        return cls(
            count=int(s.size),
            mean=float(s.mean()),
            std=float(s.std()),
            median=float(med),
            q1=float(q1),
            q3=float(q3),
            min=float(s.min()),
            max=float(s.max()),
        )

    def to_dict(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class PointingGameResult:
    """Scores of a grid pointing game.

    Attributes (G grids, n² cells each, row-major):
        n: cells per side; ``baseline`` = 1/n² is the score of a uniform map.
        classes: G×n² int array, each cell's class.
        scores: method name -> G×n² float array of scores in [0, 1].
        settings: the evaluation settings (seed, smoothing, threshold, ...).
    """

    n: int
    classes: np.ndarray
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def baseline(self) -> float:
        return 1.0 / (self.n * self.n)

    @property
    def num_grids(self) -> int:
        return int(self.classes.shape[0])

    @property
    def grids_per_method(self) -> dict[str, int]:
        """Method name -> grids it was played on (the first k of :attr:`classes`)."""
        return {m: int(np.asarray(s).shape[0]) for m, s in self.scores.items()}

    @property
    def methods(self) -> list[str]:
        return list(self.scores)

    def summary(self) -> dict[str, ScoreSummary]:
        """Method name -> :class:`ScoreSummary` over all cells of all grids."""
        return {m: ScoreSummary.of(s) for m, s in self.scores.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": _RESULT_VERSION,
            "n": self.n,
            "num_grids": self.num_grids,
            "baseline": self.baseline,
            "settings": self.settings,
            "classes": self.classes.tolist(),
            "methods": {
                m: {"summary": ScoreSummary.of(s).to_dict(), "grids": int(s.shape[0]),
                    "scores": s.tolist()}
                for m, s in self.scores.items()
            },
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PointingGameResult:
        n = int(d["n"])
        classes = np.asarray(d["classes"], dtype=np.int64).reshape(-1, n * n)
        scores = {
            m: np.asarray(v["scores"], dtype=np.float64).reshape(-1, n * n)
            for m, v in d.get("methods", {}).items()
        }
        return cls(n=n, classes=classes, scores=scores, settings=dict(d.get("settings", {})))

    def save(self, path: str | os.PathLike) -> None:
        """Write as JSON (atomically)."""
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> PointingGameResult:
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))

    def plot(self, path: str | os.PathLike | None = None, **kwargs: Any) -> Any:
        """Box plot of the scores per method; see :func:`plot_pointing_game`."""
        return plot_pointing_game(self, path, **kwargs)


def plot_pointing_game(
    results: PointingGameResult | Mapping[str, PointingGameResult],
    path: str | os.PathLike | None = None,
    *,
    methods: Sequence[str] | None = None,
    title: str | None = None,
    dpi: int = 150,
) -> Any:
    """Box plots of the scores per method (Fig. B1/B2 style).

    Args:
        results: one result, or a dict label -> result (e.g. ``{"B-cos": r1,
            "standard": r2}``) drawn as side-by-side groups per method.
        path: if given, the figure is saved there atomically (format from the suffix).
        methods: which methods, in this order (default: all, in first-seen order).
        title: figure title.

    Returns:
        The matplotlib ``Figure`` (drawn with the Agg backend; no pyplot state).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    groups = {"": results} if isinstance(results, PointingGameResult) else dict(results)
    if not groups or not all(isinstance(r, PointingGameResult) for r in groups.values()):
        raise TypeError("results must be a PointingGameResult or a dict label -> result")
    if methods is None:
        methods = []
        for r in groups.values():
            methods += [m for m in r.methods if m not in methods]
    methods = list(methods)
    if not methods:
        raise ValueError("no methods to plot")
    ns = {r.n for r in groups.values()}
    k = len(groups)
    width = 0.8 / k
    fig = Figure(figsize=(max(4.0, 0.7 * len(methods) * (1 + 0.5 * (k - 1)) + 1.5), 3.6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    colours = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]
    handles = []
    for gi, (label, r) in enumerate(groups.items()):
        data, pos = [], []
        for mi, m in enumerate(methods):
            if m in r.scores:
                data.append(r.scores[m].reshape(-1))
                pos.append(mi + (gi - (k - 1) / 2) * width)
        if not data:
            continue
        colour = colours[gi % len(colours)]
        ax.boxplot(
            data, positions=pos, widths=width * 0.85, patch_artist=True, showmeans=True,
            boxprops={"facecolor": colour, "alpha": 0.55},
            medianprops={"color": "black"},
            meanprops={"marker": "^", "markerfacecolor": "white", "markeredgecolor": "black"},
            flierprops={"markersize": 2, "alpha": 0.4},
        )
        if label:
            handles.append(Patch(facecolor=colour, alpha=0.55, label=label))
    for nn_ in sorted(ns):
        ax.axhline(1.0 / (nn_ * nn_), ls="--", color="grey", lw=1)
        ax.text(len(methods) - 0.5, 1.0 / (nn_ * nn_), f" uniform 1/{nn_ * nn_}",
                va="bottom", ha="right", fontsize=7, color="grey")
    ax.set_xticks(range(len(methods)))
    ax.set_xticklabels(methods, rotation=30 if len(methods) > 5 else 0)
    ax.set_xlim(-0.6, len(methods) - 0.4)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("localisation score")
    ax.grid(axis="y", alpha=0.3)
    if handles:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    ax.set_title(title or f"Grid pointing game ({'/'.join(f'{x}×{x}' for x in sorted(ns))})")
    if path is not None:
        save_figure(fig, path, dpi=dpi)
    return fig
