"""Model-inherent explanations of B-cos networks."""

from ..nn.explanation_mode import explanation_mode
from .colour import contribution_to_rgba, to_rgba
from .core import Explanation, explain, find_input_encoding

__all__ = [
    "Explanation",
    "contribution_to_rgba",
    "explain",
    "explanation_mode",
    "find_input_encoding",
    "to_rgba",
]
