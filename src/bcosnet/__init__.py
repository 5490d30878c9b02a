"""bcosnet — B-cos networks: image classifiers that explain themselves exactly.

    import bcosnet
    ex = bcosnet.explain(model, images, target="pred")
    ex.contributions.sum((-2, -1)) + ex.bias  # == ex.logits
"""

from . import attribution, nn
from ._utils.malloc import tune_malloc
from .explanations import (
    Explanation,
    explain,
    explanation_mode,
    overlay,
    save_explanation,
    to_rgba,
)
from .models import bcosify, create_model, from_pretrained, list_models, register_model

__version__ = "0.1.0"

# The heavier sub-packages load on first use: `bcosnet.evaluation`,
# `bcosnet.training`, `bcosnet.data`, `bcosnet.interop` work after a plain `import bcosnet`.
_LAZY = ("data", "evaluation", "explanations", "interop", "models", "training", "pipeline")


def __getattr__(name: str):  # noqa: ANN202 - PEP 562 module attribute hook
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'bcosnet' has no attribute {name!r}")

__all__ = [
    "Explanation",
    "__version__",
    "attribution",
    "bcosify",
    "create_model",
    "explain",
    "explanation_mode",
    "from_pretrained",
    "list_models",
    "nn",
    "overlay",
    "register_model",
    "save_explanation",
    "to_rgba",
    "tune_malloc",
]
