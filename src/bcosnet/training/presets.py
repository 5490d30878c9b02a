"""Named training presets: the paper's experiments (supplement C.1, docs/protocol.md §7)
and Fashion-MNIST.

Each preset is a documented table row, not code: :func:`get_preset` returns a
fresh :class:`TrainConfig` that YAML files and CLI flags may override.

==========================  =====================================================
``cifar10-v1``              ``cifar_bcos`` (B = 2), Adam 1e-3, batch 64, 100 epochs,
                            cosine to 1e-5, flip + padded crop, BCE, b = log(0.1/0.9)
``cifar10-v2``              ``cifar_bcos_v2``, same schedule with 5 warm-up epochs
``imagenet-<arch>-v1``      v1: Adam 2.5e-4, batch 256, 100 epochs, step decay
                            (×0.1 every 30 epochs), RandAugment, BCE, 224 px
                            (299 px Inception, auxiliary loss λ = 1)
``imagenet-<arch>-v2``      v2: Adam 1e-3, batch 256, cosine, 5 warm-up epochs
``fmnist``                  ``fmnist_bcos`` on Fashion-MNIST, Adam 1e-3, batch 128,
                            BCE, 10-minute budget with the cosine fitted to it
                            (at most 30 epochs) — the CPU result of docs/training.md
``fmnist-standard``         its conventional twin ``standard_fmnist_bcos``, same
                            budget, softmax cross-entropy
``fmnist-bcosify``          B-cosification (Arya et al. 2024) of the trained
                            ``fmnist-standard`` twin (``runs/fmnist-standard/
                            checkpoint.pt``): ``bcosified_fmnist_bcos`` at B = 2,
                            biases removed, max → average pooling; fine-tuned
                            with Adam 1e-3 (the paper's ImageNet runs: 1e-4 over
                            90 epochs; too slow for minutes, docs/bcosify.md),
                            cosine, BCE, batch 128, 5-minute budget
``fmnist-finetune-head``    fine-tuning on small data, only the classifier: the
                            trained ``fmnist`` net (``runs/fmnist/checkpoint.pt``)
                            with a fresh classifier, trained on 100 images per
                            class (a seeded subset), backbone frozen; Adam 1e-2,
                            30 epochs, cosine, BCE — a template: point
                            ``model.init_weights`` and ``data`` at yours
``fmnist-finetune``         the same, every parameter trained, Adam 1e-3
``folder``                  your own image folder (``--dataset folder --data DIR``):
                            classes, grey/colour, image size, model and output
                            folder read off the data (:mod:`bcosnet.training.resolve`);
                            Adam 1e-3, batch 16, 20 epochs, cosine to 1e-5,
                            random resized crop + flip, BCE, no EMA (on small
                            data an EMA of 0.999 would lag behind the few
                            hundred steps) — docs/your-data.md
``smoke``                   synthetic data, 3 epochs: a seconds-long check
==========================  =====================================================

Every preset is made for one data set (its ``data.dataset``).  Pointed at
another (a config's or the CLI's ``data.dataset``), :func:`retarget` keeps its
recipe — model, optimiser, schedule, stopping rule — and leaves the settings
that belong to its own data (:data:`DATA_SPECIFIC`) to the new data, and says so.
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import (
    DataConfig,
    ModelConfig,
    OptimConfig,
    ScheduleConfig,
    TrainConfig,
    _from_dict,
    merge_config,
)

__all__ = ["DATA_SPECIFIC", "DEFAULT_PRESETS", "PRESETS", "config_from_dict", "default_preset",
           "get_preset", "list_presets", "load_config", "retarget"]

_IMAGENET_ARCHS = {
    # preset arch name: (v1 model, v2 model or None, image size)
    "densenet121": ("densenet121", "densenet121_v2", 224),
    "densenet161": ("densenet161", "densenet161_v2", 224),
    "densenet169": ("densenet169", "densenet169_v2", 224),
    "densenet201": ("densenet201", "densenet201_v2", 224),
    "resnet18": ("resnet18", "resnet18_v2", 224),
    "resnet34": ("resnet34", "resnet34_v2", 224),
    "resnet50": ("resnet50", "resnet50_v2", 224),
    "resnet101": ("resnet101", "resnet101_v2", 224),
    "resnet152": ("resnet152", "resnet152_v2", 224),
    "inception-v3": ("inception_v3", None, 299),
    "vgg11": ("vgg11", "vgg11_bnu_v2", 224),
}


def _cifar10(version: int) -> TrainConfig:
    return TrainConfig(
        model=ModelConfig("cifar_bcos" if version == 1 else "cifar_bcos_v2", 10),
        data=DataConfig(dataset="cifar10", root="data/cifar10"),
        optim=OptimConfig(name="adam", lr=1e-3, batch_size=64),
        schedule=ScheduleConfig(
            name="cosine", min_lr=1e-5, warmup_epochs=0.0 if version == 1 else 5.0
        ),
        epochs=100,
        loss="bce",
        out_dir=f"runs/cifar10-v{version}",
    )


def _imagenet(arch: str, version: int) -> TrainConfig:
    v1_model, v2_model, size = _IMAGENET_ARCHS[arch]
    model = v1_model if version == 1 else v2_model
    assert model is not None
    if version == 1:
        optim = OptimConfig(name="adam", lr=2.5e-4, batch_size=256)
        sched = ScheduleConfig(name="step", step_epochs=30, gamma=0.1)
    else:
        optim = OptimConfig(name="adam", lr=1e-3, batch_size=256)
        sched = ScheduleConfig(name="cosine", min_lr=0.0, warmup_epochs=5.0)
    return TrainConfig(
        model=ModelConfig(model, 1000),
        data=DataConfig(dataset="imagenet", root="data/imagenet", image_size=size,
                        num_workers=8, eval_batch_size=128),
        optim=optim,
        schedule=sched,
        epochs=100,
        loss="bce",
        aux_weight=1.0,
        checkpoint_every_steps=2000,
        log_every_steps=100,
        out_dir=f"runs/imagenet-{arch}-v{version}",
    )


def _fmnist(standard: bool) -> TrainConfig:
    return TrainConfig(
        model=ModelConfig("standard_fmnist_bcos" if standard else "fmnist_bcos", 10),
        data=DataConfig(dataset="fashion-mnist", augment=False, eval_batch_size=500),
        optim=OptimConfig(name="adam", lr=1e-3, batch_size=128),
        schedule=ScheduleConfig(name="cosine", min_lr=1e-5, fit_time_limit=True),
        epochs=30,
        time_limit_min=10.0,
        loss="ce" if standard else "bce",
        eval_every_epochs=0,
        log_every_steps=50,
        out_dir="runs/fmnist-standard" if standard else "runs/fmnist",
    )


def _fmnist_bcosify() -> TrainConfig:
    cfg = _fmnist(False)
    cfg.model = ModelConfig("bcosified_fmnist_bcos", 10, options={
        "source_weights": "runs/fmnist-standard/checkpoint.pt"})
    # The B-cosification ImageNet configs use Adam 1e-4 over 90 epochs; in a budget of
    # minutes 1e-3 learns much faster (docs/bcosify.md: 70 % vs 45 % after 1 minute).
    cfg.optim.lr = 1e-3
    cfg.time_limit_min = 5.0
    cfg.out_dir = "runs/fmnist-bcosify"
    return cfg


def _fmnist_finetune(head_only: bool) -> TrainConfig:
    cfg = _fmnist(False)
    cfg.model.init_weights = "runs/fmnist/checkpoint.pt"
    cfg.model.reset_head = True
    cfg.data.train_per_class = 100
    cfg.trainable = "head" if head_only else "all"
    cfg.optim.lr = 1e-2 if head_only else 1e-3  # docs/training.md: 1e-3 / 1e-4 learned too slowly
    cfg.time_limit_min = None
    cfg.schedule.fit_time_limit = False
    cfg.log_every_steps = 10
    cfg.out_dir = "runs/fmnist-finetune-head" if head_only else "runs/fmnist-finetune"
    return cfg


def _folder() -> TrainConfig:
    return TrainConfig(
        model=ModelConfig(None),  # picked from the image size (resolve_config)
        data=DataConfig(dataset="folder", augment=True),
        optim=OptimConfig(name="adam", lr=1e-3, batch_size=16),
        schedule=ScheduleConfig(name="cosine", min_lr=1e-5),
        epochs=20,
        loss="bce",
        ema_decay=None,
        eval_every_epochs=1,
        out_dir=None,  # runs/<folder name>
    )


def _smoke() -> TrainConfig:
    return TrainConfig(
        model=ModelConfig("fmnist_bcos", options={"width": 8, "temperature": 100.0}),
        data=DataConfig(dataset="synthetic", synthetic_samples=128, synthetic_classes=4),
        optim=OptimConfig(name="adam", lr=3e-3, batch_size=32),
        schedule=ScheduleConfig(name="cosine", min_lr=1e-5),
        epochs=3,
        out_dir="runs/smoke",
        log_every_steps=1,
    )


PRESETS: dict[str, Callable[[], TrainConfig]] = {
    "cifar10-v1": lambda: _cifar10(1),
    "cifar10-v2": lambda: _cifar10(2),
    "fmnist": lambda: _fmnist(False),
    "fmnist-standard": lambda: _fmnist(True),
    "fmnist-bcosify": _fmnist_bcosify,
    "fmnist-finetune": lambda: _fmnist_finetune(False),
    "fmnist-finetune-head": lambda: _fmnist_finetune(True),
    "folder": _folder,
    "smoke": _smoke,
}
for _arch, (_v1, _v2, _) in _IMAGENET_ARCHS.items():
    PRESETS[f"imagenet-{_arch}-v1"] = (lambda a: lambda: _imagenet(a, 1))(_arch)
    if _v2 is not None:
        PRESETS[f"imagenet-{_arch}-v2"] = (lambda a: lambda: _imagenet(a, 2))(_arch)


#: The preset used for a data set when none is named (``bcosnet train --dataset D``).
DEFAULT_PRESETS = {"fashion-mnist": "fmnist", "cifar10": "cifar10-v1",
                   "imagenet": "imagenet-resnet50-v1", "folder": "folder", "synthetic": "smoke"}

#: The settings a preset fixes for its own data set; :func:`retarget` leaves them
#: to the new data when the preset is pointed at another data set.
DATA_SPECIFIC = ("model.num_classes", "data.root", "data.image_size", "data.channels",
                 "data.train_per_class", "out_dir")


def default_preset(dataset: str | None) -> str:
    """The preset for ``dataset`` (:data:`DEFAULT_PRESETS`; ``None``: Fashion-MNIST's)."""
    from ..data import canonical_dataset_name

    return DEFAULT_PRESETS[canonical_dataset_name(dataset or "fashion-mnist")]


def _get(cfg: Any, path: str) -> Any:
    for part in path.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _given(overrides: dict[str, Any], path: str) -> bool:
    d: Any = overrides
    for part in path.split("."):
        if not isinstance(d, dict) or part not in d:
            return False
        d = d[part]
    return True


def retarget(base: TrainConfig, overrides: dict[str, Any], source: str,
             tag: str | None = None) -> tuple[dict[str, Any], list[str]]:
    """``overrides`` for ``base`` (a preset's or a file's config, named ``source`` in
    the note), extended when they point it at another data set: each setting of
    :data:`DATA_SPECIFIC` that ``base`` sets and ``overrides`` leave alone becomes
    ``None`` (read off the new data) — but ``out_dir``, which becomes
    ``runs/<data folder>-<tag>`` when the new data have a root and a ``tag`` is
    given (so a fine-tuning run does not land in the folder's own run).  Returns the
    overrides and a note saying what was kept and what was left to the data (no
    note when the data set is the same)."""
    from ..data import canonical_dataset_name

    new = (overrides.get("data") or {}).get("dataset")
    if new is None or canonical_dataset_name(new) == canonical_dataset_name(base.data.dataset):
        return overrides, []
    out = copy.deepcopy(overrides)
    dropped = []
    for path in DATA_SPECIFIC:
        old = _get(base, path)
        if old is None or _given(overrides, path):
            continue
        d = out
        *head, last = path.split(".")
        for h in head:
            d = d.setdefault(h, {})
        root = (overrides.get("data") or {}).get("root")
        d[last] = (str(Path("runs") / f"{Path(root).resolve().name}-{tag}")
                   if path == "out_dir" and root and tag else None)
        dropped.append(f"{path} (was {old}" + (f", now {d[last]})" if d[last] else ")"))
    model = (overrides.get("model") or {}).get("name") or base.model.name
    kept = (f"its recipe: model {model}, optimiser ({base.optim.name}, lr "
            f"{base.optim.lr:g}), schedule and stopping rule")
    note = (f"{source} is made for {base.data.dataset}; on {new} data it keeps {kept}"
            + (f", and leaves to the data: {', '.join(dropped)}" if dropped else ""))
    return out, [note]


def list_presets() -> list[str]:
    """Sorted preset names."""
    return sorted(PRESETS)


def get_preset(name: str) -> TrainConfig:
    """A fresh :class:`TrainConfig` for the preset ``name``."""
    if name not in PRESETS:
        from .._utils.validate import did_you_mean

        raise ValueError(f"unknown preset {name!r}{did_you_mean(name, list(PRESETS))}; "
                         f"available: {', '.join(list_presets())}")
    return PRESETS[name]().validate()


# ----------------------------------------------------------------------------- config files
def config_from_dict(data: dict[str, Any], *, notes: list[str] | None = None) -> TrainConfig:
    """Build a :class:`TrainConfig` from a (nested) dict.  A ``preset`` key starts
    from that named preset and applies the rest on top (:func:`retarget` when the
    rest names another data set).  Notes on what was adapted go to ``notes`` when
    given, else they are warnings."""
    data = dict(data)
    preset = data.pop("preset", None)
    if preset is not None:
        base = get_preset(preset)
        data, said = retarget(base, data, f"preset {preset}", preset)
        if notes is not None:
            notes.extend(said)
        else:
            for n in said:
                warnings.warn(n, UserWarning, stacklevel=2)
        return merge_config(base, data)
    return _from_dict(TrainConfig, data).validate()


def load_config(path: str | os.PathLike, *, notes: list[str] | None = None) -> TrainConfig:
    """Read a YAML config file (see the module docstring for the layout); ``notes``
    as in :func:`config_from_dict`."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"config file {p} not found")
    try:
        with open(p, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ValueError(f"{p} is not valid YAML ({' '.join(str(e).split())}); fix the file "
                         "(see configs/ for examples)") from e
    if not isinstance(data, dict):
        raise ValueError(f"{p} must contain a mapping of config keys, got {type(data).__name__}")
    try:
        return config_from_dict(data, notes=notes)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{p}: {e}") from e
