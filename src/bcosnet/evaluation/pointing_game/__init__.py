"""The grid pointing game (docs/protocol.md, section 5; supplement C.2.1, Figs. B1/B2).

A localisation metric for attributions.  Correctly classified test images are
tiled into n×n grids of distinct classes; for every cell the attribution of
that cell's class logit is computed on the whole grid image, and the score is
the fraction of positive attribution that falls inside the cell:

    A      = attribution of logit c_i for the grid image, summed over channels (H×W)
    A      = box_smooth(A)                                   (optional)
    A⁺     = max(A, 0)
    score_i = Σ_{cell i} A⁺ / Σ_{grid} A⁺                     (0 when the total is 0)

A perfectly localising method scores 1; spreading attribution uniformly scores
the baseline 1/n².

Typical use::

    from bcosnet.evaluation import grid_pointing_game, plot_pointing_game
    result = grid_pointing_game(model, test_set, methods=["bcos", "ixg"], n=3,
                                num_grids=500, results_dir="runs/pg")
    result.summary()["bcos"].median
    plot_pointing_game(result, "runs/pg/boxplot.png")

The package's modules: :mod:`.grids` (the grid data set, class rankings,
confidence threshold, the grid set's file in a results folder),
:mod:`.scoring` (cell scores and the smoothing rule), :mod:`.methods`
(attribution callables), :mod:`.results` (summaries, the result container and
its box plot), :mod:`.game` (the loop; each method one item of the results
folder's :class:`~bcosnet._utils.store.ResultStore`) and :mod:`.panel` (the
Fig. A2-style panel of every method's map).
"""

from .game import grid_maps, grid_pointing_game, prepare_grids
from .grids import GridDataset, TooFewClassesError, make_grid_dataset
from .methods import AttributionFn, make_attribution_fn, supports_multi_target
from .panel import plot_method_panel
from .results import PointingGameResult, ScoreSummary, plot_pointing_game
from .scoring import cell_scores, paper_smoothing

__all__ = [
    "AttributionFn",
    "GridDataset",
    "PointingGameResult",
    "ScoreSummary",
    "TooFewClassesError",
    "cell_scores",
    "grid_maps",
    "grid_pointing_game",
    "make_attribution_fn",
    "make_grid_dataset",
    "paper_smoothing",
    "plot_method_panel",
    "plot_pointing_game",
    "prepare_grids",
    "supports_multi_target",
]
