"""The main job's settings (:class:`MainConfig`), its methods and grid counts, and
the measured costs it plans with — as data, each with where it was measured."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .._utils.validate import check_int
from ..training.distributed import pick_device

__all__ = ["ALL_METHODS", "BCOS_METHODS", "COSTS", "DEFAULT_EPOCHS", "DEFAULT_GRIDS",
           "DEFAULT_GRIDS_PER_METHOD", "METHOD_SETTINGS", "PAPER_GRIDS", "PERTURBATION_METHODS",
           "STANDARD_METHODS", "MainConfig", "MeasuredCosts", "method_settings_for"]

#: Every method of the paper's comparison (Figs. B1/B2): 9 on the B-cos network,
#: the 8 post-hoc ones on the conventional twin.
ALL_METHODS = ("bcos", "grad", "ixg", "intgrad", "deeplift", "gradcam", "occlusion", "rise", "lime")
BCOS_METHODS = ALL_METHODS
STANDARD_METHODS = tuple(m for m in ALL_METHODS if m != "bcos")
#: One set of 441–500 perturbed forward passes per grid (shared by its 9 cells).
PERTURBATION_METHODS = ("occlusion", "rise", "lime")
#: Grids per method in the paper.
PAPER_GRIDS = 500
#: The main job's grid counts: the paper's 500 grids for every method.  The default
#: main job plays them within 45 minutes on 2 CPU cores (docs/evaluation.md, "Cost
#: per grid", gives the profile and the timed runs); ``grids_per_method`` cuts
#: single methods (``--grids-per-method``).
DEFAULT_GRIDS = PAPER_GRIDS
DEFAULT_GRIDS_PER_METHOD: dict[str, int] = {}
#: Training epochs of each network in the main job.  Both networks train alike (as in
#: the paper: same data, optimiser, schedule and epochs).  In the timed default main
#: job of commit 448007f (2 idle cores, one worker thread each, side by side) the 6
#: epochs took 354 s (B-cos net) and 228 s (twin) of training, and the whole job 43.5
#: minutes with the paper's 500 grids of every method (docs/evaluation.md).
DEFAULT_EPOCHS = 6
#: Per-method settings for 28 px images: quickshift's default max_dist (200) cuts a
#: 56 px grid of Fashion-MNIST images into 5–9 super-pixels, too few for LIME's
#: top 5; max_dist 4 gives 29–42.  Occlusion: 4 px patches, stride 4.  Batch sizes
#: (the same results up to float rounding): on one CPU thread, as each main-job
#: worker runs, small batches of 84 px images stay in the cache — a channels-last
#: forward pass costs 2.5–2.6 ms per image in batches of 8–16 against 4.0 ms in
#: batches of 64 (B-cos net; twin 1.1 vs 1.9 ms), so the perturbation methods take
#: 16 images per pass and IntGrad 10 path images per pass
#: (benchmarks/bench_batch_sizes.py, docs/evaluation.md "Cost per grid": occlusion
#: 1.78 → 1.18 s, RISE 2.07 → 1.37 s, LIME 2.14 → 1.42 s, IntGrad 1.98 → 1.87 s per
#: grid on the B-cos net).
METHOD_SETTINGS: dict[str, dict[str, Any]] = {
    "intgrad": {"batch_size": 10},
    "lime": {"max_dist": 4, "batch_size": 16},
    "occlusion": {"patch_size": 4, "stride": 4, "batch_size": 16},
    "rise": {"batch_size": 16},
}


def method_settings_for(methods: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The entries of :data:`METHOD_SETTINGS` for ``methods`` (the main job's, and
    ``bcosnet evaluate``'s, per-method settings)."""
    return {m: dict(s) for m, s in METHOD_SETTINGS.items() if m in methods}


@dataclass(frozen=True)
class MeasuredCosts:
    """What the main job's work costs, as measured (never a result it reports as its
    own): it hands out the longest pointing-game jobs first with these, so that the
    workers finish together.

    Attributes:
        seconds_per_grid: seconds per 3×3 grid of the slow methods on the B-cos
            network (all 9 cells in one call, in a 1-thread worker).
        other_seconds_per_grid: the same for every other method (≈ 0.005–0.07 s).
        network_factor: a network's cost relative to the B-cos network's.
        source: where the figures were measured.
    """

    seconds_per_grid: Mapping[str, float]
    other_seconds_per_grid: float
    network_factor: Mapping[str, float]
    source: str

    def job_seconds(self, network: str, method: str, grids: int) -> float:
        """The estimated seconds of one pointing-game job (a method on a network)."""
        return (grids * self.network_factor.get(network, 1.0)
                * self.seconds_per_grid.get(method, self.other_seconds_per_grid))


COSTS = MeasuredCosts(
    seconds_per_grid={"intgrad": 1.81, "rise": 1.25, "lime": 1.26, "occlusion": 1.14},
    other_seconds_per_grid=0.04,
    network_factor={"B-cos": 1.0, "standard": 0.48},
    source="docs/evaluation.md, 'Cost per grid, and the main job's budget': seconds per "
           "grid in the two 1-thread workers of the timed default main job of commit "
           "b31d917 (2026-12-05, idle cores)",
)


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
            ``grids_per_method`` overrides it per method (default: none);
            ``grid_n``: cells per side (3).
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
        device: where both networks are trained and evaluated (accuracy, explanations,
            pointing game — the evaluation functions of ``bcosnet evaluate``, on that
            device): ``"cpu"``, ``"cuda"`` (every worker process on this machine's first
            GPU), ``"cuda:N"`` or ``"auto"``; None (default): training on a GPU when one
            is visible (the presets' rule), evaluation on the CPU.
        progress: tqdm progress bars.
        train_overrides: training-config fields set on both networks' presets.
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
    device: str | None = None
    progress: bool = True
    train_overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_int("workers", self.workers, 1)
        check_int("epochs", self.epochs, 1)
        if self.device is not None:
            pick_device(self.device)  # a GPU asked for where none is visible: said now

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

    def processes_text(self) -> str:
        """``"2 worker processes of 1 thread(s)"`` / ``"one process, 2 threads"``."""
        if self.workers <= 1:
            return "one process" + (f", {self.threads} threads" if self.threads else "")
        return f"{self.workers} worker processes of {self.worker_threads()} thread(s)"
