"""Scaled-down colour-fidelity experiment (the full one: scripts/colour_fidelity.py).

A B-cos network trained on Fashion-MNIST garments tinted with random hues
(independent of the class) explains its decisions in the garment's colour:
the hue decoded by ``to_rgba`` at positively contributing garment pixels
matches the true tint far better than chance (90°).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "colour_fidelity.py"


@pytest.fixture(scope="module")
def cf():
    spec = importlib.util.spec_from_file_location("colour_fidelity", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["colour_fidelity"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_hsv_to_rgb_round_trips_with_hue_of(cf):
    from bcosnet.explanations.colour import hue_of

    h = np.linspace(0, 359, 50)
    rgb = cf.hsv_to_rgb(h, np.ones(50), np.ones(50))
    hue, chroma = hue_of(rgb)
    np.testing.assert_allclose(hue, h, atol=1e-9)
    np.testing.assert_allclose(chroma, 1.0)


def test_colourise_tints_garment_with_its_hue(cf):
    from bcosnet.explanations.colour import hue_of

    img = np.zeros((2, 4, 4), np.uint8)
    img[:, 1:3, 1:3] = 255
    d = cf.colourise(img, np.array([0, 1]), seed=0, grey_fraction=1.0)
    assert d.images.shape == (2, 3, 4, 4)
    hue, _ = hue_of(d.images[:, :, 1, 1].numpy())
    np.testing.assert_allclose(hue, d.hues, atol=1e-3)
    torch.testing.assert_close(d.images[:, :, 0, 0], torch.full((2, 3), 0.5))


@pytest.mark.slow
def test_trained_bcos_net_decodes_garment_tint(cf):
    torch.manual_seed(0)
    tr_img, tr_lab = cf.load_fashion_mnist("train")
    te_img, te_lab = cf.load_fashion_mnist("test")
    train_set = cf.colourise(tr_img[:10000], tr_lab[:10000], seed=0)
    test_set = cf.colourise(te_img[:400], te_lab[:400], seed=1)
    import bcosnet

    model = bcosnet.create_model("fmnist_bcos", num_classes=10, in_channels=3, width=8)
    before = cf.measure(model, test_set, max_images=200, correct_only=False, progress=False)
    cf.train(model, train_set, epochs=1, batch_size=64, lr=2e-3, progress=False)
    after = cf.measure(model, test_set, max_images=200, correct_only=False, progress=False)
    # Short training (≈ 160 steps, ~40% accuracy): the decoded garment hue is within
    # 30° of the tint on average, where chance is ~90° and the untrained net ~50°.
    # (Measured: 52° → 26° for this seed.  Longer training erodes it: docs/explanations.md.)
    assert after.chance > 70
    assert after.garment <= 30, (before.garment, after.garment)
    assert after.garment < before.garment - 10
