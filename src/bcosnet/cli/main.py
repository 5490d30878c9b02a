"""``bcosnet main``: train → explain → evaluate on Fashion-MNIST, with a report."""

from __future__ import annotations

import argparse

from ..pipeline import ALL_METHODS, BCOS_METHODS, STANDARD_METHODS, MainConfig


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "main",
        help="the main job: train, explain and evaluate on Fashion-MNIST, write a report",
        description=(
            "Train a B-cos network and its conventional twin on Fashion-MNIST, explain their "
            "predictions, play the grid pointing game with the B-cos explanation and post-hoc "
            "methods, and write OUT/report.html. Re-running skips finished stages."
        ),
    )
    p.add_argument("--out", default="outputs/main", help="output folder (default: %(default)s)")
    p.add_argument("--time-limit-min", type=float, default=10.0,
                   help="training budget per network in minutes (default: %(default)s)")
    p.add_argument("--max-steps", type=int, default=None,
                   help="cap on optimiser steps per network (quick runs)")
    p.add_argument("--grids", type=int, default=50,
                   help="pointing-game grids (default: %(default)s)")
    p.add_argument("--grid-n", type=int, default=2, help="grid cells per side (default: 2)")
    p.add_argument("--methods", default=None,
                   help=f"comma-separated methods (default: {','.join(BCOS_METHODS)}; "
                        f"available: {','.join(ALL_METHODS)}; 'bcos' is used for the B-cos "
                        "network only; 'all' for every method)")
    p.add_argument("--dataset", default="fashion-mnist",
                   help="fashion-mnist (default) or synthetic (a quick plumbing check)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..pipeline import run_main

    methods_bcos, methods_std = BCOS_METHODS, STANDARD_METHODS
    if args.methods:
        chosen = tuple(m.strip() for m in args.methods.split(",") if m.strip())
        if chosen == ("all",):
            chosen = ALL_METHODS
        methods_bcos = chosen
        methods_std = tuple(m for m in chosen if m != "bcos")
    cfg = MainConfig(
        out_dir=args.out,
        time_limit_min=args.time_limit_min,
        max_steps=args.max_steps,
        grids=args.grids,
        grid_n=args.grid_n,
        methods_bcos=methods_bcos,
        methods_standard=methods_std,
        dataset=args.dataset,
        seed=args.seed,
        progress=not args.no_progress,
    )
    report = run_main(cfg)
    print(f"report written to {report}")
    return 0
