"""Training (or no-grad inference) throughput of bcosnet models against a reference.

Pairs (``--pair``, repeatable), each timed in the same run, steps interleaved
(A, B, A, B, ...) so that machine load hits both alike; the median per-step time
is reported as images/s and as the ratio bcosnet / reference:

* ``resnet18_v2``    bcosnet ``resnet18_v2``    vs the `bcos` package's ``pretrained.resnet18``
  (same architecture: uncentred BN, no MaxOut), fed the 6-channel encoding;
* ``densenet121_v2`` bcosnet ``densenet121_v2`` vs `bcos` ``pretrained.densenet121``;
* ``resnet18``       bcosnet v1 ``resnet18`` (MaxOut 2) vs `bcos` ``models.resnet18``;
* ``fmnist``         bcosnet ``fmnist_bcos`` vs its conventional twin ``standard_fmnist_bcos``.

The bcosnet models take raw images and encode them themselves (included in
their time).  Training step = forward, BCE on one-hot targets, backward, Adam
(lr 1e-3).  ``--infer``: eval mode, ``torch.no_grad()`` forward only.
``--compile`` adds a column for ``torch.compile(bcosnet model)`` (compile time excluded:
it happens in the warm-up steps).  Targets (issue 14): training ResNet-18 v2 and
DenseNet-121 v2 ≥ 1.1× bcos; fmnist training ≥ 0.5× the twin; fmnist inference
(500 images, 84 px) ≥ 0.5× the twin.  ``--channels-last``: both models and
their inputs in channels-last memory format.

    python benchmarks/bench_training.py [--pair resnet18_v2] [--steps 8] [--batch 32]
        [--size 112] [--threads 2] [--device cpu] [--infer] [--compile] [--channels-last]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

import bcosnet

# pair → (bcosnet model, reference builder name, reference takes the 6-channel encoding)
PAIRS = {
    "resnet18_v2": ("resnet18_v2", "bcos.pretrained.resnet18", True),
    "densenet121_v2": ("densenet121_v2", "bcos.pretrained.densenet121", True),
    "resnet18": ("resnet18", "bcos.models.resnet18", True),
    "fmnist": ("fmnist_bcos", "bcosnet.standard_fmnist_bcos", False),
}


def _reference(spec: str) -> nn.Module:
    if spec.startswith("bcosnet."):
        return bcosnet.create_model(spec.split(".", 1)[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if spec.startswith("bcos.pretrained."):
            from bcos.models import pretrained

            return getattr(pretrained, spec.rsplit(".", 1)[1])(pretrained=False)
        import bcos.models

        return getattr(bcos.models, spec.rsplit(".", 1)[1])(pretrained=False)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def make_step(model: nn.Module, x: torch.Tensor, infer: bool,
              amp: torch.dtype | None = None) -> Callable[[], None]:
    """One training step (or no-grad forward) of ``model`` on ``x``."""
    device = x.device
    if infer:
        model.eval()

        def step() -> None:
            with torch.no_grad(), torch.autocast(device.type, amp, enabled=amp is not None):
                model(x)
        return step
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    y = torch.arange(x.shape[0], device=device)

    def step() -> None:
        with torch.autocast(device.type, amp, enabled=amp is not None):
            out = model(x)
            if isinstance(out, (tuple, list)):
                out = out[0]
            loss = F.binary_cross_entropy_with_logits(
                out.float(), F.one_hot(y % out.shape[1], out.shape[1]).float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def run_pair(pair: str, *, batch: int, size: int, steps: int, warmup: int, device: torch.device,
             infer: bool, compile: bool, channels_last: bool = False) -> dict[str, float]:
    """Images/s per column (``bcosnet``, ``reference``, ``compiled``) and the ratios."""
    ours_name, ref_spec, ref_encoded = PAIRS[pair]
    torch.manual_seed(0)
    ours = bcosnet.create_model(ours_name).to(device)
    ref = _reference(ref_spec).to(device)
    in_ch = 1 if pair == "fmnist" else 3
    x = torch.rand(batch, in_ch, size, size, device=device)
    x_ref = torch.cat([x, 1 - x], 1) if ref_encoded else x
    if channels_last:  # both models and their inputs: like for like
        ours = ours.to(memory_format=torch.channels_last)
        ref = ref.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
        x_ref = x_ref.contiguous(memory_format=torch.channels_last)
    steps_by: dict[str, Callable[[], None]] = {
        "bcosnet": make_step(ours, x, infer),
        "reference": make_step(ref, x_ref, infer),
    }
    if compile:
        torch.manual_seed(0)
        twin = bcosnet.create_model(ours_name).to(device)
        steps_by["compiled"] = make_step(torch.compile(twin), x, infer)
    times: dict[str, list[float]] = {k: [] for k in steps_by}
    for i in range(warmup + steps):
        for k, fn in steps_by.items():
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            if i >= warmup:
                times[k].append(time.perf_counter() - t0)
    res = {k: batch / statistics.median(v) for k, v in times.items()}
    res["ratio"] = res["bcosnet"] / res["reference"]
    if compile:
        res["ratio_compiled"] = res["compiled"] / res["reference"]
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pair", action="append", choices=sorted(PAIRS),
                   help="which comparison (repeatable; default resnet18_v2)")
    p.add_argument("--steps", type=int, default=8, help="timed steps per model")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch", type=int, default=None, help="default 32 (fmnist: 128, --infer 500)")
    p.add_argument("--size", type=int, default=None, help="default 112 (fmnist: 28, --infer 84)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--infer", action="store_true", help="no-grad inference instead of training")
    p.add_argument("--compile", action="store_true", help="add a torch.compile column")
    p.add_argument("--channels-last", action="store_true",
                   help="both models and inputs in channels_last")
    p.add_argument("--tune-malloc", action="store_true",
                   help="bcosnet.tune_malloc() first, as the bcosnet command and the main job "
                        "do (freed memory stays in the process)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tuned = bcosnet.tune_malloc() if args.tune_malloc else False
    if args.tune_malloc and not tuned:
        print("note: --tune-malloc had no effect (not glibc, BCOSNET_MALLOC_TUNING=0, "
              "or MALLOC_*_ variables set)")
    device = torch.device(args.device)
    what = "no-grad inference" if args.infer else "training (Adam, BCE)"
    print(f"torch {torch.__version__}, {device}, {torch.get_num_threads()} threads, {what}, "
          f"malloc {'tuned' if tuned else 'glibc defaults'}, "
          f"median of {args.steps} interleaved steps after {args.warmup} warm-up steps")
    print("| pair | batch | px | bcosnet img/s | reference img/s | ratio |"
          + (" compiled img/s | compiled ratio |" if args.compile else ""))
    print("|---|---|---|---|---|---|" + ("---|---|" if args.compile else ""))
    for pair in args.pair or ["resnet18_v2"]:
        small = pair == "fmnist"
        batch = args.batch or (500 if args.infer and small else 128 if small else 32)
        size = args.size or ((84 if args.infer else 28) if small else 112)
        r = run_pair(pair, batch=batch, size=size, steps=args.steps, warmup=args.warmup,
                     device=device, infer=args.infer, compile=args.compile,
                     channels_last=args.channels_last)
        row = (f"| {pair} | {batch} | {size} | {r['bcosnet']:.1f} | {r['reference']:.1f} | "
               f"{r['ratio']:.2f} |")
        if args.compile:
            row += f" {r['compiled']:.1f} | {r['ratio_compiled']:.2f} |"
        print(row, flush=True)


if __name__ == "__main__":
    main()
