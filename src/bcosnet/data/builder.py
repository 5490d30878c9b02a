"""Build train/test data sets by name, and deterministic per-sample augmentation.

``build_datasets(name, root, ...)`` maps a data-set name to its files and its
transform preset:

* ``"fashion-mnist"`` (alias ``"fmnist"``): see :func:`~bcosnet.data.fashion_mnist`.
* ``"cifar10"``: see :func:`~bcosnet.data.cifar10`.
* ``"imagenet"``: ``root/train`` and ``root/val`` image folders, ImageNet presets.
* ``"folder"``: ``root/train`` and ``root/val`` (or ``root/test``) image folders,
  resized evaluation transform at ``image_size`` (:func:`eval_preprocess`).
* ``"synthetic"``: :class:`~bcosnet.data.SyntheticDataset` (no files).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset

from .._utils.validate import check_int
from .datasets import (
    DataNotFoundError,
    ImageFolderDataset,
    SyntheticDataset,
    cifar10,
    fashion_mnist,
)
from .images import IMAGENET_CROP_FRACTION, Preprocess
from .transforms import IMAGENET_SIZE, cifar10_transform, fmnist_transform, imagenet_transform

__all__ = ["DATASETS", "DataSplits", "DatasetRecord", "EpochSeededDataset", "build_datasets",
           "canonical_dataset_name", "datasets_for", "eval_preprocess", "per_class_subset"]

DATASETS = ("fashion-mnist", "fmnist", "cifar10", "imagenet", "folder", "synthetic")
_ALIASES = {"fmnist": "fashion-mnist"}


def canonical_dataset_name(name: str) -> str:
    """``"FMNIST"`` / ``"fashion_mnist"`` → ``"fashion-mnist"``; ``ValueError`` for
    an unknown name."""
    key = str(name).lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    if key not in DATASETS:
        from .._utils.validate import did_you_mean

        raise ValueError(f"unknown data set {name!r}{did_you_mean(key, list(DATASETS))}; "
                         f"choose one of {', '.join(DATASETS)}")
    return key


@dataclass(frozen=True)
class DatasetRecord:
    """Which data set a model was trained and tested on: enough to build it again
    (:meth:`build`).  Part of a saved model's record (``model.model_info.dataset``).

    Attributes:
        name: a name of :data:`DATASETS` (canonical: ``"fashion-mnist"``, not ``"fmnist"``).
        root: the data root (an absolute path), or ``None`` (found by itself:
            Fashion-MNIST's system copy, generated data).
        train_split, test_split: the splits' names (for image folders: the
            sub-folders of ``root``, e.g. ``"train"`` and ``"val"``).
        options: what else :func:`build_datasets` needs (``channels`` of image
            folders, ``synthetic_*`` of generated data).
    """

    name: str
    root: str | None = None
    train_split: str = "train"
    test_split: str = "test"
    options: dict[str, Any] = field(default_factory=dict)

    def build(self, *, root: str | os.PathLike | None = None, image_size: int | None = None,
              augment: bool = False) -> DataSplits:
        """The data set again (``root`` replaces the recorded root; its test folder
        is then looked for as in :func:`build_datasets`)."""
        moved = root is not None and str(root) != self.root
        return build_datasets(self.name, root if root is not None else self.root,
                              image_size=image_size, augment=augment,
                              test_split=None if moved else self.test_split, **self.options)

    def describe(self) -> str:
        """E.g. ``"folder at /data/shapes (train/val)"``."""
        where = f" at {self.root}" if self.root else ""
        return f"{self.name}{where} ({self.train_split}/{self.test_split})"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "root": self.root, "train_split": self.train_split,
                "test_split": self.test_split, "options": dict(self.options)}

    @classmethod
    def from_dict(cls, d: Any) -> DatasetRecord:
        """The inverse of :meth:`to_dict`; ``ValueError`` naming a bad or unknown field."""
        from .._utils.validate import check_record_fields

        check_record_fields(d, ("name", "root", "train_split", "test_split", "options"),
                            "the data-set record")
        if not isinstance(d.get("name"), str):
            raise ValueError("the data-set record has no 'name'")
        opts = d.get("options") or {}
        if not isinstance(opts, dict) or set(opts) - set(_BUILD_OPTIONS):
            raise ValueError(f"bad data-set options {opts!r} in the record (known: "
                             f"{', '.join(_BUILD_OPTIONS)})")
        root = d.get("root")
        if root is not None and not isinstance(root, str):
            raise ValueError(f"the data-set record's root must be a path or null, got {root!r}")
        return cls(canonical_dataset_name(d["name"]), root,
                   str(d.get("train_split", "train")), str(d.get("test_split", "test")),
                   dict(opts))

    @classmethod
    def from_config(cls, data: dict[str, Any]) -> DatasetRecord:
        """From a training config's ``data`` section (checkpoints of bcosnet < 0.2
        record only that); the folders' test split is found when building."""
        name = canonical_dataset_name(data.get("dataset", "fashion-mnist"))
        root = data.get("root")
        opts: dict[str, Any] = {}
        if name == "synthetic":
            opts = {k: data[k] for k in ("synthetic_samples", "synthetic_classes",
                                         "synthetic_channels") if k in data}
        test = "test" if name not in ("imagenet", "folder") else _find_test_split(root)
        return cls(name, None if root is None else str(Path(root).resolve()), "train", test,
                   opts)


#: build_datasets options a :class:`DatasetRecord` keeps.
_BUILD_OPTIONS = ("channels", "synthetic_samples", "synthetic_classes", "synthetic_channels")
_FOLDER_TEST_SPLITS = ("val", "test")


def _find_test_split(root: Any) -> str:
    if root is not None:
        for n in _FOLDER_TEST_SPLITS:
            if (Path(root) / n).is_dir():
                return n
    return _FOLDER_TEST_SPLITS[0]


@dataclass
class DataSplits:
    """A train and a test split with their class names.

    ``preprocess``: the test split's transform as a record (what a model trained
    on these data is fed: size, resize rule); ``dataset``: how to build the data
    again.  Both ``None`` for data sets made by hand.
    """

    train: Dataset
    test: Dataset
    classes: list[str]
    in_channels: int
    image_size: tuple[int, int]
    dataset: DatasetRecord | None = None
    preprocess: Preprocess | None = None


def eval_preprocess(name: str, image_size: int | None = None) -> Preprocess:
    """The evaluation transform of data set ``name`` at ``image_size``: image
    folders (ImageNet, ``folder``) resize to ``size·256/224`` and cut the centre
    (default 224 px); Fashion-MNIST (28 px), CIFAR-10 (32 px) and generated data
    are used at their native size (the rule scales the shorter side to the size:
    nothing changes for their own images)."""
    key = canonical_dataset_name(name)
    if key in ("imagenet", "folder"):
        size = image_size or IMAGENET_SIZE
        return Preprocess((size, size), "crop", IMAGENET_CROP_FRACTION)
    native = {"fashion-mnist": 28, "cifar10": 32}.get(key, image_size or 28)
    return Preprocess((native, native), "crop", 1.0)


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
    channels: int | None = None,
    test_split: str | None = None,
    synthetic_samples: int = 256,
    synthetic_classes: int = 4,
    synthetic_channels: int = 1,
) -> DataSplits:
    """Train and test data sets of ``name`` (one of :data:`DATASETS`) with their
    transform presets (``augment=False`` drops training augmentation).

    ``channels`` (image folders): 3 (RGB, default) or 1 (grey; files are
    converted).  ``test_split`` (image folders): the test sub-folder (default:
    ``val``, else ``test``).  The result records how it was built
    (``.dataset``) and the test transform (``.preprocess``).
    """
    key = canonical_dataset_name(name)
    if key == "fashion-mnist":
        tr = fashion_mnist(root, "train", fmnist_transform(True, augment), download=download)
        te = fashion_mnist(root, "test", None, download=download)
        rec = DatasetRecord(key, None if root is None else str(Path(root).resolve()))
        return DataSplits(tr, te, tr.classes, 1, (28, 28), rec, eval_preprocess(key))
    if key == "cifar10":
        if root is None:
            raise ValueError("CIFAR-10 needs a data root (--data DIR); add --download to fetch it")
        tr = cifar10(root, "train", cifar10_transform(augment), download=download)
        te = cifar10(root, "test", None, download=download)
        rec = DatasetRecord(key, str(Path(root).resolve()))
        return DataSplits(tr, te, tr.classes, 3, (32, 32), rec, eval_preprocess(key))
    if key in ("imagenet", "folder"):
        if root is None:
            raise ValueError(f"data set {name!r} needs a data root (--data DIR) holding "
                             f"train/ and val/ image folders")
        if channels not in (None, 1, 3):
            raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")
        ch = channels or 3
        pre = eval_preprocess(key, image_size)
        size = pre.size[0]
        r = Path(root)
        if not r.is_dir():
            raise DataNotFoundError(
                f"data root {r} does not exist. Expected the ImageNet layout: "
                f"{r}/train/<class>/<image> and {r}/val/<class>/<image>"
            )
        rand_aug = key == "imagenet"
        tr = ImageFolderDataset(
            _folder_split(r, ("train",)),
            imagenet_transform(True, size, rand_augment=rand_aug) if augment else pre,
            skip_corrupt=skip_corrupt, grey=ch == 1,
        )
        te_dir = _folder_split(r, (test_split,) if test_split else _FOLDER_TEST_SPLITS)
        te = ImageFolderDataset(te_dir, pre, skip_corrupt=skip_corrupt, grey=ch == 1)
        if te.classes != tr.classes:
            raise ValueError(
                f"train and {te_dir.name} folders in {r} have different classes "
                f"({len(tr.classes)} vs {len(te.classes)}); they must match"
            )
        rec = DatasetRecord(key, str(r.resolve()), "train", te_dir.name,
                            {"channels": ch} if ch != 3 else {})
        return DataSplits(tr, te, tr.classes, ch, pre.size, rec, pre)
    assert key == "synthetic"
    size = image_size or 28
    tr = SyntheticDataset(synthetic_samples, synthetic_classes, size, synthetic_channels, seed=0)
    te = SyntheticDataset(max(synthetic_samples // 4, synthetic_classes), synthetic_classes,
                          size, synthetic_channels, seed=1)
    rec = DatasetRecord(key, None, options={"synthetic_samples": synthetic_samples,
                                            "synthetic_classes": synthetic_classes,
                                            "synthetic_channels": synthetic_channels})
    return DataSplits(tr, te, tr.classes, synthetic_channels, (size, size), rec,
                      eval_preprocess(key, size))


def datasets_for(
    model: Any,
    *,
    dataset: str | None = None,
    root: str | os.PathLike | None = None,
    image_size: int | None = None,
    augment: bool = False,
) -> DataSplits:
    """The data set a model was trained and tested on, built again from its record
    (``model.model_info.dataset``), with the test transform it was evaluated with
    (``model.model_info.preprocess``).

    Args:
        model: a model built by :func:`bcosnet.create_model` /
            :func:`bcosnet.training.load_checkpoint_model`, or its ``ModelInfo``.
        dataset: another data set than the recorded one (needed when the model
            records none: weights of bcosnet 0.1 exports, plain state dicts).
        root: where the data set is now, when not at the recorded root.
        image_size: feed another size than the recorded one (a warning names the
            trained size).
        augment: training augmentation on the train split (default: off: the
            train split is then fed as the test split is).

    Raises ``ValueError`` when no data set is recorded nor given, or when the
    data's channel count is not the model's.
    """
    from dataclasses import replace

    from .datasets import TensorImageDataset

    info = getattr(model, "model_info", model)
    rec: DatasetRecord | None = getattr(info, "dataset", None)
    pre: Preprocess | None = getattr(info, "preprocess", None)
    if dataset is None and rec is None:
        names = ", ".join(d for d in DATASETS if d not in _ALIASES)
        raise ValueError(f"the model ({info.name}) records no data set; pass dataset=NAME "
                         f"(one of {names}) and root=DIR where it needs one")
    if dataset is not None and (rec is None or canonical_dataset_name(dataset) != rec.name):
        if rec is not None:
            warnings.warn(f"the model was trained on {rec.describe()}; using dataset={dataset}",
                          UserWarning, stacklevel=2)
        rec = DatasetRecord(canonical_dataset_name(dataset), None)
        if pre is not None and rec.name in ("imagenet", "folder"):
            pre = None  # another data set's images: its own rule at the model's size
    assert rec is not None
    size = pre.size[0] if pre is not None else (
        info.image_size[0] if rec.name in ("imagenet", "folder", "synthetic") else None)
    if image_size is not None and pre is not None and (image_size, image_size) != pre.size:
        warnings.warn(f"the model was trained on {pre.size[0]}×{pre.size[1]} images; feeding "
                      f"{image_size}×{image_size} (image_size={image_size})", UserWarning,
                      stacklevel=2)
    if image_size is not None:
        size = image_size
    try:
        splits = rec.build(root=root, image_size=size, augment=augment)
    except DataNotFoundError as e:
        if root is None and rec.root is not None:
            raise DataNotFoundError(f"{e} (the root recorded with the model); pass root=DIR "
                                    f"where the data set is now") from e
        raise
    if splits.in_channels != info.in_channels:
        raise ValueError(
            f"data set {rec.name!r} has {splits.in_channels}-channel images but the model "
            f"takes {info.in_channels}; choose a data set with {info.in_channels}-channel "
            f"images")
    if pre is not None:
        want = replace(pre, size=(size, size)) if size is not None else pre
        for part in (splits.test, *(() if augment else (splits.train,))):
            if isinstance(part, ImageFolderDataset):
                part.transform = want
            elif isinstance(part, TensorImageDataset) and want.size != splits.image_size:
                part.transform = want
        splits.preprocess = want
    return splits


def per_class_subset(dataset: Dataset, per_class: int, *, seed: int = 0) -> Subset:
    """``per_class`` images of every class of ``dataset``, drawn at random (seeded):
    a small, balanced training set for fine-tuning experiments.

    The data set must list its labels in ``.targets`` (every bcosnet data set does).
    The indices are sorted, so the subset keeps the data set's order; the same
    ``(dataset, per_class, seed)`` always gives the same images, and a larger
    ``per_class`` with the same seed gives a superset.
    """
    check_int("per_class", per_class, 1)
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
