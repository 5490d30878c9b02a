"""Training throughput (images/s, forward + backward + optimiser step) of the
bcosnet B-cos ResNet-18 against the `bcos` package's ResNet-18.

Both models train on random 112×112 images (batch 32, CPU by default) with the
same optimiser (Adam, lr 1e-3) and the same loss (BCE on one-hot targets); the
`bcos` model is fed the 6-channel encoding ``[x, 1 − x]`` (it does not encode
its input itself), bcosnet's model takes the raw 3-channel images (it encodes
them in its first module; that work is included in its time).  Steps are
interleaved (A, B, A, B, ...) so that machine load hits both alike; the median
per-step time is reported.  Target: ratio bcosnet / bcos ≥ 1.0 (images/s).

``resnet18`` is the v1 (CVPR 2022) network the target names (MaxOut 2: twice the
convolution outputs of the `bcos` v2 model); ``--also resnet18_v2`` times the
like-for-like v2 network (uncentred BatchNorm, no MaxOut) in the same run.

    python benchmarks/bench_training.py [--steps 8] [--batch 32] [--size 112] [--threads 2]
                                        [--also resnet18_v2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

import bcosnet


def _step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
          device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = model(x)
    loss = F.binary_cross_entropy_with_logits(out, F.one_hot(y, out.shape[1]).to(out.dtype))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=8, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--also", nargs="*", default=[], help="more bcosnet models to time")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    import bcos.models

    torch.manual_seed(0)
    names = ["resnet18", *args.also]
    models = {f"bcosnet {n}": bcosnet.create_model(n).to(device).train() for n in names}
    models["bcos    resnet18"] = bcos.models.resnet18(pretrained=False).to(device).train()
    opts = {k: torch.optim.Adam(m.parameters(), lr=1e-3) for k, m in models.items()}
    x = torch.rand(args.batch, 3, args.size, args.size, device=device)
    x6 = torch.cat([x, 1 - x], dim=1)
    y = torch.randint(0, 1000, (args.batch,), device=device)
    print(f"batch {args.batch}, {args.size}×{args.size} px, {args.threads} threads, {device}, "
          f"Adam, BCE; {args.steps} timed steps after {args.warmup} warm-up steps, interleaved")
    times: dict[str, list[float]] = {k: [] for k in models}
    for i in range(args.warmup + args.steps):
        for k, m in models.items():
            t = _step(m, opts[k], x6 if k.startswith("bcos ") else x, y, device)
            if i >= args.warmup:
                times[k].append(t)
    ips = {k: args.batch / statistics.median(v) for k, v in times.items()}
    ref = ips["bcos    resnet18"]
    for k, v in times.items():
        n_params = sum(p.numel() for p in models[k].parameters()) / 1e6
        print(f"{k:22s} {ips[k]:7.1f} img/s  median step {statistics.median(v):.3f} s  "
              f"(min {min(v):.3f} s)  {n_params:5.2f} M params  ratio vs bcos {ips[k] / ref:.2f}")
    ratio = ips["bcosnet resnet18"] / ref
    verdict = "met" if ratio >= 1.0 else "NOT met"
    print(f"ratio bcosnet resnet18 / bcos resnet18: {ratio:.2f}   (target >= 1.0: {verdict})")


if __name__ == "__main__":
    main()
