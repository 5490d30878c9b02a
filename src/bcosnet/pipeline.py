"""The main job: train → explain → evaluate on Fashion-MNIST, with a report.

``bcosnet main`` (and ``bash scripts/main.sh``) runs :func:`run_main`:

1. train the B-cos network for 28×28 grey images (preset ``fmnist``) and its
   conventional twin (``fmnist-standard``) for the same fixed number of epochs
   (``MainConfig.epochs``, 6) from the same seed, the cosine learning-rate
   schedule defined by steps (epochs × steps per epoch) — never by the clock, so
   that two machines compute the same networks up to float rounding (side by side
   in two worker processes by default, ``MainConfig.workers``);
2. test accuracy of both;
3. explanations: Fig. A1 (image, prediction, explanation, contributions and
   the check that they sum to the logit) for a few test images, and Fig. A3
   (the most confidently classified images per class with their explanations);
4. the grid pointing game on the paper's protocol (docs/protocol.md): 3×3 grids of
   confidently (sigmoid(logit) > 0.5) and correctly classified test images,
   every method — the B-cos network's own explanation and the eight post-hoc
   methods on the B-cos network, the eight post-hoc methods on the twin — with
   per-method grid counts (default 250 grids, 100 for occlusion, RISE and LIME:
   cut from the paper's 500 for time; the report says so), plus a Fig. A2-style
   panel of every method's map on one grid; each (network, method) pair is a job
   for the workers, the longest first;
5. a report (``report.html`` + ``report.md``) in the output folder, led by a
   sentence that says whether the paper's comparison holds here (the B-cos
   explanation against the best post-hoc method on the B-cos network and the best
   method on the twin, medians and means; :func:`bcosnet.evaluation.compare_localisation`).

``MainConfig.quick()`` (``bcosnet main --quick``) is a minutes-long run of the
same stages: one epoch per network and a few grids.

Timing never changes a number: progress output, the wall times and the notes the
report prints depend on the machine, the networks and scores do not (the data
order, initialisation, schedule and the pointing game's grids and random methods
all come from ``seed``).  With the same worker and thread counts (default: 2
workers of 1 thread) and the same torch build, a re-run gives identical numbers;
other thread counts or CPU instruction sets change the float rounding of the
training, which can move the last digits of an accuracy or a score.

Every stage writes its results atomically and is skipped when re-run (training
resumes from its last checkpoint if it was interrupted).  Reuse is keyed by the
settings that produced a result:

* training: the training config recorded in each network's checkpoint, less
  what only says how to run (``threads``, ``progress``, device, loader workers,
  logging and checkpoint intervals, output folder).  A re-run whose
  ``epochs``, ``seed``, ``dataset``, ``max_steps`` or ``train_overrides``
  differ is refused (:class:`MainSettingsError`, naming each difference): use
  another ``out_dir`` or delete the folder.  A network trained for a wall-clock
  budget by an earlier version of the main job is refused with that reason;
* accuracy, figures and the panel: a fingerprint of the networks' checkpoint
  files (and the data set / grid file); recomputed when it differs;
* the pointing game keys each method's results by model, grids and settings
  itself; other ``grid_n`` / ``confidence_threshold`` / method settings are
  refused with the folder to delete.  More or fewer grids reuse what is there.

The output folder is locked while the job runs (a second job on it is refused).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ._utils.io import atomic_write_json, folder_lock
from ._utils.malloc import tune_malloc

__all__ = [
    "ALL_METHODS",
    "BCOS_METHODS",
    "MainSettingsError",
    "PAPER_GRIDS",
    "PERTURBATION_METHODS",
    "STANDARD_METHODS",
    "MainConfig",
    "run_main",
]

#: Every method of the paper's comparison (Figs. B1/B2): 9 on the B-cos network,
#: the 8 post-hoc ones on the conventional twin.
ALL_METHODS = ("bcos", "grad", "ixg", "intgrad", "deeplift", "gradcam", "occlusion", "rise", "lime")
BCOS_METHODS = ALL_METHODS
STANDARD_METHODS = tuple(m for m in ALL_METHODS if m != "bcos")
#: One set of 441–500 perturbed forward passes per grid (shared by its 9 cells).
PERTURBATION_METHODS = ("occlusion", "rise", "lime")
#: Grids per method in the paper.
PAPER_GRIDS = 500
#: The main job's grid counts (issue #10's minimum for the paper's protocol): 250 grids
#: for bcos and the gradient methods (IntGrad included) and Grad-CAM, 100 for the
#: perturbation methods (441–500 forward passes per grid, shared by its 9 cells) —
#: the paper's 500 cut for time; the report says so.  docs/evaluation.md gives the
#: measured cost per grid and the main job's measured wall time.
DEFAULT_GRIDS = 250
#: Training epochs of each network in the main job.  Both networks train alike (as in
#: the paper: same data, optimiser, schedule and epochs).  6 epochs of the B-cos
#: network take ≈ 10–12 min on one thread (≈ 490–580 img/s in the timed main job of
#: commit 56e6fa4), the twin's ≈ 7–8 min beside it; with the 1 155 s pointing game
#: that job took, the default main job is estimated at ≈ 33–35 min on 2 cores — within
#: 45 min with a margin for slower machines (8 epochs would leave ≈ 6 min).
DEFAULT_EPOCHS = 6
DEFAULT_GRIDS_PER_METHOD: dict[str, int] = dict.fromkeys(PERTURBATION_METHODS, 100)
#: Per-method settings for 28 px images: quickshift's default max_dist (200) cuts a
#: 56 px grid of Fashion-MNIST images into 5–9 super-pixels, too few for LIME's
#: top 5; max_dist 4 gives 29–42.  Occlusion: 4 px patches, stride 4.  IntGrad:
#: 25 path images per forward pass instead of 64 (the same 50 steps and result up
#: to float rounding; on 2 CPU cores smaller 84 px batches are faster — with
#: channels-last 1.7× (B-cos net) and 1.3× (twin) per grid, benchmarks/README.md 4b).
METHOD_SETTINGS: dict[str, dict[str, Any]] = {
    "intgrad": {"batch_size": 25},
    "lime": {"max_dist": 4},
    "occlusion": {"patch_size": 4, "stride": 4},
}


@dataclass
class MainConfig:
    """Settings of the main job.

    Attributes:
        out_dir: output folder (runs, results, figures, report).
        epochs: training epochs of each network (both the same, :data:`DEFAULT_EPOCHS`);
            the cosine learning-rate schedule runs over epochs × steps per epoch, so
            the networks do not depend on how fast the machine is.
        dataset: ``"fashion-mnist"`` (the default, real data) or ``"synthetic"``.
        max_steps: optional cap on optimiser steps per network (tests); the schedule
            still runs over ``epochs`` (a capped run stops part-way down it).
        grids: pointing-game grids per method (the first ``grids`` of one grid set);
            ``grids_per_method`` overrides it per method (default: 100 for
            occlusion, RISE and LIME); ``grid_n``: cells per side (3).
        confidence_threshold: grid images need sigmoid(logit) > this (None: off).
        methods_bcos / methods_standard: attribution methods per network.
        examples: images shown in Fig. A1.
        seed: seeds training and the grid sampling.
        threads: torch threads (None: leave as is).
        workers: processes that run the two trainings side by side and share out the
            pointing game's (network, method) jobs, each with ``threads // workers``
            torch threads (at least 1); 1 runs everything in this process with
            ``threads``.  On 2 cores two 1-thread processes get through more work
            than one 2-thread process (the 2-thread speed-up of these small
            convolutions is ≈ 1.6×, not 2×; ``benchmarks/bench_workers.py``).  The
            results are the same up to float rounding.
        channels_last: evaluate (accuracy, explanations, pointing game) both networks
            in channels-last memory format — the same results up to float rounding,
            1.1–1.7× faster per method on CPU at these sizes, 1.39× over the whole
            pointing game with the IntGrad setting (benchmarks/README.md 4b);
            training stays in the default format.
        progress: tqdm progress bars.
    """

    out_dir: str = "outputs/main"
    epochs: int = DEFAULT_EPOCHS
    dataset: str = "fashion-mnist"
    max_steps: int | None = None
    grids: int = DEFAULT_GRIDS
    grids_per_method: dict[str, int] = field(
        default_factory=lambda: dict(DEFAULT_GRIDS_PER_METHOD))
    grid_n: int = 3
    confidence_threshold: float | None = 0.5
    methods_bcos: tuple[str, ...] = BCOS_METHODS
    methods_standard: tuple[str, ...] = STANDARD_METHODS
    examples: int = 3
    seed: int = 0
    threads: int | None = 2
    workers: int = 2
    channels_last: bool = True
    progress: bool = True
    train_overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1:
            raise ValueError(f"workers must be a positive int (1: no worker processes), got "
                             f"{self.workers!r}")
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 1:
            raise ValueError(f"epochs must be a positive int (training epochs per network), "
                             f"got {self.epochs!r}")

    @classmethod
    def quick(cls, **overrides: Any) -> MainConfig:
        """A minutes-long run of every stage: one epoch per network (as deterministic
        as the default), 20 grids (3 for IntGrad, occlusion, RISE and LIME), every
        method."""
        settings: dict[str, Any] = {
            "out_dir": "outputs/main-quick", "epochs": 1, "grids": 20,
            "grids_per_method": dict.fromkeys(("intgrad", *PERTURBATION_METHODS), 3), "examples": 1,
        }
        settings.update(overrides)
        return cls(**settings)

    def worker_threads(self) -> int:
        """Torch threads of each worker process."""
        total = self.threads if self.threads is not None else torch.get_num_threads()
        return max(1, total // max(1, self.workers))

    def grid_counts(self, methods: tuple[str, ...]) -> dict[str, int]:
        """Grids each of ``methods`` plays."""
        return {m: int(self.grids_per_method.get(m, self.grids)) for m in methods}


class MainSettingsError(ValueError):
    """The output folder holds results of other settings than the ones asked for."""


#: Training-config fields that say how to run, not what is computed: a re-run may
#: change them and still reuse (or resume) a network.
EXECUTION_FIELDS = ("out_dir", "resume", "threads", "progress", "tensorboard", "device",
                    "log_every_steps", "checkpoint_every_steps", "data.root", "data.download",
                    "data.num_workers", "data.eval_batch_size")


def _result_settings(config: dict[str, Any]) -> dict[str, Any]:
    """A training config (as a dict), flattened, less :data:`EXECUTION_FIELDS`."""
    flat: dict[str, Any] = {}

    def walk(d: dict[str, Any], prefix: str) -> None:
        for k, v in d.items():
            if isinstance(v, dict) and k != "options":
                walk(v, f"{prefix}{k}.")
            else:
                flat[f"{prefix}{k}"] = v

    walk(config, "")
    return {k: v for k, v in flat.items() if k not in EXECUTION_FIELDS}


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return [f"{k}: {old.get(k, '(unset)')!r} then, {new.get(k, '(unset)')!r} now"
            for k in sorted(set(old) | set(new))
            if json.dumps(old.get(k), sort_keys=True, default=str)
            != json.dumps(new.get(k), sort_keys=True, default=str)]


def _file_fingerprint(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(Path(p).read_bytes())
    return h.hexdigest()[:16]


def _stage_current(out: Path, stage: str, key: dict[str, Any]) -> bool:
    """Whether the cached ``stage`` in ``out`` was made with ``key`` (``stages.json``)."""
    f = out / "stages.json"
    stages = json.loads(f.read_text()) if f.is_file() else {}
    return stages.get(stage) == json.loads(json.dumps(key, default=str))


def _stage_record(out: Path, stage: str, key: dict[str, Any]) -> None:
    f = out / "stages.json"
    stages = json.loads(f.read_text()) if f.is_file() else {}
    stages[stage] = json.loads(json.dumps(key, default=str))
    atomic_write_json(f, stages, indent=2)


def _atomic_json(obj: Any, path: Path) -> None:
    atomic_write_json(path, obj, indent=2)


def _log(msg: str) -> None:
    print(f"[bcosnet main] {msg}", flush=True)


def _train_config(cfg: MainConfig, preset: str, run_dir: Path) -> Any:
    from .training import get_preset

    tc = get_preset(preset)
    tc.out_dir = str(run_dir)
    tc.resume = True
    # A fixed number of epochs and a schedule by steps: no wall-clock budget, no
    # schedule fitted to the time (the preset's), so that the network is the same
    # on a fast and a slow machine.
    tc.epochs = cfg.epochs
    tc.time_limit_min = None
    tc.schedule.fit_time_limit = False
    tc.seed = cfg.seed
    tc.progress = cfg.progress
    tc.device = "cpu" if not torch.cuda.is_available() else tc.device
    if cfg.threads is not None:
        tc.threads = cfg.threads
    if cfg.max_steps is not None:
        tc.max_steps = cfg.max_steps
    if cfg.dataset != "fashion-mnist":
        tc.data.dataset = cfg.dataset
        tc.model.num_classes = None  # the data set's own class count
    for key, value in cfg.train_overrides.items():
        setattr(tc, key, value)
    return tc


def _check_training_settings(cfg: MainConfig, tc: Any, run_dir: Path) -> None:
    """Refuse to reuse or resume a network trained with other settings."""
    from .training import load_checkpoint
    from .training.config import config_to_dict

    ckpt = run_dir / "checkpoint.pt"
    if not ckpt.is_file():
        return
    then = _result_settings(dict(load_checkpoint(ckpt).get("config") or {}))
    now = _result_settings(json.loads(json.dumps(config_to_dict(tc))))
    budget = then.get("time_limit_min")
    if budget is not None and now.get("time_limit_min") is None:
        raise MainSettingsError(
            f"{run_dir} holds a network trained for a wall-clock budget ({budget:g} min) by "
            "an earlier version of the main job, so what it learnt depended on the "
            f"machine's speed; the main job now trains for a fixed number of epochs "
            f"(now epochs={cfg.epochs}) and does not reuse it. Delete {cfg.out_dir} to "
            "train afresh, or use another output folder (out_dir)."
        )
    diff = _differences(then, now)
    if diff:
        raise MainSettingsError(
            f"{run_dir} holds a network trained with other settings — "
            + "; ".join(diff)
            + f". Use another output folder (out_dir), delete {cfg.out_dir} to start over, "
            "or re-run with the earlier settings to reuse (or resume) it."
        )


def _train_stage(cfg: MainConfig, preset: str, run_dir: Path) -> dict[str, Any]:
    """Train (or resume, or skip when finished) one network; returns its summary."""
    from .training import train

    tc = _train_config(cfg, preset, run_dir)
    _check_training_settings(cfg, tc, run_dir)
    done = run_dir / "train_done.json"
    if done.is_file():
        _log(f"{preset}: already trained ({done}), skipping")
        return json.loads(done.read_text())
    _log(f"training {tc.model.name} (preset {preset}) for {tc.epochs} epoch(s), seed {tc.seed}"
         + (f", at most {tc.max_steps} steps" if tc.max_steps is not None else ""))
    result = train(tc)
    summary = {
        "preset": preset,
        "model": tc.model.name,
        "checkpoint": str(result.checkpoint),
        "test_acc": float(result.metrics.get("test_acc", float("nan"))),
        "epochs": result.epoch,
        "steps": result.step,
        "train_time_s": round(result.train_time_s, 1),
        "stop_reason": result.stop_reason,
    }
    _atomic_json(summary, done)
    return summary


def _figures_stage(cfg: MainConfig, model: torch.nn.Module, test: Any, classes: list[str],
                   fig_dir: Path, key: dict[str, Any]) -> list[tuple[str, Path]]:
    from .evaluation import top_class_scores
    from .explanations.figures import plot_class_grid, plot_prediction_summary, save_figure

    fig_dir.mkdir(parents=True, exist_ok=True)
    fresh = not _stage_current(fig_dir.parent, "figures", key)  # other networks: redraw
    figures: list[tuple[str, Path]] = []
    for i in range(cfg.examples):
        path = fig_dir / f"example_{i}.png"
        if fresh or not path.is_file():
            image = test[i][0]
            fig = plot_prediction_summary(model, image, class_names=classes)
            save_figure(fig, path)
        figures.append((f"Fig. A1 — test image {i}: prediction, explanation W(x) in colour, "
                        "contributions, and Σ contributions + bias = logit", path))
    path = fig_dir / "most_confident.png"
    if fresh or not path.is_file():
        loader = torch.utils.data.DataLoader(test, batch_size=500)
        top = top_class_scores(model, loader, k=3, progress=cfg.progress)
        fig = plot_class_grid(model, test, top, count=len(classes), class_names=classes)
        save_figure(fig, path)
    if fresh:
        _stage_record(fig_dir.parent, "figures", key)
    figures.append(("Fig. A3 — the three most confidently classified test images per class, "
                    "their explanations and (grey images) contribution maps", path))
    return figures


def _panel_stage(cfg: MainConfig, models: dict[str, torch.nn.Module], test: Any,
                 classes: list[str], grid_dir: Path, settings: dict[str, Any]
                 ) -> tuple[str, Path] | None:
    """Fig. A2-style panel: the first grid of the B-cos network's grid set, every method's
    map of its centre cell on both networks (the cell's class by name)."""
    from .evaluation.pointing_game import GridDataset, plot_method_panel

    path = grid_dir.parent / "panel.png"
    grids = GridDataset.from_dict(json.loads((grid_dir / "grids.json").read_text()), test)
    key = {"networks": settings.get("_networks"),
           "grids": _file_fingerprint(grid_dir / "grids.json"),
           "methods": [list(cfg.methods_bcos), list(cfg.methods_standard)],
           "class_names": classes}
    out = grid_dir.parent.parent
    if not path.is_file() or not _stage_current(out, "panel", key):
        rows = {"B-cos": (models["B-cos"], list(cfg.methods_bcos)),
                "standard": (models["standard"], list(cfg.methods_standard))}
        every = tuple(dict.fromkeys((*cfg.methods_bcos, *cfg.methods_standard)))
        plot_method_panel(rows, grids, grid=0,
                          method_settings={m: s for m, s in METHOD_SETTINGS.items()
                                           if m in every},
                          smoothing=settings.get("smoothing"), class_names=classes, path=path)
        _stage_record(out, "panel", key)
    n = grids.n
    centre = classes[int(grids.classes[0, (n * n) // 2])]
    return (f"Fig. A2-style panel — grid 0 of the B-cos network's {n}×{n} grids; each method's "
            f"map of the framed (centre) cell's class, {centre}, on the B-cos network (top) "
            f"and the conventional twin (bottom); the number under a method is that cell's "
            f"score. Grids per method in the table above.", path)


def _networks(names: list[str]) -> str:
    """``["B-cos"]`` → "B-cos network"; ``["B-cos", "standard"]`` → "B-cos and standard
    networks"."""
    if len(names) == 1:
        return f"{names[0]} network"
    return f"{', '.join(names[:-1])} and {names[-1]} networks"


def _merged(notes: dict[str, str]) -> list[str]:
    """Network → note: each distinct note once, prefixed with the networks it is about."""
    by_text: dict[str, list[str]] = {}
    for name, text in notes.items():
        by_text.setdefault(text, []).append(name)
    return [f"{_networks(names)}: {text}" for text, names in by_text.items()]


def _by_count(counts: dict[str, int]) -> str:
    """``{"bcos": 250, "grad": 250, "lime": 100}`` → "250 for bcos and grad; 100 for lime"."""
    groups: dict[int, list[str]] = {}
    for m, k in counts.items():
        groups.setdefault(k, []).append(m)

    def names(ms: list[str]) -> str:
        return ms[0] if len(ms) == 1 else f"{', '.join(ms[:-1])} and {ms[-1]}"

    return "; ".join(f"{k} for {names(ms)}" for k, ms in groups.items())


def _cuts_text(cfg: MainConfig, pg: dict[str, Any], pg_seconds: float) -> str:
    """What was cut from the paper's protocol, and why (printed in the report): each
    note once, naming the networks it applies to when it is not all of them."""
    fewer, loops = {}, {}
    played: dict[str, set[int]] = {}  # method -> grid counts below the paper's, any network
    for name, r in pg.items():
        for m, k in r.grids_per_method.items():
            if k < PAPER_GRIDS:
                played.setdefault(m, set()).add(k)
        made, wanted = r.settings.get("num_grids"), r.settings.get("requested_grids")
        if wanted is not None and made is not None and made < wanted:
            fewer[name] = (f"only {made} of the {wanted} requested grids could be made (the "
                           "confidently classified test images of some class ran out); every "
                           "method played at most these.")
        single = [m for m, v in (r.settings.get("multi_target") or {}).items() if v is False]
        if single:
            loops[name] = (f"{', '.join(single)} explained each cell with its own call (no "
                           "multi-target support in this version), the others all cells of a "
                           "grid in one call.")
    lines = []
    if played:
        if all(len(ks) == 1 for ks in played.values()):  # the same count on every network
            cut = _by_count({m: next(iter(ks)) for m, ks in played.items()})
        else:
            cut = "; ".join(
                f"{_networks([name])}: " + _by_count(
                    {m: k for m, k in r.grids_per_method.items() if k < PAPER_GRIDS})
                for name, r in pg.items())
        lines.append(
            f"Grids per method, cut from the paper's {PAPER_GRIDS} for time: {cut}. The "
            "default main job (250 grids, 100 for occlusion, RISE and LIME) is meant to take "
            "at most 45 minutes on 2 CPU cores, training included (its measured wall time "
            f"is in the README); the paper's {PAPER_GRIDS} for every method would take about "
            "1.1 h of pointing game in the two default workers, estimated from the measured "
            "per-grid costs in docs/evaluation.md. More: bcosnet main --grids / "
            "--grids-per-method (MainConfig.grids / grids_per_method).")
    lines += _merged(fewer) + _merged(loops)
    if pg:
        lines.append(f"The pointing game took {pg_seconds:.0f} s in this invocation "
                     f"({_workers_text(cfg)}; 0 when every method was already finished).")
    return "\n\n".join(lines)


def _workers_text(cfg: MainConfig) -> str:
    if cfg.workers <= 1:
        return "one process" + (f", {cfg.threads} threads" if cfg.threads else "")
    return f"{cfg.workers} worker processes of {cfg.worker_threads()} thread(s)"


def _settings_checked(call: Any, folder: Path) -> Any:
    """``call()``; the pointing game's refusal of results made with other settings or
    networks in ``folder``, reworded for the main job."""
    try:
        return call()
    except ValueError as e:
        if "use another results_dir" not in str(e) and "delete it" not in str(e):
            raise
        raise MainSettingsError(
            f"the pointing-game results in {folder} were made with other settings or "
            f"networks ({e}). Use another output folder (out_dir), or delete {folder} to "
            "replay the pointing game with the settings given now."
        ) from e


# -- jobs: the two trainings and the pointing game's (network, method) pairs, run in
# this process (workers = 1) or shared out to spawned worker processes.

#: Seconds per 3×3 grid of the slow methods on the B-cos network (timed main job,
#: 2 threads, docs/evaluation.md) and the twin's cost relative to it: only used to
#: hand out the longest pointing-game jobs first, so that the workers end together.
_METHOD_COST = {"intgrad": 2.4, "rise": 2.6, "lime": 2.5, "occlusion": 1.8}
_OTHER_METHOD_COST = 0.1
_NETWORK_COST = {"B-cos": 1.0, "standard": 0.45}

#: A worker's (model, test set) per checkpoint: loaded once, shared by its jobs.
_EVAL_CACHE: dict[tuple[str, str, bool], tuple[torch.nn.Module, Any]] = {}


def _worker_init(threads: int, parent: int) -> None:
    os.environ["BCOSNET_PROGRESS_LINES"] = "1"  # bars of two processes would overwrite
    torch.set_num_threads(threads)
    tune_malloc()  # as the bcosnet command does for itself (a spawned process starts afresh)
    # Ctrl-C is the main process's to handle (it stops the workers); and a worker
    # never outlives it: killed main process → the worker exits within a second or
    # two (what it had done is saved: finished methods, partial results every
    # minute, training checkpoints — a re-run resumes).
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="bcosnet-parent-watch", daemon=True).start()


def _eval_inputs(cfg: MainConfig, checkpoint: str) -> tuple[torch.nn.Module, Any]:
    key = (str(checkpoint), cfg.dataset, cfg.channels_last)
    if key not in _EVAL_CACHE:
        from .data import build_datasets
        from .training import load_checkpoint_model

        model = load_checkpoint_model(checkpoint)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        _EVAL_CACHE[key] = (model, build_datasets(cfg.dataset, augment=False).test)
    return _EVAL_CACHE[key]


def _play(cfg: MainConfig, model: torch.nn.Module, test: Any, methods: tuple[str, ...],
          counts: dict[str, int], threshold: float | None, folder: Path,
          label: str | None = None) -> Any:
    """The pointing game of ``methods`` (a subset of the network's, whose grid counts are
    ``counts``) on the grid set in ``folder``."""
    from .evaluation import grid_pointing_game

    return grid_pointing_game(
        model, test, list(methods), n=cfg.grid_n, num_grids=max(counts.values()),
        grids_per_method={m: counts[m] for m in methods}, seed=cfg.seed,
        confidence_threshold=threshold, allow_fewer=True, results_dir=folder,
        method_settings={m: s for m, s in METHOD_SETTINGS.items() if m in methods},
        progress=cfg.progress, label=label,
    )


def _job_config(cfg: MainConfig) -> MainConfig:
    """The settings a job runs with: a worker's share of the threads."""
    return dataclasses.replace(cfg, threads=cfg.worker_threads()) if cfg.workers > 1 else cfg


def _pg_job(cfg: MainConfig, network: str, checkpoint: str, method: str,
            counts: dict[str, int], threshold: float | None, folder: Path) -> float:
    """Play one method of one network's pointing game; returns the seconds it took."""
    t = time.perf_counter()
    model, test = _eval_inputs(cfg, checkpoint)
    _settings_checked(lambda: _play(cfg, model, test, (method,), counts, threshold, folder,
                                    label=network), folder)
    return time.perf_counter() - t


class _Jobs:
    """Runs independent jobs (picklable top-level functions) in this process, or in
    ``cfg.workers`` spawned processes of ``cfg.worker_threads()`` threads each, in the
    order given (a free worker takes the next)."""

    def __init__(self, cfg: MainConfig) -> None:
        self.cfg = cfg
        self.pool: Any = None

    def __enter__(self) -> _Jobs:
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if self.pool is None:
            return
        if exc_type is None:
            self.pool.shutdown(wait=True)
            return
        # A job failed or the job was interrupted: stop the workers now rather than
        # wait for their running jobs (whose work so far is saved, see _worker_init).
        procs = list((getattr(self.pool, "_processes", None) or {}).values())  # private
        self.pool.shutdown(wait=False, cancel_futures=True)
        for p in procs:
            p.terminate()
        for p in procs:
            p.join(timeout=10)

    def run(self, jobs: list[tuple[str, Any, tuple[Any, ...]]]) -> dict[str, Any]:
        """``{label: fn(*args)}`` for ``(label, fn, args)`` in ``jobs``; the first job
        that raises is raised here: the waiting jobs are cancelled, the running ones
        stopped when the ``with`` block exits (their saved work stays resumable)."""
        if self.cfg.workers <= 1 or len(jobs) <= 1:
            return {label: fn(*args) for label, fn, args in jobs}
        import concurrent.futures as cf
        import multiprocessing

        if self.pool is None:
            self.pool = cf.ProcessPoolExecutor(
                max_workers=self.cfg.workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=_worker_init, initargs=(self.cfg.worker_threads(), os.getpid()))
        futures = {self.pool.submit(fn, *args): label for label, fn, args in jobs}
        results: dict[str, Any] = {}
        try:
            for f in cf.as_completed(futures):
                results[futures[f]] = f.result()
        except BaseException:
            for f in futures:
                f.cancel()
            raise
        return {label: results[label] for label, _, _ in jobs}


def _pointing_game_stage(cfg: MainConfig, out: Path, jobs: _Jobs, runs: dict[str, Any],
                         models: dict[str, torch.nn.Module], test: Any
                         ) -> tuple[dict[str, Any], list[str], dict[str, Path], float]:
    """The grid pointing game of both networks: each grid set made here, then every
    (network, method) pair a job (longest first).  Returns the results, notes for the
    report, the results folders and the seconds it took."""
    from .evaluation.pointing_game import TooFewClassesError, prepare_grids

    job_cfg = _job_config(cfg)
    pg: dict[str, Any] = {}
    notes: list[str] = []
    t_pg = time.perf_counter()
    games: dict[str, tuple[tuple[str, ...], dict[str, int], float | None, Path]] = {}
    for name, methods in (("B-cos", cfg.methods_bcos), ("standard", cfg.methods_standard)):
        counts = cfg.grid_counts(tuple(methods))
        folder = out / "pointing_game" / name.lower().replace("-", "")
        _log(f"grid pointing game ({cfg.grid_n}×{cfg.grid_n}) on the {name} network: "
             + ", ".join(f"{m} {k} grids" for m, k in counts.items()))

        def prepare(threshold: float | None, folder: Path, _name: str = name,
                    _counts: dict[str, int] = counts) -> None:
            _settings_checked(lambda: prepare_grids(
                models[_name], test, n=cfg.grid_n, num_grids=max(_counts.values()),
                seed=cfg.seed, confidence_threshold=threshold, allow_fewer=True,
                results_dir=folder, progress=cfg.progress), folder)

        threshold = cfg.confidence_threshold
        try:
            prepare(threshold, folder)
        except TooFewClassesError as e:
            if threshold is None:
                raise
            # Better a result without the threshold, said so in the report, than none
            # after the training (a short or unlucky run: few confident classes).
            _log(f"{e}; playing without the confidence threshold")
            notes.append(
                f"{name} network: only {len(e.usable)} classes had a correctly classified test "
                f"image with sigmoid(logit) > {threshold:g} (a grid needs "
                f"{e.needed}), so its pointing game ran WITHOUT the confidence threshold.")
            folder, threshold = folder.with_name(folder.name + "-nothreshold"), None
            try:
                prepare(threshold, folder)
            except TooFewClassesError as e2:
                _log(f"{e2}; no pointing game for the {name} network")
                notes.append(f"{name} network: NO pointing game — even without the threshold "
                             f"only {len(e2.usable)} classes have a correctly classified test "
                             f"image (a {cfg.grid_n}×{cfg.grid_n} grid needs {e2.needed}); "
                             "train longer.")
                continue
        games[name] = (tuple(methods), counts, threshold, folder)
    # Longest jobs first, so that the workers finish together.
    todo = sorted(
        ((name, m) for name, (methods, _, _, _) in games.items() for m in methods),
        key=lambda nm: -games[nm[0]][1][nm[1]] * _NETWORK_COST.get(nm[0], 1.0)
        * _METHOD_COST.get(nm[1], _OTHER_METHOD_COST))
    if cfg.workers > 1 and todo:
        _log(f"{len(todo)} pointing-game jobs in {_workers_text(cfg)}")
    seconds = jobs.run([
        (f"{name} {m}", _pg_job,
         (job_cfg, name, runs[name]["checkpoint"], m, *games[name][1:]))
        for name, m in todo])
    if cfg.workers > 1:
        for label, sec in seconds.items():
            _log(f"pointing game {label}: {sec:.0f} s")
    for name, (methods, counts, threshold, folder) in games.items():
        pg[name] = _settings_checked(
            lambda g=(models[name], methods, counts, threshold, folder):
            _play(cfg, g[0], test, *g[1:]), folder)
    return pg, notes, {name: g[3] for name, g in games.items()}, time.perf_counter() - t_pg


def run_main(cfg: MainConfig | None = None) -> Path:
    """Run the main job; returns the path of the HTML report.  Raises
    :class:`MainSettingsError` when the output folder holds results of other
    settings, and :class:`~bcosnet._utils.io.FolderBusyError` when another job
    is running in it."""
    cfg = cfg or MainConfig()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out_dir)
    with folder_lock(out, "bcosnet main job"):
        return _run_main(cfg, out)


def _run_main(cfg: MainConfig, out: Path) -> Path:
    with _Jobs(cfg) as jobs:
        return _run_stages(cfg, out, jobs)


def _run_stages(cfg: MainConfig, out: Path, jobs: _Jobs) -> Path:
    from .data import build_datasets
    from .evaluation import Report, accuracy, compare_localisation, write_report

    t0 = time.perf_counter()

    # 1. training: the two networks side by side when there are workers
    job_cfg = _job_config(cfg)
    runs = jobs.run([("B-cos", _train_stage, (job_cfg, "fmnist", out / "bcos")),
                     ("standard", _train_stage, (job_cfg, "fmnist-standard", out / "standard"))])
    models = {k: _eval_inputs(cfg, v["checkpoint"])[0] for k, v in runs.items()}
    splits = build_datasets(cfg.dataset, augment=False)
    test, classes = splits.test, list(splits.classes)
    # Derived results are keyed by the networks they were computed from.
    networks = _file_fingerprint(*(Path(v["checkpoint"]) for v in runs.values()))
    derived_key = {"networks": networks, "dataset": cfg.dataset}

    # 2. accuracy
    acc_path = out / "accuracy.json"
    if acc_path.is_file() and _stage_current(out, "accuracy", derived_key):
        acc = json.loads(acc_path.read_text())
    else:
        acc = {}
        for name, model in models.items():
            res = accuracy(model, test, topk=(1,), progress=cfg.progress)
            acc[name] = float(res.top1)
        _atomic_json(acc, acc_path)
        _stage_record(out, "accuracy", derived_key)
    _log("test accuracy: " + ", ".join(f"{k} {100 * v:.2f} %" for k, v in acc.items()))

    # 3. explanations
    figures = _figures_stage(cfg, models["B-cos"], test, classes, out / "explanations",
                             derived_key)

    # 4. grid pointing game
    pg, notes, pg_dirs, pg_seconds = _pointing_game_stage(cfg, out, jobs, runs, models, test)
    panel = None
    if "B-cos" in pg:
        panel = _panel_stage(cfg, models, test, classes, pg_dirs["B-cos"],
                             {**pg["B-cos"].settings, "_networks": networks})
    # 5. report
    def n_params(m: torch.nn.Module) -> int:
        return sum(p.numel() for p in m.parameters())

    rows = [
        {
            "network": name,
            "model": runs[name]["model"],
            "parameters": n_params(models[name]),
            "test accuracy (%)": round(100 * acc[name], 2),
            "epochs": runs[name]["epochs"],
            "training time (s)": runs[name]["train_time_s"],
        }
        for name in models
    ]
    data_text = ("Fashion-MNIST (Debian package dataset-fashion-mnist)"
                 if cfg.dataset == "fashion-mnist" else f"the {cfg.dataset} data set")
    capped = (f", capped at {cfg.max_steps} optimiser steps" if cfg.max_steps is not None
              else "")
    comparison = compare_localisation(pg)
    report = Report(
        title="bcosnet main job: B-cos network on "
        + ("Fashion-MNIST" if cfg.dataset == "fashion-mnist" else cfg.dataset),
        headline=comparison.headline if comparison is not None else "",
        text=(
            f"A B-cos network for 28×28 grey images and its conventional twin, each trained "
            f"for {cfg.epochs} epoch(s) from seed {cfg.seed}{capped} on {data_text}, "
            "explained with the model-inherent B-cos explanation (bcos) and compared with "
            "post-hoc attribution methods in the grid pointing game: the score of a cell is "
            "the share of the positive attribution that falls into the cell of the explained "
            "class; the uniform baseline is 1/n². The paper's claim (supplement B.1, Figs. "
            "B1/B2): on the B-cos network the model-inherent explanation localises better "
            "than every post-hoc method, and no method explains the conventional network "
            "better than it explains the B-cos network.\n\n"
            "The protocol — the B-cos transform, the input encoding, the explanations, the "
            "post-hoc methods' settings, the grid pointing game and the training — is "
            "described, with the supplement's section numbers, in docs/protocol.md of the "
            "bcosnet repository."
        ),
        metadata={
            "data set": cfg.dataset,
            "training epochs per network": cfg.epochs
            if cfg.max_steps is None else f"{cfg.epochs} (at most {cfg.max_steps} steps)",
            "pointing game": f"{cfg.grid_n}×{cfg.grid_n} grids, grids per method in the table",
            "confidence threshold": cfg.confidence_threshold,
            "seed": cfg.seed,
            "processes": _workers_text(cfg),
            "torch": torch.__version__,
            "wall time of this invocation (s)": round(time.perf_counter() - t0, 1),
        },
        accuracy=rows,
        pointing_game=pg,
        pointing_game_text="\n\n".join([*notes, _cuts_text(cfg, pg, pg_seconds)]),
        pointing_game_figures=[panel] if panel is not None else [],
        figures=figures,
    )
    files = write_report(out, report)
    _atomic_json({"accuracy": acc, "runs": runs,
                  "pointing_game": {k: {m: s.to_dict() for m, s in v.summary().items()}
                                    for k, v in pg.items()},
                  "pointing_game_grids": {k: v.grids_per_method for k, v in pg.items()},
                  "pointing_game_settings": {k: v.settings for k, v in pg.items()},
                  "config": dataclasses.asdict(cfg)}, out / "results.json")
    _log(f"report: {files.html}")
    return Path(files.html)
