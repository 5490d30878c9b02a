"""``bcosnet train``: train from a named preset and/or a YAML config, with flag overrides.

    bcosnet train --preset fmnist --time-limit-min 10
    bcosnet train --config configs/fmnist.yaml --epochs 3
    torchrun --nproc_per_node 4 -m bcosnet train --preset imagenet-resnet50-v1 --data /data/in1k
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

__all__ = ["register", "run", "config_from_args"]


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a model (presets, YAML configs, torchrun for several processes)",
        description="Train a model. Settings come from --preset, then --config FILE, then "
        "the flags below (later wins). Without --preset/--config the 'fmnist' preset is used.",
    )
    p.add_argument("--preset", help="named preset (see --list-presets)")
    p.add_argument("--config", help="YAML config file (may itself name a 'preset')")
    p.add_argument("--list-presets", action="store_true", help="print the preset names and exit")
    p.add_argument("--model", help="registered model name (bcosnet.list_models())")
    p.add_argument("--model-option", action="append", default=[], metavar="KEY=VALUE",
                   help="model builder option (repeatable), VALUE parsed as JSON, e.g. width=16")
    p.add_argument("--num-classes", type=int)
    p.add_argument("--init-weights", metavar="WEIGHTS",
                   help="fine-tune: start from these weights (checkpoint, .safetensors, state "
                        "dict, URL or registered name); another class count resets the head")
    p.add_argument("--trainable", choices=["all", "head"],
                   help="train every parameter (all) or only the classifier (head)")
    p.add_argument("--dataset", help="fashion-mnist, cifar10, imagenet, folder or synthetic")
    p.add_argument("--data", help="data root folder")
    p.add_argument("--download", action="store_true", default=None,
                   help="download the data set when it is not found")
    p.add_argument("--skip-corrupt", action="store_true", default=None,
                   help="skip unreadable image files (reported by name) instead of failing")
    p.add_argument("--no-augment", dest="augment", action="store_false", default=None)
    p.add_argument("--image-size", type=int)
    p.add_argument("--train-per-class", type=int, metavar="N",
                   help="train on N images per class (a seeded, balanced subset)")
    p.add_argument("--workers", type=int, help="data-loader worker processes")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, help="global batch size (split over processes)")
    p.add_argument("--lr", type=float)
    p.add_argument("--optimizer", choices=["adam", "adamw", "sgd"])
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--schedule", choices=["cosine", "step", "constant"])
    p.add_argument("--warmup-epochs", type=float)
    p.add_argument("--loss", choices=["bce", "bce_uniform", "ce"])
    p.add_argument("--precision", choices=["auto", "fp32", "fp64", "bf16", "fp16"])
    p.add_argument("--grad-clip", type=float)
    p.add_argument("--ema", type=float, dest="ema_decay", help="EMA decay, e.g. 0.999")
    p.add_argument("--seed", type=int)
    p.add_argument("--out-dir", help="run folder (checkpoint, metrics.jsonl, weights)")
    p.add_argument("--resume", action="store_true", default=None,
                   help="continue from OUT_DIR/checkpoint.pt")
    p.add_argument("--time-limit-min", type=float,
                   help="stop cleanly after this many minutes of training "
                        "(checkpoint + test evaluation)")
    p.add_argument("--max-steps", type=int, help="stop cleanly after this many optimiser steps")
    p.add_argument("--checkpoint-every", type=int, dest="checkpoint_every_steps",
                   help="also checkpoint every N steps")
    p.add_argument("--eval-every", type=int, dest="eval_every_epochs",
                   help="test evaluation every N epochs (0: at the end only)")
    p.add_argument("--threads", type=int, help="torch.set_num_threads")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--tensorboard", action="store_true", default=None)
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None)
    p.add_argument("--print-config", action="store_true",
                   help="print the resulting config as YAML and exit")
    p.set_defaults(func=run)


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def config_from_args(args: argparse.Namespace) -> Any:
    """The :class:`TrainConfig` that ``args`` describe."""
    from ..training import get_preset, load_config, merge_config

    if args.config:
        cfg = load_config(args.config)
        if args.preset:
            raise ValueError("give either --preset or --config (a config file may name its "
                             "preset with a 'preset:' key)")
    else:
        cfg = get_preset(args.preset or "fmnist")
    o: dict[str, Any] = {}

    def put(path: str, value: Any) -> None:
        if value is None:
            return
        d = o
        *head, last = path.split(".")
        for h in head:
            d = d.setdefault(h, {})
        d[last] = value

    put("model.name", args.model)
    if args.model and args.model != cfg.model.name:
        o["model"]["options"] = {}  # options of the preset's model do not apply
        cfg.model.options = {}
    put("model.num_classes", args.num_classes)
    put("model.init_weights", args.init_weights)
    for item in args.model_option:
        if "=" not in item:
            raise ValueError(f"--model-option expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        put(f"model.options.{k}", _parse_value(v))
    put("data.dataset", args.dataset)
    put("data.root", args.data)
    put("data.download", args.download)
    put("data.skip_corrupt", args.skip_corrupt)
    put("data.augment", args.augment)
    put("data.image_size", args.image_size)
    put("data.train_per_class", args.train_per_class)
    put("data.num_workers", args.workers)
    put("epochs", args.epochs)
    put("optim.batch_size", args.batch_size)
    put("optim.lr", args.lr)
    put("optim.name", args.optimizer)
    put("optim.weight_decay", args.weight_decay)
    put("schedule.name", args.schedule)
    put("schedule.warmup_epochs", args.warmup_epochs)
    for key in ("loss", "precision", "grad_clip", "ema_decay", "seed", "out_dir", "resume",
                "time_limit_min", "max_steps", "checkpoint_every_steps", "eval_every_epochs",
                "threads", "device", "tensorboard", "progress", "trainable"):
        put(key, getattr(args, key))
    return merge_config(cfg, o)


def run(args: argparse.Namespace) -> int:
    from ..training import NonFiniteLossError, config_to_dict, list_presets, train

    if args.list_presets:
        print("\n".join(list_presets()))
        return 0
    cfg = config_from_args(args)
    if args.print_config:
        import yaml

        print(yaml.safe_dump(config_to_dict(cfg), sort_keys=False), end="")
        return 0
    try:
        result = train(cfg)
    except NonFiniteLossError as e:
        print(f"bcosnet train: stopped: {e}", file=sys.stderr)
        return 1
    m = result.metrics
    print(
        f"done ({result.stop_reason}): epoch {result.epoch}, step {result.step}, "
        f"train time {result.train_time_s:.1f} s, test accuracy {100 * m['test_acc']:.2f} % "
        f"(n = {m['test_n']}), test loss {m['test_loss']:.4f}\n"
        f"checkpoint: {result.checkpoint}\nweights:    {result.weights}"
    )
    return 0
