"""Peak memory and cost per attribution method for the grid pointing game at 224 px.

What one call of the grid pointing game costs for each method of the paper's
comparison (``bcosnet.pipeline.ALL_METHODS``) on an ImageNet-size network:
one 3×3 grid of 224 px cells (a 672×672 image, smooth random colour patterns)
and its 9 targets (all cells) in one ``method.attribute(image, target=1×9)``
call, as ``bcosnet.evaluation.grid_pointing_game`` calls the methods.  Models:
``bcosnet.create_model(name, num_classes=1000)`` with untrained weights (memory
and passes do not depend on the weights).  Each method has the library's
default settings (``attribution.get(name, model)``) except for its batch
(``--batch-size``) and, to keep a CPU run short, its count of perturbations:

* ``intgrad``: ``n_steps = batch_size = B`` (one chunk of B path images);
* ``occlusion``: the default patch, a stride widened so that only
  2·max(2, ⌈B/2⌉) windows remain (``batch_size = B``: chunks of B windows);
* ``rise``: ``n_masks = batch_size = B``; ``lime``: ``n_samples = max(B, 2)``,
  ``batch_size = B``;
* ``bcos``, ``grad``, ``ixg``, ``deeplift``, ``gradcam``: the whole call.

The memory of a chunk of B perturbed (or path) images does not depend on how
many chunks a full call runs — except RISE, which draws all its masks first and
keeps them: a footnote gives their size and the measured peak of drawing the
default count.  Each (model, method) runs in a fresh subprocess: after building
the model and one warm-up call of the method on a 96 px grid, the baseline is
taken; the peak is taken after the measured call.  CPU: the max RSS
(``getrusage``) after the call minus the RSS before it, with glibc's
``MALLOC_MMAP_THRESHOLD_=65536`` so that freed tensors leave the RSS; CUDA:
``torch.cuda.max_memory_allocated`` minus the memory allocated before.

Printed (Markdown): the peak above the loaded model, the memory per image of
the batch (from a second run at batch 1: (peak_B − peak_1)/(B − 1)), the
seconds of the measured call, the images it sent through the model (forward /
backward; a backward pass carrying T targets counts T), the same counts for a
full grid with the default settings (computed from the method's settings by
:func:`grid_passes`, which is checked against the counted passes of every
measured call) and "≈ s per grid" = images per grid × seconds per image.

    python benchmarks/bench_memory_methods.py [--models resnet50_v2,densenet121_v2]
        [--methods bcos,grad,...] [--batch-size 2] [--threads 2] [--device cpu]
        [--tuned-timing] [--cell 224]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from typing import Any

import torch
from bench_targets import add_machine_args, grid_image, machine  # this folder
from peak_memory import MMAP_ENV, peak_memory  # this folder

import bcosnet
from bcosnet import attribution
from bcosnet.attribution import Occlusion
from bcosnet.pipeline import ALL_METHODS

#: Methods whose call runs chunks of ``batch_size`` perturbed or path images.
CHUNKED = ("intgrad", "occlusion", "rise", "lime")
#: Methods that explain one grid image in one call (1 or 2 forward images).
ONE_PASS = ("bcos", "grad", "ixg", "deeplift", "gradcam")
TARGETS = 9  # the cells of a 3×3 grid
WARM_CELL = 32  # px per cell of the warm-up grid
MIB = 2**20


def _windows(method: Occlusion, size: tuple[int, int]) -> int:
    """Occlusion windows on an H×W image: row starts × column starts."""
    (ph, pw), (sh, sw) = method.patch_size, method.stride
    return len(Occlusion._starts(size[0], ph, sh)) * len(Occlusion._starts(size[1], pw, sw))


def grid_passes(
    method: attribution.AttributionMethod, size: tuple[int, int], targets: int = TARGETS
) -> tuple[int, int]:
    """Images ``method`` sends through the model to explain one H×W image for
    ``targets`` explicit classes (a 1×T tensor): (forward images, backward images),
    as :func:`bcosnet.attribution.count_passes` counts them (a backward pass
    carrying T targets counts T).  From the method's settings:

    * ``bcos``, ``grad``, ``ixg``, ``gradcam``: 1 forward, T backward;
    * ``deeplift``: the image and its baseline, 2 forward, 2·T backward;
    * ``intgrad``: 1 forward (the targets' range check) + ``n_steps`` path images,
      ``n_steps``·T backward;
    * ``occlusion``: 1 + the windows of ``patch_size``/``stride`` on H×W (the
      last window of a row or column flush with the border), no backward;
    * ``rise``: 1 + ``n_masks``; ``lime``: 1 + ``n_samples``; no backward.
    """
    name = method.name
    if name in ("bcos", "grad", "ixg", "gradcam"):
        return 1, targets
    if name == "deeplift":
        return 2, 2 * targets
    if name == "intgrad":
        return 1 + method.n_steps, method.n_steps * targets
    if name == "occlusion":
        return 1 + _windows(method, size), 0
    if name == "rise":
        return 1 + method.n_masks, 0
    if name == "lime":
        return 1 + method.n_samples, 0
    raise ValueError(f"no pass count for method {name!r}; known: {', '.join(ALL_METHODS)}")


def _occlusion_stride(size: tuple[int, int], patch: tuple[int, int], windows: int
                      ) -> tuple[int, int]:
    """A stride giving 2 row starts and at least ⌈windows/2⌉ column starts (≥ 2)."""
    cols = max(2, math.ceil(windows / 2))
    sw = next(s for s in range(size[1], 0, -1)
              if len(Occlusion._starts(size[1], patch[1], s)) >= cols)
    return size[0], sw


def measured_settings(name: str, batch: int, size: tuple[int, int]) -> dict[str, Any]:
    """The settings of the measured call: the defaults with ``batch_size = batch``
    and the perturbation count cut to about one chunk (see the module docstring)."""
    if name == "intgrad":
        return {"n_steps": batch, "batch_size": batch}
    if name == "occlusion":
        patch = attribution.get("occlusion", torch.nn.Identity()).patch_size
        return {"batch_size": batch, "stride": _occlusion_stride(size, patch, batch)}
    if name == "rise":
        return {"n_masks": batch, "batch_size": batch}
    if name == "lime":
        return {"n_samples": max(batch, 2), "batch_size": batch}
    return {}


# ----------------------------------------------------------------------------- child


def _child_method(spec: dict[str, Any], device: torch.device) -> dict[str, Any]:
    name, cell = spec["method"], spec["cell"]
    size = (3 * cell, 3 * cell)
    torch.manual_seed(0)
    model = bcosnet.create_model(spec["model"], num_classes=1000).to(device).eval()
    settings = measured_settings(name, spec["batch"], size)
    method = attribution.get(name, model, **settings)
    full = attribution.get(name, model)
    targets = torch.arange(TARGETS, device=device)[None]
    warm = grid_image(3, cell=WARM_CELL).to(device)
    method.attribute(warm, target=targets)  # allocator, oneDNN and autograd set-up
    image = grid_image(3, cell=cell).to(device)
    seg = {"seconds": 0.0, "segments": 0}
    if name == "lime":  # time quickshift apart: it does not scale with the samples
        segments = method.segments

        def timed_segments(img: torch.Tensor) -> torch.Tensor:
            t0 = time.perf_counter()
            out = segments(img)
            seg["seconds"] += time.perf_counter() - t0
            seg["segments"] = int(out.max()) + 1
            return out

        method.segments = timed_segments  # type: ignore[method-assign]

    def call() -> attribution.PassCount:
        with attribution.count_passes(model) as count:
            method.attribute(image, target=targets)
        return count

    peak, upper, seconds, count = peak_memory(call, device)
    return {"peak": peak, "upper": upper, "seconds": seconds, "settings": settings,
            "forward": count.forward, "backward": count.backward,
            "backward_calls": count.backward_calls,
            "predicted": grid_passes(method, size), "full": grid_passes(full, size),
            "lime_seconds": seg["seconds"], "lime_segments": seg["segments"],
            "n_masks": getattr(full, "n_masks", 0)}


def _child_rise_masks(spec: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Host memory of drawing RISE's default count of masks for the grid image."""
    h = 3 * spec["cell"]
    rise = attribution.get("rise", torch.nn.Identity())
    peak, upper, seconds, masks = peak_memory(
        lambda: attribution.rise_masks(rise.n_masks, (h, h), s=rise.s, p=rise.p,
                                       generator=torch.Generator().manual_seed(0)),
        torch.device("cpu"))
    return {"peak": peak, "upper": upper, "seconds": seconds, "n_masks": rise.n_masks,
            "mask_bytes": masks.numel() * masks.element_size()}


def child(spec: dict[str, Any], threads: int, device_name: str) -> None:
    """Run in a fresh subprocess: print one JSON line with the measurement of ``spec``."""
    args = argparse.Namespace(threads=threads, device=device_name)
    device = machine(args)
    if spec.get("tuned"):
        bcosnet.tune_malloc()  # as the bcosnet command runs
    fn = _child_rise_masks if spec["method"] == "rise-masks" else _child_method
    print(json.dumps(fn(spec, device)))


def measure(spec: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """``spec`` measured in a fresh interpreter (a clean high-water mark); with
    ``spec["tuned"]`` only for its time, glibc's malloc as the bcosnet command tunes it."""
    env = dict(os.environ) if spec.get("tuned") else MMAP_ENV
    proc = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec), "--threads", str(args.threads),
         "--device", args.device],
        capture_output=True, text=True, env=env,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"measuring {spec} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- report


def _mib(b: float, upper: bool = False) -> str:
    return ("≤ " if upper else "") + f"{b / MIB:,.0f}"


def _settings_text(s: dict[str, Any]) -> str:
    return ", ".join(f"{k}={tuple(v) if isinstance(v, list) else v}" for k, v in s.items()) \
        or "whole call"


def _row(model: str, name: str, r: dict[str, Any], r1: dict[str, Any] | None,
         batch: int) -> str:
    fwd, bwd = r["forward"], r["backward"]
    ff, fb = r["full"]
    if name in ONE_PASS:
        per = _mib(r["peak"], r["upper"]) + " ¹"
    else:
        # a difference below zero is measurement noise: no memory per image measurable
        per = "–" if r1 is None else _mib(max(0.0, (r["peak"] - r1["peak"]) / (batch - 1)))
    fixed = r["lime_seconds"]
    s_img = (r["seconds"] - fixed) / (fwd + bwd)
    grid_s = fixed + s_img * (ff + fb)
    passes = "" if bwd == 0 else f" in {r['backward_calls']} pass{'es' * (r['backward_calls'] > 1)}"
    return (f"| {model} | {name} | {_settings_text(r['settings'])} | {fwd} / {bwd}{passes} "
            f"| {_mib(r['peak'], r['upper'])} | {per} | {r['seconds']:.1f} | {s_img:.2f} "
            f"| {ff:,} / {fb:,} | {grid_s:,.{0 if grid_s >= 100 else 1}f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="resnet50_v2,densenet121_v2",
                   help="comma-separated bcosnet.create_model names (1000 classes)")
    p.add_argument("--methods", default=",".join(ALL_METHODS),
                   help=f"comma-separated, of {','.join(ALL_METHODS)}")
    p.add_argument("--batch-size", type=int, default=2,
                   help="IntGrad path images / occlusion windows / RISE masks / LIME samples "
                        "per forward pass")
    p.add_argument("--cell", type=int, default=224, help="grid cell side in px (grid: 3×cell)")
    p.add_argument("--tuned-timing", action="store_true",
                   help="time every call again in a fresh process with bcosnet.tune_malloc() "
                        "(as the bcosnet command runs; the memory runs map each large tensor "
                        "afresh, which is slower); about doubles the run time")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    add_machine_args(p)
    p.set_defaults(threads=2)
    args = p.parse_args()
    if args.child is not None:
        child(json.loads(args.child), args.threads, args.device)
        return
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(ALL_METHODS))
    if unknown:
        p.error(f"--methods: unknown {', '.join(unknown)}; choose from {','.join(ALL_METHODS)}")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    bad = sorted(set(models) - set(bcosnet.list_models()))
    if bad:
        p.error(f"--models: unknown {', '.join(bad)}; see bcosnet.list_models()")
    if args.batch_size < 1:
        p.error(f"--batch-size must be >= 1, got {args.batch_size}")
    load0, t0 = os.getloadavg()[0], time.perf_counter()
    rows, checks, notes = [], [], {}
    for model in models:
        for name in methods:
            spec = {"model": model, "method": name, "cell": args.cell, "batch": args.batch_size}
            r = measure(spec, args)
            if args.tuned_timing:
                rt = measure({**spec, "tuned": True}, args)
                r["memory_seconds"] = r["seconds"]
                r["seconds"], r["lime_seconds"] = rt["seconds"], rt["lime_seconds"]
            r1 = None
            if name in CHUNKED and args.batch_size > 1:
                r1 = measure({**spec, "batch": 1}, args)
            ok = (r["forward"], r["backward"]) == tuple(r["predicted"])
            checks.append(f"{model}/{name}: counted {r['forward']}/{r['backward']}, "
                          f"grid_passes {r['predicted'][0]}/{r['predicted'][1]}"
                          + ("" if ok else "  MISMATCH"))
            rows.append(_row(model, name, r, r1, args.batch_size))
            if name == "lime":
                notes[model] = (r["lime_segments"], r["lime_seconds"])
            print(f"  {model} {name}: peak {_mib(r['peak'], r['upper'])} MiB, "
                  + (f"{r['memory_seconds']:.1f} s (memory run), " if args.tuned_timing else "")
                  + f"{r['seconds']:.1f} s", flush=True)
    masks = measure({"method": "rise-masks", "cell": args.cell}, args) if "rise" in methods \
        else None
    side = 3 * args.cell
    print()
    print(f"Peak memory per attribution method, one {side}×{side} 3×3 grid image "
          f"({args.cell} px cells), {TARGETS} targets in one call; untrained weights, "
          f"1000 classes; {args.device}, {args.threads} threads, torch {torch.__version__}; "
          f"batch size {args.batch_size}; load average {load0:.1f} at the start, "
          f"{os.getloadavg()[0]:.1f} at the end ({os.cpu_count()} cores); "
          f"{time.perf_counter() - t0:.0f} s in all.")
    print()
    print("| model | method | measured call | images in call (fwd / bwd) | peak above model (MiB) "
          "| per image (MiB) | call (s) | s per image | images per grid, defaults (fwd / bwd) "
          "| ≈ s per grid |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(row)
    print()
    print(f"* Chunked methods ({', '.join(m for m in CHUNKED if m in methods)}) ran with a "
          "reduced count of path images / windows / masks / samples: their memory depends on "
          "the batch size, not on the count (except RISE's masks, below); \"per image\" = "
          f"(peak at batch {args.batch_size} − peak at batch 1) / {args.batch_size - 1}"
          + (" (not measured at batch size 1)" if args.batch_size == 1 else "") + ".")
    print("* bwd \"in k passes\": the backward calls that carried them — the library's "
          "default is one pass per target on CPU and one pass batched over the targets on "
          "other devices (more memory at once); measure on the device to size its batch.")
    print("* ¹ one grid image per call: the batch of these methods is grid images "
          "(`grid_pointing_game(batch_size=...)`), each about the peak.")
    print("* s per image = call seconds / images in the call (forward and backward counted "
          "alike; LIME without its quickshift); ≈ s per grid = s per image × images per grid "
          "(+ LIME's quickshift once).  One call each, its first at this size, "
          + ("in a fresh process with bcosnet.tune_malloc() (--tuned-timing)." if args.tuned_timing
             else "timed in the memory run (every large tensor mapped afresh: slower than the "
             "bcosnet command, which tunes malloc; --tuned-timing times them as it runs)."))
    for model, (nseg, secs) in notes.items():
        print(f"* LIME on {model}: quickshift found {nseg} segments in {secs:.1f} s; its one-hot "
              f"segment map holds segments × {side}² × 4 B = {nseg * side * side * 4 / MIB:.0f} "
              "MiB (natural photos give more segments: more memory).")
    if masks is not None:
        full_b = masks["mask_bytes"]
        more = full_b * (1 - args.batch_size / masks["n_masks"])
        print(f"* RISE keeps all its masks: {masks['n_masks']} × {side}² × 4 B = "
              f"{full_b / MIB:,.0f} MiB for the default count (on the device); drawing them "
              f"peaked at {_mib(masks['peak'], masks['upper'])} MiB of host memory "
              f"({masks['seconds']:.1f} s).  The table's RISE rows hold {args.batch_size}; "
              f"with {masks['n_masks']} masks add ≈ {_mib(more)} MiB.")
    print()
    print("Pass counts of the measured calls (hooks) against grid_passes():")
    for c in checks:
        print(f"    {c}")


if __name__ == "__main__":
    main()
