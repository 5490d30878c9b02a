"""The main job's stages and what they reuse: training (refused when the folder's
network was trained with other settings), accuracy, the figures and the panel —
each cached as an item of the output folder's result store (``stages/``), keyed
by the networks' checkpoint files and recomputed when those differ."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .._utils.io import atomic_write_json
from .._utils.store import (
    ResultStore,
    SettingsMismatchError,
    describe_differences,
    file_fingerprint,
    settings_differences,
)
from ..training.distributed import pick_device
from .config import MainConfig, method_settings_for

__all__ = ["MainSettingsError", "accuracy_stage", "eval_inputs", "figures_stage", "log",
           "panel_stage", "stage_store", "train_stage"]


class MainSettingsError(SettingsMismatchError):
    """The output folder holds results of other settings than the ones asked for
    (``.differences``: setting → ``(then, now)``)."""


#: Training-config fields that say how to run, not what is computed: a re-run may
#: change them and still reuse (or resume) a network.
EXECUTION_FIELDS = ("out_dir", "resume", "threads", "progress", "tensorboard", "device",
                    "log_every_steps", "checkpoint_every_steps", "data.root", "data.download",
                    "data.num_workers", "data.eval_batch_size")


def log(msg: str) -> None:
    print(f"[bcosnet main] {msg}", flush=True)


def stage_store(out: Path) -> ResultStore:
    """The store of the derived stages (accuracy, figures, panel): ``out/stages``."""
    return ResultStore(out / "stages", what="main-job results")


# -- training


def _result_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """A training config (as a dict), less :data:`EXECUTION_FIELDS` (top level, or
    ``section.field``)."""
    out = {k: v for k, v in config.items() if k not in EXECUTION_FIELDS and
           not isinstance(v, Mapping)}
    for k, v in config.items():
        if isinstance(v, Mapping):
            out[k] = {f: x for f, x in v.items() if f"{k}.{f}" not in EXECUTION_FIELDS}
    return out


def _train_config(cfg: MainConfig, preset: str, run_dir: Path) -> Any:
    from ..training import get_preset

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
    tc.device = cfg.device or ("cpu" if not torch.cuda.is_available() else tc.device)
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
    from ..training import config_to_dict, load_checkpoint

    ckpt = run_dir / "checkpoint.pt"
    if not ckpt.is_file():
        return
    then = _result_settings(dict(load_checkpoint(ckpt).get("config") or {}))
    now = _result_settings(json.loads(json.dumps(config_to_dict(tc))))
    diff = settings_differences(then, now)
    budget = then.get("time_limit_min")
    if budget is not None and now.get("time_limit_min") is None:
        raise MainSettingsError(
            f"{run_dir} holds a network trained for a wall-clock budget ({budget:g} min) by "
            "an earlier version of the main job, so what it learnt depended on the "
            f"machine's speed; the main job now trains for a fixed number of epochs "
            f"(now epochs={cfg.epochs}) and does not reuse it. Delete {cfg.out_dir} to "
            "train afresh, or use another output folder (out_dir).", diff, run_dir)
    if diff:
        raise MainSettingsError(
            f"{run_dir} holds a network trained with other settings — "
            f"{describe_differences(diff)}. Use another output folder (out_dir), delete "
            f"{cfg.out_dir} to start over, or re-run with the earlier settings to reuse (or "
            "resume) it.", diff, run_dir)


def train_stage(cfg: MainConfig, preset: str, run_dir: Path) -> dict[str, Any]:
    """Train (or resume, or skip when finished) one network; returns its summary."""
    from ..training import train

    tc = _train_config(cfg, preset, run_dir)
    _check_training_settings(cfg, tc, run_dir)
    done = run_dir / "train_done.json"
    if done.is_file():
        log(f"{preset}: already trained ({done}), skipping")
        return json.loads(done.read_text())
    log(f"training {tc.model.name} (preset {preset}) for {tc.epochs} epoch(s), seed {tc.seed}"
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
    atomic_write_json(done, summary, indent=2)
    return summary


# -- derived stages: keyed by the networks' checkpoint files

#: A process's (model, test set) per checkpoint: loaded once, shared by its jobs.
_EVAL_CACHE: dict[tuple[str, str, bool], tuple[torch.nn.Module, Any]] = {}


def eval_inputs(cfg: MainConfig, checkpoint: str) -> tuple[torch.nn.Module, Any]:
    """The network of ``checkpoint`` (channels-last when configured, on ``cfg.device``)
    and the test set."""
    key = (str(checkpoint), cfg.dataset, cfg.channels_last, cfg.device)
    if key not in _EVAL_CACHE:
        from ..data import build_datasets
        from ..training import load_checkpoint_model

        model = load_checkpoint_model(checkpoint)
        if cfg.device is not None:
            model = model.to(pick_device(cfg.device))
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        _EVAL_CACHE[key] = (model, build_datasets(cfg.dataset, augment=False).test)
    return _EVAL_CACHE[key]


def networks_key(cfg: MainConfig, runs: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """What the derived stages depend on: the networks' checkpoint files and the data."""
    return {"networks": file_fingerprint(*(Path(v["checkpoint"]) for v in runs.values())),
            "dataset": cfg.dataset}


def accuracy_stage(cfg: MainConfig, store: ResultStore, models: Mapping[str, torch.nn.Module],
                   test: Any, key: dict[str, Any]) -> dict[str, float]:
    """Test accuracy (top-1 fraction) per network, cached under ``key``."""
    from ..evaluation import accuracy

    saved = store.load("accuracy", key, stale_ok=True)
    if saved is not None:
        return {k: float(v) for k, v in saved.items()}
    acc = {name: float(accuracy(model, test, topk=(1,), progress=cfg.progress).top1)
           for name, model in models.items()}
    store.save("accuracy", acc, key)
    return acc


def figures_stage(cfg: MainConfig, store: ResultStore, model: torch.nn.Module, test: Any,
                  classes: list[str], fig_dir: Path, key: dict[str, Any]
                  ) -> list[tuple[str, Path]]:
    """Fig. A1 for the first ``cfg.examples`` test images and Fig. A3; drawn again
    when the networks changed, else only the missing files."""
    from ..evaluation import top_class_scores
    from ..explanations.figures import plot_class_grid, plot_prediction_summary, save_figure

    if cfg.device is not None:  # the figures explain CPU images
        model = copy.deepcopy(model).cpu()
    fig_dir.mkdir(parents=True, exist_ok=True)
    fresh = store.load("figures", key, stale_ok=True) is None  # other networks: redraw
    figures: list[tuple[str, Path]] = []
    for i in range(cfg.examples):
        path = fig_dir / f"example_{i}.png"
        if fresh or not path.is_file():
            save_figure(plot_prediction_summary(model, test[i][0], class_names=classes), path)
        figures.append((f"Fig. A1 — test image {i}: prediction, explanation W(x) in colour, "
                        "contributions, and Σ contributions + bias = logit", path))
    path = fig_dir / "most_confident.png"
    if fresh or not path.is_file():
        loader = torch.utils.data.DataLoader(test, batch_size=500)
        top = top_class_scores(model, loader, k=3, progress=cfg.progress)
        save_figure(plot_class_grid(model, test, top, count=len(classes), class_names=classes),
                    path)
    figures.append(("Fig. A3 — the three most confidently classified test images per class, "
                    "their explanations and (grey images) contribution maps", path))
    if fresh:
        store.save("figures", {"files": [str(p) for _, p in figures]}, key)
    return figures


def panel_stage(cfg: MainConfig, store: ResultStore, models: Mapping[str, torch.nn.Module],
                test: Any, classes: list[str], grid_dir: Path, smoothing: int | None,
                networks: str) -> tuple[str, Path]:
    """Fig. A2-style panel: the first grid of the B-cos network's grid set, every method's
    map of its centre cell on both networks (the cell's class by name)."""
    from ..evaluation.pointing_game import GridDataset, plot_method_panel

    path = grid_dir.parent / "panel.png"
    grids = GridDataset.from_dict(json.loads((grid_dir / "grids.json").read_text()), test)
    key = {"networks": networks, "grids": file_fingerprint(grid_dir / "grids.json"),
           "methods": [list(cfg.methods_bcos), list(cfg.methods_standard)],
           "class_names": classes}
    if not path.is_file() or store.load("panel", key, stale_ok=True) is None:
        rows = {"B-cos": (models["B-cos"], list(cfg.methods_bcos)),
                "standard": (models["standard"], list(cfg.methods_standard))}
        every = tuple(dict.fromkeys((*cfg.methods_bcos, *cfg.methods_standard)))
        plot_method_panel(rows, grids, grid=0, method_settings=method_settings_for(every),
                          smoothing=smoothing, class_names=classes, path=path)
        store.save("panel", {"file": str(path)}, key)
    n = grids.n
    centre = classes[int(grids.classes[0, (n * n) // 2])]
    return (f"Fig. A2-style panel — grid 0 of the B-cos network's {n}×{n} grids; each method's "
            f"map of the framed (centre) cell's class, {centre}, on the B-cos network (top) "
            f"and the conventional twin (bottom); the number under a method is that cell's "
            f"score. Grids per method in the table above.", path)
