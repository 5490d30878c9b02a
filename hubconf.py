"""torch.hub entry points: every registered bcosnet model, by its registry name.

    model = torch.hub.load("<owner>/bcosnet", "resnet50_v2", weights="bcos_v2_imagenet")
    model = torch.hub.load("/path/to/bcosnet", "fmnist_bcos", source="local",
                           weights="runs/fmnist/model.safetensors")
    torch.hub.list("<owner>/bcosnet")        # every name of bcosnet.list_models()

Each entry is ``bcosnet.create_model(name, weights=weights, **options)``: ``weights``
is anything ``create_model`` takes (``None`` for random initialisation, a registered
entry such as ``"bcos_v2_imagenet"``, a checkpoint/export file, a URL, a
``save_pretrained`` folder, ``"hf-hub:user/repo"``); ``options`` are the builder's
(``num_classes``, ``in_channels``, ``b``, ...).  The package is imported from this
repository's ``src/`` when it is not installed.  Every public name of this module
is a model (torch.hub lists the callables): helpers are private.
"""

from __future__ import annotations

import importlib.util as _util
import sys as _sys
from pathlib import Path as _Path
from typing import Any as _Any

#: What torch.hub checks is importable before an entry point runs.
dependencies = ["torch", "torchvision", "numpy", "PIL", "safetensors", "yaml", "tqdm",
                "matplotlib", "captum", "skimage"]

_SRC = _Path(__file__).resolve().parent / "src"
if _util.find_spec("bcosnet") is None and (_SRC / "bcosnet").is_dir():
    _sys.path.insert(0, str(_SRC))  # a torch.hub checkout: the package is not installed

import bcosnet as _bcosnet  # noqa: E402


def _entry(name: str) -> _Any:
    def entry(weights: _Any = None, **options: _Any) -> _Any:
        return _bcosnet.create_model(name, weights=weights, **options)

    info = _bcosnet.models.model_info(name)
    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = (
        f"bcosnet.create_model({name!r}, weights=weights, **options): {info.family} family, "
        f"{info.kind} kind, native input {info.in_channels}×{info.input_size[0]}×"
        f"{info.input_size[1]}; registered weights: "
        f"{', '.join(_bcosnet.models.list_weights(name)) or 'none'}.")
    return entry


globals().update({_name: _entry(_name) for _name in _bcosnet.list_models()})
