"""bcosnet.interop.quantus_explain_func in Quantus's metrics, on a trained Fashion-MNIST
B-cos network: Quantus's own explain as the reference for the conventions, four metric
families through the adapter, and the two places where a Quantus metric and ours measure
the same thing (localisation on grids, deletion = pixel flipping) agreeing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import bcosnet
from bcosnet.evaluation import deletion_insertion, grid_pointing_game
from bcosnet.interop import quantus_explain_func

quantus = pytest.importorskip("quantus")  # a test dependency (pyproject: the test extra)

QUIET = {"disable_warnings": True, "display_progressbar": False}
#: Fast settings of the slower methods on 28 px images.
FAST = {"intgrad": {"n_steps": 4}, "occlusion": {"patch_size": 7, "stride": 7},
        "rise": {"n_masks": 16}, "lime": {"n_samples": 16, "max_dist": 4}}


@pytest.mark.parametrize(("ours", "theirs"), [("grad", "Gradient"), ("ixg", "InputXGradient")])
def test_maps_equal_quantus_own_explain(ours, theirs, trained_bcos, correct_batch):
    """Same shape, dtype and values as ``quantus.explain`` (Captum inside) gives."""
    x, y = (t.numpy() for t in correct_batch)
    want = quantus.explain(trained_bcos, x, y, method=theirs, channel_first=True)
    got = quantus_explain_func(ours)(model=trained_bcos, inputs=x, targets=y, device="cpu")
    assert got.shape == want.shape == (8, 1, 28, 28) and got.dtype == np.float32
    assert np.abs(want).max() > 1e-3
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_bcos_maps_are_the_explanation(trained_bcos, correct_batch):
    x, y = correct_batch
    ex = bcosnet.explain(trained_bcos, x, y)
    fn = quantus_explain_func("bcos")
    per_pixel = fn(model=trained_bcos, inputs=x.numpy(), targets=y.numpy())
    np.testing.assert_allclose(per_pixel[:, 0], ex.contributions[:, 0].numpy(), atol=1e-6)
    # channels kept: the encoded [x, 1 - x] halves added per raw channel; the sum is the logit
    kept = fn(model=trained_bcos, inputs=x.numpy(), targets=y.numpy(), reduce_axes=())
    full = ex.contributions_full[:, 0].numpy()  # N×2×H×W
    np.testing.assert_allclose(kept[:, 0], full[:, 0] + full[:, 1], atol=1e-6)
    np.testing.assert_allclose(kept.sum((1, 2, 3)), (ex.logits - ex.bias)[:, 0].numpy(),
                               rtol=1e-4, atol=1e-4)
    # channel-last in, channel-last out; one int target for all
    last = fn(model=trained_bcos, inputs=x.permute(0, 2, 3, 1).numpy(), targets=int(y[0]),
              channel_first=False)
    want = bcosnet.explain(trained_bcos, x, int(y[0])).contributions[:, 0]
    np.testing.assert_allclose(last[..., 0], want.numpy(), atol=1e-6)


def test_rgb_maps_per_channel_and_per_pixel():
    """An RGB B-cos model explains 6 encoded channels: kept per image channel (c and
    c + 3 added) they are N×3×H×W like the images; Quantus takes the per-pixel default
    (N×1×H×W) for RGB images too."""
    torch.manual_seed(0)
    model = bcosnet.create_model("fmnist_bcos", width=4, in_channels=3).eval()
    x = torch.rand(2, 3, 28, 28)
    full = bcosnet.explain(model, x, [1, 2]).contributions_full[:, 0].numpy()  # 2×6×28×28
    fn = quantus_explain_func("bcos")
    kept = fn(model=model, inputs=x.numpy(), targets=np.array([1, 2]), reduce_axes=())
    np.testing.assert_allclose(kept, full[:, :3] + full[:, 3:], atol=1e-6)
    scores = quantus.Sparseness(abs=True, **QUIET)(
        model=model, x_batch=x.numpy(), y_batch=np.array([1, 2]), a_batch=None,
        explain_func=fn, channel_first=True)
    given = quantus.Sparseness(abs=True, **QUIET)(
        model=model, x_batch=x.numpy(), y_batch=np.array([1, 2]),
        a_batch=full.sum(1, keepdims=True), channel_first=True)
    np.testing.assert_allclose(scores, given, atol=1e-6)


def test_bad_use_is_named():
    with pytest.raises(ValueError, match="did you mean 'intgrad'"):
        quantus_explain_func("intgrd")
    with pytest.raises(TypeError, match="it accepts: n_steps"):
        quantus_explain_func("intgrad", nsteps=4)
    with pytest.raises(TypeError, match="explain_func_kwargs method"):
        quantus_explain_func("bcos")(model=torch.nn.Identity(), inputs=np.zeros((1, 1, 4, 4)),
                                     targets=[0], method="Saliency")
    with pytest.raises(TypeError, match="class indices"):
        quantus_explain_func("bcos")(model=torch.nn.Identity(), inputs=np.zeros((1, 1, 4, 4)),
                                     targets=np.array([0.5]))


@pytest.mark.parametrize("method", bcosnet.attribution.available())
def test_every_method_through_a_quantus_metric(method, trained_bcos, correct_batch):
    """Quantus's Sparseness of the maps the adapter computes equals Sparseness of the
    method's own maps (summed over channels) handed over as ``a_batch``."""
    x, y = correct_batch[0][:4], correct_batch[1][:4]
    settings = FAST.get(method, {})
    metric = quantus.Sparseness(abs=True, **QUIET)
    torch.manual_seed(0)  # rise and lime draw masks / samples
    through = metric(model=trained_bcos, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=None,
                     explain_func=quantus_explain_func(method, **settings), device="cpu")
    torch.manual_seed(0)
    maps = bcosnet.attribution.get(method, trained_bcos, **settings).attribute(x, y)
    given = metric(model=trained_bcos, x_batch=x.numpy(), y_batch=y.numpy(),
                   a_batch=maps.sum(1, keepdim=True).numpy())
    assert all(0 < s < 1 for s in through)
    np.testing.assert_allclose(through, given, atol=1e-6)


def test_localisation_equals_our_grid_pointing_game(trained_bcos, grids, tmp_path):
    """Quantus's AttributionLocalisation (positive mass in the cell / positive mass in
    the grid) through the adapter = bcosnet's grid pointing game, per cell.
    Tolerance 1e-5: float32 maps, computed one cell at a time (Quantus) and all cells in
    one call (ours)."""
    n_cells = grids.n ** 2
    ours = grid_pointing_game(trained_bcos, grids, ["bcos", "ixg"], results_dir=tmp_path,
                              progress=False)
    x = grids.images.repeat_interleave(n_cells, 0).numpy()
    y = grids.classes.reshape(-1).numpy()
    masks = np.zeros((len(y), 1, *x.shape[-2:]))
    for i, (top, left, bottom, right) in enumerate(grids.boxes.tolist() * len(grids)):
        masks[i, 0, top:bottom, left:right] = 1
    metric = quantus.AttributionLocalisation(positive_attributions=True, abs=False,
                                             normalise=False, weighted=False, max_size=1e9,
                                             **QUIET)
    for method in ("bcos", "ixg"):
        theirs = metric(model=trained_bcos, x_batch=x, y_batch=y, a_batch=None, s_batch=masks,
                        explain_func=quantus_explain_func(method), channel_first=True)
        np.testing.assert_allclose(theirs, ours.scores[method].reshape(-1), rtol=0, atol=1e-5,
                                   err_msg=method)
    # what the paper reports: the B-cos explanation localises better than Input×Gradient
    assert ours.scores["bcos"].mean() > ours.scores["ixg"].mean() + 0.1


def test_pixel_flipping_equals_our_deletion(trained_bcos, correct_batch):
    """Quantus's PixelFlipping (black = 0, 49 pixels a step, logits) through the adapter
    = bcosnet's deletion curve with 16 steps of 49 pixels, ``output="logit"`` (Quantus's
    curve starts after the first step).  Tolerance 1e-4 (float32 logits)."""
    x, y = correct_batch
    metric = quantus.PixelFlipping(features_in_step=49, perturb_baseline=0.0, normalise=False,
                                   abs=False, **QUIET)
    theirs = np.asarray(metric(model=trained_bcos, x_batch=x.numpy(), y_batch=y.numpy(),
                               a_batch=None, explain_func=quantus_explain_func("bcos"),
                               softmax=False, channel_first=True))
    maps = bcosnet.explain(trained_bcos, x, y).contributions[:, 0]
    ours = deletion_insertion(trained_bcos, x, maps, y, steps=16, output="logit",
                              modes=("deletion",))
    assert theirs.shape == (8, 16)
    np.testing.assert_allclose(theirs, ours.deletion[:, 1:].numpy(), rtol=0, atol=1e-4)
    assert (ours.deletion[:, 0] > ours.deletion[:, -1]).all()  # deleting the evidence hurts


def test_faithfulness_and_robustness_metrics(trained_bcos, correct_batch):
    """FaithfulnessCorrelation (seeded subsets) gives the same scores through the adapter
    as with the explanation as ``a_batch``; MaxSensitivity needs explanations of
    perturbed inputs, which only the adapter can give: tiny noise moves the B-cos
    explanation little, larger noise more."""
    x, y = (t.numpy() for t in correct_batch)
    kw = {"model": trained_bcos, "x_batch": x, "y_batch": y, "channel_first": True}
    fc = quantus.FaithfulnessCorrelation(nr_runs=10, subset_size=49, perturb_baseline=0.0,
                                         normalise=False, return_aggregate=False, **QUIET)
    np.random.seed(0)
    through = fc(**kw, a_batch=None, explain_func=quantus_explain_func("bcos"))
    np.random.seed(0)
    maps = bcosnet.explain(trained_bcos, torch.as_tensor(x), torch.as_tensor(y)).contributions
    given = fc(**kw, a_batch=maps[:, :1].numpy())
    np.testing.assert_allclose(through, given, atol=1e-6)
    assert np.mean(through) > 0  # removing what the map marks lowers the score

    def sensitivity(bound: float) -> np.ndarray:
        np.random.seed(0)
        ms = quantus.MaxSensitivity(nr_samples=3, lower_bound=bound, normalise=False, **QUIET)
        return np.asarray(ms(**kw, a_batch=None, explain_func=quantus_explain_func("bcos")))

    small, large = sensitivity(1e-4), sensitivity(0.2)
    assert (small < 0.05).all() and (large > 5 * small).all()
