"""A planted shortcut: find the "watermark neuron" where the truth is known
(supplement B.3, Fig. B4).

Supplement B.3 reports a neuron of a trained B-cos DenseNet that fires on
watermarks; its top-500 images come from a handful of classes (Fig. B4).  Here
we plant such a shortcut ourselves and check that bcosnet's tools find it:

* **Data.**  Fashion-MNIST; a small fixed mark (a ``size×size`` binary pattern,
  deterministic from ``--mark-seed``) replaces the top-right corner of a
  fraction ``--fraction`` of the training images of the planted class(es) and
  of nothing else.  In the test set the mark is on a random half of the images
  of *every* class, so there mark and class are independent.  The mark's box is
  one cell of an ``n×n`` grid (``n = 28 / size``), so the pointing game's cell
  score (:func:`bcosnet.evaluation.cell_scores`) measures the share of positive
  attribution inside it; its uniform baseline is the box's area share ``1/n²``.
* **Training.**  The B-cos network ``fmnist_bcos`` and its conventional twin
  ``standard_fmnist_bcos`` with the trainer's ``fmnist`` / ``fmnist-standard``
  presets (Adam 1e-3, batch 128, cosine fitted to a time budget), for
  ``--train-minutes`` each (default 6 at whatever threads are given; the main job
  trains 10 minutes at 2 threads) or, with ``--train-minutes 0``, exactly
  ``--epochs`` epochs (reproducible), on the stamped training set
  (``bcosnet.training.train(config, datasets=...)``).
* **Finding the neuron** (:func:`bcosnet.evaluation.top_activations`): the test
  set is split at random into a *selection* half and a *report* half.  Every
  channel of every convolution of the B-cos network (and every ReLU of the twin)
  is ranked by the share of stamped images among its top-``--select-top``
  activating selection images; the best channel of the last feature layer
  (``--neuron-layer any``: of any layer) is the neuron; its shares in its
  top-100 and top-500 are then measured on the report half (baseline: the share of stamped
  images there, about 50 %), so the selection does not inflate them.  The same
  search in the untrained network is the control (the first layers detect the
  high-contrast mark without any training).  Fig. B4
  (:func:`bcosnet.evaluation.class_distribution`) is drawn for its top-500 on
  the stamped *training* set (where the mark and the planted class co-occur, as
  watermarks and classes do in ImageNet) and on the report half (where they do
  not); Fig. A5/A6 shows its top report images with their neuron explanations.
* **Does the explanation show the mark?**  Stamped test images that a network
  assigns to a planted class: the share of positive attribution inside the
  mark's box for that class, under ``bcos`` (B-cos net) and every post-hoc
  method (both networks), against the same images without the mark and against
  the box's area share.
* **Does the model use the mark?**  On the test images of the other classes,
  with and without the mark: accuracy, the share predicted as a planted class,
  and the flip rate (not predicted planted without the mark, predicted planted
  with it).

Run from the project root::

    .venv/bin/python -m experiments.shortcut [--quick] [--threads 1] [--out DIR]

Outputs (``--out``): ``results.json``, ``report.md``, ``fig_b4_train.png``,
``fig_b4_test.png``, ``fig_a5_neuron.png``, ``mark.png`` and the two training
runs (``train-bcos/``, ``train-standard/``; a rerun with the same settings
resumes them, so only the later stages are recomputed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset

from bcosnet.data import FASHION_MNIST_CLASSES, DataSplits, TensorImageDataset, fashion_mnist
from bcosnet.evaluation import (
    cell_scores,
    class_distribution,
    make_attribution_fn,
    top_activations,
)
from bcosnet.explanations.figures import plot_class_distribution, plot_neuron_grid, save_figure
from bcosnet.models import create_model
from bcosnet.pipeline import METHOD_SETTINGS
from bcosnet.training import get_preset, load_checkpoint, load_checkpoint_model, train

from ._common import (
    Stopwatch,
    atomic_write_json,
    atomic_write_text,
    prepare,
    read_json,
    study_parser,
)

__all__ = [
    "IMAGE_SIZE",
    "POST_HOC",
    "QUICK_LIMITS",
    "MarkedData",
    "main",
    "make_mark",
    "mark_box",
    "mark_share",
    "stamp",
    "stamped_data",
    "rank_channels",
]

NAME = "shortcut"
IMAGE_SIZE = 28
POST_HOC = ("grad", "ixg", "intgrad", "deeplift", "gradcam", "occlusion", "rise", "lime")
#: Methods whose cost is hundreds of passes per image: explained on fewer images.
EXPENSIVE = ("intgrad", "rise", "lime")
argparse_ns = Any  # the parsed arguments
#: --quick: seeded random subsets of the training and test sets.
QUICK_LIMITS = (2000, 600)


# ----------------------------------------------------------------------------- the mark
def make_mark(size: int = 4, seed: int = 0) -> Tensor:
    """The mark: a ``size×size`` binary (0/1) pattern drawn from ``seed`` with
    between 30 % and 70 % of its pixels on (redrawn otherwise), so it is neither
    blank nor a solid square.  ``size`` must divide 28 (its box is one grid cell)."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 2 or IMAGE_SIZE % size:
        raise ValueError(
            f"mark size must be 2, 4, 7 or 14 (a divisor of {IMAGE_SIZE}, so that its box is "
            f"one cell of the pointing-game grid), got {size!r}"
        )
    g = torch.Generator().manual_seed(int(seed))
    while True:
        m = (torch.rand(size, size, generator=g) < 0.5).float()
        if 0.3 <= m.mean().item() <= 0.7:
            return m


def mark_box(size: int) -> tuple[int, int]:
    """``(n, cell)``: the grid (n×n cells of ``size`` px) and the row-major index of
    the top-right cell, where the mark goes."""
    n = IMAGE_SIZE // size
    return n, n - 1


def stamp(images: Tensor, mark: Tensor) -> Tensor:
    """A copy of N×1×28×28 ``images`` (uint8 0–255 or float in [0, 1]) with the
    mark replacing their top-right corner."""
    if images.dim() != 4 or tuple(images.shape[1:]) != (1, IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"images must be N×1×28×28, got shape {tuple(images.shape)}")
    s = mark.shape[-1]
    out = images.clone()
    m = (mark * 255).round().to(torch.uint8) if images.dtype == torch.uint8 else mark.to(
        images.dtype)
    out[:, :, :s, IMAGE_SIZE - s:] = m
    return out


def mark_share(maps: Tensor, size: int) -> Tensor:
    """Share of positive attribution inside the mark's box, per map: the
    pointing game's cell score of the top-right cell of an n×n grid."""
    n, cell = mark_box(size)
    return cell_scores(maps, cell, n)


@dataclass
class MarkedData:
    """The study's data.

    Attributes:
        train: the stamped training set; ``train_marked``: which of its images carry the mark.
        test_clean: the test images without any mark (uint8 N×1×28×28); ``test_labels``.
        test_marked: which test images carry the mark in the study's test set.
        test: the study's test set (the mark on ``test_marked``).
        mark: the pattern; ``planted``: the planted classes.
    """

    train: TensorImageDataset
    train_marked: Tensor
    test_clean: Tensor
    test_labels: Tensor
    test_marked: Tensor
    test: TensorImageDataset
    mark: Tensor
    planted: list[int]

    def test_images(self, marked: bool, index: Tensor) -> Tensor:
        """Float test images ``index``, all with (``marked``) or all without the mark."""
        x = self.test_clean[index]
        if marked:
            x = stamp(x, self.mark)
        return x.float() / 255.0


def stamped_data(
    planted: Sequence[int],
    fraction: float,
    mark: Tensor,
    *,
    seed: int = 0,
    train_limit: int | None = None,
    test_limit: int | None = None,
    root: str | None = None,
) -> MarkedData:
    """Stamp ``fraction`` of the training images of each ``planted`` class and a
    random half of the test images of every class (seeded).  ``train_limit`` /
    ``test_limit``: use a seeded random subset of that many images."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction}")
    classes = list(FASHION_MNIST_CLASSES)
    planted = [int(c) for c in planted]
    if not planted or any(not 0 <= c < len(classes) for c in planted) or len(set(planted)) != len(
            planted):
        raise ValueError(f"planted classes must be distinct ints in 0..{len(classes) - 1}, "
                         f"got {planted}")
    g = torch.Generator().manual_seed(int(seed))
    tr, te = fashion_mnist(root, "train"), fashion_mnist(root, "test")
    x_tr, y_tr = tr.images, tr.targets
    x_te, y_te = te.images, te.targets
    if train_limit is not None:
        keep = torch.randperm(len(y_tr), generator=g)[:train_limit].sort().values
        x_tr, y_tr = x_tr[keep], y_tr[keep]
    if test_limit is not None:
        keep = torch.randperm(len(y_te), generator=g)[:test_limit].sort().values
        x_te, y_te = x_te[keep], y_te[keep]
    train_marked = torch.zeros(len(y_tr), dtype=torch.bool)
    for c in planted:
        idx = (y_tr == c).nonzero()[:, 0]
        k = round(fraction * len(idx))
        train_marked[idx[torch.randperm(len(idx), generator=g)[:k]]] = True
    x_tr = x_tr.clone()
    x_tr[train_marked] = stamp(x_tr[train_marked], mark)
    test_marked = torch.zeros(len(y_te), dtype=torch.bool)
    for c in range(len(classes)):
        idx = (y_te == c).nonzero()[:, 0]
        test_marked[idx[torch.randperm(len(idx), generator=g)[: len(idx) // 2]]] = True
    x_te_marked = x_te.clone()
    x_te_marked[test_marked] = stamp(x_te[test_marked], mark)
    return MarkedData(
        train=TensorImageDataset(x_tr, y_tr, classes),
        train_marked=train_marked,
        test_clean=x_te,
        test_labels=y_te,
        test_marked=test_marked,
        test=TensorImageDataset(x_te_marked, y_te, classes),
        mark=mark,
        planted=planted,
    )


# ----------------------------------------------------------------------------- neurons
def neuron_layers(model: nn.Module) -> list[str]:
    """The layers searched: every B-cos convolution of ``fmnist_bcos`` (its
    ``features`` entries that are not pools), every ReLU of the twin."""
    names = []
    for name, m in model.named_modules():
        if not name.startswith("features."):
            continue
        kind = type(m).__name__
        if "Bcos" in kind and "Conv" in kind or isinstance(m, nn.ReLU):
            names.append(name)
    if not names:
        raise ValueError("no B-cos convolution or ReLU found under model.features")
    return names


def rank_channels(tops: dict[str, Any], marked: Tensor) -> list[dict[str, Any]]:
    """Every (layer, channel) of ``tops`` (``top_activations`` results) with the
    share of marked images (``marked``: a bool per data-set image) among its
    recorded top images, best first (ties: the higher top-1 activation first)."""
    rows = []
    for layer, top in tops.items():
        share = marked[top.indices].float().mean(1)
        for i, c in enumerate(top.channels):
            rows.append({"layer": layer, "channel": int(c), "share": float(share[i]),
                         "top1": float(top.values[i, 0])})
    order = sorted(range(len(rows)), key=lambda i: (-rows[i]["share"], -rows[i]["top1"]))
    return [rows[i] for i in order]


# ----------------------------------------------------------------------------- helpers
@torch.no_grad()
def predict(model: nn.Module, images: Tensor, batch_size: int = 500) -> Tensor:
    """Predicted classes of float images."""
    model.eval()
    out = [model(images[i:i + batch_size]).argmax(1) for i in range(0, len(images), batch_size)]
    return torch.cat(out)


def _loader(ds: Any, batch_size: int = 256) -> DataLoader:
    return DataLoader(ds, batch_size=batch_size, shuffle=False)


def _summary(x: Tensor) -> dict[str, float]:
    x = x.double()
    q = torch.quantile(x, torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64))
    return {"median": float(q[1]), "q25": float(q[0]), "q75": float(q[2]),
            "mean": float(x.mean()), "n": int(x.numel())}


def _train(which: str, data: MarkedData, out: Path, args: argparse_ns,
           quick: bool) -> dict[str, Any]:
    """Train one network (or reuse the finished run in ``out/train-<which>``)."""
    run_dir = out / f"train-{which}"
    if (run_dir / "model.safetensors").is_file():  # finished earlier: do not train on
        ck = load_checkpoint(run_dir / "checkpoint.pt")
        return {"checkpoint": run_dir / "checkpoint.pt", "test_acc": ck["metrics"]["test_acc"],
                "epoch": ck["epoch"], "step": ck["step"], "train_time_s": ck["train_time_s"]}
    cfg = get_preset("fmnist-standard" if which == "standard" else "fmnist")
    cfg.epochs = args.epochs
    # The presets' recipe: a time budget with the cosine fitted to it (the main job's
    # 10 min at 2 threads); --train-minutes 0 trains exactly --epochs epochs instead.
    cfg.time_limit_min = args.train_minutes or None
    cfg.schedule.fit_time_limit = bool(args.train_minutes)
    cfg.threads = args.threads
    cfg.seed = args.seed
    cfg.progress = args.progress
    cfg.resume = True
    cfg.log_every_steps = 0
    cfg.out_dir = str(out / f"train-{which}")
    if args.width is not None:
        cfg.model.options = {**cfg.model.options, "width": args.width}
    if quick:  # more, smaller steps: the seconds-long run learns the mark
        cfg.optim.batch_size = 32
    splits = DataSplits(data.train, TensorImageDataset(data.test_clean, data.test_labels,
                                                       data.train.classes),
                        data.train.classes, 1, (IMAGE_SIZE, IMAGE_SIZE))
    tr = train(cfg, datasets=splits)
    return {"checkpoint": tr.checkpoint, "test_acc": tr.metrics["test_acc"], "epoch": tr.epoch,
            "step": tr.step, "train_time_s": tr.train_time_s}



def _parser():
    p = study_parser(NAME, "Plant a shortcut (a mark on some images of one class) in "
                     "Fashion-MNIST, train the B-cos network and its twin, and find the "
                     "mark's neuron and its use with bcosnet's tools (supplement B.3).")
    p.add_argument("--planted", default="6",
                   help="planted class(es), comma-separated indices (default 6: Shirt)")
    p.add_argument("--fraction", type=float, default=None,
                   help="share of the planted classes' training images that get the mark "
                        "(default 0.3; --quick: 1.0, so that its seconds of training learn it)")
    p.add_argument("--mark-size", type=int, default=7, help="mark side in px (2, 4, 7, 14)")
    p.add_argument("--mark-seed", type=int, default=0, help="seed of the mark's pattern")
    p.add_argument("--epochs", type=int, default=None,
                   help="at most this many training epochs per network (default 30, the "
                        "presets'; --quick: 3)")
    p.add_argument("--train-minutes", type=float, default=None,
                   help="training time budget per network, the cosine fitted to it (default "
                        "6; 0: no budget, train --epochs epochs; --quick: 0)")
    p.add_argument("--train-figure-images", type=int, default=None,
                   help="training images searched for the neuron's top activations in the "
                        "training-set Fig. B4 (default 20000; --quick: all)")
    p.add_argument("--width", type=int, default=None,
                   help="network width (default: the models' 16; --quick: 8)")
    p.add_argument("--images", type=int, default=None,
                   help="images per network for the explanation check (default 200; --quick 24)")
    p.add_argument("--images-expensive", type=int, default=None,
                   help=f"images for {', '.join(EXPENSIVE)} (default 200; --quick 3)")
    p.add_argument("--select-top", type=int, default=None,
                   help="top-N used to rank channels (default 100; --quick 20)")
    p.add_argument("--top", type=int, default=None,
                   help="top-N of the found neuron's Fig. B4 (default 500; --quick 100)")
    p.add_argument("--neuron-layer", choices=("last", "any"), default="last",
                   help="where the neuron is picked: the last feature layer (default; the "
                        "first layers detect the high-contrast mark even untrained) or any")
    p.add_argument("--methods", default=",".join(POST_HOC),
                   help="post-hoc methods, comma-separated")
    return p


def _defaults(args: argparse_ns) -> None:
    q = args.quick
    for name, full, quick in (("epochs", 30, 3), ("width", None, 8), ("images", 200, 12),
                              ("images_expensive", 200, 3), ("select_top", 100, 20),
                              ("top", 500, 100), ("fraction", 0.3, 1.0),
                              ("train_minutes", 6.0, 0.0), ("train_figure_images", 20000, None)):
        if getattr(args, name) is None:
            setattr(args, name, quick if q else full)
    if args.train_minutes < 0:
        raise ValueError("--train-minutes must be >= 0")
    for name in ("epochs", "images", "images_expensive", "select_top", "top",
                 "train_figure_images"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
    args.planted = [int(c) for c in str(args.planted).split(",") if c.strip()]
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in args.methods if m not in POST_HOC]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {', '.join(POST_HOC)}")


def _method_settings(method: str, quick: bool) -> dict[str, Any]:
    """The main job's settings for 28 px images (LIME: quickshift max_dist 4, else one
    super-pixel per image; occlusion: 4-px patches, stride 4), fewer samples when quick."""
    settings = dict(METHOD_SETTINGS.get(method, {}))
    if quick:
        settings.update({"intgrad": {"n_steps": 8}, "rise": {"n_masks": 32},
                         "lime": {"n_samples": 32}}.get(method, {}))
    return settings


def _setup_record(args: argparse_ns) -> dict[str, Any]:
    keys = ("quick", "seed", "planted", "fraction", "mark_size", "mark_seed", "epochs", "width",
            "train_minutes")
    return {k: getattr(args, k) for k in keys}


# ----------------------------------------------------------------------------- stages
def find_neuron(model: nn.Module, data: MarkedData, sel: Tensor, rep: Tensor,
                args: argparse_ns) -> dict[str, Any]:
    """Rank every channel on the selection half, measure the best on the report half."""
    ds_sel = TensorImageDataset(data.test.images[sel], data.test_labels[sel], data.test.classes)
    tops = top_activations(model, _loader(ds_sel), {n: None for n in neuron_layers(model)},
                           k=args.select_top, progress=args.progress)
    ranking = rank_channels(tops, data.test_marked[sel])
    layers = neuron_layers(model)
    pick = layers[-1] if args.neuron_layer == "last" else None
    best = next(r for r in ranking if pick is None or r["layer"] == pick)
    per_layer = {}
    for row in ranking:  # best first: the first row of each layer is its best channel
        per_layer.setdefault(row["layer"], {"channel": row["channel"], "share": row["share"]})
    # Control: the same search in the untrained network (same architecture and seed), so a
    # high share is not just a property of the mark's contrast and the architecture.
    torch.manual_seed(args.seed)
    untrained = create_model(model.model_info.name, len(data.train.classes),
                             **({"width": args.width} if args.width is not None else {}))
    tops0 = top_activations(untrained, _loader(ds_sel), {n: None for n in neuron_layers(model)},
                            k=args.select_top, progress=args.progress)
    untrained_per_layer = {}
    for row in rank_channels(tops0, data.test_marked[sel]):
        untrained_per_layer.setdefault(row["layer"],
                                       {"channel": row["channel"], "share": row["share"]})
    ds_rep = TensorImageDataset(data.test.images[rep], data.test_labels[rep], data.test.classes)
    top = top_activations(model, _loader(ds_rep), best["layer"], [best["channel"]],
                          k=args.top, progress=args.progress)
    marked_rep = data.test_marked[rep][top.indices[0]]
    small = min(100, args.top)
    return {
        "layer": best["layer"], "channel": best["channel"],
        "selection_share": best["share"], "select_top": args.select_top,
        "ranking_head": ranking[:5],
        "best_per_layer": per_layer,
        "untrained_best_per_layer": untrained_per_layer,
        "selection_baseline": float(data.test_marked[sel].float().mean()),
        "channels_searched": len(ranking),
        "report_top": {str(small): float(marked_rep[:small].float().mean()),
                       str(args.top): float(marked_rep.float().mean())},
        "report_baseline": float(data.test_marked[rep].float().mean()),
        "report_images": len(rep),
        "report_top_positions": top.indices[0].tolist(),  # positions in the report half
        "_top": top, "_ds": ds_rep,
    }


def explanation_check(model: nn.Module, data: MarkedData, methods: Sequence[str],
                      args: argparse_ns, log: Any) -> dict[str, Any]:
    """Mark share of each method on stamped test images the model assigns to a
    planted class, with and without the mark."""
    g = torch.Generator().manual_seed(args.seed + 1)
    marked_idx = data.test_marked.nonzero()[:, 0]
    pred = predict(model, data.test_images(True, marked_idx))
    ok = torch.isin(pred, torch.tensor(data.planted))
    cand, targets = marked_idx[ok], pred[ok]
    order = torch.randperm(len(cand), generator=g)[: args.images]
    cand, targets = cand[order], targets[order]
    res_targets = targets
    x_on, x_off = data.test_images(True, cand), data.test_images(False, cand)
    n, _ = mark_box(args.mark_size)
    res: dict[str, Any] = {"images_available": int(ok.sum()), "uniform": 1.0 / n**2,
                           "methods": {}}
    for method in methods:
        k = args.images_expensive if method in EXPENSIVE else args.images
        k = min(k, len(cand))
        fn = make_attribution_fn(model, method, **_method_settings(method, args.quick))
        shares = {}
        for key, x in (("marked", x_on[:k]), ("clean", x_off[:k])):
            parts = []
            for lo in range(0, k, 50):
                maps = fn(x[lo:lo + 50], res_targets[:k][lo:lo + 50])
                parts.append(mark_share(maps.detach(), args.mark_size))
            shares[key] = torch.cat(parts) if parts else torch.empty(0, dtype=torch.float64)
        on, off = shares["marked"], shares["clean"]
        res["methods"][method] = {
            "marked": _summary(on), "clean": _summary(off),
            "above_uniform": float((on > 1.0 / n**2).double().mean()),
            "above_clean": float((on > off).double().mean()),
        }
        log(f"  {method:10s} n={k:4d}  marked {res['methods'][method]['marked']['median']:.3f}  "
            f"clean {res['methods'][method]['clean']['median']:.3f}")
    return res


def flip_rates(model: nn.Module, data: MarkedData) -> dict[str, Any]:
    """On the test images of the other classes, with and without the mark."""
    planted = torch.tensor(data.planted)
    other = (~torch.isin(data.test_labels, planted)).nonzero()[:, 0]
    y = data.test_labels[other]
    p_off = predict(model, data.test_images(False, other))
    p_on = predict(model, data.test_images(True, other))
    to_planted_off, to_planted_on = torch.isin(p_off, planted), torch.isin(p_on, planted)
    own = torch.isin(data.test_labels, planted).nonzero()[:, 0]
    q_off = predict(model, data.test_images(False, own))
    q_on = predict(model, data.test_images(True, own))
    yo = data.test_labels[own]
    return {
        "other_images": len(other),
        "acc_clean": float((p_off == y).double().mean()),
        "acc_marked": float((p_on == y).double().mean()),
        "pred_planted_clean": float(to_planted_off.double().mean()),
        "pred_planted_marked": float(to_planted_on.double().mean()),
        "flip_rate": float((to_planted_on & ~to_planted_off).double().mean()),
        "planted_images": len(own),
        "planted_acc_clean": float((q_off == yo).double().mean()),
        "planted_acc_marked": float((q_on == yo).double().mean()),
    }


# ----------------------------------------------------------------------------- report
def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def render_report(r: dict[str, Any]) -> str:
    s = r["settings"]
    lines = [
        "# Planted shortcut (supplement B.3, Fig. B4)", "",
        f"Planted class(es) {r['planted_names']}; mark {s['mark_size']}×{s['mark_size']} px "
        f"(seed {s['mark_seed']}) on {_pct(s['fraction'])} of their training images "
        f"({r['data']['train_marked']} of {r['data']['train_images']}); test set: mark on "
        f"{r['data']['test_marked']} of {r['data']['test_images']} images (half of each class). "
        f"{s['epochs']} epoch(s) per network.", "",
        "## Networks", "",
        "| network | clean test accuracy | epochs | training wall time |", "|---|---|---|---|",
    ]
    for k, v in r["networks"].items():
        lines.append(f"| {k} | {_pct(v['test_acc'])} | {v['epochs']:.2f} ({v['steps']} steps) | "
                     f"{v['train_time_s']:.0f} s |")
    lines += ["", "## The neuron found", "",
              "| network | layer | channel | stamped share, selection top-"
              f"{s['select_top']} | report top-100 | report top-{s['top']} | baseline "
              "(stamped share of the report half) |", "|---|---|---|---|---|---|---|"]
    for k, v in r["neurons"].items():
        tops = list(v["report_top"].values())
        lines.append(f"| {k} | {v['layer']} | {v['channel']} | {_pct(v['selection_share'])} | "
                     f"{_pct(tops[0])} | {_pct(tops[-1])} | {_pct(v['report_baseline'])} |")
    lines += ["", "Best channel per layer on the selection half (stamped share of its top-"
              f"{s['select_top']}), trained vs the same search in the untrained network:", "",
              "| network | layer | trained: channel, share | untrained: channel, share |",
              "|---|---|---|---|"]
    for k, v in r["neurons"].items():
        for layer, t in v["best_per_layer"].items():
            u = v["untrained_best_per_layer"][layer]
            lines.append(f"| {k} | {layer} | {t['channel']}, {_pct(t['share'])} | "
                         f"{u['channel']}, {_pct(u['share'])} |")
    if "train_top" in r:
        t = r["train_top"]
        lines += ["", f"B-cos neuron on the stamped training set: {_pct(t['stamped_share'])} "
                  f"of its top-{t['k']} among the first {t['images']} training images carry "
                  f"the mark (all: "
                  f"{_pct(t['baseline'])}); their classes: {t['counts']}."]
    uniform = next(iter(r["explanations"].values()))["uniform"]
    lines += ["", "## Share of positive attribution inside the mark's box", "",
              f"Median over stamped test images each network assigns to a planted class "
              f"(target: that class), with the mark / the same images without it; uniform "
              f"baseline (box area share) {_pct(uniform)}.",
              "", "| network | method | images | with mark | without mark | "
              "maps above uniform |", "|---|---|---|---|---|---|"]
    for net, e in r["explanations"].items():
        for m, v in e["methods"].items():
            lines.append(f"| {net} | {m} | {v['marked']['n']} | {_pct(v['marked']['median'])} | "
                         f"{_pct(v['clean']['median'])} | {_pct(v['above_uniform'])} |")
    lines += ["", "## Flip rates (test images of the other classes)", "",
              "| network | accuracy clean | accuracy with mark | predicted planted clean | "
              "with mark | flip rate | planted class accuracy clean / with mark |",
              "|---|---|---|---|---|---|---|"]
    for net, f in r["flips"].items():
        lines.append(f"| {net} | {_pct(f['acc_clean'])} | {_pct(f['acc_marked'])} | "
                     f"{_pct(f['pred_planted_clean'])} | {_pct(f['pred_planted_marked'])} | "
                     f"{_pct(f['flip_rate'])} | {_pct(f['planted_acc_clean'])} / "
                     f"{_pct(f['planted_acc_marked'])} |")
    lines += ["", "## Wall times", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in r["wall_s"].items()]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = _parser().parse_args(argv)
    _defaults(args)
    out = prepare(NAME, args)
    sw = Stopwatch()
    log = print

    setup = _setup_record(args)
    setup_path = out / "setup.json"
    if setup_path.is_file() and read_json(setup_path) != setup:
        raise ValueError(f"{out} holds a run with other settings ({read_json(setup_path)}); "
                         "choose another --out or delete that folder")
    atomic_write_json(setup_path, setup)

    with sw("data"):
        mark = make_mark(args.mark_size, args.mark_seed)
        data = stamped_data(args.planted, args.fraction, mark, seed=args.seed,
                            train_limit=QUICK_LIMITS[0] if args.quick else None,
                            test_limit=QUICK_LIMITS[1] if args.quick else None)
    names = data.train.classes
    results: dict[str, Any] = {
        "settings": {**setup, "select_top": args.select_top, "top": args.top,
                     "images": args.images, "images_expensive": args.images_expensive,
                     "methods": list(args.methods), "threads": torch.get_num_threads()},
        "planted_names": [names[c] for c in args.planted],
        "mark": mark.tolist(),
        "data": {"train_images": len(data.train), "train_marked": int(data.train_marked.sum()),
                 "test_images": len(data.test), "test_marked": int(data.test_marked.sum())},
    }

    models: dict[str, nn.Module] = {}
    results["networks"] = {}
    for which, label in (("bcos", "B-cos fmnist_bcos"), ("standard", "twin standard_fmnist_bcos")):
        with sw(f"train {which}"):
            tr = _train(which, data, out, args, args.quick)
        models[label] = load_checkpoint_model(tr["checkpoint"])
        models[label].eval()
        steps_per_epoch = math.ceil(len(data.train) / (32 if args.quick else 128))
        results["networks"][label] = {"test_acc": tr["test_acc"], "steps": tr["step"],
                                      "epochs": tr["step"] / steps_per_epoch,
                                      "train_time_s": tr["train_time_s"],
                                      "checkpoint": str(tr["checkpoint"])}
        log(f"{label}: clean test accuracy {tr['test_acc']:.4f}")
    bcos_label = "B-cos fmnist_bcos"

    g = torch.Generator().manual_seed(args.seed + 2)
    perm = torch.randperm(len(data.test), generator=g)
    sel, rep = perm[: len(perm) // 2].sort().values, perm[len(perm) // 2:].sort().values
    atomic_write_json(out / "split.json", {"selection": sel.tolist(), "report": rep.tolist()})
    results["neurons"] = {}
    found: dict[str, dict[str, Any]] = {}
    for label, model in models.items():
        with sw(f"neurons {label.split()[0]}"):
            found[label] = find_neuron(model, data, sel, rep, args)
        results["neurons"][label] = {k: v for k, v in found[label].items()
                                     if not k.startswith("_")}
        log(f"{label}: neuron {found[label]['layer']}:{found[label]['channel']}  "
            f"report shares {found[label]['report_top']}  "
            f"baseline {found[label]['report_baseline']:.3f}")

    b = found[bcos_label]
    with sw("figures"):
        counts = class_distribution(b["_top"], b["channel"], num_classes=len(names))
        save_figure(plot_class_distribution(
            counts, class_names=names,
            title=f"B-cos {b['layer']} ch {b['channel']}: top-{args.top}, report half of the "
                  "test set"), out / "fig_b4_test.png")
        n_fig = min(args.train_figure_images or len(data.train), len(data.train))
        train_fig = Subset(data.train, range(n_fig))
        top_tr = top_activations(models[bcos_label], _loader(train_fig), b["layer"],
                                 [b["channel"]], k=args.top, progress=args.progress)
        counts_tr = class_distribution(top_tr, b["channel"], num_classes=len(names))
        results["train_top"] = {
            "k": args.top,
            "images": n_fig,
            "stamped_share": float(data.train_marked[top_tr.indices[0]].float().mean()),
            "baseline": float(data.train_marked[:n_fig].float().mean()),
            "counts": {names[i]: int(c) for i, c in enumerate(counts_tr.tolist()) if c},
        }
        results["neurons"][bcos_label]["test_class_counts"] = {
            names[i]: int(c) for i, c in enumerate(counts.tolist()) if c}
        save_figure(plot_class_distribution(
            counts_tr, class_names=names,
            title=f"B-cos {b['layer']} ch {b['channel']}: top-{args.top}, stamped training set"),
            out / "fig_b4_train.png")
        save_figure(plot_neuron_grid(models[bcos_label], b["_ds"], b["_top"], [b["channel"]],
                                     n_images=8), out / "fig_a5_neuron.png")
        _save_mark_figure(data, out / "mark.png")

    results["explanations"] = {}
    for label, model in models.items():
        methods = (["bcos"] if label == bcos_label else []) + list(args.methods)
        log(f"{label}: explanation check")
        with sw(f"explanations {label.split()[0]}"):
            results["explanations"][label] = explanation_check(model, data, methods, args, log)

    results["flips"] = {}
    with sw("flips"):
        for label, model in models.items():
            results["flips"][label] = flip_rates(model, data)
            log(f"{label}: flips {results['flips'][label]}")
    results["wall_s"] = dict(sw.seconds)
    results["wall_s"]["total"] = sum(sw.seconds.values())
    atomic_write_json(out / "results.json", results)
    atomic_write_text(out / "report.md", render_report(results))
    log(f"wrote {out / 'report.md'}")
    return results


def _save_mark_figure(data: MarkedData, path: Path) -> None:
    from matplotlib.figure import Figure

    i = int(data.train_marked.nonzero()[0, 0])
    fig = Figure(figsize=(3.0, 1.6))
    axes = fig.subplots(1, 2)
    axes[0].imshow(data.mark.numpy(), cmap="gray", vmin=0, vmax=1)
    axes[0].set_title("mark", fontsize=8)
    axes[1].imshow(data.train.images[i, 0].numpy(), cmap="gray", vmin=0, vmax=255)
    axes[1].set_title("stamped training image", fontsize=8)
    for a in axes:
        a.set_xticks([])
        a.set_yticks([])
    fig.tight_layout()
    save_figure(fig, path)


if __name__ == "__main__":  # pragma: no cover
    main()
    raise SystemExit(0)
