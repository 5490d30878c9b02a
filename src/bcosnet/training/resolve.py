"""Settings left to the data: the rules that fill them, stated.

A :class:`~bcosnet.training.TrainConfig` may leave settings open (``None``); for an
image folder (``data.dataset: folder``) :func:`resolve_config` reads them off the
data — :func:`bcosnet.data.survey_image_folder` lists every file and decodes an
evenly spread sample of 100 training images — and says for each what it chose and
why.  The rules:

==================  ==========================================================
classes             the sub-folders of ``train/`` (``model.num_classes``, when
                    given, must match them)
``data.channels``   1 (grey) when every sampled image is grey (a grey file, or
                    RGB with R = G = B), else 3 (RGB)
``model.name``      :data:`SMALL_MODEL` (the compact B-cos network) when the
                    images' median shorter side is at most
                    :data:`SMALL_MODEL_MAX_SIZE` px, else :data:`LARGE_MODEL`;
                    with ``model.init_weights``, the model those weights record
``data.image_size`` the sampled images' median shorter side, capped at
                    :data:`MAX_IMAGE_SIZE` px and rounded down to a multiple of
                    4 (of 32 for models that need at least 32 px: the ResNets),
                    at least the model's minimum
``out_dir``         ``runs/<the data folder's name>`` (other data sets:
                    ``runs/<data set>``)
==================  ==========================================================

A model built from scratch takes the data's channel count (``in_channels``), or
the images are converted to its ``in_channels`` option when one is given; a
model started from ``model.init_weights`` keeps the channels of those weights,
and images of another channel count are an error that names ``data.channels``
(convert them: 1 = grey, 3 = RGB).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from .config import TrainConfig

__all__ = ["LARGE_MODEL", "MAX_IMAGE_SIZE", "SMALL_MODEL", "SMALL_MODEL_MAX_SIZE",
           "resolve_config"]

#: The model picked for small images: the compact B-cos network (5 B-cos convs,
#: 70 k parameters at 3 channels; any size of at least 4 px).
SMALL_MODEL = "fmnist_bcos"
#: The largest median image side (px) that gets :data:`SMALL_MODEL`.
SMALL_MODEL_MAX_SIZE = 96
#: The model picked for larger images: the B-cos v2 ResNet-18.
LARGE_MODEL = "resnet18_v2"
#: The largest image size the rule picks (px).
MAX_IMAGE_SIZE = 224


def _size_multiple(min_side: int) -> int:
    return 32 if min_side >= 32 else 4


def inferred_image_size(median_side: int, model: str) -> int:
    """The image-size rule: ``median_side`` capped at :data:`MAX_IMAGE_SIZE`,
    rounded down to a multiple of 4 (of 32 for models needing ≥ 32 px), at least
    the model's minimum size."""
    from ..models import model_info

    low = max(model_info(model).min_size)
    m = _size_multiple(low)
    size = min(median_side, MAX_IMAGE_SIZE) // m * m
    return max(size, low, m)


def _weights_record(init_weights: str) -> Any:
    """The model record saved with ``init_weights`` (``None``: a plain state dict)."""
    from ..models import read_weights

    return read_weights(init_weights).record


def resolve_config(config: TrainConfig, *, survey: bool = True) -> tuple[TrainConfig, list[str]]:
    """Fill the settings ``config`` leaves to the data; return the filled, validated
    config (a copy) and one line per filled setting saying what and why.

    Only image folders are surveyed (the rules are in the module docstring); for
    other data sets only ``out_dir`` may be open.  ``survey=False`` (the trainer
    was handed its data sets) leaves the data settings as they are.

    Raises:
        ValueError: a setting contradicts the data (``model.num_classes`` against the
            class folders, ``init_weights`` of another channel count than
            ``data.channels``), or a size below the model's minimum.
        DataNotFoundError: the folder is missing or empty.
    """
    cfg = copy.deepcopy(config)
    notes: list[str] = []
    d = cfg.data
    if survey and d.dataset.lower() == "folder":
        _resolve_folder(cfg, notes)
    if cfg.out_dir is None:
        name = Path(d.root).resolve().name if d.dataset.lower() == "folder" and d.root else (
            d.dataset.lower())
        cfg.out_dir = str(Path("runs") / name)
        notes.append(f"output folder: {cfg.out_dir} (named after the data; out_dir / --out-dir "
                     "to choose)")
    return cfg.validate(), notes


def _resolve_folder(cfg: TrainConfig, notes: list[str]) -> None:
    from ..data import survey_image_folder
    from ..models import model_info

    d, m = cfg.data, cfg.model
    if d.root is None:
        raise ValueError("data set 'folder' needs a data root (data.root) holding train/ and "
                         "val/ image folders")
    s = survey_image_folder(d.root)
    k = len(s.classes)
    if m.num_classes is not None and m.num_classes != k:
        raise ValueError(
            f"the data in {d.root} have {k} classes ({_names(s.classes)}), model.num_classes "
            f"is {m.num_classes}: drop model.num_classes (the class count comes from the data) "
            f"or point data.root at the folder meant")
    record = _weights_record(m.init_weights) if m.init_weights else None
    if m.name is None:
        if m.init_weights:
            if record is None:
                raise ValueError(f"model.init_weights {m.init_weights} records no model name "
                                 "(a plain state dict): name its model (model.name)")
            m.name = record.name
            notes.append(f"model: {m.name} (recorded in {m.init_weights})")
        else:
            side = s.median_short_side
            m.name = SMALL_MODEL if side <= SMALL_MODEL_MAX_SIZE else LARGE_MODEL
            notes.append(
                f"model: {m.name} (median shorter side {side} px "
                f"{'≤' if side <= SMALL_MODEL_MAX_SIZE else '>'} {SMALL_MODEL_MAX_SIZE}: "
                f"{SMALL_MODEL} up to {SMALL_MODEL_MAX_SIZE} px, {LARGE_MODEL} above; "
                f"model.name / --model to choose)")
    info = model_info(m.name)
    given = m.options.get("in_channels")
    if d.channels is None and given is not None and not m.init_weights:
        d.channels = given
        notes.append(f"channels: {given} (the model's in_channels option; images converted)")
    if given is not None and given != d.channels and not m.init_weights:
        raise ValueError(f"the model option in_channels={given} and data.channels={d.channels} "
                         f"disagree: drop one (the model takes the images' channels)")
    if d.channels is None:
        d.channels = s.channels
        kind = "grey" if s.channels == 1 else "colour"
        notes.append(f"channels: {s.channels} ({kind}: {s.grey} of {s.sampled} sampled images "
                     f"grey; all grey → 1, else 3; data.channels / --image-channels to convert)")
    if m.init_weights:
        want = (record.in_channels if record is not None
                else m.options.get("in_channels", info.in_channels))
        if want != d.channels:
            have = "grey (1 channel)" if d.channels == 1 else "colour (3 channels)"
            raise ValueError(
                f"model.init_weights {m.init_weights} is a {want}-channel model and the images "
                f"are {have}: set data.channels {want} to convert them "
                f"({'grey' if want == 1 else 'RGB'})")
    elif m.options.get("in_channels", info.in_channels) != d.channels:
        m.options = {**m.options, "in_channels": d.channels}
    if d.image_size is None:
        side = s.median_short_side
        d.image_size = inferred_image_size(side, m.name)
        notes.append(
            f"image size: {d.image_size} px (median shorter side of {s.sampled} sampled images "
            f"{side} px, capped at {MAX_IMAGE_SIZE}, rounded down to a multiple of "
            f"{_size_multiple(max(info.min_size))}; data.image_size / --image-size to choose)")
    low = max(info.min_size)
    if d.image_size < low:
        raise ValueError(f"{m.name} needs images of at least {low} px, data.image_size is "
                         f"{d.image_size}: raise data.image_size or choose a model for small "
                         f"images ({SMALL_MODEL})")
    if s.unreadable:
        notes.append(f"unreadable images in the sample (skipped by the survey): "
                     f"{', '.join(s.unreadable[:5])}{' ...' if len(s.unreadable) > 5 else ''}")


def _names(classes: Any, limit: int = 8) -> str:
    names = list(classes)
    return ", ".join(names[:limit]) + (f", ... ({len(names)} in all)" if len(names) > limit else "")
