"""What an image folder holds: classes, image counts, grey or colour, image sizes.

:func:`survey_image_folder` reads the folder layout (``root/train/<class>/...``
and ``root/val/<class>/...`` or ``root/test/<class>/...``) and decodes an evenly
spread sample of the training images.  The trainer uses it to fill the settings
left to the data (:func:`bcosnet.training.resolve_config`); its numbers go into
the start-up summary.
"""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._utils.validate import check_int
from .builder import _find_test_split, _folder_split
from .datasets import ImageFolderDataset
from .images import CorruptImageError, open_image

__all__ = ["FolderSurvey", "survey_image_folder"]


@dataclass(frozen=True)
class FolderSurvey:
    """An image folder's contents (:func:`survey_image_folder`).

    Attributes:
        root: the data root.
        classes: class names (the sorted sub-folders of ``train/``).
        train_counts, test_counts: images per class in ``train/`` and the test split.
        test_split: the test sub-folder's name (``"val"`` or ``"test"``).
        sampled: training images decoded for the survey.
        grey: how many of them are grey (a grey file, or RGB with R = G = B everywhere).
        short_sides: their shorter sides, in pixels.
        unreadable: sampled files that could not be decoded (skipped).
    """

    root: Path
    classes: tuple[str, ...]
    train_counts: tuple[int, ...]
    test_split: str
    test_counts: tuple[int, ...]
    sampled: int
    grey: int
    short_sides: tuple[int, ...]
    unreadable: tuple[str, ...] = ()

    @property
    def channels(self) -> int:
        """1 when every sampled image is grey, else 3."""
        return 1 if self.sampled and self.grey == self.sampled else 3

    @property
    def median_short_side(self) -> int:
        """Median shorter side of the sampled images (px; the lower median)."""
        return int(statistics.median_low(self.short_sides)) if self.short_sides else 0


def _is_grey(img) -> bool:  # noqa: ANN001 - a PIL image
    if img.mode == "L":
        return True
    a = np.asarray(img)
    return bool((a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all())


def survey_image_folder(root: str | os.PathLike, *, sample: int = 100) -> FolderSurvey:
    """Survey the image folder ``root`` (``train/`` and ``val/`` or ``test/``).

    Every file is listed (counts per class); ``sample`` training images, evenly
    spread over the sorted file list (so over every class), are decoded with
    :func:`bcosnet.data.open_image` for their size and colour.

    Raises:
        DataNotFoundError: no ``train/`` or test folder, no class folders, no images.
        ValueError: the train and test folders have different classes.
    """
    check_int("sample", sample, 1)
    r = Path(root)
    train = ImageFolderDataset(_folder_split(r, ("train",)))
    test_name = _find_test_split(r)
    test = ImageFolderDataset(_folder_split(r, (test_name,)))
    if test.classes != train.classes:
        only_train = sorted(set(train.classes) - set(test.classes))
        only_test = sorted(set(test.classes) - set(train.classes))
        raise ValueError(
            f"train and {test_name} folders in {r} have different classes (only in train: "
            f"{', '.join(only_train) or '-'}; only in {test_name}: {', '.join(only_test) or '-'})"
            f"; they must match")
    n = len(train.samples)
    k = min(sample, n)
    picks = sorted({round(i * (n - 1) / max(k - 1, 1)) for i in range(k)})
    grey, sides, bad = 0, [], []
    for i in picks:
        path = train.samples[i][0]
        try:
            img = open_image(path, None)
        except (CorruptImageError, OSError):
            bad.append(path)
            continue
        grey += _is_grey(img)
        sides.append(min(img.size))

    def counts(ds: ImageFolderDataset) -> tuple[int, ...]:
        return tuple(int(c) for c in np.bincount(ds.targets, minlength=len(ds.classes)))

    return FolderSurvey(r, tuple(train.classes), counts(train), test_name, counts(test),
                        len(sides), grey, tuple(sides), tuple(bad))
