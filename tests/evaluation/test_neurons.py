"""Neuron statistics: the running top-k equals a brute-force pass."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from bcosnet.evaluation.neurons import (
    class_distribution,
    top_activations,
    top_class_scores,
)
from bcosnet.nn import AddInverse, BcosConv2d


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        AddInverse(3),
        BcosConv2d(6, 8, 3, padding=1),
        BcosConv2d(8, 5, 3, stride=2, padding=1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )


def _data(n: int = 37, seed: int = 0, size: int = 8):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=g)
    y = torch.randint(0, 4, (n,), generator=g)
    return x, y


def _brute(act: torch.Tensor, chans, k, per_image):
    """act: N×C×H×W over the whole data set → per channel sorted (value, idx, h, w)."""
    out = {}
    n, _, h, w = act.shape
    for c in chans:
        entries = []
        for i in range(n):
            a = act[i, c]
            if per_image:
                flat = a.flatten()
                j = int(flat.argmax())
                entries.append((float(flat[j]), i, j // w, j % w))
            else:
                for hh in range(h):
                    for ww in range(w):
                        entries.append((float(a[hh, ww]), i, hh, ww))
        entries.sort(key=lambda e: (-e[0], e[1], e[2], e[3]))
        out[c] = entries[:k]
    return out


@pytest.mark.parametrize("per_image", [True, False])
@pytest.mark.parametrize("batch_size", [1, 5, 64])
def test_matches_brute_force(per_image, batch_size):
    model = _net()
    x, y = _data()
    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=False)
    k = 7
    chans = [0, 3, 7]
    top = top_activations(model, loader, "1", chans, k=k, per_image=per_image, progress=False)
    with torch.no_grad():
        act = model[:2](x)
    ref = _brute(act.double(), chans, k, per_image)
    assert top.channels == chans
    for row, c in enumerate(chans):
        vals = [e[0] for e in ref[c]]
        # float32 convs differ by batch size in the last bits: compare values loosely
        torch.testing.assert_close(
            top.values[row], torch.tensor(vals, dtype=torch.float64), rtol=1e-5, atol=1e-6
        )
        assert top.indices[row].tolist() == [e[1] for e in ref[c]]
        assert top.locations[row].tolist() == [[e[2], e[3]] for e in ref[c]]
        assert top.labels[row].tolist() == [int(y[e[1]]) for e in ref[c]]


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 20),
    batch=st.integers(1, 8),
    k=st.integers(1, 30),
    levels=st.integers(1, 4),
    per_image=st.booleans(),
    seed=st.integers(0, 10_000),
)
def test_property_ties_and_small_sets_match_brute_force(n, batch, k, levels, per_image, seed):
    # A "layer" whose activations are the (quantised, so: many ties) images themselves.
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, levels, (n, 2, 3, 3), generator=g).double()
    model = nn.Sequential(nn.Identity())
    top = top_activations(
        model, DataLoader(x, batch_size=batch), "0", k=k, per_image=per_image, progress=False
    )
    ref = _brute(x, [0, 1], k, per_image)
    for row in range(2):
        assert top.values[row].tolist() == [e[0] for e in ref[row]]
        assert top.indices[row].tolist() == [e[1] for e in ref[row]]
        assert top.locations[row].tolist() == [[e[2], e[3]] for e in ref[row]]
        assert (top.labels[row] == -1).all()


def test_several_layers_one_pass_and_early_stop():
    model = _net(1)
    x, y = _data(20, 1)
    calls = []
    model[3].register_forward_hook(lambda *a: calls.append(1))  # after the last recorded layer
    res = top_activations(
        model, DataLoader(TensorDataset(x, y), batch_size=6), {"1": [1, 2], "2": None}, k=4,
        progress=False,
    )
    assert set(res) == {"1", "2"}
    assert res["2"].channels == list(range(5))
    assert res["1"].values.shape == (2, 4)
    assert calls == []  # the forward pass stopped after layer "2"
    with torch.no_grad():
        ref = model[:2](x)[:, [1, 2]].flatten(2).amax(2).T.sort(1, descending=True).values[:, :4]
    torch.testing.assert_close(res["1"].values, ref.double())


def test_restores_training_mode_and_validates():
    model = _net()
    model.train()
    x, y = _data(6)
    loader = DataLoader(TensorDataset(x, y), batch_size=4)
    top_activations(model, loader, "1", k=2, progress=False)
    assert all(m.training for m in model.modules())
    with pytest.raises(ValueError, match="no layer named"):
        top_activations(model, loader, "features.9", progress=False)
    with pytest.raises(ValueError, match="out of range"):
        top_activations(model, loader, "1", [8], progress=False)
    with pytest.raises(ValueError, match="k must be"):
        top_activations(model, loader, "1", k=0, progress=False)


def test_class_distribution_counts_labels():
    model = _net()
    x, y = _data(30)
    top = top_activations(model, DataLoader(TensorDataset(x, y), batch_size=8), "2", [4], k=10,
                          progress=False)
    counts = class_distribution(top, 4, num_classes=4)
    assert counts.sum() == 10
    expect = torch.bincount(y[top.indices[0]], minlength=4)
    assert counts.tolist() == expect.tolist()
    with pytest.raises(ValueError, match="not recorded"):
        class_distribution(top, 0)


def test_top_class_scores_most_confident_correct():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    x = torch.randn(50, 3, 2, 2)
    with torch.no_grad():
        logits = model(x)
    y = logits.argmax(1).clone()
    y[::4] = (y[::4] + 1) % 3  # some wrong labels: these images must not be chosen
    top = top_class_scores(model, DataLoader(TensorDataset(x, y), batch_size=7), k=3,
                           progress=False)
    for c in range(3):
        ok = [(float(logits[i, c]), i) for i in range(50) if y[i] == c and logits[i].argmax() == c]
        ok.sort(key=lambda e: (-e[0], e[1]))
        assert top.indices[c].tolist()[: len(ok[:3])] == [i for _, i in ok[:3]]
        assert (top.labels[c][: len(ok[:3])] == c).all()
