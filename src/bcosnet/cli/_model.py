"""What the model-reading commands share (``explain``, ``evaluate``, ``neurons``):
loading a model with its record, the ``--dataset NAME`` / ``--data ROOT`` /
``--image-size N`` flags (one meaning in every command), and saying on screen
what the record says and what was assumed."""

from __future__ import annotations

import argparse
import contextlib
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["RECORD_FLAGS", "add_data_args", "add_model_args", "cli_warnings", "load_model",
           "model_data", "say", "state_record"]

#: API arguments of the record's functions → these commands' flags.
RECORD_FLAGS: dict[str, str] = {
    "image_size": "--image-size", "dataset": "--dataset", "root": "--data",
}


def say(args: argparse.Namespace, text: str, kind: str = "note") -> None:
    """Print ``bcosnet COMMAND: KIND: TEXT`` on stderr, in the command's flags."""
    from ._common import api_flags, cli_message

    print(f"bcosnet {args.command}: {kind}: {cli_message(text, api_flags(args))}",
          file=sys.stderr)


@contextlib.contextmanager
def cli_warnings(args: argparse.Namespace) -> Iterator[None]:
    """Show the library's warnings raised inside as ``bcosnet CMD: warning: ...`` in
    the command's flags, each text once."""
    seen: set[str] = set()

    def show(message: Any, category: Any, filename: str, lineno: int, file: Any = None,
             line: Any = None) -> None:
        text = str(message)
        if text not in seen:
            seen.add(text)
            say(args, text, "warning")

    with warnings.catch_warnings():
        warnings.simplefilter("always", UserWarning)
        warnings.simplefilter("always", FutureWarning)
        warnings.showwarning = show
        yield


def add_model_args(p: argparse.ArgumentParser) -> None:
    """``--checkpoint``, ``--model``, ``--num-classes`` and ``--seed``: the model
    :func:`load_model` builds."""
    p.add_argument("--checkpoint", help="training checkpoint (.pt) or exported .safetensors")
    p.add_argument("--model", help="registered model name; without --checkpoint it is randomly "
                   "initialised (for trying the plumbing)")
    p.add_argument("--num-classes", type=int, help="outputs of a --model without --checkpoint")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of a randomly initialised --model (default 0)")


def add_data_args(p: argparse.ArgumentParser, *, image_size: bool = True) -> None:
    """``--dataset NAME``, ``--data ROOT`` (default: the model's record) and
    ``--image-size N``."""
    from ..data import DATASETS

    p.add_argument("--dataset", metavar="NAME",
                   help=f"data set ({', '.join(DATASETS)}; default: the one the model "
                        "records)")
    p.add_argument("--data", metavar="ROOT",
                   help="data root folder (default: the one the model records)")
    if image_size:
        p.add_argument("--image-size", type=int, metavar="N",
                       help="feed N×N images (default: the size the model was trained at; "
                            "another size gets a warning)")


def load_model(
    checkpoint: str | None, model_name: str | None, num_classes: int | None = None, *,
    seed: int = 0, use_ema: bool = True, args: argparse.Namespace | None = None,
    model_flag: bool = True,
) -> nn.Module:
    """The model, in eval mode, with its record (``model.model_info``).

    ``checkpoint`` alone: a bcosnet training checkpoint or export (it names its
    model).  ``checkpoint`` and ``model_name``: any weights file of that model —
    a bcosnet checkpoint, a plain ``torch.save(model.state_dict())``, or a
    ``bcos`` v2 state dict (``create_model(model_name, weights=checkpoint)``).
    ``model_name`` alone: a randomly initialised registered model.  With ``args``,
    what the record says (or lacks) is printed on stderr.  ``model_flag``: whether
    the command has ``--model`` (named in the error for a plain state dict)."""
    from ..models import create_model, read_weights

    if checkpoint is None and model_name is None:
        raise ValueError("give --checkpoint CKPT (a trained model) or --model NAME (random init)")
    if checkpoint is None:
        torch.manual_seed(seed)
        text = (f"--model {model_name} without --checkpoint is randomly initialised; "
                "its explanations show the plumbing, not a trained model")
        model = create_model(model_name, num_classes).eval()  # type: ignore[arg-type]
        if args is not None:
            say(args, text)
            state_record(args, model, "random init")
        else:
            print(f"note: {text}", file=sys.stderr)
        return model
    if not Path(checkpoint).is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint} not found")
    read = read_weights(checkpoint, use_ema=use_ema)
    found = read.record.name if read.record is not None else None
    if found and model_name is not None and found != model_name:
        raise ValueError(
            f"{checkpoint} is a bcosnet checkpoint of {found!r}, not of --model "
            f"{model_name!r}: drop --model (the checkpoint names its model) or pass "
            f"--model {found}")
    if found is None and model_name is None:
        hint = ("; name its architecture with --model NAME (plain and `bcos` v2 state dicts "
                "load that way)" if model_flag else
                " (those record their model); this command needs one")
        raise ValueError(f"{checkpoint} records no model name: it is not a bcosnet training "
                         f"checkpoint or export{hint}")
    model = create_model(found or model_name, None if found else num_classes,  # type: ignore
                         weights=read).eval()
    if args is not None:
        state_record(args, model, checkpoint)
    return model


def state_record(args: argparse.Namespace, model: nn.Module, source: str) -> None:
    """Print the model's record on stderr, and what is assumed where it is silent."""
    info = model.model_info  # type: ignore[union-attr]
    line = f"{info.summary()} (from {source})"
    if info.preprocess is None:
        line += "; another size: image_size=N"
    say(args, line, "model")


def model_data(args: argparse.Namespace, model: nn.Module) -> tuple[Any, str]:
    """The model's data set (``--dataset``/``--data``/``--image-size`` or its record)
    and the data set's name, saying on stderr what is used."""
    from ..data import datasets_for

    splits = datasets_for(model, dataset=args.dataset, root=args.data,
                          image_size=getattr(args, "image_size", None))
    rec = splits.dataset
    pre = splits.preprocess
    where = rec.describe() if rec is not None else args.dataset
    how = f", images {pre.describe()}" if pre is not None else ""
    say(args, f"data: {where}{how}")
    return splits, (rec.name if rec is not None else args.dataset)
