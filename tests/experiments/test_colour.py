"""The colour study (experiments/colour.py): its data, its measures, and an end-to-end
``--quick`` run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bcosnet.explanations.colour import hue_of
from experiments import colour as study


def test_hsv_to_rgb_round_trips_with_hue_of():
    h = np.linspace(0, 359, 50)
    rgb = study.hsv_to_rgb(h, np.ones(50), np.ones(50))
    hue, chroma = hue_of(rgb)
    np.testing.assert_allclose(hue, h, atol=1e-9)
    np.testing.assert_allclose(chroma, 1.0)


def test_hue_family_is_the_nearest_centre():
    h = np.random.default_rng(0).uniform(0, 360, 500)
    centres = np.array([0.0, 120.0, 240.0])
    d = np.abs((h[:, None] - centres[None]) % 360)
    nearest = np.minimum(d, 360 - d).argmin(1)
    np.testing.assert_array_equal(study.hue_family(h), nearest)


def test_colourise_tints_garment_and_labels_garment_by_hue():
    img = np.zeros((40, 4, 4), np.uint8)
    img[:, 1:3, 1:3] = 255
    garments = np.arange(40) % 10
    d = study.colourise(img, garments, seed=0, grey_fraction=1.0)
    assert d.images.shape == (40, 3, 4, 4) and d.images.dtype == torch.uint8
    hue, _ = hue_of(d.images[:, :, 1, 1].numpy() / 255.0)
    err = np.abs(hue - d.hues) % 360
    assert np.minimum(err, 360 - err).max() < 1.5  # uint8 rounding of a saturated tint
    torch.testing.assert_close(d.images[:, :, 0, 0], torch.full((40, 3), 128, dtype=torch.uint8))
    # class = garment·3 + family, family = the nearest of red/green/blue in hue
    fam = np.array([min(range(3), key=lambda k: min(abs(h - 120 * k) % 360,
                                                    360 - abs(h - 120 * k) % 360))
                    for h in d.hues])
    np.testing.assert_array_equal(d.labels.numpy(), garments * 3 + fam)
    assert len(d.classes) == 30 and d.classes[3 * 2 + 1] == "Pullover, green"
    c = d.relabel("garment")
    np.testing.assert_array_equal(c.labels.numpy(), garments)
    assert c.images is d.images and len(c.classes) == 10
    # deterministic from the seed
    torch.testing.assert_close(study.colourise(img, garments, seed=0, grey_fraction=1.0).images,
                               d.images)


def test_colourise_refuses_bad_input():
    with pytest.raises(ValueError, match="uint8"):
        study.colourise(np.zeros((2, 4, 4), np.float32), np.zeros(2), seed=0)
    with pytest.raises(ValueError, match="label_mode"):
        study.colourise(np.zeros((2, 4, 4), np.uint8), np.zeros(2), seed=0, label_mode="hue")


def test_value_stats_from_the_definition():
    rng = np.random.default_rng(1)
    pix = rng.uniform(size=1000)
    s = study.value_stats(pix + 0.1, pix)
    assert s["mean_abs"] == pytest.approx(0.1)
    assert s["correlation"] == pytest.approx(1.0)
    # independent uniforms: E|U − V| = 1/3
    assert s["mean_abs_shuffled"] == pytest.approx(np.abs(pix + 0.1 - pix[
        np.random.default_rng(0).permutation(1000)]).mean())
    assert 0.25 < s["mean_abs_shuffled"] < 0.45
    with pytest.raises(ValueError):
        study.value_stats(pix, pix[:-1])


def test_default_scale_follows_the_table():
    for b, s in study.SCALE_BY_B.items():
        assert study.default_scale(b) == pytest.approx(s)
    assert 100 < study.default_scale(2.25) < 300


def test_quick_run_end_to_end(tmp_path):
    out = tmp_path / "colour"
    threads = torch.get_num_threads()
    assert study.main(["--quick", "--out", str(out), "--threads", "1", "--no-progress"]) == 0
    # process-wide state is restored: subnormal floats exist again, thread count as before
    assert (torch.tensor([1e-300], dtype=torch.float64) * 1e-10).item() != 0.0
    assert torch.get_num_threads() == threads
    res = json.loads((out / "results.json").read_text())
    assert set(res["runs"]) == {"hue-b2", "control-b2"}
    for r in res["runs"].values():
        for m in [r["untrained"], r["final"], *r["curve"]]:
            assert 0 <= m["garment"] <= 180 and 0 <= m["chance"] <= 180 and m["n_images"] > 0
        assert r["curve"][0]["step"] == 8 and r["steps"] == 16  # 1000 images / 64
        assert 0 <= r["value"]["mean_abs"] <= 1
        assert (out / "runs" / f"hue-b{r['b']:g}" / "checkpoint.pt").is_file()
    assert res["runs"]["hue-b2"]["classes"] == 30 and res["runs"]["control-b2"]["classes"] == 10
    g = res["grey"]["value"]
    assert 0 < g["n_images"] <= 30 and -1 <= g["correlation"] <= 1
    for f in ("results.md", "examples-hue-b2.png", "examples-control-b2.png",
              "fig_a3_grey.png"):
        assert (out / f).is_file(), f
