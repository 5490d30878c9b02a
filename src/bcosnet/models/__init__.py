"""Architectures and the model registry.

Each family lives in its own module (``vgg``, ``resnet``, ``densenet``, ...)
and registers its builders on import; importing this package imports them all.
"""

import importlib
import pkgutil

from .registry import ModelInfo, create_model, list_models, model_info, register_model

for _mod in pkgutil.iter_modules(__path__):
    if not _mod.name.startswith("_") and _mod.name != "registry":
        importlib.import_module(f"{__name__}.{_mod.name}")

from .bcos_v2 import load_bcos_v2  # noqa: E402

__all__ = [
    "ModelInfo",
    "create_model",
    "list_models",
    "load_bcos_v2",
    "model_info",
    "register_model",
]
