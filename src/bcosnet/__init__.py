"""bcosnet — B-cos networks: image classifiers that explain themselves exactly.

    import bcosnet
    ex = bcosnet.explain(model, images, target="pred")
    ex.contributions.sum((-2, -1)) + ex.bias  # == ex.logits
"""

from . import attribution, nn
from .explanations import Explanation, explain, explanation_mode, to_rgba
from .models import create_model, list_models, register_model

__version__ = "0.1.0"

__all__ = [
    "Explanation",
    "__version__",
    "attribution",
    "create_model",
    "explain",
    "explanation_mode",
    "list_models",
    "nn",
    "register_model",
    "to_rgba",
]
