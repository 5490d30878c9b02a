"""Model-inherent explanations of B-cos networks."""

from ..nn.explanation_mode import explanation_mode
from .colour import (
    contribution_to_rgba,
    explanation_png,
    overlay,
    png_bytes,
    save_explanation,
    to_rgba,
)
from .core import Explanation, explain, find_input_encoding, model_class_names

__all__ = [
    "Explanation",
    "contribution_to_rgba",
    "explain",
    "explanation_mode",
    "explanation_png",
    "find_input_encoding",
    "model_class_names",
    "overlay",
    "png_bytes",
    "save_explanation",
    "to_rgba",
]
