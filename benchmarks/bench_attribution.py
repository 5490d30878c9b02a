"""Cost of every attribution method: passes through the model and wall time per explanation.

One model, one image size, one batch of images; every method of
``bcosnet.attribution`` at its default (paper) settings.  Forward/backward
passes are counted with hooks on the model (images sent through it, divided by
the batch size); wall time is the median over ``--repeats`` calls (a single call
for the methods with tens to hundreds of forward passes, which are counted and
timed in that one call), divided by the batch size.  The cheap methods get a
warm-up call first (it also caches Grad-CAM's layer search) and are then timed
round-robin, ``--repeats`` rounds.

Target: ``bcos`` is the cheapest method except ``grad``/``ixg`` — printed as
the ratio of every method's time to ``bcos``'s.  Prints a Markdown table.

    python benchmarks/bench_attribution.py [--model resnet18] [--size 128] [--images 2]
        [--num-classes 10] [--repeats 15] [--threads N] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

import bcosnet
from bcosnet import attribution

PASS_HEAVY = {"lime", "rise", "occlusion", "intgrad"}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="resnet18", help="a bcosnet.create_model name")
    p.add_argument("--size", type=int, default=128, help="image side in pixels")
    p.add_argument("--images", type=int, default=2, help="images per batch")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--methods", default=",".join(attribution.available()))
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    device = torch.device(args.device)

    torch.manual_seed(0)
    model = bcosnet.create_model(args.model, num_classes=args.num_classes).to(device).eval()
    in_ch = getattr(getattr(model, "model_info", None), "in_channels", 3)
    g = torch.Generator().manual_seed(0)
    # Smooth random images (8×8 colour blocks, bilinearly upsampled): at 128 px
    # quickshift (kernel 4, max_dist 200) finds 18 segments in each, enough for LIME's top 5.
    images = torch.nn.functional.interpolate(
        torch.rand(args.images, in_ch, 8, 8, generator=g), size=(args.size, args.size),
        mode="bilinear", align_corners=False,
    ).to(device)
    target = torch.arange(args.images, device=device) % args.num_classes
    n = args.images

    results: dict[str, tuple[float, float, list[float]]] = {}  # name → (fwd, bwd, times)
    cheap: dict[str, attribution.AttributionMethod] = {}
    for name in args.methods.split(","):
        method = attribution.get(name, model)
        if name in PASS_HEAVY:  # one call, counted and timed (hooks cost nothing measurable)
            _sync(device)
            t0 = time.perf_counter()
            with attribution.count_passes(model) as c:
                method.attribute(images, target)
            _sync(device)
            results[name] = (c.forward / n, c.backward / n, [time.perf_counter() - t0])
            print(f"  {name}: {results[name][2][0] / n * 1e3:.1f} ms/image", flush=True)
        else:
            method.attribute(images, target)  # warm-up (+ Grad-CAM's one-off layer search)
            with attribution.count_passes(model) as c:
                method.attribute(images, target)
            results[name] = (c.forward / n, c.backward / n, [])
            cheap[name] = method
    # The cheap methods are timed round-robin, so that load drifts hit them alike.
    for _ in range(args.repeats):
        for name, method in cheap.items():
            _sync(device)
            t0 = time.perf_counter()
            method.attribute(images, target)
            _sync(device)
            results[name][2].append(time.perf_counter() - t0)
    rows = [(name, f, b, statistics.median(ts) / n) for name, (f, b, ts) in results.items()]

    t_bcos = next((r[3] for r in rows if r[0] == "bcos"), None)
    print()
    print(
        f"Model `{args.model}` ({args.num_classes} classes), {args.size}×{args.size} images, "
        f"batch {n}, {device.type}, {torch.get_num_threads()} threads, torch {torch.__version__}."
    )
    print()
    print("| method | forward passes / image | backward passes / image | ms / image | × bcos |")
    print("|---|---:|---:|---:|---:|")
    for name, f, b, t in rows:
        ratio = f"{t / t_bcos:.2f}" if t_bcos else "–"
        note = " (to the layer)" if name == "gradcam" and b else ""
        print(f"| {name} | {f:g} | {b:g}{note} | {t * 1e3:.1f} | {ratio} |")
    if t_bcos:
        cheaper = [r[0] for r in rows if r[3] < t_bcos and r[0] not in ("bcos", "grad", "ixg")]
        print()
        print(
            "bcos cheapest except grad/ixg: "
            + ("yes" if not cheaper else f"NO — cheaper: {', '.join(cheaper)}")
        )


if __name__ == "__main__":
    main()
