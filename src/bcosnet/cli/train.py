"""``bcosnet train``: train from a named preset and/or a YAML config, with flag overrides.

    bcosnet train --preset fmnist --time-limit-min 10
    bcosnet train --dataset folder --data my-images        # your own images (docs/your-data.md)
    bcosnet train --config configs/fmnist.yaml --epochs 3
    torchrun --nproc_per_node 4 -m bcosnet train --preset imagenet-resnet50-v1 --data /data/in1k
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["FLAGS", "register", "run", "config_from_args"]

#: Config key → CLI flag (the flags that set a key; errors of the library name the
#: key, and the CLI prints them with the flag).
FLAGS: tuple[tuple[str, str], ...] = (
    ("model.name", "--model"), ("model.num_classes", "--num-classes"),
    ("model.init_weights", "--init-weights"), ("data.dataset", "--dataset"),
    ("data.root", "--data"), ("data.download", "--download"),
    ("data.skip_corrupt", "--skip-corrupt"), ("data.image_size", "--image-size"),
    ("data.channels", "--image-channels"), ("data.train_per_class", "--train-per-class"),
    ("per_class", "--train-per-class"), ("data.num_workers", "--workers"),
    ("optim.batch_size", "--batch-size"), ("optim.lr", "--lr"), ("optim.name", "--optimizer"),
    ("optim.weight_decay", "--weight-decay"), ("schedule.name", "--schedule"),
    ("schedule.warmup_epochs", "--warmup-epochs"), ("ema_decay", "--ema"),
    ("time_limit_min", "--time-limit-min"), ("max_steps", "--max-steps"),
    ("checkpoint_every_steps", "--checkpoint-every"), ("eval_every_epochs", "--eval-every"),
    ("out_dir", "--out-dir"), ("resume=True", "--resume"), ("grad_clip", "--grad-clip"),
    ("threads", "--threads"), ("epochs", "--epochs"), ("trainable", "--trainable"),
)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a model (presets, YAML configs, torchrun for several processes)",
        description="Train a model. Settings come from --preset, then --config FILE, then "
        "the flags below (later wins). Without --preset/--config the preset of --dataset is "
        "used (fashion-mnist: fmnist, folder: folder, cifar10: cifar10-v1, imagenet: "
        "imagenet-resnet50-v1, synthetic: smoke) and named on screen. A preset pointed at "
        "another data set keeps its recipe and leaves its data settings (class count, image "
        "size, channels, images per class, output folder) to the new data, and says so. For an "
        "image folder, what is not given is read off the data (classes, grey or colour, image "
        "size, model, output folder); the start-up summary states each rule.",
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
    p.add_argument("--augment", dest="augment", action="store_true", default=None,
                   help="training augmentation on (the data set's preset)")
    p.add_argument("--no-augment", dest="augment", action="store_false", default=None,
                   help="training augmentation off")
    p.add_argument("--image-size", type=int, metavar="N",
                   help="train on N×N images (image folders: default read off the data)")
    p.add_argument("--image-channels", dest="channels", type=int, choices=[1, 3],
                   help="image folders: convert the images to grey (1) or RGB (3) (default: "
                        "1 when every sampled image is grey, else 3)")
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
    p.add_argument("--threads", type=int,
                   help="torch threads (default: OMP_NUM_THREADS when set, else torch's "
                        "default; the start-up summary says which)")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--tensorboard", action="store_true", default=None)
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None)
    p.add_argument("--print-config", action="store_true",
                   help="print the resulting config as YAML (the settings read off an image "
                        "folder filled in) and exit")
    p.set_defaults(func=run, api_flags={key: flag for key, flag in FLAGS if flag})


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def config_from_args(args: argparse.Namespace, notes: list[str] | None = None) -> Any:
    """The :class:`TrainConfig` that ``args`` describe.  What was chosen for the
    user (the preset of the data set, a preset's settings left to other data) is
    appended to ``notes`` (when given) in the CLI's words."""
    from ..training import get_preset, load_config, merge_config
    from ..training.presets import default_preset, retarget

    said: list[str] = []
    if args.config:
        if args.preset:
            raise ValueError("give either --preset or --config (a config file may name its "
                             "preset with a 'preset:' key)")
        cfg = load_config(args.config, notes=said)
        source, tag = f"config {args.config}", Path(args.config).stem
    else:
        preset = args.preset
        if preset is None:
            preset = default_preset(args.dataset)
            said.append(f"no --preset given: using preset {preset!r}, the one for "
                        f"--dataset {args.dataset or 'fashion-mnist'} (--list-presets)")
        cfg = get_preset(preset)
        source, tag = f"preset {preset}", preset
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
    put("data.channels", args.channels)
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
    o, more = retarget(cfg, o, source, tag)
    if notes is not None:
        from ._common import cli_message

        flags = dict(f for f in FLAGS if f[1])
        notes.extend(cli_message(n, flags) for n in said + more)
    return merge_config(cfg, o)


def run(args: argparse.Namespace) -> int:
    from ..training import NonFiniteLossError, config_to_dict, list_presets, train

    if args.list_presets:
        print("\n".join(list_presets()))
        return 0
    notes: list[str] = []
    cfg = config_from_args(args, notes)
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    if args.print_config:
        import yaml

        from ..training import resolve_config

        cfg, filled = resolve_config(cfg)  # its notes name both the key and the flag
        for n in filled:
            print(f"note: {n}", file=sys.stderr)
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
