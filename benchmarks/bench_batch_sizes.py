"""Images per forward pass for the main job's slow methods, at one CPU thread.

The main job's pointing game runs in two worker processes of one torch thread
each.  At one thread, small batches of the 84 px grid images stay in the CPU's
cache, so the batch size of a method's forward passes (IntGrad's path images,
occlusion's windows, RISE's masks, LIME's samples) changes its cost per grid
while the results stay the same up to float rounding.  This script times

* one forward pass (no grad) per image of ``--images`` 84 px images, for each
  batch size, in NCHW and in channels-last memory format (the main job's), and
* one 3×3 grid of each method (all 9 cells in one call, the main job's other
  settings: ``bcosnet.pipeline.METHOD_SETTINGS`` without its batch sizes) for
  each batch size, the networks in channels-last format,

on untrained ``fmnist_bcos`` / ``standard_fmnist_bcos`` networks (the cost does
not depend on the weights).  The batch sizes of one measurement alternate
``--repeats`` times (load drifts hit all alike); medians.  Prints two Markdown
tables and the load average.

    python benchmarks/bench_batch_sizes.py [--threads 1] [--repeats 3]
        [--sizes 8,16,32,64] [--intgrad-sizes 5,10,25] [--methods intgrad,occlusion,rise,lime]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from bench_targets import add_machine_args, grid_image, machine  # this folder

import bcosnet
from bcosnet import attribution
from bcosnet.pipeline import METHOD_SETTINGS

MODELS = ("fmnist_bcos", "standard_fmnist_bcos")


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def forward_ms_per_image(model: torch.nn.Module, images: torch.Tensor, sizes: list[int],
                         repeats: int) -> dict[int, float]:
    """Median milliseconds per image of no-grad forward passes in batches of each size."""
    times: dict[int, list[float]] = {b: [] for b in sizes}
    with torch.no_grad():
        model(images[: sizes[0]])  # warm-up
        for _ in range(repeats):
            for b in sizes:
                t0 = time.perf_counter()
                for lo in range(0, len(images), b):
                    model(images[lo : lo + b])
                times[b].append((time.perf_counter() - t0) / len(images) * 1e3)
    return {b: statistics.median(ts) for b, ts in times.items()}


def grid_seconds(model: torch.nn.Module, method: str, sizes: list[int], repeats: int
                 ) -> dict[int, float]:
    """Median seconds of one 3×3 grid (9 targets in one call) per batch size."""
    image = grid_image(1).contiguous(memory_format=torch.channels_last)
    targets = torch.arange(9)[None]
    settings = {k: v for k, v in METHOD_SETTINGS.get(method, {}).items() if k != "batch_size"}
    calls = {b: attribution.get(method, model, batch_size=b, progress=False, **settings)
             for b in sizes}
    times: dict[int, list[float]] = {b: [] for b in sizes}
    for _ in range(repeats):
        for b, call in calls.items():
            t0 = time.perf_counter()
            call.attribute(image, target=targets)
            times[b].append(time.perf_counter() - t0)
    return {b: statistics.median(ts) for b, ts in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--images", type=int, default=256, help="images of the forward timing")
    p.add_argument("--sizes", type=_ints, default=_ints("8,16,32,64"),
                   help="batch sizes of the forward passes and perturbation methods")
    p.add_argument("--intgrad-sizes", type=_ints, default=_ints("5,10,25"))
    p.add_argument("--methods", default="intgrad,occlusion,rise,lime")
    add_machine_args(p)
    args = p.parse_args()
    if args.threads is None:
        torch.set_num_threads(1)  # as each main-job worker
    if machine(args).type != "cpu":
        p.error("this benchmark times CPU threads' caches: use --device cpu")
    load0 = os.getloadavg()[0]
    fwd_rows, grid_rows = [], []
    for name in MODELS:
        torch.manual_seed(0)
        model = bcosnet.create_model(name, num_classes=10).eval()
        images = torch.rand(args.images, 1, 84, 84)
        fwd_rows.append((name, "NCHW", forward_ms_per_image(model, images, args.sizes,
                                                            args.repeats)))
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
        fwd_rows.append((name, "channels-last", forward_ms_per_image(model, images, args.sizes,
                                                                     args.repeats)))
        print(f"  {name}: forward done", flush=True)
        for method in args.methods.split(","):
            sizes = args.intgrad_sizes if method == "intgrad" else args.sizes
            grid_rows.append((name, method, grid_seconds(model, method, sizes, args.repeats)))
            print(f"  {name} {method}: done", flush=True)
    print()
    print(f"CPU, {torch.get_num_threads()} thread(s), torch {torch.__version__}; medians of "
          f"{args.repeats} alternating repeats; load average {load0:.1f} at the start, "
          f"{os.getloadavg()[0]:.1f} at the end ({os.cpu_count()} cores).")
    print()
    print(f"Forward pass (no grad), ms per 84 px image, {args.images} images:")
    print()
    print("| model | format | " + " | ".join(f"batch {b}" for b in args.sizes) + " |")
    print("|---|---|" + "---:|" * len(args.sizes))
    for name, fmt, ms in fwd_rows:
        print(f"| {name} | {fmt} | " + " | ".join(f"{ms[b]:.2f}" for b in args.sizes) + " |")
    print()
    print("Seconds per 3×3 grid (all 9 cells in one call), channels-last, by batch size:")
    print()
    print("| model | method | batch size: seconds per grid |")
    print("|---|---|---|")
    for name, method, secs in grid_rows:
        cells = ", ".join(f"{b}: {s:.2f}" for b, s in secs.items())
        print(f"| {name} | {method} | {cells} |")


if __name__ == "__main__":
    main()
