"""``bcosnet neurons``: the most highly activating images of a layer's neurons.

    bcosnet neurons --checkpoint runs/fmnist/checkpoint.pt --layer features.5 \
        --top 200 --out neurons/

The data set is the one the checkpoint records (its images fed as it was tested:
size and resize rule); ``--dataset NAME`` / ``--data ROOT`` choose another, as in
``bcosnet evaluate`` and ``bcosnet train``.

One pass over the data keeps the top-N activations per channel
(:func:`bcosnet.evaluation.top_activations`); then it writes

* ``neurons_<layer>.png``: per neuron, its top images and their explanations
  (supplement Fig. A5/A6);
* ``class_distribution_<layer>_ch<C>.png``: the classes among the images of
  neuron C's top-N activations (Fig. B4);
* ``top_<layer>.json``: the recorded values, image indices, locations, labels.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

import torch

from .._utils.validate import check_int
from ._model import RECORD_FLAGS, add_data_args, add_model_args

__all__ = ["register", "run", "parse_channels"]


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "neurons",
        help="top activating images of a layer's neurons, their explanations and class mix",
        description="Stream a data set once, keep each neuron's top-N activations, and write "
        "the neuron explanation grid and the class distribution of the top images.",
    )
    add_model_args(p)
    p.add_argument("--layer", help="module name, e.g. features.5 (see --list-layers)")
    p.add_argument("--list-layers", action="store_true", help="print the model's layer names")
    p.add_argument("--channels", help="channels, e.g. '3,17,40' or '0-7' (default: all, "
                   "showing the --num-neurons strongest)")
    p.add_argument("--num-neurons", type=int, default=8, help="neurons shown without --channels")
    add_data_args(p)
    p.add_argument("--data-root", help=argparse.SUPPRESS)  # deprecated spelling of --data
    p.add_argument("--split", default="test", choices=["test", "train"])
    p.add_argument("--limit", type=int, help="use only the first N images")
    p.add_argument("--top", type=int, default=100, help="activations kept per neuron (N)")
    p.add_argument("--images-per-neuron", type=int, default=4)
    p.add_argument("--per-location", action="store_true",
                   help="count every (image, location) instead of each image's maximum")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--out", default="neurons", help="output folder")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=run, api_flags=RECORD_FLAGS)


def parse_channels(text: str | None) -> list[int] | None:
    """'3,17,40' / '0-7' / '0-3,9' → sorted unique ints; None → None."""
    if text is None:
        return None
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        m = re.fullmatch(r"(\d+)\s*-\s*(\d+)", part)
        if m:
            a, b = int(m.group(1)), int(m.group(2))
            if b < a:
                raise ValueError(f"--channels range {part!r} is empty (write low-high)")
            out.extend(range(a, b + 1))
        elif part.isdigit():
            out.append(int(part))
        else:
            raise ValueError(f"--channels: {part!r} is not a channel index or a range like 0-7")
    if not out:
        raise ValueError("--channels lists no channel")
    return sorted(set(out))


def _write_json(obj: Any, path: Path) -> None:
    from .._utils.io import atomic_write_json

    atomic_write_json(path, obj)


def _old_flags(args: argparse.Namespace) -> None:
    """``--data NAME`` (a data-set name, before --dataset) and ``--data-root DIR``
    still work, with a message naming the new flags."""
    from ..data import DATASETS
    from ._model import say

    data = args.data
    if data is not None and args.dataset is None and not Path(data).exists() \
            and data.lower().replace("_", "-") in DATASETS:
        say(args, f"--data {data} names a data set: that spelling is deprecated, write "
                  f"--dataset {data} (--data ROOT is the data root, as in train and evaluate)",
            "warning")
        args.dataset, args.data = data, None
    if args.data_root is not None:
        say(args, "--data-root is deprecated: write --data ROOT (--dataset NAME names the data "
                  "set)", "warning")
        if args.data is not None:
            raise ValueError("give the data root once: --data ROOT (--data-root is its old "
                             "spelling)")
        args.data = args.data_root


def run(args: argparse.Namespace) -> int:
    from ._model import cli_warnings

    with cli_warnings(args):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from torch.utils.data import DataLoader, Subset

    from ..evaluation.neurons import class_distribution, top_activations
    from ..explanations.figures import plot_class_distribution, plot_neuron_grid, save_figure
    from ._model import load_model, model_data

    _old_flags(args)
    model = load_model(args.checkpoint, args.model, args.num_classes, seed=args.seed,
                       args=args)
    if args.list_layers:
        for name, m in model.named_modules():
            if name:
                print(f"{name}\t{type(m).__name__}")
        return 0
    if not args.layer:
        raise ValueError("--layer NAME is required (list the names with --list-layers)")
    for flag in ("top", "images_per_neuron", "num_neurons", "batch_size"):
        check_int(f"--{flag.replace('_', '-')}", getattr(args, flag), 1)
    device = torch.device(args.device)
    model.to(device)
    splits, dataset_name = model_data(args, model)
    dataset = splits.test if args.split == "test" else splits.train  # both: the test transform
    if args.limit is not None:
        check_int("--limit", args.limit, 1)
        dataset = Subset(dataset, range(min(args.limit, len(dataset))))
    names = list(splits.classes)  # the labels counted are the data's
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=False,
                        num_workers=args.workers)
    channels = parse_channels(args.channels)
    top = top_activations(model, loader, args.layer, channels, k=args.top,
                          per_image=not args.per_location, device=device)
    shown = channels if channels is not None else top.strongest_channels(args.num_neurons)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", args.layer)
    fig = plot_neuron_grid(model, dataset, top, shown, n_images=args.images_per_neuron)
    p = save_figure(fig, out / f"neurons_{safe}.png")
    print(f"wrote {p}")
    for c in shown:
        counts = class_distribution(top, c, num_classes=len(names))
        fig = plot_class_distribution(
            counts, class_names=names,
            title=f"layer {args.layer}, channel {c}: classes of the top-{args.top} images",
        )
        p = save_figure(fig, out / f"class_distribution_{safe}_ch{c}.png")
        print(f"wrote {p}")
    record = {
        "layer": args.layer,
        "dataset": dataset_name,
        "root": splits.dataset.root if splits.dataset is not None else None,
        "split": args.split,
        "per_image": top.per_image,
        "classes": names,
        "neurons": {
            str(c): {
                "values": top.values[top.row(c)].tolist(),
                "indices": top.indices[top.row(c)].tolist(),
                "locations": top.locations[top.row(c)].tolist(),
                "labels": top.labels[top.row(c)].tolist(),
            }
            for c in shown
        },
    }
    _write_json(record, out / f"top_{safe}.json")
    print(f"wrote {out / f'top_{safe}.json'}")
    return 0
