"""The main job's report: the accuracy table, the text, the setup, what was cut
from the paper's protocol and why, and ``results.json``."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .._utils.io import atomic_write_json
from .config import ALL_METHODS, PAPER_GRIDS, MainConfig
from .pointing_game import PointingGameStage

__all__ = ["cuts_text", "write_main_report"]

_TEXT = (
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
)

#: The converged networks' answer beside this job's short trainings (Fashion-MNIST only):
#: measured by ``python -m experiments.convergence`` (docs/claims.md, section 3).
CONVERGED_FMNIST = (
    "\n\nTrained to convergence instead (until 3 epochs gain < 0.1 point, twice with the "
    "learning rate ÷10; experiments/convergence.py, docs/claims.md section 3 "
    "'Converged networks'): B-cos 93.21 % after 19 epochs, twin 91.65 % after 20; 3×3 "
    "pointing game, median (mean), 250 grids: bcos 0.610 (0.579) against the twin's "
    "Grad-CAM 0.622 (0.618) — the tie with Grad-CAM is not a budget artefact."
)


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


def _default_counts() -> dict[str, int]:
    """The default main job's grids per method."""
    return MainConfig().grid_counts(ALL_METHODS)


def _by_count(counts: dict[str, int]) -> str:
    """``{"bcos": 250, "grad": 250, "lime": 100}`` → "250 for bcos and grad; 100 for lime"."""
    groups: dict[int, list[str]] = {}
    for m, k in counts.items():
        groups.setdefault(k, []).append(m)

    def names(ms: list[str]) -> str:
        return ms[0] if len(ms) == 1 else f"{', '.join(ms[:-1])} and {ms[-1]}"

    return "; ".join(f"{k} for {names(ms)}" for k, ms in groups.items())


def _per_network_notes(pg: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """Network → "fewer grids than requested" note, and → "per-target loop" note."""
    fewer, loops = {}, {}
    for name, r in pg.items():
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
    return fewer, loops


def cuts_text(cfg: MainConfig, pg: Mapping[str, Any], pg_seconds: float) -> str:
    """What was cut from the paper's protocol, and why (printed in the report): each
    note once, naming the networks it applies to when it is not all of them."""
    played: dict[str, set[int]] = {}  # method -> grid counts below the paper's, any network
    for r in pg.values():
        for m, k in r.grids_per_method.items():
            if k < PAPER_GRIDS:
                played.setdefault(m, set()).add(k)
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
            f"Grids per method, cut from the paper's {PAPER_GRIDS} for time: {cut}. The default "
            f"main job's grids per method, {_by_count(_default_counts())}, are meant to take "
            "at most 45 minutes on 2 CPU cores, training included (its measured wall time is "
            "in the README; the per-grid costs in docs/evaluation.md). More: bcosnet main "
            "--grids / --grids-per-method (MainConfig.grids / grids_per_method).")
    fewer, loops = _per_network_notes(pg)
    lines += _merged(fewer) + _merged(loops)
    if pg:
        lines.append(f"The pointing game took {pg_seconds:.0f} s in this invocation "
                     f"({cfg.processes_text()}; 0 when every method was already finished).")
    return "\n\n".join(lines)


def _accuracy_rows(runs: Mapping[str, Mapping[str, Any]], models: Mapping[str, torch.nn.Module],
                   acc: Mapping[str, float]) -> list[dict[str, Any]]:
    return [{"network": name, "model": runs[name]["model"],
             "parameters": sum(p.numel() for p in model.parameters()),
             "test accuracy (%)": round(100 * acc[name], 2), "epochs": runs[name]["epochs"],
             "training time (s)": runs[name]["train_time_s"]}
            for name, model in models.items()]


def write_main_report(cfg: MainConfig, out: Path, *, runs: Mapping[str, Mapping[str, Any]],
                      models: Mapping[str, torch.nn.Module], acc: Mapping[str, float],
                      pg: PointingGameStage, figures: list[tuple[str, Path]],
                      panel: tuple[str, Path] | None, wall_s: float) -> Path:
    """Write ``report.html``/``.md``/``.json`` and ``results.json`` into ``out``;
    returns the HTML report's path."""
    from ..evaluation import Report, compare_localisation, write_report

    fmnist = cfg.dataset == "fashion-mnist"
    data_text = ("Fashion-MNIST (Debian package dataset-fashion-mnist)" if fmnist
                 else f"the {cfg.dataset} data set")
    capped = f", capped at {cfg.max_steps} optimiser steps" if cfg.max_steps is not None else ""
    comparison = compare_localisation(pg.results)
    report = Report(
        title="bcosnet main job: B-cos network on " + ("Fashion-MNIST" if fmnist else cfg.dataset),
        headline=comparison.headline if comparison is not None else "",
        text=(f"A B-cos network for 28×28 grey images and its conventional twin, each trained "
              f"for {cfg.epochs} epoch(s) from seed {cfg.seed}{capped} on {data_text}, "
              + _TEXT + (CONVERGED_FMNIST if fmnist else "")),
        metadata={
            "data set": cfg.dataset,
            "training epochs per network": cfg.epochs
            if cfg.max_steps is None else f"{cfg.epochs} (at most {cfg.max_steps} steps)",
            "pointing game": f"{cfg.grid_n}×{cfg.grid_n} grids, grids per method in the table",
            "confidence threshold": cfg.confidence_threshold,
            "seed": cfg.seed,
            "processes": cfg.processes_text(),
            "torch": torch.__version__,
            "wall time of this invocation (s)": round(wall_s, 1),
        },
        accuracy=_accuracy_rows(runs, models, acc),
        pointing_game=pg.results,
        pointing_game_text="\n\n".join([*pg.notes, cuts_text(cfg, pg.results, pg.seconds)]),
        pointing_game_figures=[panel] if panel is not None else [],
        figures=figures,
    )
    files = write_report(out, report)
    atomic_write_json(out / "results.json", {
        "accuracy": dict(acc), "runs": dict(runs),
        "pointing_game": {k: {m: s.to_dict() for m, s in v.summary().items()}
                          for k, v in pg.results.items()},
        "pointing_game_grids": {k: v.grids_per_method for k, v in pg.results.items()},
        "pointing_game_settings": {k: v.settings for k, v in pg.results.items()},
        "config": dataclasses.asdict(cfg)}, indent=2)
    return Path(files.html)
