"""Evaluation of models and explanations: accuracy, the grid pointing game,
deletion/insertion (faithfulness), neuron statistics and the report — plain
data and plotting helpers.  Everything of :mod:`.pointing_game` is exported here
too."""

from . import pointing_game
from .accuracy import AccuracyResult, accuracy
from .faithfulness import (
    DeletionInsertion,
    FaithfulnessResult,
    deletion_insertion,
    evaluate_faithfulness,
    faithfulness_table,
)
from .neurons import TopActivations, class_distribution, top_activations, top_class_scores
from .pointing_game import *  # noqa: F403  (its __all__, listed below)
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
    "LocalisationComparison",
    "Report",
    "ReportFigure",
    "TopActivations",
    "accuracy",
    "class_distribution",
    "compare_localisation",
    "deletion_insertion",
    "evaluate_faithfulness",
    "faithfulness_table",
    "top_activations",
    "top_class_scores",
    "write_report",
    *pointing_game.__all__,
]
