"""Building blocks of B-cos networks (no model logic here)."""

from .bcos import (
    DEFAULT_NORM_EPS,
    BcosConv2d,
    BcosLinear,
    bcos_scaling,
    check_b,
    check_max_out,
    check_scale,
    v1_scale,
)
from .bcosified import BcosifiedConv2d
from .encoding import AddInverse
from .explanation_mode import (
    ExplainableModule,
    SupportsExplanationMode,
    explanation_mode,
    explanation_modules,
    is_bcos_model,
)
from .logit import LogitLayer
from .norm import (
    BatchNormUncentered2d,
    DetachableGroupNorm2d,
    DetachableLayerNorm,
    PositionNorm2d,
)
from .pool import AvgPool2d

__all__ = [
    "AddInverse",
    "AvgPool2d",
    "BatchNormUncentered2d",
    "BcosConv2d",
    "BcosLinear",
    "BcosifiedConv2d",
    "DEFAULT_NORM_EPS",
    "DetachableGroupNorm2d",
    "DetachableLayerNorm",
    "ExplainableModule",
    "LogitLayer",
    "PositionNorm2d",
    "SupportsExplanationMode",
    "bcos_scaling",
    "check_b",
    "check_max_out",
    "check_scale",
    "explanation_mode",
    "explanation_modules",
    "is_bcos_model",
    "v1_scale",
]
