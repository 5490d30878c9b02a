"""The grid pointing game with every method: all cells of a grid in one call vs the
per-target loop (issue #10: ≥ 4× faster for 100 3×3 grids).

Plays :func:`bcosnet.evaluation.grid_pointing_game` on the Fashion-MNIST B-cos
network (every method: bcos and the eight post-hoc ones) and its conventional
twin (the eight post-hoc ones) twice per method on the *same* grids, with the
main job's method settings (``bcosnet.pipeline.METHOD_SETTINGS``):

* ``all cells``: the library's path — each method explains the n² = 9 cells of
  a grid in one call (N×9 targets: occlusion windows, RISE masks and LIME samples
  shared by the nine maps, one forward for the gradient methods);
* ``per target``: the same method wrapped in a callable without multi-target
  support, so the game calls it once per cell (what the game did before).

The two runs alternate method by method (load drift hits both alike) and their
scores are compared (same maps up to float round-off: the table shows the
largest score difference).  Prints a Markdown table: seconds per method and
path, the totals and their ratio.

    python benchmarks/bench_pointing_game.py --bcos CKPT --standard CKPT
        [--grids 100] [--threads 2] [--methods bcos,grad,...] [--formats]

``--formats``: instead of the per-target loop, times the library's path twice —
the networks in the default (NCHW) memory format with IntGrad's default 64 path
images per pass, and as the main job runs them (``MainConfig.channels_last``,
IntGrad 25 per pass) — and compares their scores.

The checkpoints are trained networks (the grids need correctly and confidently
classified images of nine classes), e.g. the main job's:
``outputs/main/bcos/checkpoints/last.pt`` and ``outputs/main/standard/...``
(the paths are in ``outputs/main/*/train_done.json``).  Grids: the paper's
protocol (confidence threshold 0.5, seed 0).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

import torch

ALL = "bcos,grad,ixg,intgrad,deeplift,gradcam,occlusion,rise,lime"


def _per_target(fn):
    """``fn`` as a callable the game calls once per cell (no multi-target support)."""

    def loop(images, targets):
        return fn(images, targets)

    loop.__name__ = getattr(fn, "__name__", "method")
    return loop


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--grids", type=int, default=100, help="3×3 grids per method (default 100)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--bcos", required=True, help="checkpoint of the trained B-cos network")
    p.add_argument("--standard", required=True, help="checkpoint of the trained twin")
    p.add_argument("--methods", default=ALL)
    p.add_argument("--formats", action="store_true",
                   help="NCHW + default IntGrad batch vs channels-last + the main job's settings")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")

    from bcosnet.data import build_datasets
    from bcosnet.evaluation import grid_pointing_game
    from bcosnet.evaluation.pointing_game import make_attribution_fn, make_grid_dataset
    from bcosnet.pipeline import METHOD_SETTINGS
    from bcosnet.training import load_checkpoint_model

    test = build_datasets("fashion-mnist", augment=False).test
    nets = {}
    for label, ckpt in (("B-cos", args.bcos), ("standard", args.standard)):
        model = load_checkpoint_model(ckpt).eval()
        grids = make_grid_dataset(model, test, n=3, num_grids=args.grids, seed=0,
                                  confidence_threshold=0.5, progress=False)
        nets[label] = (model, grids)
    print(f"torch {torch.__version__}, {args.threads} threads, {args.grids} grids of 3×3 "
          f"(84 px) per method and path; checkpoints: B-cos {args.bcos}, "
          f"standard {args.standard}\n")
    if args.formats:
        print("| network | method | NCHW, IntGrad 64/pass (s) | channels-last, main job's "
              "settings (s) | speed-up | max |Δscore| |")
    else:
        print("| network | method | all cells (s) | per target (s) | ratio | max |Δscore| |")
    print("|---|---|---|---|---|---|")
    tot = {"all": 0.0, "loop": 0.0}
    for label, (model, grids) in nets.items():
        for m in args.methods.split(","):
            if m == "bcos" and label != "B-cos":
                continue
            secs, scores = {}, {}
            for path in ("all", "loop"):
                if args.formats:
                    fmt = torch.contiguous_format if path == "all" else torch.channels_last
                    model.to(memory_format=fmt)
                    kw = dict(METHOD_SETTINGS.get(m, {}))
                    if path == "all":
                        kw.pop("batch_size", None)
                    method = make_attribution_fn(model, m, **kw)
                else:
                    model.to(memory_format=torch.contiguous_format)
                    fn = make_attribution_fn(model, m, **METHOD_SETTINGS.get(m, {}))
                    method = fn if path == "all" else _per_target(fn)
                t0 = time.perf_counter()
                res = grid_pointing_game(model, grids, {m: method}, progress=False)
                secs[path] = time.perf_counter() - t0
                scores[path] = res.scores[m]
                tot[path] += secs[path]
            diff = float(abs(scores["all"] - scores["loop"]).max())
            ratio = (secs["all"] / secs["loop"]) if args.formats else (secs["loop"] / secs["all"])
            print(f"| {label} | {m} | {secs['all']:.1f} | {secs['loop']:.1f} | "
                  f"{ratio:.2f} | {diff:.1e} |", flush=True)
    ratio = (tot["all"] / tot["loop"]) if args.formats else (tot["loop"] / tot["all"])
    target = "" if args.formats else " (target ≥ 4)"
    print(f"| **all** | **every method** | **{tot['all']:.1f}** | **{tot['loop']:.1f}** | "
          f"**{ratio:.2f}**{target} | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
