"""Architectures, the model registry and the weights loader.

The layout (each module imports only the ones above it in this list; no circles):

* ``registry.py`` — the tables: name → builder, name → released weights
  (:class:`Weights`), and the record a model carries (:class:`ModelInfo`);
* ``weights.py`` — the loader: files, URLs and state dicts → checked state dicts
  (knows nothing of models);
* ``_common.py`` — the family files' helpers (paper constants, conv factory, norms,
  input normalisation, the option vocabulary);
* ``base.py`` — the two classifier shapes (:class:`BcosClassifier`, the twins'
  mixin) and the B-cos rules built on :func:`bcosnet.nn.is_bcos_model`;
* ``hub.py`` — ``save_pretrained`` folders (``config.json`` + ``model.safetensors``)
  and the Hugging Face Hub: writing, uploading, reading files (below the factory);
* ``factory.py`` — :func:`create_model`, :func:`create_finetune_model`,
  :func:`from_pretrained`, :func:`read_weights` / loading weights into a model;
* the family files (``mnist``, ``cifar``, ``resnet``, ``densenet``, ``vgg``,
  ``inception``, ``convnext``, ``vit``) — each declares its variants
  (``@register_model``) and its released weights as data (``WEIGHTS``);
* ``bcosification.py`` and ``bcos_v2.py`` — B-cosified twins, the ``bcos`` package's
  checkpoints by their names.

Importing this package imports every family, so :func:`create_model` /
:func:`list_models` see them all.
"""

from . import (  # noqa: F401  (registration)
    cifar,
    convnext,
    densenet,
    inception,
    mnist,
    resnet,
    vgg,
    vit,
)
from .base import BcosClassifier, freeze_backbone
from .bcos_v2 import load_bcos_v2
from .bcosification import BcosifiedNet, bcosify, register_bcosified_models
from .factory import (
    ReadWeights,
    create_finetune_model,
    create_model,
    from_pretrained,
    read_weights,
)
from .hub import push_to_hub, save_pretrained
from .registry import (
    RECORD_FORMAT,
    ModelInfo,
    Weights,
    get_weights,
    list_models,
    list_weights,
    model_info,
    register_model,
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
    "from_pretrained",
    "list_models",
    "load_bcos_v2",
    "model_info",
    "push_to_hub",
    "register_model",
    "register_weights",
    "Weights",
    "get_weights",
    "list_weights",
    "read_weights",
    "save_pretrained",
]
