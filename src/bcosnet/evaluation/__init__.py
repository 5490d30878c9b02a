"""Evaluation of models and explanations: plain data + plotting helpers."""

from .accuracy import AccuracyResult, accuracy
from .faithfulness import (
    DeletionInsertion,
    FaithfulnessResult,
    deletion_insertion,
    evaluate_faithfulness,
    faithfulness_table,
)
from .neurons import TopActivations, class_distribution, top_activations, top_class_scores
from .pointing_game import (
    GridDataset,
    PointingGameResult,
    ScoreSummary,
    TooFewClassesError,
    cell_scores,
    grid_pointing_game,
    make_attribution_fn,
    make_grid_dataset,
    paper_smoothing,
    plot_method_panel,
    plot_pointing_game,
    prepare_grids,
)
from .report import (
    LocalisationComparison,
    Report,
    ReportFigure,
    compare_localisation,
    write_report,
)

__all__ = [
    "AccuracyResult",
    "DeletionInsertion",
    "FaithfulnessResult",
    "accuracy",
    "deletion_insertion",
    "evaluate_faithfulness",
    "faithfulness_table",
    "GridDataset",
    "LocalisationComparison",
    "PointingGameResult",
    "Report",
    "ReportFigure",
    "ScoreSummary",
    "TooFewClassesError",
    "TopActivations",
    "cell_scores",
    "class_distribution",
    "compare_localisation",
    "grid_pointing_game",
    "make_attribution_fn",
    "make_grid_dataset",
    "paper_smoothing",
    "plot_method_panel",
    "plot_pointing_game",
    "prepare_grids",
    "top_activations",
    "top_class_scores",
    "write_report",
]
