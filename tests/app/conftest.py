"""A small main job's folder for the app's tests, built once per test session
(shared by the pytest-xdist workers through a file lock): two networks trained
for 10 steps on Fashion-MNIST by the library's trainer (their checkpoints
carry the model record), their pointing games on two 3×3 grids played by the
library's game, and a saved ``bcosnet neurons`` run."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

#: Methods the fixture's pointing games play (a few: the view shows what was played).
BCOS_METHODS = ["bcos", "ixg", "gradcam", "occlusion"]
TWIN_METHODS = ["ixg", "gradcam"]
NEURON_LAYER, NEURON_CHANNELS = "features.2", "0-2"


def _train(preset: str, out: Path) -> Path:
    from bcosnet.training import get_preset, train

    cfg = get_preset(preset)
    cfg = dataclasses.replace(
        cfg, model=dataclasses.replace(cfg.model, options={**cfg.model.options, "width": 4}),
        optim=dataclasses.replace(cfg.optim, batch_size=64), max_steps=10, out_dir=str(out),
        progress=False, ema_decay=None, threads=None)
    return Path(train(cfg).checkpoint)


def _grids(test, n: int = 3, count: int = 2):
    """``count`` grids of n² distinct classes, the first test images of each class
    (the app shows any grid set; the game's own rule picks correct, confident ones)."""
    from bcosnet.evaluation.pointing_game import GridDataset

    labels = torch.as_tensor(test.targets)
    cells = []
    for g in range(count):
        classes = [(c + g) % 10 for c in range(n * n)]
        cells.append([int((labels == c).nonzero()[g]) for c in classes])
    idx = torch.tensor(cells)
    return GridDataset(source=test, n=n, source_indices=idx, classes=labels[idx],
                       confidences=torch.zeros(idx.shape, dtype=torch.float64),
                       cell_size=(28, 28), requested=count, confidence_threshold=None)


def build_main_folder(root: Path) -> Path:
    """The folder ``root`` laid out as ``bcosnet main`` writes it (the parts the app reads)."""
    from bcosnet.cli import main as cli_main
    from bcosnet.evaluation.pointing_game import grid_pointing_game
    from bcosnet.training import load_checkpoint_model

    torch.manual_seed(0)
    ckpts = {"bcos": _train("fmnist", root / "bcos"),
             "standard": _train("fmnist-standard", root / "standard")}
    from bcosnet.data import datasets_for

    for net, methods in (("bcos", BCOS_METHODS), ("standard", TWIN_METHODS)):
        model = load_checkpoint_model(ckpts[net])
        grids = _grids(datasets_for(model).test)
        folder = root / "pointing_game" / net
        settings = {"occlusion": {"patch_size": 7, "stride": 7}} if "occlusion" in methods \
            else None
        grid_pointing_game(model, grids, methods, results_dir=folder, progress=False,
                           method_settings=settings)
        # the game saves a grid set it made itself; this one is saved as the main job's is
        if not (folder / "grids.json").is_file():
            (folder / "grids.json").write_text(json.dumps(grids.to_dict()))
    rc = cli_main(["neurons", "--checkpoint", str(ckpts["bcos"]), "--layer", NEURON_LAYER,
                   "--channels", NEURON_CHANNELS, "--limit", "300", "--top", "8",
                   "--images-per-neuron", "2", "--out", str(root / "neurons")])
    assert rc == 0
    (root / "ready").write_text("ok")
    return root


@pytest.fixture(scope="session")
def main_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared folder (built by the first worker that asks; the others wait)."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    shared = base.parent if base.name.startswith("popen-gw") else base
    root = shared / "app-main-folder"
    with FileLock(str(shared / "app-main-folder.lock")):
        if not (root / "ready").is_file():
            build_main_folder(root)
    return root
