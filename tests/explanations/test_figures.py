"""Figure helpers: content checks on the returned figures, atomic writes."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import bcosnet
from bcosnet.evaluation.neurons import class_distribution, top_activations, top_class_scores
from bcosnet.explanations.figures import (
    default_smooth,
    most_confident_classes,
    plot_class_distribution,
    plot_class_grid,
    plot_explanations,
    plot_neuron_grid,
    plot_prediction_summary,
    save_figure,
)
from bcosnet.nn import AddInverse, BcosConv2d, LogitLayer


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        AddInverse(3),
        BcosConv2d(6, 8, 3, padding=1, scale=10.0),
        BcosConv2d(8, 4, 3, padding=1, scale=10.0),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        LogitLayer(bias=-1.5),
    ).double()


def _data(n=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 10, 10, generator=g, dtype=torch.float64)
    with torch.no_grad():
        y = _model()(x).argmax(1)
    y[::5] = (y[::5] + 1) % 4
    return TensorDataset(x, y)


def test_default_smooth():
    assert default_smooth(224) == 15
    assert default_smooth(28) == 1
    assert all(default_smooth(s) % 2 == 1 for s in range(1, 400))


def test_save_figure_png_pdf_atomic(tmp_path):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 2))
    fig.subplots().plot([0, 1], [1, 0])
    p = save_figure(fig, tmp_path / "sub" / "f.png")
    with Image.open(p) as im:
        assert im.format == "PNG"
    q = save_figure(fig, tmp_path / "f.pdf")
    assert q.read_bytes().startswith(b"%PDF")
    assert sorted(x.name for x in tmp_path.rglob("*") if x.is_file()) == ["f.pdf", "f.png"]
    with pytest.raises(ValueError, match="format"):
        save_figure(fig, tmp_path / "f.bmp")


def test_prediction_summary_prints_completeness_check():
    model = _model()
    x = _data()[0][0]
    fig = plot_prediction_summary(model, x, class_names=["a", "b", "c", "d"], top=3)
    ex = bcosnet.explain(model, x.unsqueeze(0))
    text = " ".join(t.get_text() for t in fig.texts)
    nums = [float(v) for v in re.findall(r"[-+]?\d+\.\d+(?:e[-+]\d+)?", text)]
    s, b, total, logit = nums[:4]
    assert s == pytest.approx(float(ex.contributions.sum()), abs=1e-4)
    assert b == pytest.approx(float(ex.bias), abs=1e-4)
    assert logit == pytest.approx(float(ex.logits), abs=1e-4)
    assert total == pytest.approx(logit, abs=2e-4)
    # bar chart: top-3 per-class probabilities, sorted
    bars = [p.get_width() for p in fig.axes[1].patches]
    probs = torch.sigmoid(ex.all_logits[0]).sort(descending=True).values[:3].tolist()
    assert sorted(bars, reverse=True) == pytest.approx(probs)


def test_plot_explanations_rows_and_titles():
    model = _model()
    x = torch.stack([_data()[i][0] for i in range(2)])
    ex = bcosnet.explain(model, x, target=("topk", 2))
    fig = plot_explanations(x, ex, class_names=["a", "b", "c", "d"])
    assert len(fig.axes) == 2 * 2 * 3
    titles = [ax.get_title() for ax in fig.axes[1::3]]
    for r, t in enumerate(titles):
        i, j = divmod(r, 2)
        assert f"logit {float(ex.logits[i, j]):.3f}" in t
        assert f"({int(ex.targets[i, j])})" in t


def test_class_grid_uses_most_confident_correct_images(tmp_path):
    model = _model()
    ds = _data()
    top = top_class_scores(model, DataLoader(ds, batch_size=5), k=2, progress=False)
    classes = most_confident_classes(top, 3)
    full = [c for c in range(4) if torch.isfinite(top.values[c]).all()]
    assert set(classes) <= set(full)
    sums = [float(top.values[top.row(c)].sum()) for c in classes]
    assert sums == sorted(sums, reverse=True)
    fig = plot_class_grid(model, ds, top, classes, k=2)
    assert len(fig.axes) == len(classes) * 4
    # the explanation panels are titled with the explained logit = the recorded score
    for r, c in enumerate(classes):
        for j in range(2):
            title = fig.axes[r * 4 + 2 * j + 1].get_title()
            assert float(title) == pytest.approx(float(top.values[top.row(c), j]), abs=6e-3)
    save_figure(fig, tmp_path / "grid.png")


def _grey_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        AddInverse(1),
        BcosConv2d(2, 8, 3, padding=1, scale=10.0),
        BcosConv2d(8, 4, 3, padding=1, scale=10.0),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        LogitLayer(bias=-1.5),
    ).double()


def test_class_grid_shows_contribution_maps_for_grey_data(tmp_path):
    from bcosnet.explanations import contribution_to_rgba

    model = _grey_model()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(20, 1, 10, 10, generator=g, dtype=torch.float64)
    with torch.no_grad():
        y = model(x).argmax(1)
    ds = TensorDataset(x, y)
    top = top_class_scores(model, DataLoader(ds, batch_size=5), k=2, progress=False)
    classes = most_confident_classes(top, 2)
    fig = plot_class_grid(model, ds, top, classes, k=2)  # default: on for grey images
    assert len(fig.axes) == len(classes) * 2 * 3
    # image / explanation / contribution map; the map is Σ_c W ⊙ x of the encoded
    # input, computed here with autograd in explanation mode.
    for r, c in enumerate(classes):
        for j in range(2):
            i = int(top.indices[top.row(c), j])
            enc = torch.cat([x[i : i + 1], 1 - x[i : i + 1]], 1).requires_grad_(True)
            with bcosnet.explanation_mode(model):
                logit = model[1:](enc)[0, c]
                (grad,) = torch.autograd.grad(logit, enc)
            m = (grad * enc).sum(1)[0].detach()
            panel = fig.axes[r * 6 + 3 * j + 2]
            assert panel.get_title() == "contrib."
            np.testing.assert_allclose(np.asarray(panel.images[0].get_array()),
                                       contribution_to_rgba(m), atol=1e-6)
    save_figure(fig, tmp_path / "grey-grid.png")
    assert len(plot_class_grid(model, ds, top, classes, k=2, contributions=False).axes) == \
        len(classes) * 2 * 2
    with pytest.raises(TypeError, match="contributions"):
        plot_class_grid(model, ds, top, classes, k=2, contributions="yes")


def test_class_grid_contribution_maps_on_request_for_colour_data():
    model = _model()
    ds = _data()
    top = top_class_scores(model, DataLoader(ds, batch_size=5), k=2, progress=False)
    classes = most_confident_classes(top, 2)
    fig = plot_class_grid(model, ds, top, classes, k=2, contributions=True)
    assert len(fig.axes) == len(classes) * 2 * 3
    assert fig.axes[2].get_title() == "contrib."


def test_neuron_grid_explains_recorded_neurons(tmp_path):
    model = _model()
    ds = _data()
    top = top_activations(model, DataLoader(ds, batch_size=7), "2", [0, 2], k=3, progress=False)
    fig = plot_neuron_grid(model, ds, top, n_images=2)
    assert len(fig.axes) == 2 * 4
    for r, c in enumerate(top.strongest_channels(8)):
        assert fig.axes[r * 4 + 1].get_title() == f"{float(top.values[top.row(c), 0]):.3g}"
    # The explanation of the recorded neuron at its location is complete.
    x, _ = ds[int(top.indices[0, 0])]
    loc = tuple(int(v) for v in top.locations[0, 0])
    ex = bcosnet.explain(model, x.unsqueeze(0), layer="2", channel=0, location=loc)
    assert float(ex.logits[0, 0]) == pytest.approx(float(top.values[0, 0]), rel=1e-9)
    save_figure(fig, tmp_path / "neurons.png")


def test_class_distribution_plot_bars_sorted():
    counts = torch.tensor([3, 0, 7, 1])
    fig = plot_class_distribution(counts, class_names=["a", "b", "c", "d"])
    ax = fig.axes[0]
    assert [p.get_height() for p in ax.patches] == [7, 3, 1]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["c", "a", "d"]
    assert "3 of 4 classes among 11 images" in ax.get_title()
    with pytest.raises(ValueError, match="1-D"):
        plot_class_distribution(torch.zeros(2, 2))


def test_class_distribution_from_neuron_stats():
    model = _model()
    ds = _data()
    top = top_activations(model, DataLoader(ds, batch_size=8), "1", [5], k=10, progress=False)
    counts = class_distribution(top, 5, num_classes=4)
    fig = plot_class_distribution(counts)
    assert sum(p.get_height() for p in fig.axes[0].patches) == 10
    assert np.isfinite([p.get_height() for p in fig.axes[0].patches]).all()
