"""``bcosnet evaluate``: evaluation sub-commands (``accuracy``; others may add more
through :data:`EVALUATORS`).

    bcosnet evaluate accuracy --checkpoint runs/fmnist/checkpoint.pt
    bcosnet evaluate accuracy --checkpoint model.safetensors --dataset cifar10 --data data/c10
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

__all__ = ["register", "run_accuracy", "EVALUATORS"]

#: name → (add-arguments function, run function); other modules may extend it.
EVALUATORS: dict[str, tuple[Callable[[argparse.ArgumentParser], None],
                            Callable[[argparse.Namespace], int]]] = {}


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("evaluate", help="evaluate a trained model",
                              description="Evaluate a trained model.")
    sub = p.add_subparsers(dest="evaluation", metavar="EVALUATION")
    sub.required = True
    a = sub.add_parser("accuracy", help="top-1/top-5 and per-class test accuracy")
    _accuracy_args(a)
    a.set_defaults(func=run_accuracy)
    for name, (add_args, fn) in EVALUATORS.items():
        s = sub.add_parser(name)
        add_args(s)
        s.set_defaults(func=fn)


def _accuracy_args(a: argparse.ArgumentParser) -> None:
    a.add_argument("--checkpoint", required=True,
                   help="training checkpoint (.pt) or exported weights (.safetensors)")
    a.add_argument("--dataset", help="data set name (default: the one the checkpoint was "
                   "trained on)")
    a.add_argument("--data", help="data root (default: the checkpoint's)")
    a.add_argument("--split", choices=["test", "train"], default="test")
    a.add_argument("--batch-size", type=int, default=256)
    a.add_argument("--workers", type=int, default=0)
    a.add_argument("--no-ema", action="store_true", help="use the raw weights, not the EMA")
    a.add_argument("--per-class", action="store_true", help="print per-class accuracy")
    a.add_argument("--json", help="also write the result to this JSON file")
    a.add_argument("--threads", type=int)


def run_accuracy(args: argparse.Namespace) -> int:
    import torch

    from ..data import build_datasets
    from ..evaluation.accuracy import accuracy
    from ..training import load_checkpoint, load_checkpoint_model
    from ..training.checkpoint import atomic_write_text

    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_checkpoint_model(args.checkpoint, use_ema=not args.no_ema)
    data_cfg: dict[str, Any] = {}
    if not args.checkpoint.endswith(".safetensors"):
        data_cfg = (load_checkpoint(args.checkpoint).get("config") or {}).get("data", {})
    dataset = args.dataset or data_cfg.get("dataset")
    if not dataset:
        raise ValueError("the weights file does not record its data set; pass --dataset "
                         "(and --data)")
    root = args.data if args.data is not None else data_cfg.get("root")
    splits = build_datasets(
        dataset, root, image_size=data_cfg.get("image_size"), augment=False,
        synthetic_samples=data_cfg.get("synthetic_samples", 256),
        synthetic_classes=data_cfg.get("synthetic_classes", 4),
        synthetic_channels=data_cfg.get("synthetic_channels", 1),
    )
    ds = splits.test if args.split == "test" else splits.train
    if args.split == "train":
        ds.transform = None  # type: ignore[attr-defined]
    res = accuracy(model, ds, batch_size=args.batch_size, num_workers=args.workers,
                   progress=True)
    print(f"{args.checkpoint}: {dataset} {args.split}: {res.summary()}")
    if args.per_class:
        for i, (acc, cnt) in enumerate(zip(res.per_class, res.counts, strict=True)):
            name = res.class_names[i] if i < len(res.class_names) else str(i)
            print(f"  {name:>20s}  {100 * acc:6.2f} %  (n = {cnt})")
    if args.json:
        text = json.dumps({"checkpoint": args.checkpoint, "dataset": dataset,
                           "split": args.split, "top1": res.top1,
                           "topk": {str(k): v for k, v in res.topk.items()},
                           "per_class": res.per_class, "counts": res.counts,
                           "class_names": res.class_names, "n": res.n}, indent=2)
        atomic_write_text(text, args.json)
    return 0
