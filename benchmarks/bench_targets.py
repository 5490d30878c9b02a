"""All targets of a grid image from one set of passes: time of 9 targets vs 1 target.

The grid pointing game explains all n² = 9 cells of an 84 px 3×3 grid image.
Perturbation methods compute every target's map from the same perturbed
forward passes (occlusion windows, RISE masks and LIME samples do not depend
on the target; LIME fits one ridge per target on the same samples, as one
multi-output solve), so 9 targets should cost little more than one.  This
script times ``method.attribute(image, target=c)`` (one target) against
``method.attribute(image, target=torch.arange(9)[None])`` (a 1×9 target: nine
maps) on the Fashion-MNIST B-cos network (untrained weights: the cost does not
depend on them), interleaving the two calls ``--repeats`` times and taking
medians, so that load drifts on a shared machine hit both alike.

Limits (issue #10): 9 targets ≤ 1.5× one target for occlusion and RISE, ≤ 2×
for LIME.  Prints a Markdown table with the times, the ratios and the limits.

    python benchmarks/bench_targets.py [--model fmnist_bcos] [--repeats 5]
        [--methods occlusion,rise,lime] [--threads N] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
import torch.nn.functional as F

import bcosnet
from bcosnet import attribution

LIMITS = {"occlusion": 1.5, "rise": 1.5, "lime": 2.0}


def grid_image(in_ch: int, seed: int = 0, cell: int = 28) -> torch.Tensor:
    """1×C×3·cell×3·cell: a 3×3 grid of ``cell`` px cells (84 px by default), each a
    smooth random pattern (so quickshift finds super-pixels, as on a Fashion-MNIST grid)."""
    g = torch.Generator().manual_seed(seed)
    cells = F.interpolate(torch.rand(9, in_ch, 4, 4, generator=g), size=(cell, cell),
                          mode="bilinear", align_corners=False)
    rows = [torch.cat(list(cells[3 * r : 3 * r + 3]), dim=2) for r in range(3)]
    return torch.cat(rows, dim=1)[None]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def add_machine_args(p: argparse.ArgumentParser) -> None:
    """--threads and --device, shared with bench_batched_targets.py."""
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu")


def machine(args: argparse.Namespace) -> torch.device:
    """Apply --threads, silence warnings; the --device to time on."""
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    return torch.device(args.device)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="fmnist_bcos", help="a bcosnet.create_model name")
    p.add_argument("--repeats", type=int, default=5, help="interleaved (1 target, 9 targets) pairs")
    p.add_argument("--methods", default="occlusion,rise,lime")
    add_machine_args(p)
    args = p.parse_args()
    device = machine(args)

    torch.manual_seed(0)
    model = bcosnet.create_model(args.model, num_classes=10).to(device).eval()
    in_ch = getattr(getattr(model, "model_info", None), "in_channels", 1)
    image = grid_image(in_ch).to(device)
    one, nine = 4, torch.arange(9, device=device)[None]

    rows = []
    for name in args.methods.split(","):
        method = attribution.get(name, model)
        with attribution.count_passes(model) as c1:
            m1 = method.attribute(image, target=one)  # also a warm-up
        with attribution.count_passes(model) as c9:
            m9 = method.attribute(image, target=nine)
        assert m9.shape[:2] == (1, 9), name
        torch.testing.assert_close(m9[:, one], m1, rtol=1e-4, atol=1e-6 * float(m1.abs().max()))
        times: dict[str, list[float]] = {"1": [], "9": []}
        for _ in range(args.repeats):
            for key, target in (("1", one), ("9", nine)):
                _sync(device)
                t0 = time.perf_counter()
                method.attribute(image, target=target)
                _sync(device)
                times[key].append(time.perf_counter() - t0)
        t1, t9 = statistics.median(times["1"]), statistics.median(times["9"])
        rows.append((name, c1.forward, c9.forward, t1, t9))
        print(f"  {name}: 1 target {t1:.2f} s, 9 targets {t9:.2f} s", flush=True)

    print()
    print(
        f"Model `{args.model}` (untrained), one {image.shape[-1]}×{image.shape[-2]} "
        f"{in_ch}-channel 3×3 grid image, {device.type}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}; medians of {args.repeats} interleaved repeats."
    )
    print()
    print("| method | forward passes (1 / 9 targets) | 1 target (s) | 9 targets (s) | ratio "
          "| limit | met |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for name, f1, f9, t1, t9 in rows:
        limit = LIMITS.get(name)
        ratio = t9 / t1
        met = "–" if limit is None else ("yes" if ratio <= limit else "NO")
        lim = "–" if limit is None else f"{limit:g}×"
        print(f"| {name} | {f1} / {f9} | {t1:.2f} | {t9:.2f} | {ratio:.2f} | {lim} | {met} |")


if __name__ == "__main__":
    main()
