"""Data sets, transforms and deterministic augmentation (bcosnet.data)."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import bcosnet.data.datasets as dsmod
from bcosnet.data import (
    FASHION_MNIST_CLASSES,
    CorruptImageError,
    DataNotFoundError,
    EpochSeededDataset,
    ImageFolderDataset,
    SyntheticDataset,
    build_datasets,
    cifar10,
    cifar10_transform,
    fashion_mnist,
    fmnist_transform,
    imagenet_transform,
)


# ----------------------------------------------------------------------------- Fashion-MNIST
def _write_idx(path: Path, arr: np.ndarray, gz: bool = True) -> None:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    data = header + arr.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def _fake_fmnist(root: Path, n: int = 12, gz: bool = True) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    suffix = ".gz" if gz else ""
    for i, lab in (("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                   ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")):
        _write_idx(root / (i + suffix), imgs, gz)
        _write_idx(root / (lab + suffix), labels, gz)
    return imgs, labels


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_reads_local_idx_files(tmp_path: Path, gz: bool) -> None:
    imgs, labels = _fake_fmnist(tmp_path, gz=gz)
    ds = fashion_mnist(tmp_path, "test")
    assert len(ds) == len(imgs)
    x, y = ds[3]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32
    assert torch.allclose(x[0], torch.from_numpy(imgs[3]).float() / 255)
    assert y == labels[3]
    assert ds.classes == list(FASHION_MNIST_CLASSES)


def test_fashion_mnist_truncated_file_is_reported(tmp_path: Path) -> None:
    _fake_fmnist(tmp_path, gz=False)
    p = tmp_path / "t10k-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:-100])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        fashion_mnist(tmp_path, "test")


def test_fashion_mnist_missing_says_where_and_how(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(dsmod, "FASHION_MNIST_DIRS", (str(tmp_path / "nowhere"),))
    monkeypatch.delenv("BCOSNET_FASHION_MNIST", raising=False)
    with pytest.raises(DataNotFoundError) as e:
        fashion_mnist(tmp_path / "data", "train")
    msg = str(e.value)
    assert str(tmp_path / "data") in msg and str(tmp_path / "nowhere") in msg
    assert "dataset-fashion-mnist" in msg and "download" in msg


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(),
                    reason="needs the Debian package dataset-fashion-mnist")
def test_fashion_mnist_real_test_split() -> None:
    ds = fashion_mnist(split="test")
    assert len(ds) == 10_000
    counts = torch.bincount(ds.targets, minlength=10)
    assert counts.tolist() == [1000] * 10
    x, _ = ds[0]
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() > 0.5


# ----------------------------------------------------------------------------- CIFAR-10
def _fake_cifar(root: Path, n: int = 6) -> np.ndarray:
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    rng = np.random.default_rng(1)
    data = rng.integers(0, 256, size=(n, 3 * 32 * 32), dtype=np.uint8)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(base / name, "wb") as f:
            pickle.dump({"data": data, "labels": list(range(n))}, f)
    return data


def test_cifar10_reads_local_python_batches(tmp_path: Path) -> None:
    data = _fake_cifar(tmp_path)
    tr = cifar10(tmp_path, "train")
    te = cifar10(tmp_path, "test")
    assert len(tr) == 5 * 6 and len(te) == 6
    x, y = te[2]
    assert x.shape == (3, 32, 32) and y == 2
    assert torch.allclose(x, torch.from_numpy(data[2].reshape(3, 32, 32)).float() / 255)
    assert tr.classes[0] == "airplane"


def test_cifar10_missing_names_folder_and_url(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="cifar-10-python.tar.gz"):
        cifar10(tmp_path, "test")


def test_cifar10_refuses_code_in_pickles(tmp_path: Path) -> None:
    _fake_cifar(tmp_path)
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({"data": Path("x")}, f)  # a non-array class
    with pytest.raises(ValueError, match="not a valid CIFAR-10 batch"):
        cifar10(tmp_path, "test")


# ----------------------------------------------------------------------------- image folders
def _image_tree(root: Path, classes=("cat", "dog"), per_class: int = 3, size: int = 20) -> None:
    rng = np.random.default_rng(2)
    for split in ("train", "val"):
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(per_class):
                arr = rng.integers(0, 256, size=(size, size + 4, 3), dtype=np.uint8)
                Image.fromarray(arr).save(d / f"{c}{i}.png")


def test_image_folder_classes_and_tensors(tmp_path: Path) -> None:
    _image_tree(tmp_path)
    ds = ImageFolderDataset(tmp_path / "train")
    assert ds.classes == ["cat", "dog"] and len(ds) == 6
    x, y = ds[4]
    assert x.shape == (3, 20, 24) and y == 1 and 0 <= x.min() and x.max() <= 1


def test_corrupt_image_is_named_and_skipped_only_on_request(tmp_path: Path) -> None:
    _image_tree(tmp_path)
    bad = tmp_path / "train" / "dog" / "broken.png"
    bad.write_bytes(b"not a png at all")
    ds = ImageFolderDataset(tmp_path / "train")
    idx = [p for p, _ in ds.samples].index(str(bad))
    with pytest.raises(CorruptImageError, match="broken.png"):
        ds[idx]
    with pytest.raises(CorruptImageError, match="broken.png"):
        ImageFolderDataset(tmp_path / "train", verify=True)
    with pytest.warns(UserWarning, match="broken.png"):
        ok = ImageFolderDataset(tmp_path / "train", verify=True, skip_corrupt=True)
    assert len(ok) == 6 and ok.skipped == [str(bad)]
    lazy = ImageFolderDataset(tmp_path / "train", skip_corrupt=True)
    with pytest.warns(UserWarning, match="broken.png"):
        x, _ = lazy[idx]
    assert x.shape == (3, 20, 24)


def test_build_imagenet_layout_with_presets(tmp_path: Path) -> None:
    _image_tree(tmp_path, size=40)
    splits = build_datasets("imagenet", tmp_path, image_size=32)
    assert splits.classes == ["cat", "dog"]
    x, _ = splits.train[0]
    xt, _ = splits.test[0]
    assert x.shape == xt.shape == (3, 32, 32)
    assert 0 <= x.min() and x.max() <= 1


def test_missing_data_root_says_where(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match=str(tmp_path / "absent")):
        build_datasets("imagenet", tmp_path / "absent")
    (tmp_path / "only").mkdir()
    with pytest.raises(DataNotFoundError, match="train"):
        build_datasets("folder", tmp_path / "only")
    with pytest.raises(ValueError, match="unknown data set"):
        build_datasets("mnist-ish")


# ----------------------------------------------------------------------------- transforms
def test_transform_presets_shapes() -> None:
    img = torch.rand(3, 32, 32)
    assert cifar10_transform(True)(img).shape == (3, 32, 32)
    assert cifar10_transform(False) is None
    assert fmnist_transform(True)(torch.rand(1, 28, 28)).shape == (1, 28, 28)
    assert fmnist_transform(True, augment=False) is None
    pil = Image.fromarray(np.zeros((50, 60, 3), dtype=np.uint8))
    assert imagenet_transform(True, 299)(pil).shape == (3, 299, 299)
    out = imagenet_transform(False, 224)(pil)
    assert out.shape == (3, 224, 224) and out.max() <= 1.0
    with pytest.raises(ValueError, match="at least 8"):
        imagenet_transform(True, 4)


def test_padded_crop_keeps_content_shifted_only() -> None:
    torch.manual_seed(0)
    img = torch.rand(3, 32, 32)
    out = cifar10_transform(True)(img)
    # Some shift (|dy|, |dx| <= 4) and maybe a flip reproduces the crop exactly.
    padded = torch.nn.functional.pad(img, (4, 4, 4, 4))
    found = any(
        torch.equal(out, cand[:, dy:dy + 32, dx:dx + 32])
        for cand in (padded, padded.flip(-1))
        for dy in range(9) for dx in range(9)
    )
    assert found


def test_epoch_seeded_augmentation_is_a_function_of_epoch_and_index() -> None:
    base = SyntheticDataset(16, 2, 28, seed=3, transform=fmnist_transform(True))
    ds = EpochSeededDataset(base, seed=5)
    before = torch.get_rng_state()
    a = [ds[i][0] for i in range(16)]
    assert torch.equal(torch.get_rng_state(), before)  # global RNG untouched
    torch.manual_seed(123)  # unrelated global RNG use does not matter
    b = [ds[i][0] for i in reversed(range(16))][::-1]
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    ds.set_epoch(1)
    c = [ds[i][0] for i in range(16)]
    assert sum(not torch.equal(x, y) for x, y in zip(a, c, strict=True)) >= 8
    assert ds.classes == base.classes


def test_synthetic_dataset_is_deterministic_and_balanced() -> None:
    a, b = SyntheticDataset(40, 4, 16, 3, seed=7), SyntheticDataset(40, 4, 16, 3, seed=7)
    assert torch.equal(a.images, b.images) and torch.equal(a.targets, b.targets)
    assert torch.bincount(a.targets).tolist() == [10] * 4
    assert a.images.shape == (40, 3, 16, 16)
    assert 0 <= a.images.min() and a.images.max() <= 1
    c = SyntheticDataset(40, 4, 16, 3, seed=8)
    assert not torch.equal(a.images, c.images)
