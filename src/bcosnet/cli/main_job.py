"""``bcosnet main``: train → explain → evaluate on Fashion-MNIST, with a report.

(The module is ``main_job``, not ``main``: ``bcosnet.cli.main`` is the entry-point
function, and a sub-command module of that name would replace it as an attribute
of the package once :func:`bcosnet.cli.build_parser` imported it.)
"""

from __future__ import annotations

import argparse

from ..pipeline import (
    ALL_METHODS,
    BCOS_METHODS,
    DEFAULT_EPOCHS,
    DEFAULT_GRIDS,
    DEFAULT_GRIDS_PER_METHOD,
    MainConfig,
    run_main,
)
from ._common import parse_grid_counts

_DEFAULT_COUNTS = ",".join(f"{k}={v}" for k, v in DEFAULT_GRIDS_PER_METHOD.items()) or "none"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "main",
        help="the main job: train, explain and evaluate on Fashion-MNIST, write a report",
        description=(
            "Train a B-cos network and its conventional twin on Fashion-MNIST for a fixed "
            "number of epochs from a seed (the same command gives the same numbers on any "
            "machine, not on its speed), explain their predictions, play the grid "
            "pointing game on the paper's protocol (3×3 grids, confidence threshold, every "
            "method; docs/protocol.md) and write OUT/report.html, which opens with whether "
            "the paper's localisation claim holds. Re-running skips finished stages and "
            "resumes interrupted ones."
        ),
    )
    p.add_argument("--quick", action="store_true",
                   help="a minutes-long run: 1 epoch per network, 20 grids (3 for "
                        "intgrad/occlusion/rise/lime), output folder outputs/main-quick")
    p.add_argument("--out", default=None, help="output folder (default: outputs/main)")
    p.add_argument("--epochs", type=int, default=None,
                   help=f"training epochs per network, the same for both (default: "
                        f"{DEFAULT_EPOCHS}; --quick: 1)")
    # Removed: training by wall-clock time made the numbers depend on the machine.
    p.add_argument("--time-limit-min", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument("--max-steps", type=int, default=None,
                   help="cap on optimiser steps per network (tests; the learning-rate "
                        "schedule still runs over --epochs)")
    p.add_argument("--grids", type=int, default=None,
                   help=f"pointing-game grids per method (default: {DEFAULT_GRIDS}, the "
                        "paper's)")
    p.add_argument("--grids-per-method", type=parse_grid_counts, default=None,
                   help="per-method grid counts, e.g. 'intgrad=100,occlusion=100' "
                        f"(default: {_DEFAULT_COUNTS}; 'none': --grids for every method)")
    p.add_argument("--grid-n", type=int, default=3, help="grid cells per side (default: 3)")
    p.add_argument("--no-threshold", action="store_true",
                   help="no confidence threshold (default: sigmoid(logit) > 0.5, the paper's)")
    p.add_argument("--methods", default=None,
                   help=f"comma-separated methods (default: all: {','.join(BCOS_METHODS)}; "
                        "'bcos' is used for the B-cos network only)")
    p.add_argument("--dataset", default="fashion-mnist",
                   help="fashion-mnist (default) or synthetic (a quick plumbing check)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None,
                   help="processes that train the two networks side by side and share out "
                        "the pointing game, each with 2 // WORKERS torch threads (default: 2; "
                        "1: everything in this process)")
    p.add_argument("--device", default=None,
                   help="cpu, cuda, cuda:N or auto: where both networks are trained and "
                        "evaluated (default: training on a GPU when one is visible, "
                        "evaluation on the CPU)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    # the main job's errors name MainConfig's fields; said as this command's flags
    p.set_defaults(func=run, api_flags={
        "out_dir": "--out", "epochs": "--epochs", "max_steps": "--max-steps",
        "grids_per_method": "--grids-per-method", "grid_n": "--grid-n",
        "confidence_threshold=None": "--no-threshold", "workers": "--workers",
        "seed": "--seed", "dataset": "--dataset", "device": "--device"})


def run(args: argparse.Namespace) -> int:
    if args.time_limit_min is not None:
        raise ValueError(
            "bcosnet main no longer takes --time-limit-min: a wall-clock budget made the "
            "networks (and every number of the report) depend on the machine's speed. It "
            f"trains for a fixed number of epochs: --epochs N (default {DEFAULT_EPOCHS}).")
    overrides: dict = {"dataset": args.dataset, "seed": args.seed, "grid_n": args.grid_n,
                       "progress": not args.no_progress}
    if args.methods:
        chosen = tuple(m.strip() for m in args.methods.split(",") if m.strip())
        if chosen == ("all",):
            chosen = ALL_METHODS
        unknown = sorted(set(chosen) - set(ALL_METHODS))
        if unknown:
            raise ValueError(f"unknown methods {unknown}; available: {', '.join(ALL_METHODS)}")
        overrides["methods_bcos"] = chosen
        overrides["methods_standard"] = tuple(m for m in chosen if m != "bcos")
    for key, value in (("out_dir", args.out), ("epochs", args.epochs),
                       ("max_steps", args.max_steps), ("grids", args.grids),
                       ("workers", args.workers), ("device", args.device)):
        if value is not None:
            overrides[key] = value
    if args.grids_per_method is not None:
        overrides["grids_per_method"] = args.grids_per_method
    if args.no_threshold:
        overrides["confidence_threshold"] = None
    cfg = MainConfig.quick(**overrides) if args.quick else MainConfig(**overrides)
    report = run_main(cfg)
    print(f"report written to {report}")
    return 0
