"""Forward+backward time of BcosConv2d against nn.Conv2d and the `bcos` package's layer.

Shapes: the 3×3 convolutions of the four ResNet stages (batch 16; 56/28/14/7 px).
All three layers are timed in the same run, interleaved, and the median of
repeated measurements is reported.  Targets (max_out=1, geometric mean over the
shapes): ≤ 1.0× the `bcos` layer and ≤ 1.1× a plain nn.Conv2d.

``--channels-last`` runs every layer and the input in channels-last memory
format (``model.to(memory_format=torch.channels_last)``, which BcosConv2d honours).

``--compile`` adds a column for ``torch.compile(BcosConv2d)`` (inductor; compile
time excluded — on a small CPU it takes minutes, use it on a GPU).

    python benchmarks/bench_layers.py [--repeats 15] [--batch 16] [--device cpu] [--compile]
        [--channels-last]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
import warnings

import torch
from torch import nn

from bcosnet import tune_malloc
from bcosnet.nn import BcosConv2d

SHAPES = [(64, 56), (128, 28), (256, 14), (512, 7)]  # (channels, size)


def _step(layer: nn.Module, x: torch.Tensor) -> None:
    out = layer(x)
    out.backward(torch.ones_like(out))


def _time(layer: nn.Module, x: torch.Tensor, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    _step(layer, x)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--compile", action="store_true", help="add a torch.compile column")
    parser.add_argument("--channels-last", action="store_true",
                        help="layers and input in channels-last memory format")
    parser.add_argument("--tune-malloc", action="store_true",
                        help="bcosnet.tune_malloc() first, as the bcosnet command does")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tuned = tune_malloc() if args.tune_malloc else False
    device = torch.device(args.device)
    try:
        from bcos.modules import BcosConv2d as RefConv  # test/benchmark-only reference
    except ImportError:  # pragma: no cover
        RefConv = None
        print("bcos package not installed: skipping the reference layer")

    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, "
          f"batch {args.batch}, median of {args.repeats}, {fmt}, "
          f"malloc {'tuned' if tuned else 'glibc defaults'}")
    header = "| C | px | max_out | nn.Conv2d ms | bcos ms | bcosnet ms | ÷Conv2d | ÷bcos |"
    if args.compile:
        header += " compiled ms | compiled ÷Conv2d |"
    print(header)
    print("|" + "---|" * (10 if args.compile else 8))
    ratios: dict[int, dict[str, list[float]]] = {1: {"conv": [], "ref": []},
                                                 2: {"conv": [], "ref": []}}
    for channels, size in SHAPES:
        for max_out in (1, 2):
            torch.manual_seed(0)
            ours = BcosConv2d(channels, channels, 3, padding=1, b=2, max_out=max_out).to(device)
            conv = nn.Conv2d(channels, channels * max_out, 3, padding=1, bias=False).to(device)
            layers = {"conv": conv, "ours": ours}
            if args.compile:
                layers["compiled"] = torch.compile(ours)
            if RefConv is not None:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    layers["ref"] = RefConv(channels, channels, 3, padding=1, b=2,
                                            max_out=max_out).to(device)
            for layer in layers.values():
                layer.to(memory_format=fmt)
            x = torch.randn(args.batch, channels, size, size, device=device)
            x = x.contiguous(memory_format=fmt).requires_grad_(True)
            times: dict[str, list[float]] = {k: [] for k in layers}
            for _ in range(args.warmup):
                for layer in layers.values():
                    _step(layer, x)
            for _ in range(args.repeats):
                for name, layer in layers.items():  # interleaved: same machine state
                    times[name].append(_time(layer, x, device))
            med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
            r_conv = med["ours"] / med["conv"]
            r_ref = med["ours"] / med["ref"] if "ref" in med else float("nan")
            ratios[max_out]["conv"].append(r_conv)
            ratios[max_out]["ref"].append(r_ref)
            row = (f"| {channels} | {size} | {max_out} | {med['conv']:.2f} | "
                   f"{med.get('ref', float('nan')):.2f} | {med['ours']:.2f} | {r_conv:.3f} | "
                   f"{r_ref:.3f} |")
            if args.compile:
                r_c = med["compiled"] / med["conv"]
                ratios[max_out].setdefault("compiled", []).append(r_c)
                row += f" {med['compiled']:.2f} | {r_c:.3f} |"
            print(row, flush=True)

    def gmean(v: list[float]) -> float:
        return math.exp(sum(math.log(r) for r in v) / len(v))

    for max_out in (1, 2):
        print(f"geometric mean, max_out={max_out}: bcosnet/nn.Conv2d = "
              f"{gmean(ratios[max_out]['conv']):.3f}, bcosnet/bcos = "
              f"{gmean(ratios[max_out]['ref']):.3f}"
              + (f", compiled/nn.Conv2d = {gmean(ratios[max_out]['compiled']):.3f}"
                 if args.compile else ""))
    print("targets (max_out=1): ÷bcos ≤ 1.0, ÷Conv2d ≤ 1.1")


if __name__ == "__main__":
    main()
