"""Typed training configuration (dataclasses) and its YAML / dict mapping.

A :class:`TrainConfig` nests :class:`ModelConfig`, :class:`DataConfig`,
:class:`OptimConfig` and :class:`ScheduleConfig`.  YAML files and ``dict`` s map
onto it key by key (unknown keys are errors that list the valid ones)::

    preset: fmnist            # optional: start from a named preset
    epochs: 5
    model: {name: fmnist_bcos, options: {width: 16}}
    optim: {name: adam, lr: 1.0e-3, batch_size: 128}
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ModelConfig",
    "DataConfig",
    "OptimConfig",
    "ScheduleConfig",
    "TrainConfig",
    "config_to_dict",
    "merge_config",
]

LOSSES = ("bce", "bce_uniform", "ce")
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("cosine", "step", "constant")
PRECISIONS = ("auto", "fp32", "fp64", "bf16", "fp16")
TRAINABLE = ("all", "head")


@dataclass
class ModelConfig:
    """Which registered model to build (``bcosnet.create_model(name, num_classes, **options)``).

    ``name=None``: picked from the data (image folders only: see
    :func:`bcosnet.training.resolve_config`).  ``num_classes=None`` takes the data
    set's class count.  ``init_weights``: start
    from these weights instead of a random initialisation (fine-tuning; a
    checkpoint/safetensors/state-dict file, a URL or a registered weights name).
    Weights trained for another class count load everything but the classifier's
    last layer, which starts fresh (:func:`bcosnet.models.create_finetune_model`);
    ``reset_head=True`` starts it fresh in any case (a linear probe of the features).
    """

    name: str | None = "fmnist_bcos"
    num_classes: int | None = None
    options: dict[str, Any] = field(default_factory=dict)
    init_weights: str | None = None
    reset_head: bool = False


@dataclass
class DataConfig:
    """Data set (see :func:`bcosnet.data.build_datasets`) and loading options.

    ``image_size`` (px, square) and ``channels`` (1: grey, 3: RGB; image files are
    converted) of image folders: ``None`` reads them off the data
    (:func:`bcosnet.training.resolve_config` states the rules).
    """

    dataset: str = "fashion-mnist"
    root: str | None = None
    image_size: int | None = None
    augment: bool = True
    download: bool = False
    skip_corrupt: bool = False
    channels: int | None = None
    num_workers: int = 0
    synthetic_samples: int = 256
    synthetic_classes: int = 4
    synthetic_channels: int = 1
    eval_batch_size: int = 256
    #: train on this many images per class (seeded, :func:`bcosnet.data.per_class_subset`)
    train_per_class: int | None = None


@dataclass
class OptimConfig:
    """Optimiser.  ``batch_size`` is the *global* batch, split evenly over processes."""

    name: str = "adam"
    lr: float = 1e-3
    batch_size: int = 64
    weight_decay: float = 0.0
    momentum: float = 0.9
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    nesterov: bool = False


@dataclass
class ScheduleConfig:
    """Learning-rate schedule, per optimiser step, with linear warm-up.

    ``cosine``: from ``lr`` down to ``min_lr`` at the end of training;
    ``step``: multiply by ``gamma`` every ``step_epochs`` epochs;
    ``constant``.  Warm-up ramps linearly from ``warmup_start_factor·lr`` over
    ``warmup_epochs`` (fractions allowed).  ``fit_time_limit``: with a time limit,
    the cosine runs over ``max(step/total_steps, elapsed/time_limit)``, so the
    learning rate reaches ``min_lr`` when the time is up however fast the machine is.
    """

    name: str = "cosine"
    min_lr: float = 0.0
    warmup_epochs: float = 0.0
    warmup_start_factor: float = 0.01
    step_epochs: int = 30
    gamma: float = 0.1
    fit_time_limit: bool = False


@dataclass
class TrainConfig:
    """Everything a training run needs.

    Attributes (beyond the nested groups):
        epochs: number of passes over the training set.
        loss: ``"bce"`` (BCE on one-hot targets, the B-cos loss), ``"bce_uniform"``
            (off-labels 1/K), ``"ce"`` (softmax cross-entropy).
        aux_weight: weight λ of an auxiliary head's loss (Inception: 1).
        precision: ``"auto"`` (bf16/fp16 autocast on CUDA, fp32 on CPU), ``"fp32"``,
            ``"fp64"`` (model and data in float64: exact tests), ``"bf16"``, ``"fp16"``.
        grad_clip: max global gradient norm (``None``: off).
        ema_decay: exponential moving average of the weights (``None``: off);
            evaluation and exported weights then use the EMA.
        seed: seeds model init, data order and augmentation.
        out_dir: run folder (checkpoints, ``metrics.jsonl``, exported weights);
            ``None``: ``runs/<data set>`` (an image folder's own name).
        resume: continue from ``out_dir/checkpoint.pt`` if it exists.
        checkpoint_every_steps: also checkpoint every N steps (0: epoch ends only).
        eval_every_epochs: test-set evaluation every N epochs (0: at the end only).
        time_limit_min: stop cleanly (checkpoint + test evaluation) after this much
            training time in this invocation.
        max_steps: stop cleanly after this many optimiser steps in total.
        log_every_steps: metrics-log interval.
        threads: ``torch.set_num_threads`` (``None``: leave as is — torch's
            default, ``OMP_NUM_THREADS`` when set, else the machine's cores; the
            start-up summary says which).
        progress: tqdm progress bars.
        tensorboard: also log to TensorBoard (only if it is installed).
        device: ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"``...
        trainable: ``"all"`` (every parameter) or ``"head"`` (only
            ``model.get_classifier()``; the rest frozen, kept in eval mode so its
            BatchNorm statistics do not move) — with ``model.init_weights``, the
            two ways of fine-tuning.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    epochs: int = 10
    loss: str = "bce"
    aux_weight: float = 1.0
    precision: str = "auto"
    grad_clip: float | None = None
    ema_decay: float | None = None
    seed: int = 0
    out_dir: str | None = "runs/default"
    resume: bool = False
    checkpoint_every_steps: int = 0
    eval_every_epochs: int = 1
    time_limit_min: float | None = None
    max_steps: int | None = None
    log_every_steps: int = 50
    threads: int | None = None
    progress: bool = True
    tensorboard: bool = False
    device: str = "auto"
    trainable: str = "all"

    def validate(self) -> TrainConfig:
        """Raise ``ValueError`` naming the first invalid field; return self."""
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if self.optim.name not in OPTIMIZERS:
            raise ValueError(
                f"optim.name must be one of {', '.join(OPTIMIZERS)}, got {self.optim.name!r}"
            )
        if self.schedule.name not in SCHEDULES:
            raise ValueError(
                f"schedule.name must be one of {', '.join(SCHEDULES)}, got {self.schedule.name!r}"
            )
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
            )
        if self.optim.lr <= 0:
            raise ValueError(f"optim.lr must be positive, got {self.optim.lr}")
        if self.optim.batch_size < 1:
            raise ValueError(f"optim.batch_size must be >= 1, got {self.optim.batch_size}")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must lie in (0, 1), got {self.ema_decay}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"grad_clip must be positive, got {self.grad_clip}")
        if self.time_limit_min is not None and self.time_limit_min <= 0:
            raise ValueError(f"time_limit_min must be positive, got {self.time_limit_min}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.trainable not in TRAINABLE:
            raise ValueError(
                f"trainable must be one of {', '.join(TRAINABLE)}, got {self.trainable!r}"
            )
        if self.model.name is None and self.data.dataset.lower() != "folder":
            raise ValueError("model.name is not set: only image folders (data.dataset folder) "
                             "pick a model from the data; name one")
        if self.model.reset_head and not self.model.init_weights:
            raise ValueError("model.reset_head resets the classifier of loaded weights: set "
                             "model.init_weights too (CLI: --init-weights), or drop reset_head")
        if self.data.channels is not None:
            if self.data.channels not in (1, 3):
                raise ValueError(f"data.channels must be 1 (grey) or 3 (RGB), got "
                                 f"{self.data.channels}")
            if self.data.dataset.lower() not in ("folder", "imagenet"):
                raise ValueError(f"data.channels converts image files; data set "
                                 f"{self.data.dataset!r} has fixed channels: drop data.channels")
        if self.data.image_size is not None and self.data.image_size < 4:
            raise ValueError(f"data.image_size must be at least 4 px, got {self.data.image_size}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        if self.data.train_per_class is not None and self.data.train_per_class < 1:
            raise ValueError(f"data.train_per_class must be >= 1 (or null: all images), got "
                             f"{self.data.train_per_class}")
        return self


# ----------------------------------------------------------------------------- dict / YAML
def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain ``dict`` (tuples become lists) — YAML/JSON/checkpoint friendly."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        return v

    return plain(cfg)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check/convert ``value`` to the annotated type ``tp``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except (TypeError, ValueError) as e:
                errors.append(str(e))
        raise TypeError(errors[0] if errors else f"{where}: bad value {value!r}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise TypeError(f"{where} must be a mapping, got {type(value).__name__}")
        return _from_dict(tp, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"{where} must be a list, got {value!r}")
        args = typing.get_args(tp)
        if len(args) != len(value):
            raise ValueError(f"{where} must have {len(args)} entries, got {list(value)}")
        pairs = enumerate(zip(value, args, strict=True))
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in pairs)
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise TypeError(f"{where} must be a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise TypeError(f"{where} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{where} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            # YAML reads "1e-3" (no dot) as a string.
            if isinstance(value, str):
                try:
                    return float(value)
                except ValueError:
                    pass
            raise TypeError(f"{where} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise TypeError(f"{where} must be a string, got {value!r}")
        return value
    return value


def _from_dict(cls: type, data: dict[str, Any], where: str = "config") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        raise ValueError(
            f"unknown key(s) {', '.join(map(repr, unknown))} in {where}; valid keys: "
            f"{', '.join(names)}"
        )
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def merge_config(base: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    """``base`` with the (nested) keys of ``overrides`` replaced; ``model.options``
    are merged key by key."""
    d = config_to_dict(base)

    def merge(dst: dict[str, Any], src: dict[str, Any], path: str) -> None:
        for k, v in src.items():
            if isinstance(v, dict) and isinstance(dst.get(k), dict) and path + k != "model.options":
                merge(dst[k], v, f"{path}{k}.")
            elif isinstance(v, dict) and isinstance(dst.get(k), dict):
                dst[k] = {**dst[k], **v}
            else:
                dst[k] = v

    merge(d, overrides, "")
    return _from_dict(TrainConfig, d).validate()
