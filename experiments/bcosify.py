"""B-cosification on Fashion-MNIST (issue #16; Arya et al., NeurIPS 2024).

Claim tested: B-cosifying a trained conventional network and fine-tuning it gives
a B-cos network with the accuracy of one trained from scratch, in less time, with
explanations that localise as well.

Stages (every network through the public trainer, ``bcosnet.training.train``):

1. ``standard``: the conventional twin ``standard_fmnist_bcos`` (preset
   ``fmnist-standard``) for ``--standard-min`` minutes of training.
2. ``equivalence``: :func:`bcosnet.bcosify` of that network at B = 1 — its test
   accuracy and largest logit difference against the twin (should be the same
   network).
3. ``bcosified``: fine-tuning of the B-cosified twin (preset ``fmnist-bcosify``:
   B = 2, biases removed, max → average pooling) for ``--finetune-min`` minutes.
4. ``bcos``: ``fmnist_bcos`` from scratch (preset ``fmnist``) with the same total
   budget, ``--standard-min + --finetune-min`` minutes of training.
5. evaluation of both B-cos networks: test accuracy; the ``bcos`` explanations'
   localisation in the 3×3 grid pointing game (the main job's protocol:
   most confident correctly classified images with sigmoid(logit) > 0.5, one
   grid set, seeded); per-epoch test accuracy against training time.

Results: ``results.json`` and ``summary.md`` in the output folder.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Subset

from experiments._common import (
    Stopwatch,
    atomic_write_json,
    atomic_write_text,
    prepare,
    study_parser,
)

NAME = "bcosify"


def _curve(history: list[dict[str, Any]], final_acc: float, train_time_s: float
           ) -> list[tuple[float, float]]:
    """(cumulative training seconds, test accuracy) after each evaluated epoch and at the end."""
    pts, t = [], 0.0
    for rec in history:
        if rec.get("event") == "epoch":
            t += float(rec.get("epoch_time_s", 0.0))
            if "test_acc" in rec:
                pts.append((round(t, 1), float(rec["test_acc"])))
    pts.append((round(train_time_s, 1), float(final_acc)))
    return pts


def _time_to_reach(curve: list[tuple[float, float]], acc: float) -> float | None:
    """First training time at which ``curve`` reaches ``acc`` (None: never)."""
    for t, a in curve:
        if a >= acc:
            return t
    return None


def _pointing_game(model: torch.nn.Module, test: Any, n: int, grids: int, seed: int,
                   folder: Path, progress: bool) -> dict[str, Any]:
    """The main job's protocol (bcosnet.pipeline): the confidence threshold 0.5, and
    without it (said so) when too few classes pass it."""
    from bcosnet.evaluation import grid_pointing_game
    from bcosnet.evaluation.pointing_game import TooFewClassesError

    kw = dict(n=n, num_grids=grids, seed=seed, allow_fewer=True, progress=progress)
    note = None
    try:
        res = grid_pointing_game(model, test, ["bcos"], confidence_threshold=0.5,
                                 results_dir=folder, **kw)
    except TooFewClassesError as e:  # a short run: too few confident classes
        note = f"{e}; played without the confidence threshold"
        try:
            res = grid_pointing_game(model, test, ["bcos"], confidence_threshold=None,
                                     results_dir=folder.with_name(folder.name + "-nothreshold"),
                                     **kw)
        except TooFewClassesError as e2:
            return {"summary": None, "grids": 0, "n": n, "note": f"no pointing game: {e2}"}
    s = res.summary()["bcos"].to_dict()
    return {"summary": s, "grids": res.grids_per_method.get("bcos"), "n": n, "note": note}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = study_parser(NAME, __doc__.split("\n\n")[0])
    p.add_argument("--standard-min", type=float, default=None,
                   help="training minutes of the conventional twin (default 4; --quick: steps)")
    p.add_argument("--finetune-min", type=float, default=None,
                   help="fine-tuning minutes of the B-cosified twin (default 3)")
    p.add_argument("--grids", type=int, default=None,
                   help="3×3 grids in the pointing game (default 250; --quick 6)")
    args = p.parse_args(argv)
    out = prepare(NAME, args)
    from bcosnet import bcosify
    from bcosnet.data import DataSplits, build_datasets
    from bcosnet.evaluation import accuracy
    from bcosnet.training import get_preset, load_checkpoint_model, train

    sw, t0 = Stopwatch(), time.perf_counter()
    splits = build_datasets("fashion-mnist", augment=False)
    if args.quick:  # a seeded subset: seconds, not minutes
        g = torch.Generator().manual_seed(args.seed)
        tr = torch.randperm(len(splits.train), generator=g)[:512].tolist()
        te = torch.randperm(len(splits.test), generator=g)[:200].tolist()
        splits = DataSplits(Subset(splits.train, tr), Subset(splits.test, te), splits.classes,
                            splits.in_channels, splits.image_size)
    std_min = args.standard_min if args.standard_min is not None else 4.0
    ft_min = args.finetune_min if args.finetune_min is not None else 3.0
    grids = args.grids if args.grids is not None else (6 if args.quick else 250)

    def run(preset: str, folder: str, minutes: float, steps: int | None,
            options: dict[str, Any] | None = None) -> Any:
        cfg = get_preset(preset)
        cfg.out_dir = str(out / folder)
        cfg.seed, cfg.progress, cfg.threads = args.seed, args.progress, args.threads
        cfg.device = "cpu"
        cfg.time_limit_min = minutes
        cfg.eval_every_epochs = 1
        if options:
            cfg.model.options = {**cfg.model.options, **options}
        if args.quick:
            cfg.max_steps, cfg.epochs, cfg.optim.batch_size = steps, 2, 32
            cfg.data.eval_batch_size = 200
            cfg.log_every_steps = 1000
        if Path(cfg.out_dir, "checkpoint.pt").exists():
            raise ValueError(f"{cfg.out_dir} holds a run already; choose another --out")
        return train(cfg, datasets=splits)

    # 1. the conventional twin
    with sw("standard"):
        std = run("fmnist-standard", "standard", std_min, 16)
    twin = load_checkpoint_model(std.checkpoint)

    # 2. B = 1: the same network
    with sw("equivalence"):
        eq = bcosify(twin).eval()
        xs = torch.stack([splits.test[i][0] for i in range(min(128, len(splits.test)))])
        with torch.no_grad():
            d = (eq(xs) - twin(xs)).abs().max().item() / twin(xs).abs().max().item()
        acc_twin = float(accuracy(twin, splits.test, topk=(1,)).top1)
        acc_eq = float(accuracy(eq, splits.test, topk=(1,)).top1)
        drop = bcosify(twin, fine_tune=True).eval()
        acc_drop = float(accuracy(drop, splits.test, topk=(1,)).top1)

    # 3. fine-tune the B-cosified twin; 4. the B-cos network from scratch, same budget
    with sw("bcosified"):
        ft = run("fmnist-bcosify", "bcosified", ft_min, 8,
                 {"source_weights": str(std.checkpoint)})
    with sw("bcos"):
        sc = run("fmnist", "bcos", std_min + ft_min, 16)

    # 5. evaluation
    models = {"bcosified": load_checkpoint_model(ft.checkpoint),
              "bcos": load_checkpoint_model(sc.checkpoint)}
    res: dict[str, Any] = {}
    for name, model in models.items():
        with sw(f"pointing game {name}"):
            pg = _pointing_game(model, splits.test, 2 if args.quick else 3, grids, args.seed,
                                out / "pointing_game" / name, args.progress)
        res[name] = {"test_acc": float(accuracy(model, splits.test, topk=(1,)).top1),
                     "pointing_game": pg}
    curves = {"bcosified": _curve(ft.history, ft.metrics["test_acc"], ft.train_time_s),
              "bcos": _curve(sc.history, sc.metrics["test_acc"], sc.train_time_s)}
    target = res["bcosified"]["test_acc"]
    t_scratch = _time_to_reach(curves["bcos"], target)
    results = {
        "quick": args.quick, "seed": args.seed, "threads": torch.get_num_threads(),
        "budget_min": {"standard": std_min, "finetune": ft_min, "bcos": std_min + ft_min},
        "standard": {"test_acc": acc_twin, "train_time_s": round(std.train_time_s, 1),
                     "epochs": std.epoch, "steps": std.step},
        "equivalence": {"bcosified_b1_test_acc": acc_eq, "max_rel_logit_diff": d,
                        "fine_tuning_form_before_training_test_acc": acc_drop},
        "bcosified": {**res["bcosified"], "train_time_s": round(ft.train_time_s, 1),
                      "epochs": ft.epoch, "steps": ft.step,
                      "total_train_time_s": round(std.train_time_s + ft.train_time_s, 1)},
        "bcos": {**res["bcos"], "train_time_s": round(sc.train_time_s, 1), "epochs": sc.epoch,
                 "steps": sc.step,
                 "train_time_to_reach_bcosified_acc_s": t_scratch},
        "curves": curves,
        "wall_s": {k: round(v, 1) for k, v in sw.seconds.items()},
        "total_wall_s": round(time.perf_counter() - t0, 1),
    }
    atomic_write_json(out / "results.json", results, indent=2)
    atomic_write_text(out / "summary.md", _summary(results))
    print(_summary(results), flush=True)
    return results


def _summary(r: dict[str, Any]) -> str:
    def pg(name: str) -> str:
        g = r[name]["pointing_game"]
        if g["summary"] is None:
            return "–"
        s = g["summary"]
        return (f"{s['mean']:.3f} (median {s['median']:.3f}, {g['grids']} {g['n']}×{g['n']} "
                f"grids{', no threshold' if g['note'] else ''})")

    def pct(x: float) -> str:
        return f"{100 * x:.2f} %"

    t = r["bcos"]["train_time_to_reach_bcosified_acc_s"]
    lines = [
        "| network | test accuracy | bcos localisation (grid pointing game) | training time |",
        "|---|---|---|---|",
        f"| conventional twin | {pct(r['standard']['test_acc'])} | – | "
        f"{r['standard']['train_time_s']:.0f} s |",
        f"| B-cosified at B = 1 (no training) | {pct(r['equivalence']['bcosified_b1_test_acc'])} "
        f"| – | 0 s |",
        f"| B-cosified, fine-tuning form before training | "
        f"{pct(r['equivalence']['fine_tuning_form_before_training_test_acc'])} | – | 0 s |",
        f"| B-cosified + fine-tuned | {pct(r['bcosified']['test_acc'])} | {pg('bcosified')} | "
        f"{r['bcosified']['train_time_s']:.0f} s (+ {r['standard']['train_time_s']:.0f} s twin) |",
        f"| B-cos from scratch | {pct(r['bcos']['test_acc'])} | {pg('bcos')} | "
        f"{r['bcos']['train_time_s']:.0f} s |",
        "",
        f"Largest relative logit difference twin vs B-cosified at B = 1: "
        f"{r['equivalence']['max_rel_logit_diff']:.1e}.",
        "B-cos from scratch reached the B-cosified network's accuracy "
        + ("— never within its budget." if t is None or math.isnan(t) else
           f"after at most {t:.0f} s of training (test accuracy is measured after each "
           f"epoch and at the end: {len(r['curves']['bcos'])} point(s))."),
        f"Wall time of the study: {r['total_wall_s']:.0f} s "
        f"({', '.join(f'{k} {v:.0f} s' for k, v in r['wall_s'].items())}).",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
