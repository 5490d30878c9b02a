"""Quantus scores of every attribution method on a trained Fashion-MNIST network, through
``bcosnet.interop.quantus_explain_func`` (the table of docs/ecosystem.md).

    python scripts/quantus_table.py                       # the committed test checkpoint
    python scripts/quantus_table.py --checkpoint runs/fmnist/model.safetensors --images 64

Columns (one Quantus metric per family; higher is better except MaxSensitivity):
* AttributionLocalisation, 3×3 grids of confidently classified test images: the share
  of the positive attribution inside the explained class's cell — the same number as
  bcosnet's grid pointing game (its column beside it, computed separately);
* PixelFlipping: area under the curve of the explained logit as pixels are set to 0,
  49 per step, most relevant first (lower = more faithful; Quantus's AUC, dx = 1);
* FaithfulnessCorrelation: Pearson correlation between the attribution of random
  49-pixel subsets and the logit drop when they are set to 0 (10 runs);
* Sparseness: Gini index of |attribution| (higher = sparser);
* MaxSensitivity: largest relative change of the map under uniform noise of ±0.02
  (5 samples; lower = more robust).
Every score is the mean over the images (or grid cells), Quantus's settings otherwise.
The run is seeded (torch, numpy) and single-threaded.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CHECKPOINT = ROOT / "tests" / "assets" / "behaviour_ce6e7d6" / "bcos.safetensors"
#: Per-method settings: the main job's (bcosnet.pipeline.METHOD_SETTINGS) plus fewer
#: samples for the perturbation methods, whose maps MaxSensitivity recomputes 5 times.
FAST = {"intgrad": {"n_steps": 20}, "rise": {"n_masks": 500}, "lime": {"n_samples": 200}}


def _quiet() -> dict:
    return {"disable_warnings": True, "display_progressbar": False}


def sample(model: torch.nn.Module, test: object, images: int, seed: int
           ) -> tuple[np.ndarray, np.ndarray]:
    """The first ``images`` test images of a seeded order that the model gets right."""
    order = torch.randperm(len(test), generator=torch.Generator().manual_seed(seed)).tolist()
    xs, ys = [], []
    for start in range(0, len(order), 256):
        idx = order[start:start + 256]
        x = torch.stack([test[i][0] for i in idx])
        y = torch.as_tensor([test[i][1] for i in idx])
        with torch.no_grad():
            right = model(x).argmax(1) == y
        xs.append(x[right])
        ys.append(y[right])
        if sum(len(v) for v in ys) >= images:
            break
    return torch.cat(xs)[:images].numpy(), torch.cat(ys)[:images].numpy()


def grid_batch(grids: object) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Quantus's localisation inputs: each grid once per cell, the cell's class, its mask."""
    cells = grids.n ** 2
    x = grids.images.repeat_interleave(cells, 0).numpy()
    y = grids.classes.reshape(-1).numpy()
    masks = np.zeros((len(y), 1, *x.shape[-2:]))
    for i, (top, left, bottom, right) in enumerate(grids.boxes.tolist() * len(grids)):
        masks[i, 0, top:bottom, left:right] = 1
    return x, y, masks


def scores(model: torch.nn.Module, method: str, settings: dict, data: tuple, grid: tuple
           ) -> dict[str, float]:
    """The five Quantus metrics of one method (means)."""
    import quantus

    from bcosnet.interop import quantus_explain_func

    fn = quantus_explain_func(method, **settings)
    x, y = data
    common = {"model": model, "x_batch": x, "y_batch": y, "a_batch": None,
              "explain_func": fn, "channel_first": True}
    out = {}
    gx, gy, masks = grid
    loc = quantus.AttributionLocalisation(positive_attributions=True, abs=False,
                                          normalise=False, weighted=False, max_size=1e9,
                                          **_quiet())
    out["AttributionLocalisation"] = loc(**{**common, "x_batch": gx, "y_batch": gy},
                                         s_batch=masks)
    flip = quantus.PixelFlipping(features_in_step=49, perturb_baseline=0.0, **_quiet())
    # Quantus 0.6's own AUC (return_auc_per_sample) calls np.trapz, gone in NumPy 2:
    # the same trapezoid rule (dx = 1) over the curves it returns
    out["PixelFlipping AUC"] = np.trapezoid(np.asarray(flip(**common, softmax=False)), dx=1,
                                            axis=1)
    corr = quantus.FaithfulnessCorrelation(nr_runs=10, subset_size=49, perturb_baseline=0.0,
                                           return_aggregate=False, **_quiet())
    out["FaithfulnessCorrelation"] = corr(**common, softmax=False)
    out["Sparseness"] = quantus.Sparseness(abs=True, **_quiet())(**common)
    sens = quantus.MaxSensitivity(nr_samples=5, lower_bound=0.02, **_quiet())
    out["MaxSensitivity"] = sens(**common)
    return {k: float(np.nanmean(v)) for k, v in out.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT,
                   help="a bcosnet checkpoint or export of a Fashion-MNIST network "
                        "(default: the committed test checkpoint)")
    p.add_argument("--images", type=int, default=32, help="test images per metric")
    p.add_argument("--grids", type=int, default=4, help="3×3 grids for the localisation")
    p.add_argument("--methods", default=None,
                   help="comma-separated attribution methods (default: all the network takes)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    import bcosnet
    from bcosnet.data import build_datasets
    from bcosnet.evaluation import grid_pointing_game, make_grid_dataset
    from bcosnet.pipeline import BCOS_METHODS, METHOD_SETTINGS, STANDARD_METHODS
    from bcosnet.training import load_checkpoint_model

    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a record-less export: 28 px assumed
        model = load_checkpoint_model(args.checkpoint).eval()
    bcos = bcosnet.nn.is_bcos_model(model)
    methods = (args.methods.split(",") if args.methods
               else list(BCOS_METHODS if bcos else STANDARD_METHODS))
    test = build_datasets("fashion-mnist", augment=False).test
    torch.manual_seed(args.seed)
    data = sample(model, test, args.images, args.seed)
    grids = make_grid_dataset(model, test, n=3, num_grids=args.grids, seed=args.seed,
                              progress=False)
    grid = grid_batch(grids)
    settings = {m: {**METHOD_SETTINGS.get(m, {}), **FAST.get(m, {})} for m in methods}
    ours = grid_pointing_game(model, grids, methods, method_settings=settings, progress=False)
    rows = []
    for m in methods:
        t0 = time.perf_counter()
        np.random.seed(args.seed)
        torch.manual_seed(args.seed)
        row = scores(model, m, settings[m], data, grid)
        row["grid pointing game (bcosnet)"] = float(ours.scores[m].mean())
        rows.append((m, row))
        print(f"{m}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    print_table(rows, args, len(grids), bcos)
    return 0


def print_table(rows: list[tuple[str, dict[str, float]]], args: argparse.Namespace,
                n_grids: int, bcos: bool) -> None:
    cols = ["AttributionLocalisation", "grid pointing game (bcosnet)", "PixelFlipping AUC",
            "FaithfulnessCorrelation", "Sparseness", "MaxSensitivity"]
    name = args.checkpoint.resolve()
    name = name.relative_to(ROOT) if name.is_relative_to(ROOT) else name
    print(f"{'B-cos' if bcos else 'Conventional'} network {name}: {args.images} correctly "
          f"classified test images, {n_grids} 3×3 grids ({9 * n_grids} cells), seed "
          f"{args.seed}\n")
    print("| method | " + " | ".join(cols) + " |")
    print("|---|" + "---:|" * len(cols))
    for m, row in rows:
        print(f"| {m} | " + " | ".join(f"{row[c]:.3f}" for c in cols) + " |")


if __name__ == "__main__":
    sys.exit(main())
