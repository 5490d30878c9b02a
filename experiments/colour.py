"""Colour fidelity of B-cos explanations, tested where the answer is known
(supplement D.2; issue #12, claim 2; results in docs/claims-colour.md).

Claim: because of the encoding ``[r, g, b, 1−r, 1−g, 1−b]`` and the alignment
pressure of B-cos layers, the colour decoded from the dynamic weights ``W(x)``
(:func:`bcosnet.to_rgba`) is the colour of what the model looks at.

Three data sets, every network a registry ``fmnist_bcos`` trained with
:func:`bcosnet.training.train` (data passed in memory through its ``datasets=``
argument):

* ``hue`` — colourised Fashion-MNIST in which **hue carries label
  information**: every garment is tinted with a hue drawn uniformly from
  [0°, 360°) (full saturation and value) and the class is *garment × hue
  family* — three families of 120° centred on red (0°), green (120°) and blue
  (240°), so 30 classes.  Background: grey (0.5) for half of the images, a
  uniformly random RGB colour for the other half; pixel = ``(1−a)·background +
  a·tint`` with ``a`` the garment's grey level.  Generated from a seed.
* ``control`` — the *same images* labelled by garment only (10 classes): colour
  says nothing about the label (the study's earlier form).
* ``grey`` — plain Fashion-MNIST and ``fmnist_bcos`` from the ``fmnist``
  preset with a short epoch budget.

Measurements (all on test images the network classifies correctly, explaining
the true class):

* **hue error** (colour sets): the hue decoded by ``to_rgba`` (no smoothing) at
  positively contributing garment pixels (``a > 0.3``), averaged circularly with
  weights alpha × chroma, against the garment's tint; circular distance 0–180°.
  ``chance``: the same decoded hues against the tint of a randomly permuted
  image (90° in theory).  Also measured before training.
* **value fidelity** (every set; the figure of "grey is a colour too"): at the
  pixels whose contribution ``Σ_c W ⊙ x`` is positive, the decoded colour
  channels (``decode_colour``) against the image's own channel values: mean
  absolute difference, the same against the pixel values shuffled among those
  pixels (pooled over images), and their Pearson correlation.

Run from the project root (``--quick``: a seconds-long run of every stage)::

    .venv/bin/python -m experiments.colour --threads 1 [--quick] [--out DIR]

Training runs are resumable (``runs/<name>`` under the output folder): a
rerun skips finished trainings.  ``--curve-steps`` measures the hue error part
way through training (the trainer's ``max_steps``, then resumed).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

import bcosnet
from bcosnet.data import FASHION_MNIST_CLASSES, DataSplits, TensorImageDataset, fashion_mnist
from bcosnet.explanations.colour import decode_colour, hue_of
from bcosnet.training import (
    DataConfig,
    ModelConfig,
    OptimConfig,
    ScheduleConfig,
    TrainConfig,
    get_preset,
    load_checkpoint_model,
)
from bcosnet.training import train as train_run
from experiments._common import (
    Stopwatch,
    atomic_write_json,
    atomic_write_text,
    prepare,
    study_parser,
)

NAME = "colour"
FAMILIES = ("red", "green", "blue")  # hue families centred at 0°, 120°, 240°


# ---------------------------------------------------------------- data
def load_fashion_mnist(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST via :func:`bcosnet.data.fashion_mnist`: uint8 images N×28×28,
    int64 labels N."""
    ds = fashion_mnist(None, split)
    return ds.images[:, 0].numpy(), ds.targets.numpy()


def hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV → RGB; ``h`` in degrees, ``s, v`` in [0, 1]; returns ...×3."""
    h = (np.asarray(h, dtype=np.float64) % 360.0) / 60.0
    s = np.asarray(s, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    k = np.stack([(5 + h) % 6, (3 + h) % 6, (1 + h) % 6], -1)
    return v[..., None] - (v * s)[..., None] * np.clip(np.minimum(k, 4 - k), 0, 1)


def hue_family(hues: np.ndarray, families: int = len(FAMILIES)) -> np.ndarray:
    """Index of the hue family (``families`` equal arcs, family k centred at
    ``k·360°/families``) of each hue in degrees."""
    width = 360.0 / families
    return (np.floor(((np.asarray(hues) + width / 2) % 360.0) / width).astype(np.int64)
            % families)


@dataclass
class ColourisedSet:
    """Colourised images N×3×H×W (uint8), class labels N (``garments`` for the
    control, ``garment·3 + hue family`` for the hue set), the garment labels N,
    garment hue N (degrees), garment mask N×H×W (the grey level a ∈ [0, 1]) and
    which images have a grey background (bool N)."""

    images: Tensor
    labels: Tensor
    garments: np.ndarray
    hues: np.ndarray
    garment: np.ndarray
    grey_background: np.ndarray
    classes: list[str]

    def relabel(self, label_mode: str) -> ColourisedSet:
        """The same images with the labels of ``label_mode`` (see :func:`colourise`)."""
        labels, classes = _labels(self.garments, self.hues, label_mode)
        return ColourisedSet(self.images, labels, self.garments, self.hues, self.garment,
                             self.grey_background, classes)

    def dataset(self) -> TensorImageDataset:
        return TensorImageDataset(self.images, self.labels, self.classes)


def _labels(garments: np.ndarray, hues: np.ndarray, label_mode: str) -> tuple[Tensor, list[str]]:
    if label_mode == "garment":
        return torch.from_numpy(garments.astype(np.int64)), list(FASHION_MNIST_CLASSES)
    if label_mode == "garment_x_hue":
        f = len(FAMILIES)
        lab = garments.astype(np.int64) * f + hue_family(hues, f)
        return torch.from_numpy(lab), [f"{g}, {h}" for g in FASHION_MNIST_CLASSES
                                       for h in FAMILIES]
    raise ValueError(f"label_mode must be 'garment' or 'garment_x_hue', got {label_mode!r}")


def colourise(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    seed: int,
    label_mode: str = "garment_x_hue",
    grey_fraction: float = 0.5,
) -> ColourisedSet:
    """Tint each garment with a hue drawn uniformly from [0°, 360°) (full
    saturation and value); background grey (0.5) for a ``grey_fraction`` of the
    images, a uniformly random RGB colour for the rest.  Pixel =
    (1−a)·background + a·tint, a = Fashion-MNIST intensity / 255, stored as uint8.

    ``label_mode``: ``"garment_x_hue"`` (class = garment·3 + hue family: hue
    carries label information) or ``"garment"`` (the control).  The images
    depend only on ``seed``, not on ``label_mode``.
    """
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 N×H×W, got {images.dtype} {images.shape}")
    rng = np.random.default_rng(seed)
    n = images.shape[0]
    hues = rng.uniform(0, 360, n)
    tint = hsv_to_rgb(hues, np.ones(n), np.ones(n)).astype(np.float32)  # N×3
    grey = rng.uniform(size=n) < grey_fraction
    bg = np.where(grey[:, None], 0.5, rng.uniform(size=(n, 3))).astype(np.float32)
    a = images.astype(np.float32) / 255.0
    out = np.empty((n, 3, *images.shape[1:]), np.uint8)
    for i in range(0, n, 5000):  # chunks: float intermediates stay small
        s = slice(i, i + 5000)
        px = ((1 - a[s, None]) * bg[s, :, None, None] + a[s, None] * tint[s, :, None, None])
        out[s] = np.clip(np.rint(px * 255), 0, 255).astype(np.uint8)
    garments = np.asarray(labels).astype(np.int64)
    lab, classes = _labels(garments, hues, label_mode)
    return ColourisedSet(torch.from_numpy(out), lab, garments, hues, a, grey, classes)


def _float(images: Tensor) -> Tensor:
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()


# ---------------------------------------------------------------- training
#: Output scale s of every B-cos layer per B (a stated rule, not the paper's), picked from a
#: width-16 probe on noise images (fmnist_bcos's default s = 100 at B = 2); at width 8 on the
#: colour sets the untrained logits are large (docs/claims-colour.md).  Other B: log-linear
#: interpolation.
SCALE_BY_B = {1.0: 15.0, 2.0: 100.0, 2.5: 300.0}


def default_scale(b: float) -> float:
    if float(b) in SCALE_BY_B:
        return SCALE_BY_B[float(b)]
    bs = sorted(SCALE_BY_B)
    return float(10 ** np.interp(b, bs, [math.log10(SCALE_BY_B[k]) for k in bs]))


def train_network(
    config: TrainConfig,
    data: DataSplits,
    *,
    curve_steps: tuple[int, ...] = (),
    on_curve: Callable[[int, nn.Module], None] | None = None,
) -> tuple[nn.Module, Any]:
    """Train with :func:`bcosnet.training.train` (resuming ``config.out_dir`` if it
    holds a checkpoint); at each of ``curve_steps`` (optimiser steps, below the
    total) stop, call ``on_curve(step, model)`` and resume.  Returns the trained
    model (eval mode) and the final :class:`~bcosnet.training.TrainResult`."""
    total = config.epochs * math.ceil(len(data.train) / config.optim.batch_size)
    config.resume = True
    for s in [s for s in sorted(set(curve_steps)) if 0 < s < total]:
        config.max_steps = s
        res = train_run(config, datasets=data)
        if on_curve is not None:
            on_curve(res.step, load_checkpoint_model(res.checkpoint))
    config.max_steps = None
    res = train_run(config, datasets=data)
    return load_checkpoint_model(res.checkpoint), res


def colour_config(num_classes: int, *, b: float, width: int, max_out: int, epochs: int,
                  batch_size: int, lr: float, seed: int, out_dir: Path,
                  progress: bool) -> TrainConfig:
    """The colour sets' training: ``fmnist_bcos`` on 3 channels, Adam, BCE on one-hot
    targets, cosine schedule to lr/100, no augmentation, evaluation at the end."""
    return TrainConfig(
        model=ModelConfig("fmnist_bcos", num_classes, options=dict(
            in_channels=3, width=width, b=b, max_out=max_out, scale=default_scale(b))),
        data=DataConfig(augment=False, eval_batch_size=500),
        optim=OptimConfig(name="adam", lr=lr, batch_size=batch_size),
        schedule=ScheduleConfig(name="cosine", min_lr=lr / 100),
        epochs=epochs, loss="bce", eval_every_epochs=0, seed=seed, out_dir=str(out_dir),
        progress=progress, log_every_steps=100, device="cpu",
    ).validate()


# ---------------------------------------------------------------- measurement
def _circ_dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = np.abs((np.asarray(a) - np.asarray(b)) % 360.0)
    return np.minimum(d, 360.0 - d)


def _weighted_hue(hue: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Circular weighted mean hue over the last axis (degrees) and its total weight."""
    rad = np.radians(hue)
    vx = (weight * np.cos(rad)).sum(-1)
    vy = (weight * np.sin(rad)).sum(-1)
    return np.degrees(np.arctan2(vy, vx)) % 360.0, weight.sum(-1)


def measure_hue(
    model: nn.Module,
    data: ColourisedSet,
    *,
    max_images: int = 1000,
    batch_size: int = 100,
    garment_threshold: float = 0.3,
    correct_only: bool = True,
    seed: int = 0,
) -> dict[str, float]:
    """Hue error (degrees) of the decoded explanation of the true class against the
    garment's tint, over the first ``max_images`` (correctly classified, if
    ``correct_only``) images: ``garment`` (mean), ``median``, ``within_30``
    (fraction ≤ 30°), ``grey_bg``/``random_bg`` (by background), ``chance``
    (decoded hues against a permuted image's tint), ``n_images``."""
    model.eval()
    errs, dec, true_h, grey_bg = [], [], [], []
    n_done = 0
    for i in range(0, len(data.labels), batch_size):
        sl = slice(i, i + batch_size)
        x, y = _float(data.images[sl]), data.labels[sl]
        n = len(y)
        ex = bcosnet.explain(model, x, target=y)
        ok = (ex.all_logits.argmax(1) == y).numpy() if correct_only else np.ones(n, bool)
        rgba = bcosnet.to_rgba(ex.weights[:, 0], ex.inputs, smooth=0).numpy()  # n×H×W×4
        hue, chroma = hue_of(rgba[..., :3])
        hue, w = hue.reshape(n, -1), (rgba[..., 3] * chroma).reshape(n, -1)
        garment = (data.garment[sl] > garment_threshold).reshape(n, -1)
        h_g, tot_g = _weighted_hue(hue, w * garment)
        keep = ok & (tot_g > 0)
        errs.append(_circ_dist(h_g, data.hues[sl])[keep])
        dec.append(h_g[keep])
        true_h.append(data.hues[sl][keep])
        grey_bg.append(data.grey_background[sl][keep])
        n_done += int(keep.sum())
        if n_done >= max_images:
            break
    e, d, th, gb = (np.concatenate(v)[:max_images] for v in (errs, dec, true_h, grey_bg))
    if len(e) == 0:
        raise RuntimeError("no correctly classified image to measure — train longer")
    rng = np.random.default_rng(seed)
    return {
        "n_images": len(e),
        "garment": float(e.mean()),
        "median": float(np.median(e)),
        "within_30": float((e <= 30).mean()),
        "grey_bg": float(e[gb].mean()) if gb.any() else float("nan"),
        "random_bg": float(e[~gb].mean()) if (~gb).any() else float("nan"),
        "chance": float(_circ_dist(d, th[rng.permutation(len(th))]).mean()),
    }


def value_stats(decoded: np.ndarray, pixels: np.ndarray, seed: int = 0) -> dict[str, float]:
    """Decoded values against pixel values (1-D arrays, one entry per measured
    channel value): mean |decoded − pixel|, the same with the pixels shuffled,
    and the Pearson correlation."""
    decoded, pixels = np.asarray(decoded, np.float64), np.asarray(pixels, np.float64)
    if decoded.shape != pixels.shape or decoded.ndim != 1 or len(decoded) < 2:
        raise ValueError("decoded and pixels must be 1-D arrays of the same length ≥ 2")
    shuffled = pixels[np.random.default_rng(seed).permutation(len(pixels))]
    return {
        "mean_abs": float(np.abs(decoded - pixels).mean()),
        "mean_abs_shuffled": float(np.abs(decoded - shuffled).mean()),
        "correlation": float(np.corrcoef(decoded, pixels)[0, 1]),
        "n_values": len(pixels),
    }


def measure_value(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    *,
    max_images: int = 300,
    batch_size: int = 100,
    seed: int = 0,
) -> dict[str, float]:
    """"Grey is a colour too": at the pixels where the contribution of the true
    class is positive, on the first ``max_images`` correctly classified images,
    the decoded colour channels against the image's channel values
    (:func:`value_stats`; every channel of a pixel is one value)."""
    model.eval()
    dec, pix = [], []
    n_done = 0
    for i in range(0, len(labels), batch_size):
        x, y = _float(images[i : i + batch_size]), labels[i : i + batch_size]
        ex = bcosnet.explain(model, x, target=y)
        ok = ex.all_logits.argmax(1) == y
        ok &= torch.cumsum(ok.long(), 0) <= max_images - n_done
        d = decode_colour(ex.weights[:, 0])                    # n×C×H×W
        mask = (ex.contributions[:, 0] > 0) & ok[:, None, None]  # n×H×W
        m = mask[:, None].expand_as(x)
        dec.append(d[m].numpy())
        pix.append(x[m].numpy())
        n_done += int(ok.sum())
        if n_done >= max_images:
            break
    if n_done == 0:
        raise RuntimeError("no correctly classified image to measure — train longer")
    out = value_stats(np.concatenate(dec), np.concatenate(pix), seed)
    out["n_images"] = n_done
    return out


# ---------------------------------------------------------------- figure
def example_figure(model: nn.Module, data: ColourisedSet, n: int = 8) -> Any:
    """Rows: image, decoded explanation (``to_rgba`` on white), contribution map,
    for the first ``n`` test images (true class explained)."""
    from matplotlib.figure import Figure

    from bcosnet.explanations import contribution_to_rgba

    x, y = _float(data.images[:n]), data.labels[:n]
    ex = bcosnet.explain(model, x, target=y)
    rgba = bcosnet.to_rgba(ex.weights[:, 0], ex.inputs, smooth=0).numpy()
    contrib = contribution_to_rgba(ex.contributions[:, 0])
    fig = Figure(figsize=(1.1 * n, 3.6))
    axes = fig.subplots(3, n)
    for j in range(n):
        axes[0, j].imshow(x[j].permute(1, 2, 0).numpy())
        axes[0, j].set_title(f"tint {data.hues[j]:.0f}°", fontsize=7)
        white = np.ones_like(rgba[j, ..., :3])
        a = rgba[j, ..., 3:]
        axes[1, j].imshow(a * rgba[j, ..., :3] + (1 - a) * white)
        hue, chroma = hue_of(rgba[j, ..., :3])
        h, _ = _weighted_hue(hue.reshape(-1), (rgba[j, ..., 3] * chroma).reshape(-1))
        axes[1, j].set_title(f"decoded {float(h):.0f}°", fontsize=7)
        axes[2, j].imshow(contrib[j])
        for ax in axes[:, j]:
            ax.set_axis_off()
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- the study
def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from e


def _ints(text: str) -> list[int]:
    return [int(v) for v in _floats(text)]


QUICK = dict(train=1000, test=100, epochs=1, width=4, measure=50, grey_images=30,
             grey_train=1000, grey_epochs=1, grey_width=8, b="2", control_b="2",
             curve_steps="8")
FULL = dict(train=60000, test=10000, epochs=1, width=8, measure=1000, grey_images=300,
            grey_train=60000, grey_epochs=1, grey_width=16, b="1,2,2.5", control_b="2",
            curve_steps="300")


def parser() -> argparse.ArgumentParser:
    p = study_parser(NAME, __doc__.split("\n\n")[0])
    p.add_argument("--b", type=_floats, default=None,
                   help="B values for the hue set (default 1,2,2.5; --quick 2)")
    p.add_argument("--control-b", type=_floats, default=None,
                   help="B values for the control (default and --quick: 2; '' for none)")
    p.add_argument("--train", type=int, default=None, help="training images (of 60 000)")
    p.add_argument("--test", type=int, default=None, help="test images (of 10 000)")
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs of the colour trainings (default 1)")
    p.add_argument("--width", type=int, default=None, help="fmnist_bcos width (colour sets)")
    p.add_argument("--max-out", type=int, default=2, help="MaxOut units (colour sets)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--measure", type=int, default=None,
                   help="correctly classified test images per hue measurement")
    p.add_argument("--curve-steps", type=_ints, default=None,
                   help="also measure the hue error at these optimiser steps (default 300)")
    p.add_argument("--grey-images", type=int, default=None,
                   help="images of the grey value measurement (default 300)")
    p.add_argument("--grey-train", type=int, default=None)
    p.add_argument("--grey-epochs", type=int, default=None)
    p.add_argument("--grey-width", type=int, default=None)
    p.add_argument("--no-grey", dest="grey", action="store_false", help="skip the grey set")
    return p


def _fill(args: argparse.Namespace) -> argparse.Namespace:
    base = QUICK if args.quick else FULL
    for k, v in base.items():
        if getattr(args, k) is None:
            conv = {"b": _floats, "control_b": _floats, "curve_steps": _ints}.get(k)
            setattr(args, k, conv(v) if conv else v)
    return args


def _hue_row(name: str, r: dict[str, Any]) -> str:
    f, u = r["final"], r["untrained"]
    return (f"| {name} | {r['b']:g} | {100 * r['test_acc']:.2f} | {u['garment']:.1f} | "
            f"**{f['garment']:.1f}** | {f['median']:.1f} | {100 * f['within_30']:.0f}% | "
            f"{f['grey_bg']:.1f} / {f['random_bg']:.1f} | {f['chance']:.1f} | "
            f"{r['value']['mean_abs']:.3f} / {r['value']['mean_abs_shuffled']:.3f} / "
            f"{r['value']['correlation']:.2f} | {f['n_images']} |")


def report(results: dict[str, Any]) -> str:
    s = results["settings"]
    lines = [
        "# Colour fidelity (experiments/colour.py)", "",
        f"Settings: {s}", "",
        "Hue error (degrees, circular, 0–180) of the decoded explanation against the garment's "
        "tint, correctly classified test images; value fidelity at positive-contribution pixels "
        "(mean |decoded − pixel| / shuffled / correlation).", "",
        "| set | B | test acc. % | untrained | **hue error** | median | ≤ 30° | grey / random bg "
        "| chance | value fidelity | images |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, r in results["runs"].items():
        lines.append(_hue_row(key.split("-b")[0], r))
    curves = [(k, c) for k, r in results["runs"].items() for c in r["curve"]]
    if curves:
        lines += ["", "Training curve (hue error part way through training):", "",
                  "| run | step | hue error | chance | images |", "|---|---|---|---|---|"]
        lines += [f"| {k} | {c['step']} | {c['garment']:.1f} | {c['chance']:.1f} | "
                  f"{c['n_images']} |" for k, c in curves]
    g = results.get("grey")
    if g:
        v = g["value"]
        lines += ["", "Grey is a colour too (plain Fashion-MNIST, fmnist_bcos):", "",
                  f"- test accuracy {100 * g['test_acc']:.2f} % after {g['epochs']} epoch(s)",
                  f"- {v['n_images']} correctly classified test images, {v['n_values']} "
                  f"positive-contribution pixels: mean |decoded − pixel| **{v['mean_abs']:.3f}**"
                  f", shuffled pixels {v['mean_abs_shuffled']:.3f}, correlation "
                  f"**{v['correlation']:.2f}**"]
    lines += ["", "Wall time (s): " + ", ".join(f"{k} {v:.0f}"
                                                for k, v in results["seconds"].items()), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _fill(parser().parse_args(argv))
    threads = torch.get_num_threads()
    out = prepare(NAME, args)
    # CPU speed: tiny B-cos activations can turn denormal.  Process-wide state, so it
    # is switched off again (and the thread count restored) when the study returns.
    torch.set_flush_denormal(True)
    try:
        return _run(args, out)
    finally:
        torch.set_flush_denormal(False)
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace, out: Path) -> int:
    sw = Stopwatch()
    from bcosnet.explanations.figures import (
        most_confident_classes,
        plot_class_grid,
        save_figure,
    )

    with sw("data"):
        tr_img, tr_lab = load_fashion_mnist("train")
        te_img, te_lab = load_fashion_mnist("test")
        hue_train = colourise(tr_img[: args.train], tr_lab[: args.train], seed=args.seed)
        hue_test = colourise(te_img[: args.test], te_lab[: args.test], seed=args.seed + 1)
    sets = {"hue": (hue_train, hue_test),
            "control": (hue_train.relabel("garment"), hue_test.relabel("garment"))}
    results: dict[str, Any] = {"settings": {k: getattr(args, k) for k in (
        "quick", "seed", "train", "test", "epochs", "width", "max_out", "batch_size", "lr",
        "measure", "curve_steps", "b", "control_b", "grey_images", "grey_train", "grey_epochs",
        "grey_width")}, "runs": {}, "seconds": sw.seconds}
    results["settings"]["scale_by_b"] = {str(b): default_scale(b)
                                         for b in sorted(set(args.b) | set(args.control_b))}
    plan = [("hue", b) for b in args.b] + [("control", b) for b in args.control_b]
    for kind, b in plan:
        key = f"{kind}-b{b:g}"
        train_set, test_set = sets[kind]
        data = DataSplits(train_set.dataset(), test_set.dataset(), train_set.classes, 3, (28, 28))
        cfg = colour_config(len(train_set.classes), b=b, width=args.width, max_out=args.max_out,
                            epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                            seed=args.seed, out_dir=out / "runs" / key, progress=args.progress)
        with sw(f"{key} measure"):
            torch.manual_seed(args.seed)  # the trainer's initialisation
            untrained = bcosnet.create_model("fmnist_bcos", cfg.model.num_classes,
                                             **cfg.model.options)
            r0 = measure_hue(untrained, test_set, max_images=args.measure, correct_only=False,
                             seed=args.seed)
        curve: list[dict[str, Any]] = []

        def on_curve(step: int, model: nn.Module, test_set: ColourisedSet = test_set,
                     curve: list[dict[str, Any]] = curve) -> None:
            curve.append({"step": step, **measure_hue(
                model, test_set, max_images=min(args.measure, 500), seed=args.seed)})

        print(f"[colour] training {key}", flush=True)
        with sw(f"{key} train"):
            model, res = train_network(cfg, data, curve_steps=tuple(args.curve_steps),
                                       on_curve=on_curve)
        with sw(f"{key} measure"):
            r = {"b": b, "classes": len(train_set.classes), "test_acc": res.metrics["test_acc"],
                 "steps": res.step, "untrained": r0, "curve": curve,
                 "final": measure_hue(model, test_set, max_images=args.measure, seed=args.seed),
                 "value": measure_value(model, test_set.images, test_set.labels,
                                        max_images=args.grey_images, seed=args.seed)}
            results["runs"][key] = r
            if b == 2.0 or len(plan) == 1:
                save_figure(example_figure(model, test_set), out / f"examples-{key}.png")
        print(f"[colour] {key}: acc {r['test_acc']:.4f}, hue error {r['final']['garment']:.1f}° "
              f"(untrained {r0['garment']:.1f}°, chance {r['final']['chance']:.1f}°)", flush=True)
        atomic_write_json(out / "results.json", results)

    if args.grey:
        cfg = get_preset("fmnist")
        cfg.epochs, cfg.time_limit_min, cfg.threads = args.grey_epochs, None, None
        cfg.schedule.fit_time_limit = False
        cfg.model.options = {"width": args.grey_width}
        cfg.seed, cfg.out_dir, cfg.progress = args.seed, str(out / "runs" / "grey"), args.progress
        g_tr = TensorImageDataset(torch.from_numpy(tr_img[: args.grey_train, None]),
                                  tr_lab[: args.grey_train], FASHION_MNIST_CLASSES)
        g_te = TensorImageDataset(torch.from_numpy(te_img[: args.test, None]),
                                  te_lab[: args.test], FASHION_MNIST_CLASSES)
        print("[colour] training grey", flush=True)
        with sw("grey train"):
            model, res = train_network(cfg.validate(), DataSplits(
                g_tr, g_te, list(FASHION_MNIST_CLASSES), 1, (28, 28)))
        with sw("grey measure"):
            v = measure_value(model, g_te.images, g_te.targets, max_images=args.grey_images,
                              seed=args.seed)
            results["grey"] = {"test_acc": res.metrics["test_acc"], "epochs": res.epoch,
                               "steps": res.step, "value": v}
            from torch.utils.data import DataLoader, Subset

            sub = Subset(g_te, range(min(len(g_te), 2000)))
            top = bcosnet.evaluation.top_class_scores(
                model, DataLoader(sub, batch_size=500), k=2 if args.quick else 3, progress=False)
            n_cls = 2 if args.quick else 5
            save_figure(plot_class_grid(model, sub, top, most_confident_classes(top, n_cls),
                                        class_names=list(FASHION_MNIST_CLASSES)),
                        out / "fig_a3_grey.png")
        print(f"[colour] grey: acc {res.metrics['test_acc']:.4f}, mean |decoded − pixel| "
              f"{v['mean_abs']:.3f} (shuffled {v['mean_abs_shuffled']:.3f}), "
              f"correlation {v['correlation']:.2f}", flush=True)
    atomic_write_json(out / "results.json", results)
    atomic_write_text(out / "results.md", report(results))
    print(report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
