"""The main job's orchestration: lock the output folder, train both networks, then
accuracy, figures, the pointing game, the panel and the report, in that order."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from .._utils.io import folder_lock
from .config import MainConfig
from .pointing_game import pointing_game_stage
from .report import write_main_report
from .stages import (
    accuracy_stage,
    eval_inputs,
    figures_stage,
    log,
    networks_key,
    panel_stage,
    stage_store,
    train_stage,
)
from .workers import WorkerPool

__all__ = ["run_main"]


def run_main(cfg: MainConfig | None = None) -> Path:
    """Run the main job; returns the path of the HTML report.  Raises
    :class:`MainSettingsError` when the output folder holds results of other
    settings, and :class:`~bcosnet._utils.io.FolderBusyError` when another job
    is running in it."""
    cfg = cfg or MainConfig()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out_dir)
    with folder_lock(out, "bcosnet main job"), \
            WorkerPool(cfg.workers, cfg.worker_threads()) as pool:
        return _run_stages(cfg, out, pool)


def _run_stages(cfg: MainConfig, out: Path, pool: WorkerPool) -> Path:
    from dataclasses import replace

    from ..data import build_datasets

    t0 = time.perf_counter()
    # 1. training: the two networks side by side when there are workers
    job_cfg = replace(cfg, threads=cfg.worker_threads()) if cfg.workers > 1 else cfg
    runs = pool.run([("B-cos", train_stage, (job_cfg, "fmnist", out / "bcos")),
                     ("standard", train_stage, (job_cfg, "fmnist-standard", out / "standard"))])
    models = {k: eval_inputs(cfg, v["checkpoint"])[0] for k, v in runs.items()}
    splits = build_datasets(cfg.dataset, augment=False)
    test, classes = splits.test, list(splits.classes)
    # Derived results are keyed by the networks they were computed from.
    store, key = stage_store(out), networks_key(cfg, runs)
    # 2. accuracy
    acc = accuracy_stage(cfg, store, models, test, key)
    log("test accuracy: " + ", ".join(f"{k} {100 * v:.2f} %" for k, v in acc.items()))
    # 3. explanations
    figures = figures_stage(cfg, store, models["B-cos"], test, classes, out / "explanations",
                            key)
    # 4. grid pointing game
    pg = pointing_game_stage(cfg, out, pool, runs, models, test)
    panel = None
    if "B-cos" in pg.results:
        panel = panel_stage(cfg, store, models, test, classes, pg.games["B-cos"].folder,
                            pg.results["B-cos"].settings.get("smoothing"), key["networks"])
    # 5. report
    html = write_main_report(cfg, out, runs=runs, models=models, acc=acc, pg=pg,
                             figures=figures, panel=panel, wall_s=time.perf_counter() - t0)
    log(f"report: {html}")
    return html
