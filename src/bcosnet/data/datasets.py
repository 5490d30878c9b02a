"""Image-classification data sets: image folders (ImageNet layout), CIFAR-10,
Fashion-MNIST and a small generated set for tests.

Every data set yields ``(image, label)`` with ``image`` a float tensor C×H×W in
[0, 1] (after its transform) and ``label`` an int, and keeps its class names in
``.classes``.  No mean/std normalisation: B-cos models encode images themselves.
"""

from __future__ import annotations

import gzip
import os
import pickle
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from .images import CorruptImageError, _pil_to_tensor, open_image

__all__ = [
    "DataNotFoundError",
    "CorruptImageError",
    "TensorImageDataset",
    "ImageFolderDataset",
    "SyntheticDataset",
    "fashion_mnist",
    "cifar10",
    "FASHION_MNIST_CLASSES",
    "CIFAR10_CLASSES",
    "FASHION_MNIST_DIRS",
    "IMAGE_EXTENSIONS",
]

Transform = Callable[[Any], Tensor]

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
#: Where Fashion-MNIST is looked for when no root is given (Debian: ``dataset-fashion-mnist``).
FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

_FMNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
_CIFAR_MD5 = "c58f30108f718f92721af3b95e74349a"
_CIFAR_DIR = "cifar-10-batches-py"


class DataNotFoundError(FileNotFoundError):
    """The data set's files were not found; the message lists where they were
    looked for and how to get them."""


def _check_split(split: str, allowed: Sequence[str]) -> str:
    if split not in allowed:
        raise ValueError(f"split must be one of {', '.join(map(repr, allowed))}, got {split!r}")
    return split


# ----------------------------------------------------------------------------- in-memory sets
class TensorImageDataset(Dataset):
    """Images held in memory as a uint8 (0–255) or float ([0, 1]) tensor N×C×H×W.

    ``transform`` receives the C×H×W float image in [0, 1].
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor | Sequence[int],
        classes: Sequence[str],
        transform: Transform | None = None,
    ) -> None:
        if images.dim() != 4:
            raise ValueError(f"images must be N×C×H×W, got shape {tuple(images.shape)}")
        labels = torch.as_tensor(labels, dtype=torch.long)
        if labels.shape != (images.shape[0],):
            raise ValueError(
                f"need one label per image: {images.shape[0]} images, labels {tuple(labels.shape)}"
            )
        if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
            raise ValueError(f"labels must lie in [0, {len(classes)}), got {labels.min()}..."
                             f"{labels.max()}")
        self.images = images
        self.targets = labels
        self.classes = list(classes)
        self.transform = transform

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        img = self.images[index]
        img = img.float().div_(255.0) if img.dtype == torch.uint8 else img
        if self.transform is not None:
            img = self.transform(img)
        return img, int(self.targets[index])


class SyntheticDataset(TensorImageDataset):
    """A small generated, learnable data set (for tests and smoke runs).

    Each class has a smooth random black-and-white template (a random 4×4 binary
    pattern, bilinearly upsampled); an image is its class template plus noise,
    clipped to [0, 1].  Fully determined by ``seed``.

    Args:
        num_samples: number of images.
        num_classes: number of classes.
        image_size: H = W in pixels.
        channels: 1 (grey) or 3 (RGB).
        noise: standard deviation of the per-pixel noise.
        seed: generator seed (the split's seed: use different seeds for train/test).
    """

    def __init__(
        self,
        num_samples: int = 256,
        num_classes: int = 4,
        image_size: int = 28,
        channels: int = 1,
        *,
        noise: float = 0.15,
        seed: int = 0,
        transform: Transform | None = None,
    ) -> None:
        if num_samples < 1 or num_classes < 1 or image_size < 1 or channels < 1:
            raise ValueError("num_samples, num_classes, image_size and channels must be positive")
        g = torch.Generator().manual_seed(1234)  # templates shared by all splits
        coarse = (torch.rand(num_classes, channels, 4, 4, generator=g) > 0.5).float()
        templates = torch.nn.functional.interpolate(
            coarse, size=(image_size, image_size), mode="bilinear", align_corners=False
        )
        g.manual_seed(int(seed))
        labels = torch.arange(num_samples) % num_classes
        labels = labels[torch.randperm(num_samples, generator=g)]
        imgs = templates[labels] + noise * torch.randn(
            num_samples, channels, image_size, image_size, generator=g
        )
        super().__init__(
            imgs.clamp_(0, 1), labels, [f"class_{i}" for i in range(num_classes)], transform
        )


# ----------------------------------------------------------------------------- Fashion-MNIST
def _read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) as a numpy array."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:  # type: ignore[operator]
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file (bad magic number)")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims))
    if len(data) - offset != expected:
        raise ValueError(
            f"{path} is truncated or corrupt: header says {dims} ({expected} bytes), "
            f"found {len(data) - offset} bytes — delete it and get the data again"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)


def _find_file(dirs: Sequence[Path], stem: str) -> Path | None:
    for d in dirs:
        for name in (stem + ".gz", stem):
            if (d / name).is_file():
                return d / name
    return None


def _fmnist_candidates(root: str | os.PathLike | None) -> list[Path]:
    dirs: list[Path] = []
    if root is not None:
        r = Path(root)
        dirs += [r, r / "FashionMNIST" / "raw", r / "fashion-mnist"]
    env = os.environ.get("BCOSNET_FASHION_MNIST")
    if env:
        dirs.append(Path(env))
    dirs += [Path(d) for d in FASHION_MNIST_DIRS]
    return dirs


def fashion_mnist(
    root: str | os.PathLike | None = None,
    split: str = "train",
    transform: Transform | None = None,
    *,
    download: bool = False,
) -> TensorImageDataset:
    """Fashion-MNIST (60 000 train / 10 000 test grey 28×28 images, 10 classes).

    Looked for, in order, in ``root``, ``root/FashionMNIST/raw`` (torchvision's
    layout), ``$BCOSNET_FASHION_MNIST`` and ``/usr/share/datasets/fashion-mnist``
    (Debian package ``dataset-fashion-mnist``).  With ``download=True`` and no
    local copy, torchvision downloads it into ``root``.
    """
    _check_split(split, ("train", "test"))
    img_stem, lbl_stem = _FMNIST_FILES[split]
    dirs = _fmnist_candidates(root)
    img_path, lbl_path = _find_file(dirs, img_stem), _find_file(dirs, lbl_stem)
    if (img_path is None or lbl_path is None) and download:
        if root is None:
            raise ValueError("download=True needs a root directory to download into")
        from torchvision.datasets import FashionMNIST

        FashionMNIST(str(root), train=split == "train", download=True)
        img_path, lbl_path = _find_file(dirs, img_stem), _find_file(dirs, lbl_stem)
    if img_path is None or lbl_path is None:
        looked = "\n  ".join(str(d) for d in dirs)
        raise DataNotFoundError(
            f"Fashion-MNIST {split} files ({img_stem}[.gz], {lbl_stem}[.gz]) not found. "
            f"Looked in:\n  {looked}\nGet them with `apt-get install dataset-fashion-mnist` "
            f"(installs to {FASHION_MNIST_DIRS[0]}), or pass a root directory together with "
            f"download=True (CLI: --download) to fetch them with torchvision."
        )
    images = torch.from_numpy(_read_idx(img_path).copy()).unsqueeze(1)
    labels = torch.from_numpy(_read_idx(lbl_path).astype(np.int64))
    if images.shape[1:] != (1, 28, 28) or len(labels) != len(images):
        raise ValueError(
            f"unexpected Fashion-MNIST contents in {img_path.parent}: images "
            f"{tuple(images.shape)}, labels {tuple(labels.shape)}"
        )
    return TensorImageDataset(images, labels, FASHION_MNIST_CLASSES, transform)


# ----------------------------------------------------------------------------- CIFAR-10
class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler for the CIFAR-10 batch files that only builds numpy arrays and
    plain containers (no arbitrary code)."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR-10 file")


def _load_cifar_batch(path: Path) -> tuple[np.ndarray, list[int]]:
    try:
        with open(path, "rb") as f:
            entry = _ArrayUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError) as e:
        raise ValueError(f"{path} is not a valid CIFAR-10 batch file ({e}); delete the "
                         f"{_CIFAR_DIR} folder and download it again") from e
    data = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    labels = list(entry.get("labels", entry.get("fine_labels", [])))
    return data, labels


def cifar10(
    root: str | os.PathLike,
    split: str = "train",
    transform: Transform | None = None,
    *,
    download: bool = False,
) -> TensorImageDataset:
    """CIFAR-10 (50 000 train / 10 000 test RGB 32×32 images) from the python
    release (``root/cifar-10-batches-py/data_batch_{1..5}``, ``test_batch``).

    ``download=True`` fetches and checks the archive (``download_and_extract_archive``)
    when the folder is missing.
    """
    _check_split(split, ("train", "test"))
    base = Path(root) / _CIFAR_DIR
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    missing = [n for n in names if not (base / n).is_file()]
    if missing and download:
        from torchvision.datasets.utils import download_and_extract_archive

        download_and_extract_archive(_CIFAR_URL, str(root), md5=_CIFAR_MD5)
        missing = [n for n in names if not (base / n).is_file()]
    if missing:
        raise DataNotFoundError(
            f"CIFAR-10 {split} files {missing} not found in {base}. Download the python "
            f"version from {_CIFAR_URL} and extract it into {Path(root)}, or pass "
            f"download=True (CLI: --download)."
        )
    arrays, labels = [], []
    for n in names:
        d, lab = _load_cifar_batch(base / n)
        arrays.append(d)
        labels.extend(lab)
    images = torch.from_numpy(np.concatenate(arrays))
    return TensorImageDataset(images, labels, CIFAR10_CLASSES, transform)


# ----------------------------------------------------------------------------- image folders
class ImageFolderDataset(Dataset):
    """Images in ``root/<class>/<file>`` (ImageNet layout: ``root`` = ``.../train``).

    Class names are the sorted sub-folder names.  A file that cannot be decoded
    raises :class:`CorruptImageError` naming it; with ``skip_corrupt=True`` it is
    reported once (warning) and another image is returned in its place.
    ``verify=True`` opens every file up front and raises (or, with
    ``skip_corrupt``, drops them) listing all unreadable files.

    Files are decoded by :func:`bcosnet.data.open_image` (EXIF orientation,
    transparency over white, 16-bit scaled, decompression bombs refused) — the
    decoder ``bcosnet explain`` uses.  ``transform`` receives that PIL image (RGB,
    or "L" when ``grey=True``); without one, images become C×H×W float tensors in
    [0, 1].
    """

    def __init__(
        self,
        root: str | os.PathLike,
        transform: Callable[[Any], Tensor] | None = None,
        *,
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
        skip_corrupt: bool = False,
        verify: bool = False,
        grey: bool = False,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataNotFoundError(
                f"image folder {self.root} does not exist. Expected one sub-folder per class "
                f"with the images inside (ImageNet layout: <data>/train/<class>/*.JPEG and "
                f"<data>/val/<class>/*.JPEG)."
            )
        exts = tuple(e.lower() for e in extensions)
        self.classes = sorted(d.name for d in self.root.iterdir() if d.is_dir())
        if not self.classes:
            raise DataNotFoundError(
                f"no class sub-folders in {self.root}: expected {self.root}/<class>/<image> "
                f"(ImageNet layout)"
            )
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        samples: list[tuple[str, int]] = []
        for c in self.classes:
            for dirpath, _, files in sorted(os.walk(self.root / c, followlinks=True)):
                for fn in sorted(files):
                    if fn.lower().endswith(exts):
                        samples.append((os.path.join(dirpath, fn), self.class_to_idx[c]))
        if not samples:
            raise DataNotFoundError(
                f"no images with extensions {', '.join(exts)} found under {self.root}"
            )
        self.transform = transform
        self.skip_corrupt = skip_corrupt
        self.grey = grey
        self.skipped: list[str] = []
        if verify:
            bad = [p for p, _ in samples if not _readable(p)]
            if bad and not skip_corrupt:
                raise CorruptImageError(
                    f"{len(bad)} unreadable image file(s) in {self.root}: "
                    + ", ".join(bad[:20]) + (" ..." if len(bad) > 20 else "")
                    + " — fix or remove them, or pass skip_corrupt=True (CLI: --skip-corrupt)"
                )
            if bad:
                warnings.warn(f"skipping {len(bad)} unreadable image(s): {', '.join(bad[:20])}",
                              stacklevel=2)
                self.skipped = bad
                bad_set = set(bad)
                samples = [s for s in samples if s[0] not in bad_set]
        self.samples = samples
        self.targets = [t for _, t in samples]

    def __len__(self) -> int:
        return len(self.samples)

    def _load(self, path: str) -> Any:
        try:
            return open_image(path, 1 if self.grey else 3)
        except (CorruptImageError, OSError) as e:
            raise CorruptImageError(
                f"{e} — fix or remove it, or pass "
                f"skip_corrupt=True (CLI: --skip-corrupt)"
            ) from e

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        path, target = self.samples[index]
        for attempt in range(len(self.samples)):
            try:
                img = self._load(path)
                break
            except CorruptImageError:
                if not self.skip_corrupt:
                    raise
                if path not in self.skipped:
                    self.skipped.append(path)
                    warnings.warn(f"skipping unreadable image {path}", stacklevel=2)
                path, target = self.samples[(index + attempt + 1) % len(self.samples)]
        else:  # pragma: no cover - every file unreadable
            raise CorruptImageError(f"no readable image in {self.root}")
        if self.transform is not None:
            return self.transform(img), target
        return _pil_to_tensor(img), target


def _readable(path: str) -> bool:
    try:
        open_image(path, None)
        return True
    except (CorruptImageError, OSError):
        return False
