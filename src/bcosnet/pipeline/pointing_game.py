"""The main job's grid pointing game: each network's grid set made in the main
process, then every (network, method) pair a job for the workers, the longest
first; each pair's results are one item of that network's results folder
(``pointing_game/<network>``), so a re-run plays only what is missing."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .._utils.store import SettingsMismatchError
from .config import COSTS, MainConfig, method_settings_for
from .stages import MainSettingsError, eval_inputs, log
from .workers import WorkerPool

__all__ = ["Game", "PointingGameStage", "pointing_game_stage"]


@contextlib.contextmanager
def _settings_checked(folder: Path) -> Iterator[None]:
    """The pointing game's refusal of results made with other settings or networks in
    ``folder``, said in the main job's words."""
    try:
        yield
    except SettingsMismatchError as e:
        raise MainSettingsError(
            f"the pointing-game results in {folder} were made with other settings or "
            f"networks ({e}). Use another output folder (out_dir), or delete {folder} to "
            "replay the pointing game with the settings given now.", e.differences, folder
        ) from e


@dataclass(frozen=True)
class Game:
    """One network's pointing game: its methods, their grid counts, the threshold
    played with and the results folder."""

    methods: tuple[str, ...]
    counts: dict[str, int]
    threshold: float | None
    folder: Path


@dataclass
class PointingGameStage:
    """What the stage gives the report: each network's result, notes (a threshold
    dropped, a game not played), each network's game and the seconds it took."""

    results: dict[str, Any]
    notes: list[str]
    games: dict[str, Game]
    seconds: float


def _play(cfg: MainConfig, model: torch.nn.Module, test: Any, game: Game,
          methods: tuple[str, ...], label: str | None = None) -> Any:
    """The pointing game of ``methods`` (some of ``game``'s) on its grid set."""
    from ..evaluation import grid_pointing_game

    with _settings_checked(game.folder):
        return grid_pointing_game(
            model, test, list(methods), n=cfg.grid_n, num_grids=max(game.counts.values()),
            grids_per_method={m: game.counts[m] for m in methods}, seed=cfg.seed,
            confidence_threshold=game.threshold, allow_fewer=True, results_dir=game.folder,
            method_settings=method_settings_for(methods), progress=cfg.progress, label=label)


def play_job(cfg: MainConfig, network: str, checkpoint: str, method: str, game: Game) -> float:
    """A worker's job: one method of one network's pointing game; returns its seconds."""
    t = time.perf_counter()
    model, test = eval_inputs(cfg, checkpoint)
    _play(cfg, model, test, game, (method,), label=network)
    return time.perf_counter() - t


def _make_grids(cfg: MainConfig, model: torch.nn.Module, test: Any, game: Game) -> None:
    from ..evaluation.pointing_game import make_grid_dataset

    with _settings_checked(game.folder):
        make_grid_dataset(model, test, n=cfg.grid_n, num_grids=max(game.counts.values()),
                          seed=cfg.seed, confidence_threshold=game.threshold, allow_fewer=True,
                          results_dir=game.folder, progress=cfg.progress)


def _grid_set(cfg: MainConfig, name: str, model: torch.nn.Module, test: Any, game: Game,
              notes: list[str]) -> Game | None:
    """Make ``game``'s grid set; without the confidence threshold (in another folder, with
    a note) when too few classes pass it; None (with a note) when even that fails."""
    from ..evaluation.pointing_game import TooFewClassesError

    try:
        _make_grids(cfg, model, test, game)
        return game
    except TooFewClassesError as e:
        if game.threshold is None:
            raise
        # Better a result without the threshold, said so in the report, than none
        # after the training (a short or unlucky run: few confident classes).
        log(f"{e}; playing without the confidence threshold")
        notes.append(f"{name} network: only {len(e.usable)} classes had a correctly classified "
                     f"test image with sigmoid(logit) > {game.threshold:g} (a grid needs "
                     f"{e.needed}), so its pointing game ran WITHOUT the confidence threshold.")
    game = dataclasses.replace(game, threshold=None,
                               folder=game.folder.with_name(game.folder.name + "-nothreshold"))
    try:
        _make_grids(cfg, model, test, game)
        return game
    except TooFewClassesError as e2:
        log(f"{e2}; no pointing game for the {name} network")
        notes.append(f"{name} network: NO pointing game — even without the threshold only "
                     f"{len(e2.usable)} classes have a correctly classified test image (a "
                     f"{cfg.grid_n}×{cfg.grid_n} grid needs {e2.needed}); train longer.")
        return None


def pointing_game_stage(cfg: MainConfig, out: Path, pool: WorkerPool,
                        runs: Mapping[str, Mapping[str, Any]],
                        models: Mapping[str, torch.nn.Module], test: Any) -> PointingGameStage:
    """The grid pointing game of both networks: each grid set made here, then every
    (network, method) pair a job (longest first), then the results collected."""
    t0 = time.perf_counter()
    notes: list[str] = []
    games: dict[str, Game] = {}
    for name, methods in (("B-cos", cfg.methods_bcos), ("standard", cfg.methods_standard)):
        counts = cfg.grid_counts(tuple(methods))
        log(f"grid pointing game ({cfg.grid_n}×{cfg.grid_n}) on the {name} network: "
            + ", ".join(f"{m} {k} grids" for m, k in counts.items()))
        folder = out / "pointing_game" / name.lower().replace("-", "")
        game = _grid_set(cfg, name, models[name], test,
                         Game(tuple(methods), counts, cfg.confidence_threshold, folder), notes)
        if game is not None:
            games[name] = game
    # Longest jobs first, so that the workers finish together.
    todo = sorted(((name, m) for name, g in games.items() for m in g.methods),
                  key=lambda nm: -COSTS.job_seconds(nm[0], nm[1], games[nm[0]].counts[nm[1]]))
    if cfg.workers > 1 and todo:
        log(f"{len(todo)} pointing-game jobs in {cfg.processes_text()}")
    job_cfg = dataclasses.replace(cfg, threads=cfg.worker_threads()) if cfg.workers > 1 else cfg
    seconds = pool.run([(f"{name} {m}", play_job,
                         (job_cfg, name, runs[name]["checkpoint"], m, games[name]))
                        for name, m in todo])
    if cfg.workers > 1:
        for label, sec in seconds.items():
            log(f"pointing game {label}: {sec:.0f} s")
    results = {name: _play(cfg, models[name], test, g, g.methods) for name, g in games.items()}
    return PointingGameStage(results, notes, games, time.perf_counter() - t0)
