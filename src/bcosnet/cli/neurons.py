"""``bcosnet neurons``: the most highly activating images of a layer's neurons.

    bcosnet neurons --checkpoint runs/fmnist/checkpoint.pt --layer features.5 \
        --data fashion-mnist --top 200 --out neurons/

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

__all__ = ["register", "run", "parse_channels"]


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "neurons",
        help="top activating images of a layer's neurons, their explanations and class mix",
        description="Stream a data set once, keep each neuron's top-N activations, and write "
        "the neuron explanation grid and the class distribution of the top images.",
    )
    p.add_argument("--checkpoint", help="training checkpoint (.pt) or exported .safetensors")
    p.add_argument("--model", help="registered model name (random init without --checkpoint)")
    p.add_argument("--num-classes", type=int, help="outputs of a --model without checkpoint")
    p.add_argument("--layer", help="module name, e.g. features.5 (see --list-layers)")
    p.add_argument("--list-layers", action="store_true", help="print the model's layer names")
    p.add_argument("--channels", help="channels, e.g. '3,17,40' or '0-7' (default: all, "
                   "showing the --num-neurons strongest)")
    p.add_argument("--num-neurons", type=int, default=8, help="neurons shown without --channels")
    p.add_argument("--data", default="fashion-mnist",
                   help="data set: fashion-mnist, cifar10, imagenet, folder or synthetic")
    p.add_argument("--data-root", help="data root folder (cifar10, imagenet, folder)")
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
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


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


def run(args: argparse.Namespace) -> int:
    from torch.utils.data import DataLoader, Subset

    from ..data import build_datasets
    from ..evaluation.neurons import class_distribution, top_activations
    from ..explanations.figures import plot_class_distribution, plot_neuron_grid, save_figure
    from .explain import load_model

    model = load_model(args.checkpoint, args.model, args.num_classes, seed=args.seed)
    if args.list_layers:
        for name, m in model.named_modules():
            if name:
                print(f"{name}\t{type(m).__name__}")
        return 0
    if not args.layer:
        raise ValueError("--layer NAME is required (list the names with --list-layers)")
    for flag in ("top", "images_per_neuron", "num_neurons", "batch_size"):
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be >= 1")
    device = torch.device(args.device)
    model.to(device)
    info = getattr(model, "model_info", None)
    size = info.input_size[0] if info is not None else None
    splits = build_datasets(args.data, args.data_root, image_size=size, augment=False)
    dataset = splits.test if args.split == "test" else splits.train
    if args.limit is not None:
        if args.limit < 1:
            raise ValueError("--limit must be >= 1")
        dataset = Subset(dataset, range(min(args.limit, len(dataset))))
    if info is not None and splits.in_channels != info.in_channels:
        raise ValueError(
            f"data set {args.data!r} has {splits.in_channels}-channel images but the model "
            f"takes {info.in_channels}; choose a matching data set"
        )
    names = list(getattr(model, "class_names", None) or splits.classes)
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
        "data": args.data,
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
