"""Architectures and the model registry.

Each family lives in its own module and registers its builders (``@register_model``)
when imported; this package imports every family, so ``create_model`` /
``list_models`` see them all.
"""

from . import (  # noqa: F401  (registration)
    bcos_v2,
    cifar,
    convnext,
    densenet,
    inception,
    mnist,
    resnet,
    vgg,
    vit,
)
from .base import BcosClassifier
from .bcos_v2 import load_bcos_v2
from .bcosification import BcosifiedNet, bcosify, register_bcosified_models
from .registry import (
    RECORD_FORMAT,
    ModelInfo,
    create_model,
    list_models,
    model_info,
    register_model,
)
from .weights import (
    ReadWeights,
    Weights,
    create_finetune_model,
    freeze_backbone,
    get_weights,
    list_weights,
    read_weights,
    register_weights,
)

register_bcosified_models()  # after every family: one bcosified_* per conventional twin

__all__ = [
    "BcosClassifier",
    "BcosifiedNet",
    "ModelInfo",
    "RECORD_FORMAT",
    "ReadWeights",
    "bcosify",
    "create_finetune_model",
    "create_model",
    "freeze_backbone",
    "list_models",
    "load_bcos_v2",
    "model_info",
    "register_model",
    "register_weights",
    "Weights",
    "get_weights",
    "list_weights",
    "read_weights",
]
