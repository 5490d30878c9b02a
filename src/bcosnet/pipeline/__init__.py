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
   the paper's 500 grids per method (``grids`` / ``grids_per_method`` cut them; the
   report then says so), plus a Fig. A2-style
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
  differ is refused (:class:`MainSettingsError`, a
  :class:`~bcosnet._utils.store.SettingsMismatchError` whose ``differences``
  name each setting, then and now): use another ``out_dir`` or delete the
  folder.  A network trained for a wall-clock budget by an earlier version of
  the main job is refused with that reason;
* accuracy, figures and the panel: items of the result store ``stages/``, keyed
  by a fingerprint of the networks' checkpoint files (and the data set / grid
  file); recomputed when it differs;
* the pointing game: each network's folder is a result store keyed by the
  network and the grid settings, each method an item keyed by its settings;
  other ``grid_n`` / ``confidence_threshold`` / method settings are refused with
  the folder to delete.  More or fewer grids remake the grid set (the old grids
  are a prefix of the new ones).

The output folder is locked while the job runs (a second job on it is refused).

The package's modules: :mod:`.config` (settings, methods, grid counts and the
measured costs), :mod:`.workers` (the worker pool), :mod:`.stages` (training and
the cached stages), :mod:`.pointing_game` (the pointing-game stage),
:mod:`.report` (report assembly) and :mod:`.run` (the order of it all).
"""

from .config import (
    ALL_METHODS,
    BCOS_METHODS,
    COSTS,
    DEFAULT_EPOCHS,
    DEFAULT_GRIDS,
    DEFAULT_GRIDS_PER_METHOD,
    METHOD_SETTINGS,
    PAPER_GRIDS,
    PERTURBATION_METHODS,
    STANDARD_METHODS,
    MainConfig,
    MeasuredCosts,
    method_settings_for,
)
from .run import run_main
from .stages import MainSettingsError
from .workers import WorkerPool

__all__ = [
    "ALL_METHODS",
    "BCOS_METHODS",
    "COSTS",
    "DEFAULT_EPOCHS",
    "DEFAULT_GRIDS",
    "DEFAULT_GRIDS_PER_METHOD",
    "METHOD_SETTINGS",
    "PAPER_GRIDS",
    "PERTURBATION_METHODS",
    "STANDARD_METHODS",
    "MainConfig",
    "MainSettingsError",
    "MeasuredCosts",
    "WorkerPool",
    "method_settings_for",
    "run_main",
]
