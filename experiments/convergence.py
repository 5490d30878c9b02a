"""The paper's claims on converged networks (issue #27): are the short-budget
answers (Grad-CAM on the twin ties ``bcos``; accuracy rises with B; B-cosification
is slower than training from scratch; ``bcos`` scores 0.64, not ImageNet's ≈ 0.95)
budget artefacts or properties of Fashion-MNIST?

Four parts, each a set of resumable stages (``--stage``):

1. ``train-main`` / ``eval-checkpoints``: the B-cos net ``fmnist_bcos`` and its twin
   ``standard_fmnist_bcos`` trained to the plateau rule below; checkpoints kept at
   epochs 1, 2, 4, 8, 16, 32 and the last; at each, test accuracy and the 3×3 grid
   pointing game (250 grids, the main job's protocol and method settings) of
   ``bcos``, Grad-CAM, IxG and IntGrad on the B-cos net and Grad-CAM, IxG and
   IntGrad on the twin.  Plot: ``convergence.png``.
2. ``why``: why 0.64 and not 0.95, on the last checkpoints — map resolution
   (``bcos`` average-pooled to Grad-CAM's resolution; Grad-CAM of the twin at
   finer layers), class similarity (scores per explained class, the share of a
   map's positive mass in cells of each other class, 2×2 grids of one class per
   kind — tops / trousers / footwear / bags — against random and all-tops
   grids), the inverse channel (each map's positive mass on background pixels;
   the contributions of the x channels alone; ``bcos-relative``), and grid
   statistics (an "objectness" map, positive on every object pixel, and uniform).
3. ``train-ablation`` / ``eval-ablation``: B ∈ {1, 1.5, 2, 2.5} at the main
   network's width (16; one epoch ≈ 53 s at one idle thread, so ≈ 20 min for
   the 20–25 epochs the rule takes), scale/temperature by
   ``experiments.b_ablation``'s ``calibrated`` rule; B = 2 is the ``train-main``
   B-cos net (the rule gives it T = 1: the same network).  Accuracy and ``bcos``
   localisation (250 grids) of each last checkpoint.
4. ``train-bcosify`` / ``eval-bcosify``: the converged twin B-cosified (preset
   ``fmnist-bcosify``) and fine-tuned to the same rule; test accuracy against
   training time beside the from-scratch B-cos net's curve, and the time each takes
   to reach the from-scratch net's final accuracy minus 0.5 points.

**Training schedule** (no dependence on wall time): Adam at the preset's 1e-3,
batch 128, constant learning rate; test accuracy after every epoch; a *plateau* is
3 epochs that raised the best test accuracy by less than 0.1 point
(``best(1..e) − best(1..e−3) < 0.001``, at least 3 epochs at the current rate).  At
a plateau the learning rate is divided by 10 (reduce-on-plateau), at most twice
(1e-3 → 1e-4 → 1e-5, the preset's floor); the next plateau stops training; 40
epochs is the cap.  Why not the preset's cosine: a cosine needs its length fixed in
advance, and "converged" would then mean "the chosen length"; reducing at plateaus
ends every run at a small learning rate with no gain left, whatever the network's
speed.  The stopping rule reads the test split (Fashion-MNIST has no validation
split): the reported accuracy is the one the rule stopped at.

Every stage writes its results atomically and resumes: training continues from its
last checkpoint (every 100 steps) and never repeats a recorded epoch; evaluations
are keyed per (network, checkpoint, method).  Run from the project root::

    .venv/bin/python -m experiments.convergence --threads 1 --out DIR   # every stage, in order
    .venv/bin/python -m experiments.convergence --stage train --threads 1 --out DIR
    .venv/bin/python -m experiments.convergence --stage eval,why --threads 1 --out DIR
    .venv/bin/python -m experiments.convergence --stage report --out DIR
    .venv/bin/python -m experiments.convergence --quick               # seconds, synthetic data

Outputs (``--out``): ``runs/<net>/`` (training run, ``state.json`` with one record
per epoch, ``keep/epoch-NNN.pt``), ``eval/<net>/epoch-NNN/`` (pointing games,
``summary.json``), ``why/``, and the report: ``summary.md``, ``results.json``,
``convergence.png``, ``b_ablation.png``, ``bcosify.png``, ``stage_times.json``.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from experiments._common import (
    atomic_write,
    atomic_write_json,
    atomic_write_text,
    prepare,
    read_json,
    study_parser,
)
from experiments.b_ablation import _floats as b_values

NAME = "convergence"
KEEP_EPOCHS = (1, 2, 4, 8, 16, 32)
B_VALUES = (1.0, 1.5, 2.0, 2.5)
STAGES = ("train-main", "train-bcosify", "train-ablation", "eval-checkpoints", "eval-ablation",
          "eval-bcosify", "why", "report")
ALIASES = {"train": STAGES[:3], "eval": STAGES[3:6], "all": STAGES}
METHODS = {"bcos": ("bcos", "gradcam", "ixg", "intgrad"), "twin": ("gradcam", "ixg", "intgrad")}
#: Fashion-MNIST's classes by kind (for the 2×2 grids of one class per kind), and the
#: four most alike classes (the "tops" grids).
FMNIST_KINDS = {"tops": (0, 2, 3, 4, 6), "trousers": (1,), "footwear": (5, 7, 9), "bags": (8,)}
FMNIST_SIMILAR = (0, 2, 4, 6)  # T-shirt/top, Pullover, Coat, Shirt
#: --quick's synthetic classes, grouped arbitrarily (the plumbing only).
SYNTHETIC_KINDS = {"k0": (0, 4, 8), "k1": (1, 5, 9), "k2": (2, 6), "k3": (3, 7)}
SYNTHETIC_SIMILAR = (0, 1, 2, 3)
QUICK_BATCH, QUICK_LR = 32, 5e-3


# ----------------------------------------------------------------------------- the rule
@dataclass(frozen=True)
class PlateauRule:
    """When to lower the learning rate and when to stop (module docstring).

    Attributes:
        min_delta: smallest gain of the best test accuracy (a fraction: 0.001 = 0.1
            point) over ``patience`` epochs that is not a plateau.
        patience: epochs over which the gain is measured (and the least number of
            epochs at each learning rate).
        decays: how many plateaus lower the learning rate (by ``factor``) before
            the next one stops training.
        factor: learning-rate multiplier at a plateau.
        max_epochs: the cap.
    """

    min_delta: float = 0.001
    patience: int = 3
    decays: int = 2
    factor: float = 0.1
    max_epochs: int = 40


def plateaued(accs: Sequence[float], phase_start: int, patience: int, min_delta: float) -> bool:
    """Whether the last ``patience`` of the epochs ``accs`` (test accuracies of epochs
    1..e, fractions) raised the best accuracy by less than ``min_delta``; only once
    ``patience`` epochs have run since epoch ``phase_start`` (the last learning-rate
    change; 0 at the start)."""
    e = len(accs)
    if e - phase_start < patience or e - patience < 1:
        return False
    return max(accs) - max(accs[: e - patience]) < min_delta


def decide(accs: Sequence[float], phase_start: int, decays_done: int,
           rule: PlateauRule) -> tuple[str, str]:
    """(action, reason) after epoch ``len(accs)``: ``("continue", "")``,
    ``("decay", "plateau")`` or ``("stop", "plateau" | "cap")``."""
    if plateaued(accs, phase_start, rule.patience, rule.min_delta):
        if decays_done < rule.decays and len(accs) < rule.max_epochs:
            return "decay", "plateau"
        if decays_done >= rule.decays:
            return "stop", "plateau"
    if len(accs) >= rule.max_epochs:
        return "stop", "cap"
    return "continue", ""


def set_learning_rate(checkpoint: str | os.PathLike, lr: float) -> None:
    """Make a training checkpoint (constant schedule) continue at learning rate
    ``lr`` when resumed: the optimiser's and the schedule's base rates are set
    (Adam's moments are kept).  Written atomically."""
    from bcosnet.training import atomic_save, load_checkpoint

    ck = load_checkpoint(checkpoint)
    for g in ck["optimizer"]["param_groups"]:
        g["lr"] = g["initial_lr"] = lr
    sch = ck["scheduler"]
    sch["base_lrs"] = [lr] * len(sch["base_lrs"])
    sch["_last_lr"] = [lr] * len(sch.get("_last_lr") or sch["base_lrs"])
    ck["config"]["optim"]["lr"] = lr
    atomic_save(ck, Path(checkpoint))


# ----------------------------------------------------------------------------- settings
@dataclass
class Context:
    """What every stage needs: the output folder, the settings, the data."""

    out: Path
    args: argparse.Namespace
    settings: dict[str, Any]
    rule: PlateauRule
    splits: Any = None
    _models: dict[str, Any] = field(default_factory=dict)

    @property
    def progress(self) -> bool:
        return bool(self.args.progress)


def _stages(text: str) -> tuple[str, ...]:
    out: list[str] = []
    for s in (t.strip() for t in text.split(",") if t.strip()):
        if s in ALIASES:
            out += [x for x in ALIASES[s] if x not in out]
        elif s in STAGES:
            out += [s] if s not in out else []
        else:
            raise argparse.ArgumentTypeError(
                f"unknown stage {s!r}; stages: {', '.join(STAGES)} (or {', '.join(ALIASES)})")
    return tuple(x for x in STAGES if x in out)


def parser() -> argparse.ArgumentParser:
    p = study_parser(NAME, __doc__.split("\n\n")[0])
    p.add_argument("--stage", type=_stages, default=ALIASES["all"],
                   help=f"comma-separated stages: {', '.join(STAGES)}, or 'train' (the three "
                        f"training stages), 'eval' (the three evaluations; 'why' separately), "
                        f"'all' (default, in this order); the report is written after any")
    p.add_argument("--max-epochs", type=int, default=None,
                   help="epoch cap per network (default 40; --quick: 6)")
    p.add_argument("--patience", type=int, default=None,
                   help="plateau: epochs without a 0.1-point gain (default 3; --quick: 1)")
    p.add_argument("--b-values", type=b_values, default=None,
                   help="B values of the ablation (default 1,1.5,2,2.5; --quick: 1,2)")
    p.add_argument("--grids", type=int, default=None,
                   help="3×3 grids per pointing game (default 250; --quick: 4)")
    p.add_argument("--methods", default=None,
                   help="eval-checkpoints: only these methods (comma-separated, e.g. "
                        "'bcos,gradcam,ixg' to leave IntGrad for later; default all)")
    p.add_argument("--object-threshold", type=float, default=0.05,
                   help="'why': pixels above this value are object, the rest background "
                        "(default 0.05)")
    return p


def _settings(args: argparse.Namespace) -> tuple[dict[str, Any], PlateauRule]:
    q = args.quick
    rule = PlateauRule(patience=args.patience or (2 if q else 3),
                       max_epochs=args.max_epochs or (8 if q else 40))
    if rule.patience < 1 or rule.max_epochs < 1:
        raise ValueError("--patience and --max-epochs must be >= 1")
    s = {
        "dataset": "synthetic" if q else "fashion-mnist",
        "width": 8 if q else 16,
        "seed": args.seed,
        "grids": args.grids or (4 if q else 250),
        "b_values": list(args.b_values or ((1.0, 2.0) if q else B_VALUES)),
        "confidence_threshold": 0.5,
        "object_threshold": args.object_threshold,
        "intgrad_steps": 4 if q else 50,
        "lr": QUICK_LR if q else 1e-3,
    }
    if s["grids"] < 1:
        raise ValueError(f"--grids must be >= 1, got {s['grids']}")
    return s, rule


def _data(settings: dict[str, Any]) -> Any:
    from bcosnet.data import build_datasets

    if settings["dataset"] == "synthetic":
        return build_datasets("synthetic", augment=False, synthetic_samples=400,
                              synthetic_classes=10)
    return build_datasets("fashion-mnist", augment=False)


def _kinds(settings: dict[str, Any]) -> tuple[dict[str, tuple[int, ...]], tuple[int, ...]]:
    if settings["dataset"] == "synthetic":
        return SYNTHETIC_KINDS, SYNTHETIC_SIMILAR
    return FMNIST_KINDS, FMNIST_SIMILAR


# ----------------------------------------------------------------------------- training
@dataclass
class RunSpec:
    """One network trained to the plateau rule."""

    name: str
    preset: str
    options: dict[str, Any]
    label: str


def _b_key(b: float) -> str:
    return f"b{b:g}"


def main_specs(ctx: Context) -> list[RunSpec]:
    w = {"width": ctx.settings["width"]}
    return [RunSpec("twin", "fmnist-standard", dict(w), "conventional twin"),
            RunSpec("bcos", "fmnist", dict(w), "B-cos net (B = 2)")]


def bcosify_spec(ctx: Context) -> RunSpec:
    twin = _load_state(ctx.out / "runs" / "twin")
    if not (twin and twin.get("stopped")):
        done = len(twin["epochs"]) if twin else 0
        raise RuntimeError(
            f"the B-cosification stage needs the converged twin, which has {done} epoch(s) "
            f"and has not stopped: run --stage train-main first (same --out)")
    src = str(ctx.out / "runs" / "twin" / "keep" / f"epoch-{twin['stopped']['epoch']:03d}.pt")
    return RunSpec("bcosified", "fmnist-bcosify",
                   {"width": ctx.settings["width"], "source_weights": src},
                   "B-cosified twin, fine-tuned")


def ablation_specs(ctx: Context) -> list[RunSpec]:
    """B ≠ 2 of the ablation (B = 2 is the main B-cos net)."""
    from experiments.b_ablation import scale_and_temperature

    splits = ctx.splits
    calib = torch.stack([splits.train[i][0] for i in range(min(256, len(splits.train)))])
    specs = []
    for b in ctx.settings["b_values"]:
        if b == 2.0:
            continue
        scale, t = scale_and_temperature(b, "calibrated", calib, seed=ctx.settings["seed"])
        specs.append(RunSpec(_b_key(b), "fmnist",
                             {"width": ctx.settings["width"], "b": b, "scale": scale,
                              "temperature": t}, f"B = {b:g}"))
    return specs


def _load_state(folder: Path) -> dict[str, Any] | None:
    p = folder / "state.json"
    return read_json(p) if p.is_file() else None


def _keep(src: Path, dst: Path) -> None:
    atomic_write(dst, lambda tmp: shutil.copyfile(src, tmp))


def _train_config(spec: RunSpec, folder: Path, ctx: Context, epoch: int,
                  steps_per_epoch: int) -> Any:
    from bcosnet.training import ScheduleConfig, get_preset

    tc = get_preset(spec.preset)
    tc.model.options = {**tc.model.options, **spec.options}
    tc.model.num_classes = len(ctx.splits.classes)
    tc.data.dataset = ctx.settings["dataset"]
    tc.epochs = ctx.rule.max_epochs
    tc.max_steps = epoch * steps_per_epoch  # train up to the end of `epoch`, then evaluate
    tc.time_limit_min = None
    tc.schedule = ScheduleConfig(name="constant")
    tc.eval_every_epochs = 0  # the final evaluation of each call is the epoch's
    tc.seed = ctx.settings["seed"]
    tc.out_dir = str(folder / "run")
    tc.resume = True
    tc.threads = ctx.args.threads
    tc.progress = ctx.progress
    tc.device = "cpu"
    tc.log_every_steps = 1 if ctx.args.quick else 100
    tc.checkpoint_every_steps = 0 if ctx.args.quick else 100
    tc.optim.lr = ctx.settings["lr"]  # resumed runs continue at their checkpoint's rate
    if ctx.args.quick:
        tc.optim.batch_size = QUICK_BATCH
    return tc.validate()


def _run_settings(spec: RunSpec, ctx: Context, lr: float) -> dict[str, Any]:
    return {"preset": spec.preset, "options": spec.options, "rule": asdict(ctx.rule),
            "seed": ctx.settings["seed"], "dataset": ctx.settings["dataset"], "initial_lr": lr}


def train_to_plateau(spec: RunSpec, ctx: Context) -> dict[str, Any]:
    """Train ``spec`` epoch by epoch to the plateau rule (resuming); returns its
    state: ``epochs`` (one record per epoch), ``stopped``, ``kept``."""
    from bcosnet._utils.io import folder_lock
    from bcosnet.training import get_preset, load_checkpoint, train

    folder = ctx.out / "runs" / spec.name
    with folder_lock(folder, "convergence training"):
        lr0 = ctx.settings["lr"]
        settings = _run_settings(spec, ctx, lr0)
        state = _load_state(folder)
        if state is not None and state["settings"] != settings:
            raise ValueError(f"{folder / 'state.json'} holds another configuration "
                             f"({state['settings']}, now {settings}); use another --out or "
                             "delete that folder")
        if state is None:
            state = {"settings": settings, "epochs": [], "lr": lr0, "decays": 0,
                     "phase_start": 0, "stopped": None, "kept": {}}
        if state["stopped"]:
            print(f"[{NAME}] {spec.name}: loaded ({len(state['epochs'])} epochs, stopped: "
                  f"{state['stopped']['reason']})", flush=True)
            return state
        bs = QUICK_BATCH if ctx.args.quick else get_preset(spec.preset).optim.batch_size
        spe = math.ceil(len(ctx.splits.train) / bs)
        while not state["stopped"]:
            e = len(state["epochs"]) + 1
            t_wall = time.time()
            res = train(_train_config(spec, folder, ctx, e, spe), datasets=ctx.splits)
            if res.epoch != e:
                raise RuntimeError(f"{spec.name}: expected the run to end at epoch {e}, it "
                                   f"ended at {res.epoch} (step {res.step})")
            ck = load_checkpoint(res.checkpoint)
            prev_t = state["epochs"][-1]["train_time_s"] if state["epochs"] else 0.0
            rec = {"epoch": e, "lr": state["lr"], "test_acc": float(res.metrics["test_acc"]),
                   "test_loss": float(res.metrics["test_loss"]),
                   "train_loss": res.metrics.get("train_loss"),
                   "train_acc": res.metrics.get("train_acc"),
                   "train_time_s": round(float(ck["train_time_s"]), 2),
                   "epoch_time_s": round(float(ck["train_time_s"]) - prev_t, 2),
                   "wall_s": round(time.time() - t_wall, 1), "end": time.strftime(
                       "%Y-%m-%d %H:%M:%S %Z"), "load1": round(os.getloadavg()[0], 2)}
            accs = [r["test_acc"] for r in state["epochs"]] + [rec["test_acc"]]
            action, reason = decide(accs, state["phase_start"], state["decays"], ctx.rule)
            rec["action"] = action
            if e in KEEP_EPOCHS or action == "stop":
                dst = folder / "keep" / f"epoch-{e:03d}.pt"
                _keep(res.checkpoint, dst)
                state["kept"][str(e)] = str(dst)
            if action == "decay":
                new_lr = state["lr"] * ctx.rule.factor
                set_learning_rate(res.checkpoint, new_lr)
                state.update(lr=new_lr, decays=state["decays"] + 1, phase_start=e)
            state["epochs"].append(rec)
            if action == "stop":
                state["stopped"] = {"epoch": e, "reason": reason}
            atomic_write_json(folder / "state.json", state, indent=1)
            print(f"[{NAME}] {spec.name} epoch {e}: test acc {100 * rec['test_acc']:.2f} %, "
                  f"lr {rec['lr']:.0e}, epoch {rec['epoch_time_s']:.0f} s (training "
                  f"{rec['train_time_s']:.0f} s in all), load {rec['load1']} -> {action}"
                  + (f" ({reason})" if reason else ""), flush=True)
        return state


# ----------------------------------------------------------------------------- models
def _model(ctx: Context, path: str) -> Any:
    from bcosnet.training import load_checkpoint_model

    if path not in ctx._models:
        m = load_checkpoint_model(path).eval()
        ctx._models.clear()  # one at a time
        ctx._models[path] = m.to(memory_format=torch.channels_last)
    return ctx._models[path]


def _final_checkpoint(ctx: Context, net: str, stage: str) -> tuple[str, dict[str, Any]] | None:
    """(last checkpoint, its epoch record) of a converged run; None (said so) otherwise."""
    st = _load_state(ctx.out / "runs" / net)
    if not (st and st.get("stopped")):
        print(f"[{NAME}] {stage}: {net} has not converged yet; skipped", flush=True)
        return None
    e = st["stopped"]["epoch"]
    return st["kept"][str(e)], st["epochs"][e - 1]


def _method_settings(ctx: Context, method: str) -> dict[str, Any]:
    from bcosnet.pipeline import METHOD_SETTINGS

    s = dict(METHOD_SETTINGS.get(method, {}))
    if method == "intgrad":
        s["n_steps"] = ctx.settings["intgrad_steps"]
    return s


def _grid_kwargs(ctx: Context, threshold: float | None) -> dict[str, Any]:
    return dict(n=3, num_grids=ctx.settings["grids"], seed=ctx.settings["seed"],
                confidence_threshold=threshold, allow_fewer=True, progress=ctx.progress)


def _threshold_and_folder(ctx: Context, model: Any, folder: Path) -> tuple[float | None, Path]:
    """The main job's protocol: the confidence threshold 0.5, and without it (said so)
    when too few classes pass it."""
    from bcosnet.evaluation import TooFewClassesError, prepare_grids

    thr = ctx.settings["confidence_threshold"]
    try:
        prepare_grids(model, ctx.splits.test, results_dir=folder / "pg", **_grid_kwargs(ctx, thr))
        return thr, folder / "pg"
    except TooFewClassesError as e:
        print(f"[{NAME}] {folder}: {e}; playing without the confidence threshold", flush=True)
        prepare_grids(model, ctx.splits.test, results_dir=folder / "pg-nothreshold",
                      **_grid_kwargs(ctx, None))
        return None, folder / "pg-nothreshold"


def pointing_game(ctx: Context, checkpoint: str, folder: Path, methods: Sequence[str],
                  accuracy: float) -> dict[str, Any]:
    """3×3 pointing game of ``methods`` on one checkpoint, one method at a time, each
    kept in ``folder/summary.json`` (finished methods are not played again)."""
    from bcosnet._utils.io import folder_lock
    from bcosnet.evaluation import TooFewClassesError, grid_pointing_game

    with folder_lock(folder, "convergence evaluation"):
        path = folder / "summary.json"
        summ = read_json(path) if path.is_file() else {
            "checkpoint": checkpoint, "test_acc": accuracy, "methods": {}}
        todo = [m for m in methods if m not in summ["methods"]]
        if not todo:
            return summ
        model = _model(ctx, checkpoint)
        try:
            thr, pg = _threshold_and_folder(ctx, model, folder)
        except TooFewClassesError as e:  # even without the threshold: no 3×3 grid at all
            summ["methods"].update({m: {"error": str(e)} for m in todo})
            atomic_write_json(path, summ, indent=1)
            print(f"[{NAME}] {folder}: no pointing game: {e}", flush=True)
            return summ
        for m in todo:
            t0 = time.perf_counter()
            r = grid_pointing_game(model, ctx.splits.test, [m], results_dir=pg,
                                   method_settings={m: _method_settings(ctx, m)},
                                   **_grid_kwargs(ctx, thr))
            summ["methods"][m] = {**r.summary()[m].to_dict(), "grids": r.grids_per_method[m],
                                  "confidence_threshold": thr,
                                  "seconds": round(time.perf_counter() - t0, 1),
                                  "load1": round(os.getloadavg()[0], 2)}
            summ["grids_folder"] = str(pg)
            atomic_write_json(path, summ, indent=1)
            print(f"[{NAME}] {folder.parent.name}/{folder.name} {m}: mean "
                  f"{summ['methods'][m]['mean']:.4f}, median {summ['methods'][m]['median']:.4f} "
                  f"({summ['methods'][m]['grids']} grids, {summ['methods'][m]['seconds']:.0f} s)",
                  flush=True)
        return summ


def eval_checkpoints(ctx: Context) -> None:
    wanted = None if not ctx.args.methods else {m.strip() for m in ctx.args.methods.split(",")}
    for net in ("bcos", "twin"):
        st = _load_state(ctx.out / "runs" / net)
        if not st:
            print(f"[{NAME}] eval-checkpoints: {net} not trained yet (run --stage train-main)")
            continue
        recs = {r["epoch"]: r for r in st["epochs"]}
        methods = [m for m in METHODS[net] if wanted is None or m in wanted]
        for e, path in sorted(st["kept"].items(), key=lambda kv: int(kv[0])):
            pointing_game(ctx, path, ctx.out / "eval" / net / f"epoch-{int(e):03d}", methods,
                          recs[int(e)]["test_acc"])


def eval_last(ctx: Context, nets: Sequence[str], stage: str) -> None:
    for net in nets:
        last = _final_checkpoint(ctx, net, stage)
        if last is not None:
            ck, rec = last
            pointing_game(ctx, ck, ctx.out / "eval" / net / f"epoch-{rec['epoch']:03d}",
                          ["bcos"], rec["test_acc"])


# ----------------------------------------------------------------------------- why 0.64
def pool_to(maps: torch.Tensor, factor: int) -> torch.Tensor:
    """``maps`` (…×H×W) average-pooled over ``factor``×``factor`` blocks and repeated back
    to H×W: the same map at the coarser resolution (every block's total is kept)."""
    lead, (h, w) = maps.shape[:-2], maps.shape[-2:]
    if h % factor or w % factor:
        raise ValueError(f"a {h}×{w} map does not split into {factor}×{factor} blocks")
    x = F.avg_pool2d(maps.reshape(-1, 1, h, w), factor)
    x = x.repeat_interleave(factor, -2).repeat_interleave(factor, -1)
    return x.reshape(*lead, h, w)


def objectness_fn(threshold: float, weighted: bool = False) -> Callable[..., torch.Tensor]:
    """A map that ignores the class: 1 on every object pixel (grid value summed over
    channels > ``threshold``) or, ``weighted``, the pixel value itself."""

    def objectness(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        v = images.sum(1)
        m = v if weighted else (v > threshold).to(images.dtype)
        t = targets.shape[1] if targets.dim() == 2 else None
        return m[:, None].expand(-1, t, -1, -1) if t else m

    objectness.supports_multi_target = True  # type: ignore[attr-defined]
    objectness.__name__ = "intensity" if weighted else "objectness"
    return objectness


def _bcos_x_fn(model: Any) -> Callable[..., torch.Tensor]:
    """The contributions of the x channels alone (``W_x·x``; the ``1 − x`` channels'
    part left out)."""
    from bcosnet import explain

    def bcos_x(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        c = images.shape[1]
        ex = explain(model, images, target=targets)
        return (ex.weights[:, :, :c] * ex.inputs[:, None, :c]).sum(2).detach()

    bcos_x.supports_multi_target = True  # type: ignore[attr-defined]
    return bcos_x


def _pooled_fn(fn: Callable[..., torch.Tensor], factor: int) -> Callable[..., torch.Tensor]:
    def pooled(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        m = fn(images, targets)
        return pool_to(m.sum(-3) if m.dim() == targets.dim() + 3 else m, factor)

    pooled.supports_multi_target = True  # type: ignore[attr-defined]
    return pooled


def _feature_factor(model: Any, image: torch.Tensor) -> int:
    with torch.no_grad():
        h = model.forward_features(image[None]).shape[-1]
    return image.shape[-1] // h


def variants(ctx: Context, net: str, model: Any, image: torch.Tensor
             ) -> dict[str, Callable[..., torch.Tensor]]:
    """The maps compared in the 'why' tables, per network."""
    from bcosnet.attribution.cam import spatial_layers
    from bcosnet.evaluation import make_attribution_fn
    from bcosnet.evaluation.faithfulness import bcos_relative_fn

    thr = ctx.settings["object_threshold"]
    out: dict[str, Callable[..., torch.Tensor]] = {}
    factor = _feature_factor(model, image)
    if net != "twin":
        bcos = make_attribution_fn(model, "bcos")
        out.update({"bcos": bcos, f"bcos-pooled{factor}": _pooled_fn(bcos, factor),
                    "bcos-x": _bcos_x_fn(model), "bcos-relative": bcos_relative_fn(model)})
    out["gradcam"] = make_attribution_fn(model, "gradcam")
    if net == "twin":  # Grad-CAM at the last layer of each finer resolution
        h_last = image.shape[-1] // factor
        by_res: dict[int, str] = {}
        for name, shape in spatial_layers(model, image[None]):
            if shape[-1] > h_last and name.count("."):  # modules, not containers
                by_res[shape[-1]] = name
        for res, name in sorted(by_res.items()):
            out[f"gradcam@{name}({res}px)"] = make_attribution_fn(model, "gradcam", layer=name)
    out["ixg"] = make_attribution_fn(model, "ixg")
    out["objectness"] = objectness_fn(thr)
    out["intensity"] = objectness_fn(thr, weighted=True)
    return out


def cell_fractions(fn: Callable[..., torch.Tensor], grids: Any, *, object_threshold: float,
                   batch_size: int = 8, name: str = "method") -> dict[str, Any]:
    """For every grid and explained cell i: the share of the map's positive mass in
    each cell j (G×n²×n², rows sum to 1 or are 0; the diagonal is the pointing-game
    score) and on background pixels (G×n²)."""
    from bcosnet.evaluation.pointing_game import cell_scores, grid_maps, paper_smoothing

    n, sq = grids.n, grids.n * grids.n
    k = paper_smoothing(grids.cell_size)
    fr, bg = [], []
    for s in range(0, len(grids), batch_size):
        idx = torch.arange(s, min(s + batch_size, len(grids)))
        images = grids.get_images(idx)
        maps = grid_maps(fn, images, grids.classes[idx], name=name).double()  # B×T×H×W
        flat = maps.reshape(-1, *maps.shape[-2:])
        fr.append(torch.stack([cell_scores(flat, j, n, smoothing=k) for j in range(sq)], 1)
                  .reshape(len(idx), sq, sq))
        a = flat if k is None else F.avg_pool2d(flat[:, None], k, 1, k // 2)[:, 0]
        pos = a.clamp(min=0)
        back = (images.sum(1) <= object_threshold).double()  # B×H×W
        back = back[:, None].expand(-1, sq, -1, -1).reshape(pos.shape)
        tot = pos.sum((-2, -1))
        bg.append(torch.where(tot > 0, (pos * back).sum((-2, -1)) / tot.clamp(min=1e-300), 0.0)
                  .reshape(len(idx), sq))
    return {"fractions": torch.cat(fr).tolist(), "background": torch.cat(bg).tolist()}


def design_grids(ctx: Context, model: Any, design: str, threshold: float | None,
                 folder: Path) -> Any:
    """2×2 grids: ``random`` (the library's rule), ``kinds`` (one class of each kind) or
    ``similar`` (the four most alike classes), from the most confident unused image
    of each drawn class; cached in ``folder/grids-<design>.json``."""
    from bcosnet.evaluation import GridDataset, make_grid_dataset

    path = folder / f"grids-{design}.json"
    test = ctx.splits.test
    if path.is_file():
        return GridDataset.from_dict(read_json(path), test)
    g = ctx.settings["grids"]
    seed = ctx.settings["seed"]
    if design == "random":
        grids = make_grid_dataset(model, test, 2, g, seed=seed, confidence_threshold=threshold,
                                  allow_fewer=True, progress=False)
    else:
        # n = 1 grids of every usable image: each class's images in the library's ranking
        order = make_grid_dataset(model, test, 1, None, seed=seed,
                                  confidence_threshold=threshold, progress=False)
        ranking: dict[int, list[tuple[int, float]]] = {}
        for i, c, conf in zip(order.source_indices[:, 0].tolist(), order.classes[:, 0].tolist(),
                              order.confidences[:, 0].tolist(), strict=True):
            ranking.setdefault(c, []).append((i, conf))
        kinds, similar = _kinds(ctx.settings)
        groups = list(kinds.values()) if design == "kinds" else [(c,) for c in similar]
        gen = torch.Generator().manual_seed(seed)
        used = dict.fromkeys(ranking, 0)
        rows: list[list[tuple[int, int, float]]] = []
        while len(rows) < g:
            cells = []
            for grp in groups:
                avail = [c for c in grp if used.get(c, 0) < len(ranking.get(c, []))]
                if not avail:
                    break
                c = avail[int(torch.randint(len(avail), (1,), generator=gen))]
                i, conf = ranking[c][used[c]]
                used[c] += 1
                cells.append((i, c, conf))
            if len(cells) < 4:
                break
            perm = torch.randperm(4, generator=gen).tolist()
            rows.append([cells[p] for p in perm])
        if not rows:
            raise ValueError(f"no 2×2 '{design}' grid can be made: too few usable images")
        grids = GridDataset(
            source=test, n=2,
            source_indices=torch.tensor([[r[0] for r in row] for row in rows]),
            classes=torch.tensor([[r[1] for r in row] for row in rows]),
            confidences=torch.tensor([[r[2] for r in row] for row in rows], dtype=torch.float64),
            cell_size=tuple(order.cell_size), requested=g, seed=seed,
            confidence_threshold=threshold)
    atomic_write_json(path, grids.to_dict())
    return grids


WHY_DESIGN_VARIANTS = {"bcos": ("bcos", "gradcam", "objectness"),
                       "twin": ("gradcam", "objectness")}


def why(ctx: Context) -> None:
    """Part 2 on each network's last checkpoint: per (network, grid set, map) the cell
    fractions and background shares, one file each."""
    from bcosnet._utils.io import folder_lock
    from bcosnet.evaluation import GridDataset

    for net in ("bcos", "twin"):
        last = _final_checkpoint(ctx, net, "why")
        if last is None:
            continue
        ck, e = last[0], last[1]["epoch"]
        folder = ctx.out / "why" / net
        with folder_lock(folder, "convergence 'why' stage"):
            model = _model(ctx, ck)
            thr, pg = _threshold_and_folder(ctx, model, ctx.out / "eval" / net / f"epoch-{e:03d}")
            grids3 = GridDataset.from_dict(read_json(pg / "grids.json"), ctx.splits.test)
            sets = {"3x3": grids3}
            for design in ("random", "kinds", "similar"):
                sets[f"2x2-{design}"] = design_grids(ctx, model, design, thr, folder)
            maps = variants(ctx, net, model, grids3.get_images([0])[0])
            for gname, grids in sets.items():
                names = list(maps) if gname == "3x3" else [
                    v for v in maps if v in WHY_DESIGN_VARIANTS[net]]
                for v in names:
                    path = folder / gname / f"{_safe(v)}.json"
                    if path.is_file():
                        continue
                    t0 = time.perf_counter()
                    res = cell_fractions(maps[v], grids, name=v,
                                         object_threshold=ctx.settings["object_threshold"])
                    atomic_write_json(path, {
                        "network": net, "checkpoint": ck, "grids": gname, "map": v,
                        "classes": grids.classes.tolist(), "confidence_threshold": thr,
                        **res, "seconds": round(time.perf_counter() - t0, 1)}, indent=0)
                    print(f"[{NAME}] why {net} {gname} {v}: {time.perf_counter() - t0:.0f} s",
                          flush=True)


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


# ----------------------------------------------------------------------------- analysis
def time_to_reach(epochs: Sequence[dict[str, Any]], acc: float) -> dict[str, Any] | None:
    """The first epoch record whose test accuracy is ≥ ``acc``: its epoch and
    cumulative training seconds (None: never)."""
    for r in epochs:
        if r["test_acc"] >= acc:
            return {"epoch": r["epoch"], "train_time_s": r["train_time_s"]}
    return None


def bcosify_comparison(scratch: dict[str, Any], bcosified: dict[str, Any],
                       twin: dict[str, Any] | None, margin: float = 0.005) -> dict[str, Any]:
    """Time (and epochs) each network takes to reach the from-scratch net's final
    accuracy minus ``margin`` (a fraction); the speed-up of fine-tuning alone and
    with the twin's training counted."""
    final = scratch["epochs"][-1]["test_acc"]
    target = final - margin
    s = time_to_reach(scratch["epochs"], target)
    b = time_to_reach(bcosified["epochs"], target)
    twin_t = twin["epochs"][-1]["train_time_s"] if twin else None
    out: dict[str, Any] = {"scratch_final_acc": final, "target_acc": target, "scratch": s,
                           "bcosified": b, "twin_train_time_s": twin_t}
    if s and b and b["train_time_s"] > 0:
        out["speedup_finetune_only"] = s["train_time_s"] / b["train_time_s"]
        out["speedup_epochs"] = s["epoch"] / b["epoch"]
        if twin_t is not None:
            out["speedup_with_twin"] = s["train_time_s"] / (b["train_time_s"] + twin_t)
    return out


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def _median(xs: Sequence[float]) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = len(s) // 2
    return s[k] if len(s) % 2 else 0.5 * (s[k - 1] + s[k])


def why_tables(ctx: Context) -> dict[str, Any]:
    """Summaries of the 'why' files: per (network, grid set, map) the mean/median
    score and background share; per explained class; the class-to-class leak."""
    kinds, _ = _kinds(ctx.settings)
    kind_of = {c: k for k, cs in kinds.items() for c in cs}
    out: dict[str, Any] = {}
    for net in ("bcos", "twin"):
        base = ctx.out / "why" / net
        if not base.is_dir():
            continue
        for gdir in sorted(p for p in base.iterdir() if p.is_dir()):
            for f in sorted(gdir.glob("*.json")):
                d = read_json(f)
                fr, cls, bg = d["fractions"], d["classes"], d["background"]
                sq = len(cls[0]) if cls else 0
                scores = [fr[g][i][i] for g in range(len(fr)) for i in range(sq)]
                row: dict[str, Any] = {"mean": _mean(scores), "median": _median(scores),
                                       "background_mean": _mean([x for r in bg for x in r]),
                                       "grids": len(fr), "baseline": 1 / sq if sq else None}
                if gdir.name == "3x3":
                    per_class: dict[int, list[float]] = {}
                    leak: dict[int, dict[int, list[float]]] = {}
                    same_kind, other_kind = [], []
                    for g in range(len(fr)):
                        for i in range(sq):
                            a = cls[g][i]
                            per_class.setdefault(a, []).append(fr[g][i][i])
                            for j in range(sq):
                                if j == i:
                                    continue
                                b = cls[g][j]
                                leak.setdefault(a, {}).setdefault(b, []).append(fr[g][i][j])
                                (same_kind if kind_of.get(a) == kind_of.get(b)
                                 else other_kind).append(fr[g][i][j])
                    row["per_class"] = {str(c): _mean(v) for c, v in sorted(per_class.items())}
                    row["leak"] = {str(a): {str(b): _mean(v) for b, v in sorted(bs.items())}
                                   for a, bs in sorted(leak.items())}
                    row["share_per_other_cell_same_kind"] = _mean(same_kind)
                    row["share_per_other_cell_other_kind"] = _mean(other_kind)
                out.setdefault(net, {}).setdefault(gdir.name, {})[d["map"]] = row
    return out


# ----------------------------------------------------------------------------- report
def _fmt(x: Any, pct: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{100 * x:.2f}" if pct else f"{x:.4f}"


def collect(ctx: Context) -> dict[str, Any]:
    """Everything measured so far (missing parts are absent)."""
    runs = {}
    base = ctx.out / "runs"
    if base.is_dir():
        for d in sorted(p for p in base.iterdir() if (p / "state.json").is_file()):
            runs[d.name] = read_json(d / "state.json")
    evals: dict[str, dict[str, Any]] = {}
    ebase = ctx.out / "eval"
    if ebase.is_dir():
        for net in sorted(p for p in ebase.iterdir() if p.is_dir()):
            for ep in sorted(net.glob("epoch-*/summary.json")):
                evals.setdefault(net.name, {})[str(int(ep.parent.name[6:]))] = read_json(ep)
    res: dict[str, Any] = {"settings": ctx.settings, "rule": asdict(ctx.rule),
                           "classes": list(ctx.splits.classes), "runs": runs, "eval": evals,
                           "why": why_tables(ctx)}
    if "bcos" in runs and "bcosified" in runs and runs["bcos"].get("stopped") and runs[
            "bcosified"].get("stopped"):
        res["bcosify"] = bcosify_comparison(runs["bcos"], runs["bcosified"], runs.get("twin"))
    return res


def _run_row(name: str, st: dict[str, Any]) -> str:
    eps = st["epochs"]
    last = eps[-1] if eps else {}
    best = max((r["test_acc"] for r in eps), default=None)
    stop = st.get("stopped") or {}
    return (f"| {name} | {len(eps)} | {stop.get('reason', 'running')} | "
            f"{_fmt(last.get('test_acc'), True)} | {_fmt(best, True)} | "
            f"{', '.join(str(r['epoch']) for r in eps if r['action'] == 'decay') or '–'} | "
            f"{last.get('train_time_s', 0):.0f} | "
            f"{_mean([r['epoch_time_s'] for r in eps]):.0f} | "
            f"{min((r['load1'] for r in eps), default=0):.1f}–"
            f"{max((r['load1'] for r in eps), default=0):.1f} |")


def summary_markdown(res: dict[str, Any]) -> str:
    s, rule = res["settings"], res["rule"]
    runs, evals = res["runs"], res["eval"]
    lines = [f"# Converged networks ({s['dataset']}, width {s['width']}, seed {s['seed']})", "",
             f"Rule: constant Adam learning rate from {s['lr']:g}, ×{rule['factor']:g} when "
             f"{rule['patience']} epochs raise the best test accuracy by < "
             f"{100 * rule['min_delta']:g} point, at most {rule['decays']} times; the next "
             f"such plateau stops; cap {rule['max_epochs']} epochs.", "",
             "## Training", "",
             "| run | epochs | stop | final acc. (%) | best acc. (%) | lr ÷10 after epoch | "
             "training (s) | s/epoch | load (1-min) |", "|---|---|---|---|---|---|---|---|---|"]
    lines += [_run_row(k, v) for k, v in runs.items()]
    lines += ["", "## 1. Localisation and accuracy against epochs (3×3, mean / median)", "",
              "| network | epoch | acc. (%) | " + " | ".join(
                  ["bcos", "gradcam", "ixg", "intgrad"]) + " |", "|---|---|---|---|---|---|---|"]
    for net in ("bcos", "twin"):
        for e, d in sorted(evals.get(net, {}).items(), key=lambda kv: int(kv[0])):
            ms = d["methods"]
            cells = [f"{_fmt(ms[m].get('mean'))} / {_fmt(ms[m].get('median'))}" if m in ms
                     else "–" for m in ("bcos", "gradcam", "ixg", "intgrad")]
            lines.append(f"| {net} | {e} | {_fmt(d['test_acc'], True)} | " + " | ".join(cells)
                         + " |")
    w = res["why"]
    if w:
        lines += ["", "## 2. Why 0.64 — every map on the last checkpoints", "",
                  "| network | grids | map | mean | median | baseline | positive mass on "
                  "background |", "|---|---|---|---|---|---|---|"]
        for net, sets in w.items():
            for gname, maps in sets.items():
                for v, r in maps.items():
                    lines.append(f"| {net} | {gname} | {v} | {_fmt(r['mean'])} | "
                                 f"{_fmt(r['median'])} | {_fmt(r['baseline'])} | "
                                 f"{_fmt(r['background_mean'])} |")
        lines += ["", "Per explained class (3×3, mean score), and the mean share of the map "
                  "in one other cell of the same kind / of another kind:", "",
                  "| network | map | " + " | ".join(str(c) for c in range(10))
                  + " | same kind | other kind |", "|---|---|" + "---|" * 12]
        for net, sets in w.items():
            for v, r in sets.get("3x3", {}).items():
                pc = r.get("per_class", {})
                lines.append(f"| {net} | {v} | " + " | ".join(
                    _fmt(pc.get(str(c))) for c in range(10)) + f" | "
                    f"{_fmt(r.get('share_per_other_cell_same_kind'))} | "
                    f"{_fmt(r.get('share_per_other_cell_other_kind'))} |")
        lines += ["", "Classes: " + ", ".join(f"{i} {c}" for i, c in enumerate(res["classes"]))
                  + "."]
        for net, v in (("bcos", "bcos"), ("twin", "gradcam")):
            leak = w.get(net, {}).get("3x3", {}).get(v, {}).get("leak")
            if not leak:
                continue
            lines += ["", f"{net} `{v}` (3×3): explaining class a (row), the mean share of the "
                      "map's positive mass in one cell of class b (column):", "",
                      "| a \\ b | " + " | ".join(str(c) for c in range(10)) + " |",
                      "|---|" + "---|" * 10]
            lines += [f"| {a} | " + " | ".join(_fmt(leak.get(str(a), {}).get(str(b)))
                                                for b in range(10)) + " |" for a in range(10)]
    abl = [(b, runs.get("bcos" if b == 2.0 else _b_key(b))) for b in s["b_values"]]
    if any(st for _, st in abl):
        lines += ["", "## 3. B ablation at convergence", "",
                  "| B | T | epochs | stop | final acc. (%) | bcos mean | bcos median | grids | "
                  "training (s) |", "|---|---|---|---|---|---|---|---|---|"]
        for b, st in abl:
            if not st:
                lines.append(f"| {b:g} | – | – | not trained | – | – | – | – | – |")
                continue
            net = "bcos" if b == 2.0 else _b_key(b)
            stop = st.get("stopped") or {}
            pg = evals.get(net, {}).get(str(stop.get("epoch")), {}).get("methods", {}).get(
                "bcos", {})
            t = st["settings"]["options"].get("temperature", 1.0)
            lines.append(f"| {b:g} | {t:.3g} | {len(st['epochs'])} | "
                         f"{stop.get('reason', 'running')} | "
                         f"{_fmt(st['epochs'][-1]['test_acc'] if st['epochs'] else None, True)} | "
                         f"{_fmt(pg.get('mean'))} | {_fmt(pg.get('median'))} | "
                         f"{pg.get('grids', '–')} | "
                         f"{st['epochs'][-1]['train_time_s'] if st['epochs'] else 0:.0f} |")
    bc = res.get("bcosify")
    if bc:
        def reach(r: dict[str, Any] | None) -> str:
            return "never" if r is None else f"epoch {r['epoch']}, {r['train_time_s']:.0f} s"

        lines += ["", "## 4. B-cosification at convergence", "",
                  f"Target: the from-scratch net's final accuracy "
                  f"{_fmt(bc['scratch_final_acc'], True)} % − 0.5 = "
                  f"{_fmt(bc['target_acc'], True)} %.", "",
                  f"- from scratch reaches it at {reach(bc['scratch'])};",
                  f"- B-cosified twin (fine-tuning) at {reach(bc['bcosified'])}; the twin "
                  f"itself trained {bc['twin_train_time_s'] or 0:.0f} s;"]
        if "speedup_finetune_only" in bc:
            lines.append(f"- speed-up: {bc['speedup_finetune_only']:.2f}× in training time "
                         f"({bc['speedup_epochs']:.2f}× in epochs) counting fine-tuning only, "
                         f"{bc.get('speedup_with_twin', float('nan')):.2f}× with the twin's "
                         "training counted.")
    return "\n".join(lines) + "\n"


def plots(res: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bcosnet._utils.io import save_figure

    made = []
    runs, evals = res["runs"], res["eval"]
    if any(n in runs for n in ("bcos", "twin")):
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
        for net, col in (("bcos", "tab:red"), ("twin", "tab:blue")):
            if net not in runs:
                continue
            eps = runs[net]["epochs"]
            a1.plot([r["epoch"] for r in eps], [100 * r["test_acc"] for r in eps], "-o", ms=3,
                    color=col, label=net)
            for m, ls in (("bcos", "-"), ("gradcam", "--"), ("ixg", ":"), ("intgrad", "-.")):
                pts = sorted((int(e), d["methods"][m]["mean"]) for e, d in
                             evals.get(net, {}).items() if "mean" in d["methods"].get(m, {}))
                if pts:
                    a2.plot(*zip(*pts, strict=True), ls, marker="o", ms=3, color=col,
                            label=f"{net} {m}")
        a1.set(xlabel="epoch", ylabel="test accuracy (%)", title="accuracy")
        a2.set(xlabel="epoch", ylabel="mean 3×3 score", title="localisation", xscale="log")
        a2.axhline(1 / 9, color="grey", lw=0.8)
        a1.legend(fontsize=8)
        if a2.get_legend_handles_labels()[0]:
            a2.legend(fontsize=7, ncol=2)
        made.append(save_figure(fig, out / "convergence.png", dpi=120))
        plt.close(fig)
    if res.get("bcosify"):
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        for net, lab in (("bcos", "from scratch"), ("bcosified", "B-cosified twin, fine-tuned")):
            eps = runs[net]["epochs"]
            ax.plot([r["train_time_s"] for r in eps], [100 * r["test_acc"] for r in eps], "-o",
                    ms=3, label=lab)
        ax.axhline(100 * res["bcosify"]["target_acc"], color="grey", lw=0.8)
        ax.set(xlabel="training time (s)", ylabel="test accuracy (%)")
        ax.legend(fontsize=8)
        made.append(save_figure(fig, out / "bcosify.png", dpi=120))
        plt.close(fig)
    pts = []
    for b in res["settings"]["b_values"]:
        st = runs.get("bcos" if b == 2.0 else _b_key(b))
        if st and st.get("stopped"):
            net = "bcos" if b == 2.0 else _b_key(b)
            pg = evals.get(net, {}).get(str(st["stopped"]["epoch"]), {}).get("methods", {})
            pts.append((b, 100 * st["epochs"][-1]["test_acc"],
                        pg.get("bcos", {}).get("mean", float("nan"))))
    if pts:
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color="tab:blue")
        ax.set(xlabel="B", ylabel="test accuracy (%)")
        ax2 = ax.twinx()
        ax2.plot([p[0] for p in pts], [p[2] for p in pts], "s--", color="tab:red")
        ax2.set_ylabel("bcos localisation (mean)")
        made.append(save_figure(fig, out / "b_ablation.png", dpi=120))
        plt.close(fig)
    return made


def report(ctx: Context) -> dict[str, Any]:
    res = collect(ctx)
    atomic_write_json(ctx.out / "results.json", res, indent=1)
    text = summary_markdown(res)
    atomic_write_text(ctx.out / "summary.md", text)
    plots(res, ctx.out)
    return res


# ----------------------------------------------------------------------------- main
def _record_stage(out: Path, stage: str, t0: float, w0: float, load0: float) -> None:
    path = out / "stage_times.json"
    times = read_json(path) if path.is_file() else {}
    times.setdefault(stage, []).append({
        "start": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(w0)),
        "seconds": round(time.perf_counter() - t0, 1),
        "load1_start": round(load0, 2), "load1_end": round(os.getloadavg()[0], 2)})
    atomic_write_json(path, times, indent=1)


def run_stage(ctx: Context, stage: str) -> None:
    if stage == "train-main":
        for spec in main_specs(ctx):
            train_to_plateau(spec, ctx)
    elif stage == "train-bcosify":
        train_to_plateau(bcosify_spec(ctx), ctx)
    elif stage == "train-ablation":
        for spec in ablation_specs(ctx):
            train_to_plateau(spec, ctx)
    elif stage == "eval-checkpoints":
        eval_checkpoints(ctx)
    elif stage == "eval-ablation":
        eval_last(ctx, [_b_key(b) for b in ctx.settings["b_values"] if b != 2.0], stage)
    elif stage == "eval-bcosify":
        eval_last(ctx, ["bcosified"], stage)
    elif stage == "why":
        why(ctx)


def main(argv: list[str] | None = None) -> int:
    import bcosnet

    args = parser().parse_args(argv)
    out = prepare(NAME, args)
    settings, rule = _settings(args)
    bcosnet.tune_malloc()
    ctx = Context(out, args, settings, rule)
    ctx.splits = _data(settings)
    t_all = time.perf_counter()
    for stage in args.stage:
        if stage == "report":
            continue
        print(f"[{NAME}] stage {stage} ({time.strftime('%H:%M:%S')}, load "
              f"{os.getloadavg()[0]:.2f})", flush=True)
        t0, w0, l0 = time.perf_counter(), time.time(), os.getloadavg()[0]
        run_stage(ctx, stage)
        _record_stage(out, stage, t0, w0, l0)
    report(ctx)
    print(f"[{NAME}] results in {out} ({time.perf_counter() - t_all:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
