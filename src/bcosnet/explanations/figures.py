"""Figures of the supplement (Fig. A1, A3/A4, A5/A6, B4) as matplotlib figures.

Every ``plot_*`` function returns a :class:`matplotlib.figure.Figure` built
without pyplot (no global state, no display needed: rendering uses Agg);
:func:`save_figure` writes it atomically as PNG or PDF.

    ex = bcosnet.explain(model, images)
    fig = plot_explanations(images, ex, class_names=names)
    save_figure(fig, "out/explanations.png")
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from .colour import contribution_to_rgba, to_rgba
from .core import Explanation, explain

__all__ = [
    "default_smooth",
    "save_figure",
    "plot_explanations",
    "plot_prediction_summary",
    "plot_class_grid",
    "most_confident_classes",
    "plot_neuron_grid",
    "plot_class_distribution",
]



def default_smooth(size: int) -> int:
    """An odd box kernel for alpha smoothing, ≈ size/15 (15 at 224 px, none at 28 px)."""
    k = max(1, size // 15)
    return k if k % 2 else k + 1


def save_figure(fig: Figure, path: str | os.PathLike, *, dpi: int = 120) -> Path:
    """Write ``fig`` to ``path`` (format from the suffix: .png, .pdf, .svg)
    atomically (temporary file in the same folder, then ``os.replace``)."""
    from .._utils.io import save_figure as _save

    return _save(fig, path, dpi=dpi)


# ----------------------------------------------------------------------------- helpers
def _image_np(img: Tensor) -> np.ndarray:
    """C×H×W tensor in [0, 1] → H×W×3 (or H×W for grey) numpy for imshow."""
    a = img.detach().to("cpu", torch.float32).clamp(0, 1)
    if a.dim() != 3:
        raise ValueError(f"expected a C×H×W image, got shape {tuple(a.shape)}")
    if a.shape[0] == 1:
        return a[0].numpy()
    if a.shape[0] != 3:
        raise ValueError(f"expected a 1- or 3-channel image, got {a.shape[0]} channels")
    return a.permute(1, 2, 0).numpy()


def _show(ax: Any, img: np.ndarray, title: str | None = None, fontsize: float = 8) -> None:
    if img.ndim == 2:
        ax.imshow(img, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(img, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    for s in ax.spines.values():
        s.set_visible(False)
    if title:
        ax.set_title(title, fontsize=fontsize)


def _name(class_names: Sequence[str] | None, c: int) -> str:
    if class_names is not None and 0 <= c < len(class_names):
        return f"{class_names[c]} ({c})"
    return f"class {c}"


def _sample(dataset: Any, index: int) -> tuple[Tensor, int | None]:
    item = dataset[index]
    if isinstance(item, Tensor):
        return item, None
    if isinstance(item, dict):
        return item["image"], item.get("label")
    x = item[0]
    y = item[1] if len(item) > 1 else None
    return x, (int(y) if y is not None else None)


def _raw_images(images: Tensor, ex: Explanation) -> Tensor:
    """The images to display: ``images`` if raw, else decode the encoding."""
    if images.shape[1] == ex.inputs.shape[1] // 2:
        return images
    return ex.inputs[:, : ex.inputs.shape[1] // 2]


# ----------------------------------------------------------------------------- Fig. A1 / CLI
def plot_explanations(
    images: Tensor,
    ex: Explanation,
    *,
    class_names: Sequence[str] | None = None,
    smooth: int | None = None,
    percentile: float = 99.5,
    title: str | None = None,
) -> Figure:
    """One row per (image, target): image | colour explanation | contribution map.

    Each row's title names the class, its logit, and ``Σ contributions + bias``
    (equal to the logit for an exact explanation).

    Args:
        images: N×C×H×W images the explanation was computed for (raw [0, 1] or encoded).
        ex: their :class:`Explanation` (N×T targets).
        smooth: alpha box kernel (default :func:`default_smooth` of the height).
    """
    n, t = ex.logits.shape
    if images.shape[0] != n:
        raise ValueError(f"{images.shape[0]} images but the explanation has {n}")
    h = ex.inputs.shape[-2]
    smooth = default_smooth(h) if smooth is None else smooth
    raw = _raw_images(images, ex)
    rgba = to_rgba(ex.weights, ex.inputs, smooth=smooth, percentile=percentile).cpu().numpy()
    cmaps = contribution_to_rgba(ex.contributions, percentile=percentile)
    total = (ex.contributions.sum((-2, -1)) + ex.bias).cpu()
    fig = Figure(figsize=(7.5, 2.6 * n * t + (0.3 if title else 0)))
    axes = np.atleast_2d(fig.subplots(n * t, 3, squeeze=False))
    for i in range(n):
        img = _image_np(raw[i])
        for j in range(t):
            r = i * t + j
            c = int(ex.targets[i, j])
            logit = float(ex.logits[i, j])
            _show(axes[r, 0], img, "image")
            _show(axes[r, 1], rgba[i, j], f"{_name(class_names, c)}\nlogit {logit:.3f}")
            _show(
                axes[r, 2],
                cmaps[i, j],
                f"contributions (red +, blue −)\nΣ + bias = {float(total[i, j]):.3f}",
            )
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_prediction_summary(
    model: nn.Module,
    image: Tensor,
    target: int | str = "pred",
    *,
    class_names: Sequence[str] | None = None,
    top: int = 5,
    smooth: int | None = None,
) -> Figure:
    """Supplement Fig. A1 for one image: the image, the model's top class
    probabilities (sigmoid of the logits: BCE-trained, per class), the colour
    explanation ``[W(x)]_c``, the contribution map, and the check
    ``Σ contributions + bias`` vs the logit printed in the figure.

    Args:
        image: C×H×W (or 1×C×H×W) image in [0, 1].
        target: the class to explain (default: the prediction).
    """
    x = image.unsqueeze(0) if image.dim() == 3 else image
    if x.shape[0] != 1:
        raise ValueError("plot_prediction_summary takes one image")
    ex = explain(model, x, target=target)
    assert ex.all_logits is not None
    logits = ex.all_logits[0].cpu()
    k = min(top, logits.numel())
    vals, idx = logits.topk(k)
    c = int(ex.targets[0, 0])
    s = float(ex.contributions[0, 0].sum())
    b = float(ex.bias[0, 0])
    logit = float(ex.logits[0, 0])
    smooth = default_smooth(x.shape[-2]) if smooth is None else smooth
    rgba = to_rgba(ex.weights, ex.inputs, smooth=smooth)[0, 0].cpu().numpy()
    cmap = contribution_to_rgba(ex.contributions[0, 0])

    fig = Figure(figsize=(12, 3.2))
    axes = fig.subplots(1, 4, gridspec_kw={"width_ratios": [1, 1.1, 1, 1]})
    _show(axes[0], _image_np(_raw_images(x, ex)[0]), "input x")
    probs = torch.sigmoid(vals).numpy()
    labels = [_name(class_names, int(i)) for i in idx]
    ax = axes[1]
    ax.barh(range(k)[::-1], probs, color=["tab:red" if int(i) == c else "tab:gray" for i in idx])
    ax.set_yticks(range(k)[::-1])
    ax.set_yticklabels(labels, fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_xlabel("σ(logit)", fontsize=8)
    ax.set_title("prediction (per-class probability)", fontsize=8)
    _show(axes[2], rgba, f"explanation [W(x)]_c, c = {_name(class_names, c)}")
    _show(axes[3], cmap, "contributions W(x) ⊙ x (red +, blue −)")
    fig.text(
        0.5,
        0.01,
        f"Σ contributions {s:+.4f} + bias {b:+.4f} = {s + b:.4f}    vs    logit {logit:.4f}"
        f"    (difference {s + b - logit:.2e})",
        ha="center",
        fontsize=9,
        family="monospace",
    )
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


# ----------------------------------------------------------------------------- Fig. A3 / A4
def most_confident_classes(top: Any, count: int) -> list[int]:
    """Classes sorted by the sum of the logits of their recorded top images
    (as in Fig. A3), keeping only classes with all k images present."""
    vals = top.values
    full = torch.isfinite(vals).all(1)
    score = torch.where(full, vals.sum(1), torch.full_like(vals[:, 0], -torch.inf))
    order = score.argsort(descending=True, stable=True)
    return [top.channels[i] for i in order.tolist() if bool(full[i])][:count]


def plot_class_grid(
    model: nn.Module,
    dataset: Any,
    top: Any,
    classes: Sequence[int] | None = None,
    *,
    count: int = 12,
    k: int | None = None,
    class_names: Sequence[str] | None = None,
    smooth: int | None = None,
    contributions: bool | None = None,
) -> Figure:
    """Fig. A3/A4: per class (row), its ``k`` most confidently classified images
    and their explanations ``[W(x)]_c`` side by side.

    Args:
        dataset: indexable data set (``dataset[i]`` → image or (image, label)),
            in the order used to compute ``top``.
        top: :func:`bcosnet.evaluation.top_class_scores` result.
        classes: which classes (default: the ``count`` most confident,
            :func:`most_confident_classes`).
        k: images per class (default: all recorded).
        contributions: also show the contribution map ``Σ_c W ⊙ x``
            (:func:`~bcosnet.explanations.contribution_to_rgba`, red positive,
            blue negative) after each explanation.  ``None`` (default): on for
            grey images (1 channel, or the 2-channel encoding, in ``dataset[0]``),
            whose decoded explanation is grey on white and hard to read alone;
            off for colour images.
    """
    if contributions is not None and not isinstance(contributions, bool):
        raise TypeError(f"contributions must be True, False or None, got {contributions!r}")
    if classes is None:
        classes = most_confident_classes(top, count)
    if not classes:
        raise ValueError("no class has enough correctly classified images to show")
    k = top.values.shape[1] if k is None else min(k, top.values.shape[1])
    if contributions is None:
        # Grey data: 1 channel (or its 2-channel encoding [v, 1 − v]).
        contributions = _sample(dataset, 0)[0].shape[0] in (1, 2)
    per = 3 if contributions else 2  # panels per image
    fig = Figure(figsize=(1.0 * per * k, 1.1 * len(classes) + 0.2))
    axes = np.atleast_2d(fig.subplots(len(classes), per * k, squeeze=False))
    for r, c in enumerate(classes):
        row = top.row(c)
        for j in range(k):
            panels = axes[r, per * j : per * (j + 1)]
            if not math.isfinite(float(top.values[row, j])):
                for a in panels:
                    a.set_axis_off()
                continue
            x, _ = _sample(dataset, int(top.indices[row, j]))
            x = x.unsqueeze(0)
            ex = explain(model, x, target=int(c))
            sm = default_smooth(x.shape[-2]) if smooth is None else smooth
            rgba = to_rgba(ex, smooth=sm)[0, 0].cpu().numpy()
            _show(panels[0], _image_np(_raw_images(x, ex)[0]))
            _show(panels[1], rgba, f"{float(ex.logits[0, 0]):.2f}", fontsize=6)
            if contributions:
                _show(panels[2], contribution_to_rgba(ex.contributions[0, 0]), "contrib.",
                      fontsize=6)
        axes[r, 0].set_ylabel(_name(class_names, int(c)), fontsize=7, rotation=0, ha="right")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- Fig. A5 / A6
def plot_neuron_grid(
    model: nn.Module,
    dataset: Any,
    top: Any,
    channels: Sequence[int] | None = None,
    *,
    n_images: int = 4,
    at_location: bool = True,
    smooth: int | None = None,
) -> Figure:
    """Fig. A5/A6: per neuron (row), its most highly activating images and the
    explanations ``[W_{1→l}(x)]_n`` of that neuron.

    Args:
        dataset: indexable data set, in the order used to compute ``top``.
        top: :func:`bcosnet.evaluation.top_activations` result for one layer.
        channels: which of ``top.channels`` (default: the 8 strongest).
        at_location: explain the neuron at the recorded location (else summed
            over all locations).
    """
    if channels is None:
        channels = top.strongest_channels(8)
    n_images = min(n_images, top.values.shape[1])
    fig = Figure(figsize=(2.0 * n_images, 1.15 * len(channels) + 0.3))
    axes = np.atleast_2d(fig.subplots(len(channels), 2 * n_images, squeeze=False))
    for r, c in enumerate(channels):
        row = top.row(c)
        for j in range(n_images):
            x, y = _sample(dataset, int(top.indices[row, j]))
            x = x.unsqueeze(0)
            loc = tuple(int(v) for v in top.locations[row, j]) if at_location else None
            ex = explain(model, x, layer=top.layer, channel=int(c), location=loc)
            sm = default_smooth(x.shape[-2]) if smooth is None else smooth
            rgba = to_rgba(ex, smooth=sm)[0, 0].cpu().numpy()
            _show(axes[r, 2 * j], _image_np(_raw_images(x, ex)[0]))
            _show(axes[r, 2 * j + 1], rgba, f"{float(top.values[row, j]):.3g}", fontsize=6)
        axes[r, 0].set_ylabel(f"ch {c}", fontsize=7, rotation=0, ha="right")
    fig.suptitle(f"layer {top.layer}: most highly activating images and explanations", fontsize=9)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- Fig. B4
def plot_class_distribution(
    counts: Tensor | Sequence[int],
    *,
    class_names: Sequence[str] | None = None,
    title: str | None = None,
    max_bars: int = 50,
) -> Figure:
    """Fig. B4: bar chart of the classes among a neuron's top activations,
    sorted by frequency (classes with count 0 are left out; the number of
    represented classes is in the title)."""
    cnt = torch.as_tensor(counts).to(torch.long).cpu()
    if cnt.dim() != 1:
        raise ValueError(f"counts must be 1-D (one count per class), got shape {tuple(cnt.shape)}")
    order = [i for i in cnt.argsort(descending=True, stable=True).tolist() if cnt[i] > 0]
    shown = order[:max_bars]
    total = int(cnt.sum())
    fig = Figure(figsize=(max(4.0, 0.25 * len(shown) + 1.5), 3.2))
    ax = fig.subplots()
    ax.bar(range(len(shown)), [int(cnt[i]) for i in shown], color="tab:blue")
    ax.set_xticks(range(len(shown)))
    ax.set_xticklabels(
        [class_names[i] if class_names and i < len(class_names) else str(i) for i in shown],
        rotation=90,
        fontsize=6,
    )
    ax.set_ylabel("images")
    head = title or "class distribution"
    ax.set_title(
        f"{head}\n{len(order)} of {len(cnt)} classes among {total} images", fontsize=9
    )
    fig.tight_layout()
    return fig
