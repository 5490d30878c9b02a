"""Transform presets (docs/protocol.md §7, "Images").  All end with images as C×H×W float in [0, 1];
no mean/std normalisation (models encode their inputs themselves).

* CIFAR-10: horizontal flip + random crop with 4 px zero padding.
* ImageNet: random resized crop, flip, RandAugment (n = 2, m = 9) at 224 px
  (299 for Inception); evaluation: resize to ``size·256/224`` + centre crop.
* Fashion-MNIST: horizontal flip + random crop with 2 px padding (optional).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torchvision import transforms as T

__all__ = [
    "cifar10_transform",
    "imagenet_transform",
    "fmnist_transform",
    "to_unit_tensor",
    "IMAGENET_SIZE",
    "INCEPTION_SIZE",
]

IMAGENET_SIZE = 224
INCEPTION_SIZE = 299


def to_unit_tensor(img: Any) -> Tensor:
    """PIL image or uint8/float tensor → C×H×W float tensor in [0, 1]."""
    if isinstance(img, Tensor):
        return img.float().div(255.0) if img.dtype == torch.uint8 else img.float()
    return T.functional.to_tensor(img)


def cifar10_transform(train: bool) -> Callable[[Tensor], Tensor] | None:
    """CIFAR-10 v1: flip + 4-px padded random crop (train); identity (test)."""
    if not train:
        return None
    return T.Compose([T.RandomHorizontalFlip(), T.RandomCrop(32, padding=4)])


def fmnist_transform(train: bool, augment: bool = True) -> Callable[[Tensor], Tensor] | None:
    """Fashion-MNIST: flip + 2-px padded random crop (train, if ``augment``)."""
    if not (train and augment):
        return None
    return T.Compose([T.RandomHorizontalFlip(), T.RandomCrop(28, padding=2)])


def imagenet_transform(
    train: bool,
    size: int = IMAGENET_SIZE,
    *,
    rand_augment: bool = True,
    grey: bool = False,
) -> Callable[[Any], Tensor]:
    """ImageNet: RandomResizedCrop(size) + flip + RandAugment(2, 9) for training;
    resize to ``round(size·256/224)`` + centre crop for evaluation (a
    :class:`~bcosnet.data.Preprocess`, the rule a trained model records).  Takes
    PIL images."""
    from .images import IMAGENET_CROP_FRACTION, Preprocess

    if size < 8:
        raise ValueError(f"image size must be at least 8 px, got {size}")
    if not train:
        pre = Preprocess((size, size), "crop", IMAGENET_CROP_FRACTION)
        return T.Compose([T.Grayscale(1), pre]) if grey else pre
    ops: list[Any] = [T.RandomResizedCrop(size), T.RandomHorizontalFlip()]
    if rand_augment:
        ops.append(T.RandAugment(num_ops=2, magnitude=9))
    if grey:
        ops.append(T.Grayscale(1))
    ops.append(T.ToTensor())
    return T.Compose(ops)
