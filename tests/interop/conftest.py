"""A trained Fashion-MNIST B-cos network (tests/assets/behaviour_ce6e7d6/, 400 steps,
width 8, 78.2 % test accuracy) and test images it classifies correctly."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

ASSETS = Path(__file__).parents[1] / "assets" / "behaviour_ce6e7d6"


@pytest.fixture(scope="package")
def fmnist_test():
    from bcosnet.data import build_datasets

    return build_datasets("fashion-mnist", augment=False).test


@pytest.fixture(scope="package")
def trained_bcos():
    from bcosnet.training import load_checkpoint_model

    with warnings.catch_warnings():  # saved before models recorded their data set: said
        warnings.simplefilter("ignore", UserWarning)
        return load_checkpoint_model(ASSETS / "bcos.safetensors").eval()


@pytest.fixture(scope="package")
def grids(fmnist_test):
    """The fixture's two 3×3 grids (84×84 px) of confidently classified test images."""
    from bcosnet.evaluation.pointing_game import GridDataset

    return GridDataset.from_dict(json.loads((ASSETS / "grids_bcos.json").read_text()),
                                 fmnist_test)


@pytest.fixture(scope="package")
def correct_batch(trained_bcos, fmnist_test):
    """(images 8×1×28×28, labels 8): the first 8 test images the network gets right."""
    xs, ys = zip(*(fmnist_test[i] for i in range(40)))
    x, y = torch.stack(xs), torch.as_tensor(ys)
    with torch.no_grad():
        right = trained_bcos(x).argmax(1) == y
    assert right.sum() >= 8
    return x[right][:8].contiguous(), y[right][:8]
