"""T targets in one batched backward pass vs one backward pass per target.

Every gradient method gets its per-target gradients from one helper,
``bcosnet._utils.gradients.target_gradients``: the T targets go either through
one backward pass batched over them (``autograd.grad(...,
is_grads_batched=True)``, vmap over T one-hot output gradients; the default off
the CPU) or through T backward passes of the same graph (the per-target loop;
the default on CPU, chosen from this script's figures).  This script
times both on the grid pointing game's work: all n² = 9 cells of one 84 px 3×3
grid image of a Fashion-MNIST network (untrained weights: the cost does not
depend on them), for Integrated Gradients with the main job's settings
(``n_steps=50, batch_size=10``), for ``explain`` (the ``bcos`` method) and for
``grad``.  Each path is forced by calling the helper with ``batched=True`` or
``batched=False`` (patched into the modules that import it); the two paths alternate
``--repeats`` times in the same process, so that load drifts hit both alike,
and medians are compared.  The maps of both paths are checked to agree.

Prints a Markdown table: seconds per call (median), ratio batched / loop
(below 1: the batched pass is faster) and the machine's load average.

    python benchmarks/bench_batched_targets.py [--models fmnist_bcos,standard_fmnist_bcos]
        [--methods intgrad,bcos,grad] [--repeats 3] [--threads N] [--device cpu]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import statistics
import time
from collections.abc import Iterator

import torch
from bench_targets import add_machine_args, grid_image, machine  # this folder

import bcosnet
from bcosnet import attribution
from bcosnet._utils import gradients
from bcosnet.attribution import gradient as gradient_methods
from bcosnet.explanations import core

SETTINGS = {"intgrad": {"n_steps": 50, "batch_size": 10}}  # the main job's (pipeline.config)
_USERS = (core, gradient_methods)  # the modules that call target_gradients


@contextlib.contextmanager
def forced(batched: bool) -> Iterator[None]:
    """``target_gradients`` with ``batched=batched`` in the modules that call it."""
    fn = functools.partial(gradients.target_gradients, batched=batched)
    for m in _USERS:
        m.target_gradients = fn  # type: ignore[attr-defined]
    try:
        yield
    finally:
        for m in _USERS:
            m.target_gradients = gradients.target_gradients  # type: ignore[attr-defined]


def _timed(fn, device: torch.device) -> tuple[float, torch.Tensor]:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="fmnist_bcos,standard_fmnist_bcos")
    p.add_argument("--methods", default="intgrad,bcos,grad")
    p.add_argument("--repeats", type=int, default=3, help="interleaved (batched, loop) pairs")
    add_machine_args(p)
    args = p.parse_args()
    device = machine(args)
    load0 = os.getloadavg()[0]
    rows = []
    for model_name in args.models.split(","):
        torch.manual_seed(0)
        model = bcosnet.create_model(model_name, num_classes=10).to(device).eval()
        image = grid_image(1).to(device)
        targets = torch.arange(9, device=device)[None]
        for name in args.methods.split(","):
            if name == "bcos" and not bcosnet.nn.is_bcos_model(model):
                continue
            method = attribution.get(name, model, **SETTINGS.get(name, {}))
            call = functools.partial(method.attribute, image, target=targets)
            times: dict[str, list[float]] = {"batched": [], "loop": []}
            maps: dict[str, torch.Tensor] = {}
            for _ in range(args.repeats):
                with forced(True):
                    times["batched"].append((r := _timed(call, device))[0])
                    maps["batched"] = r[1]
                with forced(False):
                    times["loop"].append((r := _timed(call, device))[0])
                    maps["loop"] = r[1]
            scale = float(maps["loop"].abs().max())
            torch.testing.assert_close(maps["batched"], maps["loop"], rtol=1e-4,
                                       atol=1e-5 * scale)
            tb, tl = statistics.median(times["batched"]), statistics.median(times["loop"])
            rows.append((model_name, name, tb, tl))
            print(f"  {model_name} {name}: batched {tb:.2f} s, loop {tl:.2f} s", flush=True)
    print()
    print(f"One 84×84 1-channel 3×3 grid image, 9 targets, untrained weights, {device.type}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}; medians of "
          f"{args.repeats} interleaved repeats; load average {load0:.1f} at the start, "
          f"{os.getloadavg()[0]:.1f} at the end ({os.cpu_count()} cores).")
    print()
    print("| model | method | batched (s) | loop (s) | batched / loop |")
    print("|---|---|---:|---:|---:|")
    for model_name, name, tb, tl in rows:
        print(f"| {model_name} | {name} | {tb:.2f} | {tl:.2f} | {tb / tl:.2f} |")


if __name__ == "__main__":
    main()
