"""Seconds per 3×3 grid of each pointing-game method on the Fashion-MNIST nets.

    PYTHONPATH=src python scripts/pointing_game_timing.py [--bcos CKPT] [--standard CKPT]
        [--grids 2] [--repeats 3] [--threads 2] [--methods bcos,grad,...]

Builds 84 px grid images (3×3 Fashion-MNIST test images; classes need not be
distinct for timing), then times, per method and network:

* ``all cells``: explaining all 9 cells of each grid the way the game does
  (one call with 9×targets where the method supports it, else 9 calls);
* ``one cell``: one call with one target per grid.  For occlusion, RISE and
  LIME this is the cost of one set of perturbed forward passes, which the
  multi-target form shares among all 9 cells.

Without checkpoints the nets are untrained (timing only: the cost of a pass
does not depend on the weights).  Prints medians of ``--repeats`` runs and, for
scaling to another machine or load, the time of one plain forward pass of 500
grid images per network.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch


def _models(args: argparse.Namespace) -> dict[str, torch.nn.Module]:
    from bcosnet.models import create_model
    from bcosnet.training import load_checkpoint_model

    out = {}
    for label, ckpt, name in (("B-cos", args.bcos, "fmnist_bcos"),
                              ("standard", args.standard, "standard_fmnist_bcos")):
        out[label] = (load_checkpoint_model(ckpt) if ckpt else create_model(name, 10)).eval()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bcos")
    p.add_argument("--standard")
    p.add_argument("--grids", type=int, default=2, help="grid images per call")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--methods", default="bcos,grad,ixg,intgrad,deeplift,gradcam,occlusion,rise,"
                                        "lime")
    p.add_argument("--skip-all-cells", default="occlusion,rise,lime",
                   help="methods timed for one cell only when they lack multi-target support "
                        "(their 9-call loop is 9× that)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from bcosnet.data import build_datasets
    from bcosnet.evaluation.pointing_game import grid_maps, make_attribution_fn
    from bcosnet.evaluation.pointing_game.game import _summed_maps
    from bcosnet.pipeline import METHOD_SETTINGS

    test = build_datasets("fashion-mnist", augment=False).test
    g = args.grids
    cells = torch.stack([test[i][0] for i in range(9 * g)])  # (9g)×1×28×28
    images = cells.reshape(g, 3, 3, 1, 28, 28).permute(0, 3, 1, 4, 2, 5).reshape(g, 1, 84, 84)
    targets = torch.arange(9).repeat(g, 1)
    skip = set(args.skip_all_cells.split(","))
    models = _models(args)
    calib = {}
    for label, model in models.items():  # the cost of one plain forward pass, for scaling
        x = torch.rand(500, 1, 84, 84)
        with torch.no_grad():
            t0 = time.perf_counter()
            model(x)
            calib[label] = time.perf_counter() - t0
    print(f"torch {torch.__version__}, {args.threads} threads, {g} grids of 84×84 per call, "
          f"median of {args.repeats}; one forward of 500 grids: "
          + ", ".join(f"{k} {v:.2f} s" for k, v in calib.items()), flush=True)
    print(f"{'network':<9} {'method':<10} {'multi':>5} {'all cells s/grid':>17} "
          f"{'one cell s/grid':>16}")
    for label, model in models.items():
        for m in args.methods.split(","):
            if m == "bcos" and label != "B-cos":
                continue
            fn = make_attribution_fn(model, m, **METHOD_SETTINGS.get(m, {}))
            multi = bool(getattr(fn, "supports_multi_target", False))

            def one(fn=fn, m=m) -> None:
                _summed_maps(fn(images, targets[:, 0]), m, (g,), (84, 84))

            def all_(fn=fn, m=m) -> None:
                grid_maps(fn, images, targets, name=m)

            times = {}
            for what, f in (("one", one), ("all", all_)):
                if what == "all" and m in skip and not multi:
                    continue
                runs = []
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    f()
                    runs.append((time.perf_counter() - t0) / g)
                times[what] = statistics.median(runs)
            all_s = f"{times['all']:.3f}" if "all" in times else f"(≈9×) {9 * times['one']:.2f}"
            print(f"{label:<9} {m:<10} {str(multi):>5} {all_s:>17} {times['one']:>16.3f}",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
