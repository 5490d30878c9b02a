"""Behaviour kept across refactors: the main job's pointing-game scores and test
accuracies of two small Fashion-MNIST networks, recorded by commit ce6e7d6
(tests/assets/behaviour_ce6e7d6/, made by its make_fixture.py), replayed with
today's code on the same weights and the same grids.  Same settings as the main
job: every method, its per-method settings, channels-last, 3×3 grids."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bcosnet.data import build_datasets
from bcosnet.evaluation import grid_pointing_game
from bcosnet.evaluation.accuracy import accuracy
from bcosnet.evaluation.pointing_game import GridDataset
from bcosnet.pipeline import METHOD_SETTINGS
from bcosnet.training import load_checkpoint_model

ASSETS = Path(__file__).parent / "assets" / "behaviour_ce6e7d6"
EXPECTED = json.loads((ASSETS / "expected.json").read_text())


@pytest.fixture(scope="module")
def fmnist_test():
    return build_datasets("fashion-mnist", augment=False).test


@pytest.mark.parametrize("network", ["bcos", "standard"])
def test_scores_and_accuracy_equal_those_of_ce6e7d6(network, fmnist_test, tmp_path):
    want = EXPECTED["networks"][network]
    model = load_checkpoint_model(ASSETS / want["weights"])
    acc = accuracy(model, fmnist_test, batch_size=500)
    assert acc.top1 == pytest.approx(want["top1"], abs=1e-6)
    np.testing.assert_allclose(acc.per_class, want["per_class"], atol=1e-6)

    grids = GridDataset.from_dict(json.loads((ASSETS / f"grids_{network}.json").read_text()),
                                  fmnist_test)
    model = model.to(memory_format=torch.channels_last)
    methods = want["methods"]
    res = grid_pointing_game(
        model, grids, methods, method_settings={m: s for m, s in METHOD_SETTINGS.items()
                                                if m in methods},
        results_dir=tmp_path, progress=False)
    assert res.classes.tolist() == want["classes"]
    assert sorted(res.scores) == sorted(want["scores"])
    for m, scores in want["scores"].items():
        np.testing.assert_allclose(res.scores[m], np.asarray(scores), atol=1e-6, rtol=0,
                                   err_msg=f"{network} network, method {m}")
