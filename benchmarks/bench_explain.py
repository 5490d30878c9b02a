"""Explanation throughput and peak memory: ``bcosnet.explain`` on a batch against the
`bcos` package's ``model.explain`` called per image (it takes batch size 1 only).

Both models are the B-cos ResNet-18 v2 with identical weights: the `bcos` package's
``pretrained.resnet18(pretrained=False)`` with random weights and running statistics
from one batch, and bcosnet's ``load_bcos_v2("resnet18_v2", its state dict)``.  Printed
(Markdown), all timed in the same run, interleaved, medians of ``--repeats``:

1. images/s: ``bcosnet.explain(model, batch)`` (the prediction) against the `bcos`
   per-image loop of ``model.explain(img)`` (which also renders its colour image) and
   against the same loop without the rendering (forward + backward only); the
   floor is one forward + backward of the batch (``loss.backward()`` with parameter
   gradients, no optimiser) — the ratio to it is stated.
2. 9 targets per image: one ``explain(model, batch, N×9 tensor)`` against the
   per-target loop (9 calls of ``explain(model, batch, t)``).
3. peak memory of explaining the batch beside a plain forward + backward, each
   in a fresh subprocess (CPU: growth of the max RSS over the RSS before the call;
   CUDA: ``torch.cuda.max_memory_allocated`` over the memory allocated before).

Targets (issue 14): ≥ 1.5× the bcos images/s on CPU (≥ 5× on a GPU); 9 targets
≥ 2.5× the per-target loop; peak memory ≤ 1.2× a plain forward + backward.

    python benchmarks/bench_explain.py [--batch 32] [--size 224] [--repeats 3] [--threads N]
        [--device cpu] [--skip-memory]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from peak_memory import MMAP_ENV, peak_memory  # this folder

import bcosnet
from bcosnet.models import load_bcos_v2


def build_models(device: torch.device, num_classes: int = 1000):
    """(bcos reference, bcosnet model) with identical weights, eval mode; the
    reference is None when the `bcos` package is not importable."""
    torch.manual_seed(0)
    try:
        from bcos.models import pretrained
    except ImportError:
        pretrained = None
    if pretrained is None:  # bcosnet's own model, same initialisation recipe
        ref = None
        model = bcosnet.create_model("resnet18_v2", num_classes=num_classes)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = ref = pretrained.resnet18(pretrained=False, num_classes=num_classes)
    # running stats from one batch: the signal neither vanishes nor explodes
    for m in model.modules():
        if getattr(m, "running_var", None) is not None:
            m.momentum = 1.0
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5)
    x = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    model.train()
    with torch.no_grad():
        model(torch.cat([x, 1 - x], 1) if ref is not None else x)
    if ref is None:
        return None, model.to(device).eval()
    ours = load_bcos_v2("resnet18_v2", ref.state_dict(), num_classes=num_classes)
    return ref.to(device).eval(), ours.to(device).eval()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _floor(model: torch.nn.Module, x: torch.Tensor) -> None:
    out = model(x)
    F.cross_entropy(out, out.argmax(1)).backward()
    model.zero_grad(set_to_none=True)


def _time_interleaved(fns: dict[str, Callable[[], None]], repeats: int,
                      device: torch.device) -> dict[str, float]:
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():  # warm-up
        fn()
    for _ in range(repeats):
        for k, fn in fns.items():
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def _memory_child(what: str, batch: int, size: int, device: str) -> None:
    """Run in a subprocess: print JSON with the peak memory growth (bytes) of ``what``."""
    dev = torch.device(device)
    _, model = build_models(dev)
    x = torch.rand(batch, 3, size, size, device=dev)
    for _ in range(1):  # warm-up at batch 1: allocator and oneDNN caches
        if what == "explain":
            bcosnet.explain(model, x[:1])
        else:
            _floor(model, x[:1])
    if what == "explain":
        growth, _, _, _ = peak_memory(lambda: bcosnet.explain(model, x), dev)
    else:
        growth, _, _, _ = peak_memory(lambda: _floor(model, x), dev)
    print(json.dumps({"peak_growth": growth}))


def measure_memory(what: str, batch: int, size: int, device: str) -> int:
    out = subprocess.run(
        [sys.executable, __file__, "--memory-child", what, "--batch", str(batch),
         "--size", str(size), "--device", device],
        capture_output=True, text=True, check=True, env=MMAP_ENV,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_growth"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--targets", type=int, default=9)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--tune-malloc", action="store_true",
                   help="bcosnet.tune_malloc() first, as the bcosnet command does (timings only: "
                        "the memory children set glibc's variables themselves)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tuned = bcosnet.tune_malloc() if args.tune_malloc and not args.memory_child else False
    if args.memory_child:
        _memory_child(args.memory_child, args.batch, args.size, args.device)
        return
    warnings.filterwarnings("ignore")
    device = torch.device(args.device)
    ref, ours = build_models(device)
    n = args.batch
    x = torch.rand(n, 3, args.size, args.size, device=device)
    x6 = torch.cat([x, 1 - x], 1)

    head = (f"torch {torch.__version__}, {device}, {torch.get_num_threads()} threads, batch {n}, "
            f"{args.size} px, median of {args.repeats} interleaved repeats, "
            f"malloc {'tuned' if tuned else 'glibc defaults'}")
    if ref is None:
        print(head + "; the bcos package is not importable: its columns are skipped")
    else:  # identical weights → identical explanations (checked once, up to float rounding)
        e = bcosnet.explain(ours, x[:1])
        r = ref.explain(x6[:1].clone())
        err = (e.weights[:, 0] - r["dynamic_linear_weights"]).abs().max().item()
        scale = r["dynamic_linear_weights"].abs().max().item()
        print(head + f"; max |W_bcosnet − W_bcos| = {err:.2e} (max |W| = {scale:.2e})")

    def bcos_loop() -> None:
        for i in range(n):
            ref.explain(x6[i:i + 1].clone())

    def bcos_grad_loop() -> None:
        for i in range(n):
            xi = x6[i:i + 1].clone().requires_grad_(True)
            with ref.explanation_mode():
                out = ref(xi)
                out.max(1).values.backward(inputs=[xi])

    fns = {"bcosnet.explain (batch)": lambda: bcosnet.explain(ours, x)}
    if ref is not None:
        fns["bcos model.explain (per image)"] = bcos_loop
        fns["bcos fwd+bwd (per image, no rendering)"] = bcos_grad_loop
    fns["floor: fwd+bwd of the batch"] = lambda: _floor(ours, x)
    t = _time_interleaved(fns, args.repeats, device)
    base = t.get("bcos model.explain (per image)", float("nan"))
    floor = t["floor: fwd+bwd of the batch"]
    print("\n| what | s | images/s | speed ÷ bcos model.explain | time ÷ floor |")
    print("|---|---|---|---|---|")
    for k, v in t.items():
        print(f"| {k} | {v:.3f} | {n / v:.2f} | {base / v:.2f}× | {v / floor:.2f} |")

    tt = args.targets
    t2 = _time_interleaved({
        f"explain, {tt} targets at once": lambda: bcosnet.explain(
            ours, x, torch.arange(tt, device=device).expand(n, -1)),
        f"per-target loop ({tt} calls)": lambda: [bcosnet.explain(ours, x, k) for k in range(tt)],
    }, args.repeats, device)
    a, b = t2.values()
    print(f"\n| {tt} targets per image | s | speed-up |\n|---|---|---|")
    for k, v in t2.items():
        print(f"| {k} | {v:.3f} | {b / v:.2f}× |")

    if not args.skip_memory:
        mem_e = measure_memory("explain", n, args.size, args.device)
        mem_f = measure_memory("floor", n, args.size, args.device)
        how = "max_memory_allocated" if device.type == "cuda" else "max RSS growth"
        print(f"\n| peak memory ({how}) | MiB |\n|---|---|")
        print(f"| explain (batch {n}) | {mem_e / 2**20:.0f} |")
        print(f"| forward + backward (batch {n}) | {mem_f / 2**20:.0f} |")
        print(f"| ratio | {mem_e / mem_f:.2f} |")


if __name__ == "__main__":
    main()
