"""The 28×28 grey networks of models/mnist.py (fmnist_bcos and its twin)."""

from __future__ import annotations

import math

import pytest
import torch

import bcosnet
from bcosnet.nn import AddInverse, BcosConv2d


def test_registered_with_grey_input_info() -> None:
    m = bcosnet.create_model("fmnist_bcos")
    info = m.model_info
    assert (info.in_channels, info.num_classes, info.input_size, info.kind) == (
        1, 10, (28, 28), "bcos")
    assert bcosnet.create_model("standard_fmnist_bcos").model_info.kind == "standard"
    assert isinstance(m.encoding, AddInverse)
    first = next(mod for mod in m.modules() if isinstance(mod, BcosConv2d))
    assert first.in_channels == 2 and first.max_out == 2
    # Pure B-cos: no BatchNorm, no bias anywhere.
    assert not [n for n, _ in m.named_parameters() if "bias" in n]
    assert not [mod for mod in m.modules() if isinstance(mod, torch.nn.modules.batchnorm._NormBase)]
    assert m.logit_layer.bias == pytest.approx(math.log(0.1 / 0.9))


def test_explanations_are_complete() -> None:
    torch.manual_seed(0)
    m = bcosnet.create_model("fmnist_bcos", width=8, temperature=100.0).double().eval()
    x = torch.rand(3, 1, 28, 28, dtype=torch.float64)
    ex = bcosnet.explain(m, x, target="pred")
    assert ex.weights.shape == (3, 1, 2, 28, 28)
    total = ex.contributions.sum((-2, -1)) + ex.bias
    assert torch.allclose(total, ex.logits, rtol=1e-9, atol=1e-9)
    assert torch.equal(ex.targets[:, 0], m(x).argmax(1))


@pytest.mark.parametrize("name", ["fmnist_bcos", "standard_fmnist_bcos"])
def test_shapes_sizes_and_input_checks(name: str) -> None:
    m = bcosnet.create_model(name, num_classes=7, width=4)
    assert m(torch.rand(2, 1, 28, 28)).shape == (2, 7)
    assert m(torch.rand(1, 1, 8, 12)).shape == (1, 7)  # global pooling: any size >= 4
    assert bcosnet.create_model(name, in_channels=3, width=4)(torch.rand(1, 3, 28, 28)).shape == (
        1, 10)
    if name == "fmnist_bcos":
        with pytest.raises(ValueError, match="pass raw images"):
            m(torch.rand(2, 2, 28, 28))
