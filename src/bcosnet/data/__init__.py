"""Data sets and transform presets (images in [0, 1], class names kept with the data)."""

from .builder import DATASETS, DataSplits, EpochSeededDataset, build_datasets, per_class_subset
from .datasets import (
    CIFAR10_CLASSES,
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_DIRS,
    IMAGE_EXTENSIONS,
    CorruptImageError,
    DataNotFoundError,
    ImageFolderDataset,
    SyntheticDataset,
    TensorImageDataset,
    cifar10,
    fashion_mnist,
)
from .transforms import (
    IMAGENET_SIZE,
    INCEPTION_SIZE,
    cifar10_transform,
    fmnist_transform,
    imagenet_transform,
    to_unit_tensor,
)

__all__ = [
    "CIFAR10_CLASSES",
    "DATASETS",
    "DataNotFoundError",
    "DataSplits",
    "CorruptImageError",
    "EpochSeededDataset",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DIRS",
    "IMAGENET_SIZE",
    "IMAGE_EXTENSIONS",
    "INCEPTION_SIZE",
    "ImageFolderDataset",
    "SyntheticDataset",
    "TensorImageDataset",
    "build_datasets",
    "cifar10",
    "cifar10_transform",
    "fashion_mnist",
    "fmnist_transform",
    "imagenet_transform",
    "per_class_subset",
    "to_unit_tensor",
]
