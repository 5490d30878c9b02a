"""Colour fidelity of B-cos explanations, measured (docs/explanations.md).

Claim (supplement D.2): because of the encoding ``[r, g, b, 1−r, 1−g, 1−b]``
and the alignment pressure of B-cos layers, the colour decoded from the
dynamic weights ``W(x)`` (``bcosnet.to_rgba``) reproduces the colour of the
object the model looks at.

Experiment: colourise Fashion-MNIST — every garment is tinted with a random hue
*independent of its class* (so colour carries no class information), on a grey
or a random-colour background; train a small 3-channel B-cos network; explain
the true class of correctly classified test images and compare the hue decoded
from the positively contributing pixels with the garment's true tint.  Chance
(a random hue) gives a mean error of 90°.

    flock /tmp/bcosnet-heavy.lock .venv/bin/python scripts/colour_fidelity.py \
        --train 60000 --epochs 2 --figure docs/colour_fidelity.png

The functions are importable (tests/test_colour_fidelity.py runs a scaled-down
version).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

import bcosnet
from bcosnet.data import fashion_mnist
from bcosnet.explanations.colour import hue_of
from bcosnet.nn import AddInverse, BcosConv2d, LogitLayer


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


@dataclass
class ColourisedSet:
    """Colourised images N×3×H×W in [0, 1] (float32), labels N, garment hue N
    (degrees), garment mask N×H×W (the grey-level intensity a ∈ [0, 1]), and
    which images have a grey background (bool N)."""

    images: Tensor
    labels: Tensor
    hues: np.ndarray
    garment: np.ndarray
    grey_background: np.ndarray


def colourise(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    seed: int,
    grey_fraction: float = 0.5,
) -> ColourisedSet:
    """Tint each garment with a random hue (full saturation and value) independent
    of its label; background grey (0.5) for a ``grey_fraction`` of the images, a
    uniformly random RGB colour for the rest.  Pixel = (1−a)·background + a·tint,
    a = Fashion-MNIST intensity / 255."""
    rng = np.random.default_rng(seed)
    n = images.shape[0]
    a = images.astype(np.float32) / 255.0
    hues = rng.uniform(0, 360, n)
    tint = hsv_to_rgb(hues, np.ones(n), np.ones(n)).astype(np.float32)  # N×3
    grey = rng.uniform(size=n) < grey_fraction
    bg = np.where(grey[:, None], 0.5, rng.uniform(size=(n, 3))).astype(np.float32)
    out = (1 - a[:, None]) * bg[:, :, None, None] + a[:, None] * tint[:, :, None, None]
    return ColourisedSet(
        images=torch.from_numpy(np.ascontiguousarray(out)),
        labels=torch.from_numpy(labels.astype(np.int64)),
        hues=hues,
        garment=a,
        grey_background=grey,
    )


# ---------------------------------------------------------------- model
def build_net(
    width: int = 16,
    num_classes: int = 10,
    *,
    b: float = 2.0,
    temperature: float = 100.0,
    seed: int = 0,
) -> nn.Module:
    """A small pure B-cos network for 3×28×28 images: four 3×3 B-cos convs
    (two strided), a 1×1 B-cos classifier applied per location, global average
    pooling, then ``x / T + b`` (v1 CIFAR-style logit bias log(0.1/0.9))."""
    torch.manual_seed(seed)
    w = width
    scale = 10 ** (1.5 * b - 1.75)  # v1 CIFAR-10 output scale γ (SPEC §1)
    layers = [
        AddInverse(3),
        BcosConv2d(6, w, 3, padding=1, b=b, scale=scale),
        BcosConv2d(w, 2 * w, 3, stride=2, padding=1, b=b, scale=scale),
        BcosConv2d(2 * w, 2 * w, 3, padding=1, b=b, scale=scale),
        BcosConv2d(2 * w, 4 * w, 3, stride=2, padding=1, b=b, scale=scale),
        BcosConv2d(4 * w, num_classes, 1, b=b, scale=scale),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        # v1 CIFAR-10 preset for B = 2: log10 T = 2, b = log(0.1/0.9).
        LogitLayer(temperature=temperature, bias=math.log(0.1 / 0.9)),
    ]
    return nn.Sequential(*layers)


def train(
    model: nn.Module,
    data: ColourisedSet,
    *,
    epochs: int = 2,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = True,
    callback: Callable[[int], None] | None = None,
    every: int = 0,
) -> list[float]:
    """Plain Adam loop with BCE on one-hot targets (SPEC §6); returns per-epoch mean loss.

    ``callback(step)`` runs every ``every`` optimiser steps (and after the last).
    """
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    n = data.images.shape[0]
    steps = epochs * math.ceil(n / batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=lr * 0.01)
    losses = []
    step = 0
    model.train()
    for ep in range(epochs):
        perm = torch.randperm(n, generator=g)
        total, count = 0.0, 0
        bar = tqdm(range(0, n, batch_size), desc=f"epoch {ep + 1}/{epochs}", disable=not progress)
        for i in bar:
            idx = perm[i : i + batch_size]
            x, y = data.images[idx], data.labels[idx]
            logits = model(x)
            onehot = nn.functional.one_hot(y, logits.shape[1]).to(logits.dtype)
            loss = nn.functional.binary_cross_entropy_with_logits(logits, onehot)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
            count += len(idx)
            bar.set_postfix(loss=f"{total / count:.4f}")
            step += 1
            if callback is not None and every and step % every == 0 and step < steps:
                callback(step)
                model.train()
        losses.append(total / count)
    model.eval()
    if callback is not None:
        callback(steps)
    return losses


@torch.no_grad()
def accuracy(model: nn.Module, data: ColourisedSet, batch_size: int = 500) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(data.labels), batch_size):
        pred = model(data.images[i : i + batch_size]).argmax(1)
        correct += (pred == data.labels[i : i + batch_size]).sum().item()
    return correct / len(data.labels)


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


@dataclass
class FidelityResult:
    """Hue errors in degrees (circular distance, 0–180), averaged over images.

    ``garment``: the hue decoded at positively contributing garment pixels vs
    the garment's tint (the main number).  ``pixels``: per pixel, decoded hue
    vs the true hue of that pixel, over all positively contributing coloured
    pixels (background included).  ``pooled``: all positive pixels pooled vs
    the garment's tint (background colour counts as error).  ``chance``: the
    garment number against another image's tint (a random hue: 90° in theory).
    """

    n_images: int
    garment: float
    garment_median: float
    garment_within_30: float  # fraction of images with garment error ≤ 30°
    pixels: float
    pooled: float
    garment_grey_bg: float
    garment_random_bg: float
    chance: float
    errors: np.ndarray


def measure(
    model: nn.Module,
    data: ColourisedSet,
    *,
    max_images: int = 1000,
    batch_size: int = 100,
    garment_threshold: float = 0.3,
    correct_only: bool = True,
    seed: int = 0,
    progress: bool = True,
) -> FidelityResult:
    """Explain the true class of (correctly classified, if ``correct_only``)
    images and compare decoded hues with the true ones.  Per image, hues are
    averaged circularly with weights alpha × chroma of the decoded colour
    (``to_rgba`` with no smoothing: alpha is 0 where the contribution is < 0)."""
    model.eval()
    e_g, e_pix, e_pool, dec_g, true_h, grey_bg = [], [], [], [], [], []
    bar = tqdm(range(0, len(data.labels), batch_size), desc="explain", disable=not progress)
    for i in bar:
        sl = slice(i, i + batch_size)
        x, y = data.images[sl], data.labels[sl]
        n = len(y)
        ex = bcosnet.explain(model, x, target=y)
        ok = (ex.all_logits.argmax(1) == y).numpy() if correct_only else np.ones(n, bool)
        rgba = bcosnet.to_rgba(ex.weights[:, 0], ex.inputs, smooth=0).numpy()  # n×H×W×4
        hue, chroma = hue_of(rgba[..., :3])
        hue, w = hue.reshape(n, -1), (rgba[..., 3] * chroma).reshape(n, -1)
        th = data.hues[sl]
        garment = (data.garment[sl] > garment_threshold).reshape(n, -1)
        h_g, tot_g = _weighted_hue(hue, w * garment)
        h_pool, tot = _weighted_hue(hue, w)
        true_pix, true_chroma = hue_of(x.permute(0, 2, 3, 1).numpy())
        wp = w * true_chroma.reshape(n, -1)
        pix = (wp * _circ_dist(hue, true_pix.reshape(n, -1))).sum(1) / np.maximum(wp.sum(1), 1e-12)
        keep = ok & (tot_g > 0)
        e_g.append(_circ_dist(h_g, th)[keep])
        e_pix.append(pix[keep])
        e_pool.append(_circ_dist(h_pool, th)[keep])
        dec_g.append(h_g[keep])
        true_h.append(th[keep])
        grey_bg.append(data.grey_background[sl][keep])
        if sum(len(e) for e in e_g) >= max_images:
            break
    cat = [np.concatenate(v)[:max_images] for v in (e_g, e_pix, e_pool, dec_g, true_h, grey_bg)]
    eg, epix, epool, dec, th, gb = cat
    if len(eg) == 0:
        raise RuntimeError("no correctly classified image to measure — train longer")
    rng = np.random.default_rng(seed)
    chance = _circ_dist(dec, th[rng.permutation(len(th))]).mean()
    return FidelityResult(
        n_images=len(eg),
        garment=float(eg.mean()),
        garment_median=float(np.median(eg)),
        garment_within_30=float((eg <= 30).mean()),
        pixels=float(epix.mean()),
        pooled=float(epool.mean()),
        garment_grey_bg=float(eg[gb].mean()) if gb.any() else float("nan"),
        garment_random_bg=float(eg[~gb].mean()) if (~gb).any() else float("nan"),
        chance=float(chance),
        errors=eg,
    )


def _report(name: str, r: FidelityResult) -> None:
    print(f"[{name}] images measured: {r.n_images}")
    print(f"[{name}] garment: mean hue error {r.garment:5.1f}° (median {r.garment_median:.1f}°, "
          f"{100 * r.garment_within_30:.1f}% of images ≤ 30°); grey bg {r.garment_grey_bg:.1f}°, "
          f"random bg {r.garment_random_bg:.1f}°")
    print(f"[{name}] per pixel vs true pixel hue: {r.pixels:5.1f}°; "
          f"all positive pixels pooled vs tint: {r.pooled:5.1f}°")
    print(f"[{name}] chance (vs a random image's tint): {r.chance:5.1f}° (theory 90°)")


def save_figure(model: nn.Module, data: ColourisedSet, path: str | Path, n: int = 8) -> None:
    """Rows: image, decoded explanation (to_rgba over a white page) for n test images."""
    from matplotlib.figure import Figure

    x, y = data.images[:n], data.labels[:n]
    ex = bcosnet.explain(model, x, target=y)
    rgba = bcosnet.to_rgba(ex.weights[:, 0], ex.inputs, smooth=0).numpy()
    fig = Figure(figsize=(1.2 * n, 2.6))
    axes = fig.subplots(2, n)
    for j in range(n):
        axes[0, j].imshow(x[j].permute(1, 2, 0).numpy())
        axes[0, j].set_title(f"hue {data.hues[j]:.0f}°", fontsize=7)
        axes[1, j].imshow(rgba[j])
        hue, chroma = hue_of(rgba[j, ..., :3])
        h, _ = _weighted_hue(hue.reshape(-1), (rgba[j, ..., 3] * chroma).reshape(-1))
        axes[1, j].set_title(f"decoded {float(h):.0f}°", fontsize=7)
        for ax in axes[:, j]:
            ax.set_axis_off()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=path.suffix)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train", type=int, default=60000, help="training images (from 60000)")
    p.add_argument("--test", type=int, default=1000, help="test images to measure")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--temperature", type=float, default=100.0)
    p.add_argument(
        "--arch",
        default="fmnist_bcos",
        help="a registered model name taking in_channels/width (default fmnist_bcos), "
        "or 'small' (build_net)",
    )
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--b", type=float, default=2.0, help="alignment pressure B of every layer")
    p.add_argument("--eval-every", type=int, default=0,
                   help="measure hue error + accuracy every N steps (a training curve)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--figure", type=Path, default=None, help="write a PNG of examples here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # CPU speed: tiny B-cos activations can turn denormal
    t0 = time.perf_counter()
    tr_img, tr_lab = load_fashion_mnist("train")
    te_img, te_lab = load_fashion_mnist("test")
    train_set = colourise(tr_img[: args.train], tr_lab[: args.train], seed=args.seed)
    test_set = colourise(te_img, te_lab, seed=args.seed + 1)
    if args.arch == "small":
        model = build_net(args.width, temperature=args.temperature, seed=args.seed)
    else:
        torch.manual_seed(args.seed)
        model = bcosnet.create_model(
            args.arch, num_classes=10, in_channels=3, width=args.width, b=args.b
        )
    # Control: the same network before training (explaining the true class of any image).
    _report("untrained", measure(model, test_set, max_images=args.test, correct_only=False,
                                 seed=args.seed, progress=False))
    curve_set = colourise(te_img[:2000], te_lab[:2000], seed=args.seed + 1)

    def curve(step: int) -> None:
        r = measure(model, curve_set, max_images=500, seed=args.seed, progress=False)
        print(f"[curve] step {step}: accuracy {accuracy(model, curve_set):.4f} (2000 test "
              f"images), garment hue error {r.garment:.1f}°, per pixel {r.pixels:.1f}°",
              flush=True)

    losses = train(model, train_set, epochs=args.epochs, lr=args.lr, seed=args.seed,
                   callback=curve if args.eval_every else None, every=args.eval_every)
    t_train = time.perf_counter() - t0
    acc = accuracy(model, test_set)
    print(f"arch {args.arch}, train images {args.train}, epochs {args.epochs}, width "
          f"{args.width}, losses {[round(v, 4) for v in losses]}, train time {t_train:.0f} s")
    print(f"test accuracy (10000 colourised test images): {acc:.4f}")
    _report("trained", measure(model, test_set, max_images=args.test, seed=args.seed,
                               progress=False))
    if args.figure is not None:
        save_figure(model, test_set, args.figure)
        print(f"wrote {args.figure}")
    print(f"total time {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
