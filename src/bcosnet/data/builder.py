"""Build train/test data sets by name, and deterministic per-sample augmentation.

``build_datasets(name, root, ...)`` maps a data-set name to its files and its
transform preset:

* ``"fashion-mnist"`` (alias ``"fmnist"``): see :func:`~bcosnet.data.fashion_mnist`.
* ``"cifar10"``: see :func:`~bcosnet.data.cifar10`.
* ``"imagenet"``: ``root/train`` and ``root/val`` image folders, ImageNet presets.
* ``"folder"``: ``root/train`` and ``root/val`` (or ``root/test``) image folders,
  resized evaluation transform at ``image_size``.
* ``"synthetic"``: :class:`~bcosnet.data.SyntheticDataset` (no files).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset

from .datasets import (
    DataNotFoundError,
    ImageFolderDataset,
    SyntheticDataset,
    cifar10,
    fashion_mnist,
)
from .transforms import IMAGENET_SIZE, cifar10_transform, fmnist_transform, imagenet_transform

__all__ = ["DATASETS", "DataSplits", "EpochSeededDataset", "build_datasets", "per_class_subset"]

DATASETS = ("fashion-mnist", "fmnist", "cifar10", "imagenet", "folder", "synthetic")


@dataclass
class DataSplits:
    """A train and a test split with their class names."""

    train: Dataset
    test: Dataset
    classes: list[str]
    in_channels: int
    image_size: tuple[int, int]


def _folder_split(root: Path, names: tuple[str, ...]) -> Path:
    for n in names:
        if (root / n).is_dir():
            return root / n
    raise DataNotFoundError(
        f"no {' or '.join(names)} folder in {root}. Expected the ImageNet layout: "
        f"{root}/train/<class>/<image> and {root}/val/<class>/<image>"
    )


def build_datasets(
    name: str,
    root: str | os.PathLike | None = None,
    *,
    image_size: int | None = None,
    augment: bool = True,
    download: bool = False,
    skip_corrupt: bool = False,
    synthetic_samples: int = 256,
    synthetic_classes: int = 4,
    synthetic_channels: int = 1,
) -> DataSplits:
    """Train and test data sets of ``name`` (one of :data:`DATASETS`) with the
    transform presets of SPEC §6 (``augment=False`` drops training augmentation)."""
    key = name.lower().replace("_", "-")
    if key in ("fashion-mnist", "fmnist"):
        tr = fashion_mnist(root, "train", fmnist_transform(True, augment), download=download)
        te = fashion_mnist(root, "test", None, download=download)
        return DataSplits(tr, te, tr.classes, 1, (28, 28))
    if key == "cifar10":
        if root is None:
            raise ValueError("CIFAR-10 needs a data root (--data DIR); add --download to fetch it")
        tr = cifar10(root, "train", cifar10_transform(augment), download=download)
        te = cifar10(root, "test", None, download=download)
        return DataSplits(tr, te, tr.classes, 3, (32, 32))
    if key in ("imagenet", "folder"):
        if root is None:
            raise ValueError(f"data set {name!r} needs a data root (--data DIR) holding "
                             f"train/ and val/ image folders")
        size = image_size or IMAGENET_SIZE
        r = Path(root)
        if not r.is_dir():
            raise DataNotFoundError(
                f"data root {r} does not exist. Expected the ImageNet layout: "
                f"{r}/train/<class>/<image> and {r}/val/<class>/<image>"
            )
        rand_aug = key == "imagenet"
        tr = ImageFolderDataset(
            _folder_split(r, ("train",)),
            imagenet_transform(True, size, rand_augment=rand_aug) if augment
            else imagenet_transform(False, size),
            skip_corrupt=skip_corrupt,
        )
        te = ImageFolderDataset(
            _folder_split(r, ("val", "test")),
            imagenet_transform(False, size),
            skip_corrupt=skip_corrupt,
        )
        if te.classes != tr.classes:
            raise ValueError(
                f"train and val folders in {r} have different classes "
                f"({len(tr.classes)} vs {len(te.classes)}); they must match"
            )
        return DataSplits(tr, te, tr.classes, 3, (size, size))
    if key == "synthetic":
        size = image_size or 28
        tr = SyntheticDataset(synthetic_samples, synthetic_classes, size, synthetic_channels,
                              seed=0)
        te = SyntheticDataset(max(synthetic_samples // 4, synthetic_classes), synthetic_classes,
                              size, synthetic_channels, seed=1)
        return DataSplits(tr, te, tr.classes, synthetic_channels, (size, size))
    raise ValueError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")


def per_class_subset(dataset: Dataset, per_class: int, *, seed: int = 0) -> Subset:
    """``per_class`` images of every class of ``dataset``, drawn at random (seeded):
    a small, balanced training set for fine-tuning experiments.

    The data set must list its labels in ``.targets`` (every bcosnet data set does).
    The indices are sorted, so the subset keeps the data set's order; the same
    ``(dataset, per_class, seed)`` always gives the same images, and a larger
    ``per_class`` with the same seed gives a superset.
    """
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise ValueError(f"per_class must be a positive int, got {per_class!r}")
    targets = getattr(dataset, "targets", None)
    if targets is None:
        raise TypeError(f"{type(dataset).__name__} has no .targets (its labels), which a "
                        f"per-class subset needs; give the data set a .targets list")
    labels = torch.as_tensor(list(targets) if not isinstance(targets, Tensor) else targets)
    g = torch.Generator().manual_seed(int(seed))
    chosen: list[Tensor] = []
    short: list[str] = []
    for c in labels.unique(sorted=True).tolist():
        idx = (labels == c).nonzero().flatten()
        if len(idx) < per_class:
            short.append(f"class {c}: {len(idx)}")
        idx = idx[torch.randperm(len(idx), generator=g)]
        chosen.append(idx[:per_class])
    if short:
        raise ValueError(f"per_class={per_class} asks for more images than these classes "
                         f"have: {', '.join(short)}; lower it (data.train_per_class)")
    return Subset(dataset, torch.cat(chosen).sort().values.tolist())


class EpochSeededDataset(Dataset):
    """Wrap a data set so that its random transforms depend only on
    ``(seed, epoch, index)``.

    Why: augmentation then does not depend on the number of processes, the
    number of loader workers or where a run was interrupted, so distributed runs
    match single-process runs and resumed runs match uninterrupted ones.  The
    global torch RNG state of the calling process is restored after each sample.
    (Transforms must draw from torch's RNG, as torchvision's do.)
    """

    def __init__(self, dataset: Dataset, seed: int = 0) -> None:
        self.dataset = dataset
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> Any:
        # Forward .classes, .targets, ... to the wrapped data set.
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        s = (self.seed * 1_000_003 + self.epoch) * 2_147_483_647 + int(index)
        state = torch.get_rng_state()
        # default_generator.manual_seed, not torch.manual_seed: the latter also
        # seeds every accelerator backend and costs ~0.2 ms per call.
        torch.default_generator.manual_seed(s % (2**63 - 1))
        try:
            return self.dataset[index]
        finally:
            torch.set_rng_state(state)
