"""``bcosnet evaluate``: evaluation sub-commands (``accuracy``, ``localisation``,
``faithfulness``; others may add more through :data:`EVALUATORS`).

    bcosnet evaluate accuracy --checkpoint runs/fmnist/checkpoint.pt
    bcosnet evaluate accuracy --checkpoint model.safetensors --dataset cifar10 --data data/c10
    bcosnet evaluate localisation --checkpoint runs/fmnist/checkpoint.pt --out runs/fmnist/pg
    bcosnet evaluate faithfulness --checkpoint runs/fmnist/checkpoint.pt --out runs/fmnist/di

Under ``torchrun`` (``torchrun --nproc-per-node N -m bcosnet evaluate ...``) the
work is shared out among the N processes (:mod:`bcosnet.evaluation.distributed`);
rank 0 prints the result and writes the outputs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from collections.abc import Callable, Iterator
from typing import Any

from ..evaluation.distributed import WAIT, RankFailedError
from ..training.distributed import DistEnv, init_distributed, launched_by_torchrun, pick_device
from ._model import RECORD_FLAGS, cli_warnings, say

__all__ = ["register", "run_accuracy", "run_faithfulness", "run_localisation", "EVALUATORS"]

#: The library's argument names → these commands' flags (errors are reworded with
#: them, see :func:`bcosnet.cli._common.cli_message`).
LOCALISATION_FLAGS = {
    "n": "--grid-n", "num_grids": "--grids", "grids_per_method": "--grids-per-method",
    "confidence_threshold=None": "--no-threshold", "confidence_threshold": "--threshold",
    "allow_fewer=True": "--allow-fewer", "smoothing": "--smoothing", "methods": "--methods",
    "seed": "--seed", "chunk": "--chunk", "device": "--device",
}
FAITHFULNESS_FLAGS = {
    "images": "--images", "images_per_method": "--images-per-method", "steps": "--steps",
    "modes": "--modes", "target": "--target", "baseline": "--baseline", "output": "--output",
    "attribution_batch_size": "--attribution-batch-size", "methods": "--methods",
    "seed": "--seed", "chunk": "--chunk", "device": "--device",
}

#: name → (add-arguments function, run function); other modules may extend it.
EVALUATORS: dict[str, tuple[Callable[[argparse.ArgumentParser], None],
                            Callable[[argparse.Namespace], int]]] = {}


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("evaluate", help="evaluate a trained model",
                              description="Evaluate a trained model.")
    sub = p.add_subparsers(dest="evaluation", metavar="EVALUATION")
    sub.required = True
    a = sub.add_parser("accuracy", help="top-1 (and top-5 with more than 5 classes) and "
                       "per-class test accuracy")
    _accuracy_args(a)
    a.set_defaults(func=run_accuracy, api_flags={"device": "--device", **RECORD_FLAGS})
    loc = sub.add_parser(
        "localisation", help="the grid pointing game (docs/protocol.md, section 5; Figs. B1/B2)",
        description="The grid pointing game on the paper's protocol by default: 3×3 grids, "
        "500 of them, images with sigmoid(logit) > 0.5, every method (bcos only on B-cos "
        "networks), smoothing by the cell size. Progress bars show each method's ETA; "
        "re-running with the same --out resumes.")
    _localisation_args(loc)
    loc.set_defaults(func=run_localisation, api_flags={**LOCALISATION_FLAGS, **RECORD_FLAGS})
    fa = sub.add_parser(
        "faithfulness", help="deletion and insertion (Petsiuk et al. 2018): AUC per method",
        description="Deletion and insertion on test images: pixels in order of each method's "
        "attribution (most relevant first) replaced by the baseline (deletion) or revealed on "
        "it (insertion) in --steps steps; the area under the class-score curve (sigmoid for "
        "B-cos networks, softmax otherwise) per method, plus a random-order row. Writes "
        "faithfulness.json and faithfulness.md; re-running with the same --out resumes "
        "(finished methods are loaded).")
    _faithfulness_args(fa)
    fa.set_defaults(func=run_faithfulness, api_flags={**FAITHFULNESS_FLAGS, **RECORD_FLAGS})
    for name, (add_args, fn) in EVALUATORS.items():
        s = sub.add_parser(name)
        add_args(s)
        s.set_defaults(func=fn)


def _accuracy_args(a: argparse.ArgumentParser) -> None:
    _model_and_data_args(a)
    a.add_argument("--split", choices=["test", "train"], default="test")
    a.add_argument("--batch-size", type=int, default=256)
    a.add_argument("--workers", type=int, default=0)
    a.add_argument("--no-ema", action="store_true", help="use the raw weights, not the EMA")
    a.add_argument("--per-class", action="store_true", help="print per-class accuracy")
    a.add_argument("--json", help="also write the result to this JSON file")
    a.add_argument("--threads", type=int)
    _device_arg(a)


def _device_arg(a: argparse.ArgumentParser) -> None:
    a.add_argument("--device", default="auto",
                   help="cpu, cuda, cuda:N or auto (default: the GPU of this process's "
                        "LOCAL_RANK when one is visible, else the CPU); under torchrun each "
                        "process takes the GPU of its LOCAL_RANK")


def _model_and_data_args(a: argparse.ArgumentParser) -> None:
    from ._model import add_data_args

    a.add_argument("--checkpoint", required=True,
                   help="training checkpoint (.pt) or exported weights (.safetensors): it "
                        "records its classes, image size and data set")
    add_data_args(a)


def _results_args(a: argparse.ArgumentParser, out_help: str, methods_help: str) -> None:
    """The model, its data, the results folder and the methods of a results command."""
    _model_and_data_args(a)
    a.add_argument("--out", required=True, help=out_help)
    a.add_argument("--methods", default="all", help=methods_help)


def _run_args(a: argparse.ArgumentParser) -> None:
    """Seed, weights, threads and progress of a results command."""
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--no-ema", action="store_true", help="use the raw weights, not the EMA")
    a.add_argument("--threads", type=int)
    a.add_argument("--no-progress", action="store_true")
    _device_arg(a)


def _localisation_args(a: argparse.ArgumentParser) -> None:
    from ._common import parse_grid_counts

    _results_args(a, "results folder: grids, per-method scores, box plot; re-running with the "
                  "same folder resumes (other settings are refused, naming each)",
                  "comma-separated methods or 'all' (default: every method; bcos only for "
                  "B-cos networks)")
    a.add_argument("--grid-n", type=int, default=3, help="cells per side (default: 3)")
    a.add_argument("--grids", type=int, default=500, help="grids (default: 500, the paper's)")
    a.add_argument("--grids-per-method", type=parse_grid_counts, default={},
                   help="fewer grids for some methods, e.g. 'occlusion=100,rise=100'")
    a.add_argument("--threshold", type=float, default=0.5,
                   help="confidence threshold on sigmoid(true-class logit) (default: 0.5)")
    a.add_argument("--no-threshold", action="store_true", help="no confidence threshold")
    a.add_argument("--smoothing", default="auto",
                   help="'auto' (the paper's rule for the cell size), 'none' or an odd kernel")
    a.add_argument("--batch-size", type=int, default=8, help="grids per attribution call")
    a.add_argument("--allow-fewer", action="store_true",
                   help="play as many grids as can be made when fewer than --grids can")
    a.add_argument("--chunk", type=int,
                   help="under torchrun: grids per work item, a multiple of --batch-size "
                        "(default: 4 × --batch-size); a re-run resumes by work item")
    _run_args(a)


def _faithfulness_args(a: argparse.ArgumentParser) -> None:
    from ._common import parse_grid_counts

    _results_args(a, "results folder (one JSON per method, faithfulness.json/.md); re-running "
                  "with the same folder resumes (other settings are refused, naming each)",
                  "comma-separated methods or 'all' (default: every method, bcos only for "
                  "B-cos networks); also 'bcos-relative' (the B-cos explanation relative to "
                  "the baseline); the random-order row is added unless --no-random")
    a.add_argument("--no-random", action="store_true", help="no random-order row")
    a.add_argument("--images", type=int, default=500,
                   help="test images, a seeded sample (default: 500)")
    a.add_argument("--images-per-method", type=parse_grid_counts, default={},
                   help="fewer images for some methods (the first of the same sample), "
                        "e.g. 'rise=100,lime=100'")
    a.add_argument("--steps", type=int, default=20, help="steps per curve (default: 20)")
    a.add_argument("--modes", default="deletion,insertion",
                   help="'deletion', 'insertion' or both (default)")
    a.add_argument("--target", choices=["pred", "label"], default="pred",
                   help="explained class: the prediction (default) or the true label")
    a.add_argument("--baseline", default="black",
                   help="what deleted pixels become: black (default), white, mean, blur or a "
                        "grey level")
    a.add_argument("--output", choices=["auto", "sigmoid", "softmax", "logit"], default="auto",
                   help="class score (default auto: sigmoid for B-cos networks, else softmax)")
    a.add_argument("--attribution-batch-size", type=int, default=50,
                   help="images per attribution call")
    a.add_argument("--batch-size", type=int, default=256, help="perturbed images per forward pass")
    a.add_argument("--chunk", type=int,
                   help="under torchrun: images per work item, a multiple of "
                        "--attribution-batch-size (default: that batch size); a re-run "
                        "resumes by work item")
    _run_args(a)


def _on_ranks(args: argparse.Namespace,
              command: Callable[[argparse.Namespace, DistEnv | None], int]) -> int:
    """``command(args, ranks)`` with the library's warnings said in the command's words;
    under torchrun in its process group (``ranks``; None outside torchrun), the other
    ranks than 0 silent unless they fail."""
    with cli_warnings(args):
        if not launched_by_torchrun():
            return command(args, None)
        ranks = init_distributed(args.device, timeout=WAIT)
        try:
            with _silent(not ranks.is_main):
                return command(args, ranks)
        except RankFailedError as e:  # another rank's error, said there in full
            say(args, str(e), "error")
            return 1
        finally:
            ranks.close()


@contextlib.contextmanager
def _silent(quiet: bool) -> Iterator[None]:
    """Nothing printed inside when ``quiet`` (an error raised inside still is, by the
    caller)."""
    if not quiet:
        yield
        return
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), \
            contextlib.redirect_stderr(null):
        yield


def run_faithfulness(args: argparse.Namespace) -> int:
    return _on_ranks(args, _run_faithfulness)


def _run_faithfulness(args: argparse.Namespace, ranks: DistEnv | None) -> int:
    from .._utils.io import atomic_write_json, atomic_write_text
    from ..evaluation.faithfulness import evaluate_faithfulness

    model, ds, dataset, bcos_net, methods = _model_data_methods(args, ranks)
    for m in ("bcos", "bcos-relative"):
        if m in methods and not bcos_net:
            raise ValueError(f"'{m}' explains B-cos networks only; this checkpoint is a "
                             "conventional network — drop it from --methods")
    if not args.no_random and "random" not in methods:
        methods.append("random")
    baseline: Any = args.baseline
    try:
        baseline = float(baseline)
    except ValueError:
        pass
    modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())
    res = evaluate_faithfulness(
        model, ds, methods, images=args.images, steps=args.steps, target=args.target,
        baseline=baseline, output=args.output, modes=modes,
        method_settings=_method_settings(args, methods, ds),
        images_per_method=args.images_per_method,
        attribution_batch_size=args.attribution_batch_size, batch_size=args.batch_size,
        seed=args.seed, results_dir=args.out, progress=not args.no_progress,
        ranks=ranks, chunk=args.chunk)
    if ranks is not None and not ranks.is_main:
        return 0
    title = f"Deletion and insertion: {args.checkpoint} ({dataset} test)"
    table = res.to_markdown(title)
    atomic_write_text(f"{args.out}/faithfulness.md", table)
    atomic_write_json(f"{args.out}/faithfulness.json",
                      {"checkpoint": args.checkpoint, "dataset": dataset,
                       "bcos_network": bcos_net, **res.to_dict()}, indent=2)
    print(table, end="")
    print(f"results in {args.out}")
    return 0


def _method_settings(args: argparse.Namespace, methods: list[str], ds: Any
                     ) -> dict[str, dict[str, Any]]:
    """The main job's per-method settings for small images (below 100 px: occlusion's
    4-px patches, LIME's max_dist 4, ...); the library's defaults — the paper's
    settings for 224-px images — for larger ones.  Said on stderr."""
    from ..pipeline import method_settings_for

    size = int(ds[0][0].shape[-1]) if len(ds) else 0
    if size < 100:
        chosen = method_settings_for(methods)
        said = ("the main job's settings for small images (docs/protocol.md, section 4) for "
                + ", ".join(chosen)) if chosen else "the library's defaults"
    else:
        chosen, said = {}, ("the library's defaults, the paper's settings for 224-px images "
                            "(docs/protocol.md, section 4)")
    say(args, f"per-method settings for {size}-px images: {said}")
    return chosen


def _model_data_methods(args: argparse.Namespace, ranks: DistEnv | None = None
                        ) -> tuple[Any, Any, str, bool, list[str]]:
    """Threads, the model (on this process's device) and its test set, whether it is a
    B-cos network, and the methods of ``--methods`` (``all``: every method the network
    takes)."""
    from ..nn import is_bcos_model
    from ..pipeline import ALL_METHODS

    model, splits, dataset = _load_model_and_splits(args, ranks)
    bcos_net = is_bcos_model(model)
    if args.methods == "all":
        methods = [m for m in ALL_METHODS if bcos_net or m != "bcos"]
    else:
        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    return model, splits.test, dataset, bcos_net, methods


def run_localisation(args: argparse.Namespace) -> int:
    return _on_ranks(args, _run_localisation)


def _run_localisation(args: argparse.Namespace, ranks: DistEnv | None) -> int:
    from ..evaluation import ScoreSummary, grid_pointing_game, plot_pointing_game

    model, ds, dataset, bcos_net, methods = _model_data_methods(args, ranks)
    smoothing: Any = args.smoothing
    if smoothing == "none":
        smoothing = None
    elif smoothing != "auto":
        if not smoothing.isdigit():
            raise ValueError(f"--smoothing must be 'auto', 'none' or an odd int, got {smoothing!r}")
        smoothing = int(smoothing)
    counts = {m: min(k, args.grids) for m, k in args.grids_per_method.items()}
    res = grid_pointing_game(
        model, ds, methods, n=args.grid_n, num_grids=args.grids, grids_per_method=counts,
        seed=args.seed, confidence_threshold=None if args.no_threshold else args.threshold,
        allow_fewer=args.allow_fewer, smoothing=smoothing, batch_size=args.batch_size,
        method_settings=_method_settings(args, methods, ds), results_dir=args.out,
        progress=not args.no_progress, ranks=ranks, chunk=args.chunk)
    if ranks is not None and not ranks.is_main:
        return 0
    plot_pointing_game(res, f"{args.out}/boxplot.png")
    st = res.settings
    print(f"{args.checkpoint}: {dataset} test, {st['n']}×{st['n']} grids, confidence threshold "
          f"{st['confidence_threshold']}, smoothing {st['smoothing']}")
    print(f"  {'method':<10} {'grids':>5} {'median':>7} {'mean':>7} {'Q1':>7} {'Q3':>7}")
    for m, s in res.summary().items():
        assert isinstance(s, ScoreSummary)
        print(f"  {m:<10} {res.grids_per_method[m]:>5} {s.median:7.4f} {s.mean:7.4f} "
              f"{s.q1:7.4f} {s.q3:7.4f}")
    print(f"  (uniform baseline {res.baseline:.4f}); results in {args.out}")
    return 0


def _load_model_and_splits(args: argparse.Namespace, ranks: DistEnv | None
                           ) -> tuple[Any, Any, str]:
    """The checkpoint's model — on this process's device (``--device``; under torchrun
    the rank's), with ``--threads`` — the train/test splits of its data set (its
    record, or ``--dataset``/``--data``/``--image-size``), and the data set's name."""
    import torch

    from ._model import load_model, model_data

    if args.threads:
        torch.set_num_threads(args.threads)
    device = ranks.device if ranks is not None else pick_device(args.device)
    model = load_model(args.checkpoint, None, use_ema=not args.no_ema, args=args,
                       model_flag=False).to(device)
    where = "" if ranks is None else f" (rank {ranks.rank} of {ranks.world_size}; rank 0 speaks)"
    say(args, f"device: {device}{where}")
    splits, dataset = model_data(args, model)
    return model, splits, dataset


def run_accuracy(args: argparse.Namespace) -> int:
    return _on_ranks(args, _run_accuracy)


def _run_accuracy(args: argparse.Namespace, ranks: DistEnv | None) -> int:
    from ..evaluation.accuracy import accuracy
    from ..training.checkpoint import atomic_write_text

    model, splits, dataset = _load_model_and_splits(args, ranks)
    ds = splits.test if args.split == "test" else splits.train  # both: the test transform
    res = accuracy(model, ds, batch_size=args.batch_size, num_workers=args.workers,
                   progress=True, ranks=ranks)
    if ranks is not None and not ranks.is_main:
        return 0
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
