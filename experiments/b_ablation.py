"""B ablation: does a higher alignment pressure B trade a little accuracy for more
interpretability? (The paper's v1 CIFAR-10 table: top-1 93.53 → 92.37 % from
B = 1 to 2.5 while localisation rises.)

The small B-cos network for Fashion-MNIST (``fmnist_bcos``, the main job's
network) is trained for B ∈ {1, 1.25, 1.5, 1.75, 2, 2.5} with the same budget
(the ``fmnist`` preset: Adam 1e-3, batch 128, BCE, cosine to 1e-5 over the
epochs, same seed, same training images), and per B the study measures:

* test accuracy (the trainer's final evaluation on the whole test split);
* ``bcos`` localisation: the grid pointing game on the main job's protocol
  (3×3 grids of correctly classified test images with sigmoid(logit) > 0.5,
  smoothing by the cell size, seed 0) — mean and median score;
* the deletion AUC of the ``bcos`` explanation and of a random pixel order
  (:func:`bcosnet.evaluation.evaluate_faithfulness`, black baseline, sigmoid score;
  deletion only, for time — insertion is in the faithfulness study).

Scale and temperature per B.  The v1 CIFAR-10 code (``experiments/CIFAR10/bcos/
experiment_parameters.py``) multiplies every layer by ``10**(1.5·B − 1.75)`` and
divides the logits by ``T = 10**(−3, −3, −2, 1, 2, 2, 3)`` for B = 1 … 2.5: both
offset the factor ``|cos|**(B − 1)`` that every layer applies, so the logits
of a fresh network stay usable.  Those constants are for its 9 layers of fixed
scale; copied onto the 7 fan-in-scaled layers of ``fmnist_bcos`` (rule
``"cifar"``: scale ``100·10**(1.5·(B − 2))``, T divided by its B = 2 value) they
give initial logits of standard deviation 1 to 144 (B = 1.25).  The default
rule ``"calibrated"`` states that intent directly: the per-layer scale stays
the preset's 100 and T(B) is set so that the logits of the freshly initialised
network (this seed) on 256 training images have the standard deviation of the
B = 2 network with T = 1 — so B = 2 is exactly the main job's network.  (Here T
falls with B, from about 1e5 at B = 1 to 5e-3 at B = 2.5 for seed 0: the fan-in
scale γ = 100/√(9·C_in) > 1 amplifies every layer, most for the nearly linear
low-B networks; in the CIFAR code the per-layer scale rises with B instead.)

Run from the project root::

    .venv/bin/python -m experiments.b_ablation --threads 1            # the full study
    .venv/bin/python -m experiments.b_ablation --quick                # seconds, synthetic data

Outputs (``--out``): ``results.json``, ``table.md``, ``b_ablation.png``, and one
folder per B (the training run, the pointing game's and deletion's results).
Re-running resumes: finished B values are loaded.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from experiments._common import (
    Stopwatch,
    atomic_write_json,
    atomic_write_text,
    prepare,
    study_parser,
)

NAME = "b_ablation"
B_VALUES = (1.0, 1.25, 1.5, 1.75, 2.0, 2.5)
#: Reference: the v1 CIFAR-10 table (9-layer net, MaxOut 2, 100 epochs), top-1 %.
PAPER_CIFAR10_TOP1 = {1.0: 93.53, 1.25: 93.81, 1.5: 93.69, 1.75: 93.69, 2.0: 93.19,
                      2.25: 92.60, 2.5: 92.37}
RULES = ("calibrated", "cifar")


def _floats(text: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers like '1,1.5,2', "
                                         f"got {text!r}") from e
    if not vals or any(not math.isfinite(v) or v < 1 for v in vals):
        raise argparse.ArgumentTypeError(f"B values must be numbers >= 1, got {text!r}")
    return vals


def parser() -> argparse.ArgumentParser:
    p = study_parser(NAME, __doc__.split("\n\n")[0])
    p.add_argument("--b-values", type=_floats, default=None,
                   help="comma-separated B values (default 1,1.25,1.5,1.75,2,2.5; "
                        "--quick: 1,2.5)")
    p.add_argument("--rule", choices=RULES, default="calibrated",
                   help="scale/temperature per B (module docstring; default calibrated)")
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs per B over the training images (default 1; --quick: 3)")
    p.add_argument("--train-images", type=int, default=None,
                   help="training images, the same seeded subset for every B "
                        "(default 20000 of 60000; --quick: 300 of the synthetic set's 600)")
    p.add_argument("--grids", type=int, default=None,
                   help="3×3 pointing-game grids per B (default 250, the main job's count "
                        "for bcos; --quick: 4)")
    p.add_argument("--images", type=int, default=None,
                   help="test images for deletion (default 500; --quick: 40)")
    p.add_argument("--steps", type=int, default=None,
                   help="deletion steps (default 20; --quick: 5)")
    return p


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    quick = args.quick
    d = {
        "b_values": list(args.b_values or ((1.0, 2.5) if quick else B_VALUES)),
        "rule": args.rule,
        "epochs": args.epochs or (3 if quick else 1),
        "train_images": args.train_images or (300 if quick else 20000),
        "grids": args.grids or (4 if quick else 250),
        "images": args.images or (40 if quick else 500),
        "steps": args.steps or (5 if quick else 20),
        "dataset": "synthetic" if quick else "fashion-mnist",
        "seed": args.seed,
        "confidence_threshold": 0.5,
    }
    for k in ("epochs", "train_images", "grids", "images", "steps"):
        if d[k] < 1:
            raise ValueError(f"--{k.replace('_', '-')} must be >= 1, got {d[k]}")
    return d


def _data(settings: dict[str, Any]) -> Any:
    from bcosnet.data import build_datasets
    from bcosnet.data.builder import DataSplits

    if settings["dataset"] == "synthetic":
        splits = build_datasets("synthetic", augment=False, synthetic_samples=600,
                                synthetic_classes=10)
    else:
        splits = build_datasets("fashion-mnist", augment=False)
    n = len(splits.train)
    k = min(settings["train_images"], n)
    g = torch.Generator().manual_seed(settings["seed"])
    idx = sorted(torch.randperm(n, generator=g)[:k].tolist())
    train = torch.utils.data.Subset(splits.train, idx)
    train.classes = splits.classes  # type: ignore[attr-defined]
    return DataSplits(train, splits.test, list(splits.classes), splits.in_channels,
                      splits.image_size), k


def scale_and_temperature(b: float, rule: str, images: torch.Tensor, *, seed: int = 0,
                          scale: float = 100.0) -> tuple[float, float]:
    """The per-layer scale and logit temperature of ``fmnist_bcos`` at alignment
    pressure ``b`` under ``rule`` (module docstring)."""
    from bcosnet import create_model
    from bcosnet.models._common import cifar_v1_temperature

    if rule == "cifar":
        return scale * 10 ** (1.5 * (b - 2.0)), cifar_v1_temperature(b) / cifar_v1_temperature(2.0)
    if rule != "calibrated":
        raise ValueError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")

    def spread(bb: float) -> float:
        torch.manual_seed(seed)  # the trainer initialises with the same seed
        m = create_model("fmnist_bcos", 10, b=bb, scale=scale, temperature=1.0).eval()
        with torch.no_grad():
            return float(m(images).double().std())  # the bias shifts, not spreads

    return scale, spread(b) / spread(2.0)


def _train(b: float, scale: float, temperature: float, splits: Any, settings: dict[str, Any],
           run_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    from bcosnet.training import get_preset, train

    tc = get_preset("fmnist")
    tc.model.options = {"b": b, "scale": scale, "temperature": temperature}
    tc.model.num_classes = len(splits.classes)
    tc.data.dataset = settings["dataset"]
    tc.epochs = settings["epochs"]
    tc.time_limit_min = None
    tc.schedule.fit_time_limit = False  # the cosine spans the epochs: the same for every B
    tc.seed = settings["seed"]
    tc.out_dir = str(run_dir)
    tc.resume = True
    tc.threads = args.threads
    tc.progress = args.progress
    tc.device = "cpu"
    tc.log_every_steps = 100
    res = train(tc.validate(), datasets=splits)
    return {"test_acc": float(res.metrics["test_acc"]), "steps": res.step,
            "epochs": res.epoch, "train_time_s": round(res.train_time_s, 1),
            "checkpoint": str(res.checkpoint)}


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    def strip(d: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in d.items() if k != "b_values"}

    return strip(a) == strip(b)


def _one_b(b: float, splits: Any, settings: dict[str, Any], calib: torch.Tensor, out: Path,
           args: argparse.Namespace) -> dict[str, Any]:
    from bcosnet.evaluation import TooFewClassesError, evaluate_faithfulness, grid_pointing_game
    from bcosnet.training import load_checkpoint_model

    folder = out / f"B{b:g}"
    done = folder / "result.json"
    if done.is_file():
        saved = json.loads(done.read_text())
        # every setting but the list of B values must match (a B may come from a run
        # over other B values, e.g. two processes over halves of the list)
        if _same(saved.get("settings") or {}, settings):
            print(f"[{NAME}] B = {b:g}: loaded {done}", flush=True)
            return saved
        raise ValueError(f"{done} holds another configuration ({saved.get('settings')}); "
                         "use another --out or delete it")
    sw = Stopwatch()
    scale, temperature = scale_and_temperature(b, settings["rule"], calib, seed=settings["seed"])
    print(f"[{NAME}] B = {b:g}: scale {scale:.4g}, temperature {temperature:.4g}", flush=True)
    with sw("train"):
        run = _train(b, scale, temperature, splits, settings, folder / "run", args)
    model = load_checkpoint_model(run["checkpoint"])
    pg: dict[str, Any] = {"confidence_threshold": settings["confidence_threshold"]}
    with sw("localisation"):
        for thr in (settings["confidence_threshold"], None):
            try:
                r = grid_pointing_game(
                    model, splits.test, ["bcos"], n=3, num_grids=settings["grids"],
                    seed=settings["seed"], confidence_threshold=thr, allow_fewer=True,
                    results_dir=folder / ("pg" if thr is not None else "pg-nothreshold"),
                    progress=args.progress)
            except TooFewClassesError as e:
                if thr is None:
                    pg.update(error=str(e))
                    break
                print(f"[{NAME}] B = {b:g}: {e}; playing without the threshold", flush=True)
                continue
            s = r.summary()["bcos"]
            pg.update(confidence_threshold=thr, grids=r.grids_per_method["bcos"],
                      mean=s.mean, median=s.median, q1=s.q1, q3=s.q3)
            break
    with sw("deletion"):
        fa = evaluate_faithfulness(model, splits.test, ["bcos", "random"],
                                   images=settings["images"], steps=settings["steps"],
                                   modes=("deletion",),
                                   seed=settings["seed"], results_dir=str(folder / "faithfulness"),
                                   progress=args.progress)
    summ = fa.summary()
    result = {
        "b": b, "scale": scale, "temperature": temperature, **run,
        "localisation": pg,
        "deletion_auc": summ["bcos"]["deletion_auc"],
        "random_deletion_auc": summ["random"]["deletion_auc"],
        "faithfulness_images": fa.settings["images"],
        "seconds": {k: round(v, 1) for k, v in sw.seconds.items()},
        "settings": settings,
    }
    atomic_write_json(done, result, indent=2)
    print(f"[{NAME}] B = {b:g}: accuracy {100 * run['test_acc']:.2f} %, localisation "
          f"{pg.get('mean', float('nan')):.4f}, deletion {result['deletion_auc']:.4f} "
          f"(random {result['random_deletion_auc']:.4f})", flush=True)
    return result


def training_seconds(row: dict[str, Any]) -> float:
    """Training time of a B's run over all its invocations (a resumed run's own
    ``train_time_s`` counts only what it added): the sum over the run's final
    events in ``metrics.jsonl``."""
    path = Path(row["checkpoint"]).parent / "metrics.jsonl"
    if not path.is_file():
        return float(row["train_time_s"])
    events = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return sum(float(e.get("train_time_s", 0.0)) for e in events if e.get("event") == "final")


def table(rows: list[dict[str, Any]], settings: dict[str, Any]) -> str:
    lines = [
        f"fmnist_bcos on {settings['dataset']}: {settings['epochs']} epoch(s) over "
        f"{settings['train_images']} training images per B, scale/temperature rule "
        f"'{settings['rule']}'; localisation: 3×3 grid pointing game, {settings['grids']} grids "
        f"requested, bcos; deletion: {settings['images']} test images, "
        f"{settings['steps']} steps, black baseline, sigmoid score.",
        "",
        "| B | scale | T | test acc. (%) | loc. mean | loc. median | grids | deletion AUC ↓ "
        "(random order) | train (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        pg = r["localisation"]
        thr = "" if pg.get("confidence_threshold") is not None else " (no threshold)"
        lines.append(
            f"| {r['b']:g} | {r['scale']:.3g} | {r['temperature']:.3g} | "
            f"{100 * r['test_acc']:.2f} | {pg.get('mean', float('nan')):.4f} | "
            f"{pg.get('median', float('nan')):.4f} | {pg.get('grids', 0)}{thr} | "
            f"{r['deletion_auc']:.4f} ({r['random_deletion_auc']:.4f}) | "
            f"{training_seconds(r):.0f} |")
    return "\n".join(lines) + "\n"


def verdict(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Whether localisation rises with B and accuracy falls < 2 points from the
    lowest to the highest B."""
    rows = sorted(rows, key=lambda r: r["b"])
    loc = [r["localisation"].get("mean", float("nan")) for r in rows]
    acc = [100 * r["test_acc"] for r in rows]
    drop = acc[0] - acc[-1]
    return {
        "localisation_monotone": all(a < b for a, b in zip(loc, loc[1:])),
        "localisation_first_last": [loc[0], loc[-1]],
        "accuracy_drop_points": drop,
        "accuracy_drop_below_2": drop < 2.0,
        "deletion_first_last": [rows[0]["deletion_auc"], rows[-1]["deletion_auc"]],
    }


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(rows, key=lambda r: r["b"])
    bs = [r["b"] for r in rows]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.plot(bs, [100 * r["test_acc"] for r in rows], "o-", color="tab:blue")
    ax.set_xlabel("B")
    ax.set_ylabel("test accuracy (%)", color="tab:blue")
    ax2 = ax.twinx()
    ax2.plot(bs, [r["localisation"].get("mean", float("nan")) for r in rows], "s--",
             color="tab:red")
    ax2.set_ylabel("bcos localisation (mean 3×3 score)", color="tab:red")
    ax.set_title("fmnist_bcos: accuracy and localisation against B")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    out = prepare(NAME, args)
    settings = _settings(args)
    t0 = time.perf_counter()
    splits, k = _data(settings)
    settings["train_images"] = k
    calib = torch.stack([splits.train[i][0] for i in range(min(256, k))])
    rows = [_one_b(b, splits, settings, calib, out, args) for b in settings["b_values"]]
    text = table(rows, settings)
    atomic_write_text(out / "table.md", text)
    plot(rows, out / "b_ablation.png")
    v = verdict(rows) if len(rows) > 1 else {}
    atomic_write_json(out / "results.json",
                      {"settings": settings, "rows": rows, "verdict": v,
                       "paper_cifar10_top1": {str(b): a for b, a in PAPER_CIFAR10_TOP1.items()},
                       "wall_time_s": round(time.perf_counter() - t0, 1)}, indent=2)
    print(text, end="")
    if v:
        print(f"[{NAME}] localisation rises with B: {v['localisation_monotone']}; accuracy "
              f"falls {v['accuracy_drop_points']:.2f} points from B = {rows[0]['b']:g} to "
              f"{rows[-1]['b']:g}")
    print(f"[{NAME}] results in {out} ({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
