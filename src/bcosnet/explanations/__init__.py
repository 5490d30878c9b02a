"""Model-inherent explanations of B-cos networks."""

from ..nn.explanation_mode import explanation_mode
from .core import Explanation, explain, find_input_encoding

__all__ = ["Explanation", "explain", "explanation_mode", "find_input_encoding"]
