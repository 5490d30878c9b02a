"""``bcosnet app``: look at a model's reasoning in the browser.

    bcosnet app                                   # the main job's folder, outputs/main
    bcosnet app outputs/main-quick                # another main job's folder
    bcosnet app --checkpoint runs/fmnist/checkpoint.pt
    bcosnet app --model resnet18 --weights W.pt   # any weights of a registered model
    bcosnet app --model resnet18                  # random init: the plumbing only

Starts a local web app (Gradio; the ``app`` extra) and prints its address.
Nothing is fetched from the internet.  Ctrl-C stops it.  The views: Explain,
Compare, Neurons, Pointing game (docs/app.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "app",
        help="look at a model's explanations in the browser (a local web app)",
        description="Start a local web app: explanations of any class and any neuron, the "
        "post-hoc methods beside them, and a main job's pointing game. Prints its address; "
        "Ctrl-C stops it.",
    )
    p.add_argument("output_dir", nargs="?", metavar="OUTPUT_DIR",
                   help="a main job's output folder (default: outputs/main when it exists)")
    p.add_argument("--checkpoint", metavar="F",
                   help="a training checkpoint (.pt) or exported .safetensors")
    p.add_argument("--model", metavar="NAME",
                   help="registered model name (with --weights or --checkpoint: the "
                        "architecture of a plain state dict; alone: random init)")
    p.add_argument("--weights", metavar="W",
                   help="weights of --model: a file, or a registered weights entry")
    p.add_argument("--num-classes", type=int, help="outputs of a --model without weights")
    p.add_argument("--data", metavar="ROOT",
                   help="where the model's data set is now (default: the one it records)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to serve on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, help="port (default: the first free one from 7860)")
    p.set_defaults(func=run, api_flags={"checkpoint": "--checkpoint", "weights": "--weights",
                                        "model": "--model", "num_classes": "--num-classes",
                                        "root": "--data"})


def _workspace(args: argparse.Namespace) -> Any:
    from ..app import Workspace, find_main_job, load_model
    from ..app.workspace import DEFAULT_MAIN_DIR

    given = args.checkpoint is not None or args.model is not None
    if args.weights is not None and args.model is None:
        raise ValueError("--weights W needs --model NAME (the architecture); a bcosnet "
                         "checkpoint names its own: --checkpoint F")
    if args.output_dir is not None or not given:
        folder = Path(args.output_dir) if args.output_dir is not None else find_main_job()
        if folder is None:
            raise ValueError(
                f"no model given and no main job's folder at {DEFAULT_MAIN_DIR}: give a main "
                "job's output folder (bcosnet app outputs/main), a trained model "
                "(bcosnet app --checkpoint runs/NAME/checkpoint.pt) or a registered model "
                "(bcosnet app --model NAME [--weights W])")
        ws = Workspace.from_main_job(folder, data_root=args.data)
    else:
        ws = Workspace(data_root=args.data)
    if given:
        model = load_model(args.checkpoint, args.model, args.weights,
                           num_classes=args.num_classes)
        src = args.checkpoint or args.weights
        name = model.model_info.name
        label = f"{name} ({Path(src).name})" if src else f"{name} (random init)"
        note = "" if src else ("randomly initialised: its explanations show the plumbing, "
                               "not a trained model")
        ws.add(label, model, str(src) if src else "random initialisation", note)
        ws.models = {label: ws.models.pop(label), **ws.models}  # the given model first
    for lm in ws.models.values():
        print(f"bcosnet app: model {lm.describe()}", file=sys.stderr)
    return ws


def run(args: argparse.Namespace) -> int:
    try:
        from ..app import serve
        from ..app.ui import build_app  # noqa: F401 - gradio present?
    except ModuleNotFoundError as e:
        print(f"bcosnet app: error: {e.name} is not installed; install the app extra: "
              'pip install "bcosnet[app]"', file=sys.stderr)
        return 2
    from ._model import cli_warnings

    with cli_warnings(args):
        ws = _workspace(args)
    return serve(ws, host=args.host, port=args.port)
