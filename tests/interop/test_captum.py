"""bcosnet.interop.BcosAttribution, the B-cos explanation as a Captum Attribution:
equal to bcosnet.explain, smoothed by Captum's NoiseTunnel exactly as a hand-rolled
average of explain over the same noise, drawn by Captum's visualization and scored by
Captum's sensitivity metric."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
import torch
from captum.attr import NoiseTunnel, visualization
from captum.metrics import sensitivity_max

import bcosnet
from bcosnet.interop import BcosAttribution

matplotlib.use("Agg")


def folded(ex: bcosnet.Explanation) -> torch.Tensor:
    """N×T×1×H×W: the encoded grey input's two channels ([x, 1 - x]) added."""
    full = ex.contributions_full
    return full[:, :, :1] + full[:, :, 1:]


def test_attribute_equals_explain(trained_bcos, correct_batch):
    x, y = correct_batch
    ex = bcosnet.explain(trained_bcos, x, y)
    attr = BcosAttribution(trained_bcos)
    got = attr.attribute(x, target=y)
    assert got.shape == x.shape  # Captum's convention: shaped like the inputs
    torch.testing.assert_close(got, folded(ex)[:, 0], rtol=0, atol=1e-6)
    torch.testing.assert_close(got.sum((1, 2, 3)), (ex.logits - ex.bias)[:, 0],
                               rtol=1e-4, atol=1e-4)  # the map sums to the logit
    encoded = BcosAttribution(trained_bcos, channels="encoded").attribute(x, target=y)
    torch.testing.assert_close(encoded, ex.contributions_full[:, 0], rtol=0, atol=1e-6)
    # a list target, a one-element tensor (Captum: the same class for all), a 1-tuple
    assert torch.equal(attr.attribute(x, target=y.tolist()), got)
    one = attr.attribute((x,), target=torch.tensor([3]))
    assert isinstance(one, tuple) and len(one) == 1
    torch.testing.assert_close(one[0], folded(bcosnet.explain(trained_bcos, x, 3))[:, 0],
                               rtol=0, atol=1e-6)
    # T classes per image
    two = torch.stack([y, (y + 1) % 10], 1)
    torch.testing.assert_close(attr.attribute(x, target=two),
                               folded(bcosnet.explain(trained_bcos, x, two)), rtol=0, atol=1e-6)
    assert attr.multiplies_by_inputs and not attr.has_convergence_delta()


def test_refused_uses_name_the_fix(trained_bcos, tiny_twin, correct_batch):
    x, _ = correct_batch
    with pytest.raises(ValueError, match="target is required"):
        BcosAttribution(trained_bcos).attribute(x)
    with pytest.raises(ValueError, match="ixg"):  # a conventional network has no W(x)
        BcosAttribution(tiny_twin)
    with pytest.raises(ValueError, match="'raw', 'encoded'"):
        BcosAttribution(trained_bcos, channels="rgb")
    with pytest.raises(TypeError, match="additional_forward_args"):
        BcosAttribution(trained_bcos).attribute(x, target=0, additional_forward_args=(1,))


@pytest.mark.parametrize("nt_type", ["smoothgrad", "vargrad"])
def test_noise_tunnel_is_the_average_of_explain_over_the_same_noise(
        nt_type, trained_bcos, correct_batch):
    x, y = correct_batch[0][:4], correct_batch[1][:4]
    n, k, sigma = x.shape[0], 5, 0.1
    torch.manual_seed(7)
    smooth = NoiseTunnel(BcosAttribution(trained_bcos)).attribute(
        x, nt_type=nt_type, nt_samples=k, stdevs=sigma, target=y)
    # by hand: Captum draws one N·k batch of N(0, σ²) noise, image i's copies adjacent
    torch.manual_seed(7)
    noisy = x.repeat_interleave(k, 0) + torch.normal(0, torch.full((n * k, *x.shape[1:]), sigma))
    maps = folded(bcosnet.explain(trained_bcos, noisy, y.repeat_interleave(k)))[:, 0]
    maps = maps.reshape(n, k, *x.shape[1:]).double()
    want = maps.mean(1) if nt_type == "smoothgrad" else maps.var(1, unbiased=False)
    torch.testing.assert_close(smooth.double(), want, rtol=1e-4, atol=1e-6)
    plain = BcosAttribution(trained_bcos).attribute(x, target=y)
    assert (smooth - plain).abs().max() > 1e-3  # the noise did change the maps


def test_captum_visualization_draws_it(trained_bcos, correct_batch):
    x, y = correct_batch
    attr = BcosAttribution(trained_bcos).attribute(x[:1], target=y[:1])[0]
    a = attr.permute(1, 2, 0).numpy()  # H×W×C, as Captum's visualization takes it
    fig, ax = visualization.visualize_image_attr(
        a, x[0].permute(1, 2, 0).numpy(), method="blended_heat_map", sign="all",
        use_pyplot=False)
    shown = np.asarray(ax.images[-1].get_array())
    # Captum's heat map: the channel sum over the |value| at which the sorted |values|
    # reach 98 % of their total (2 % outliers), clipped to [-1, 1]
    s = a.sum(-1)
    v = np.sort(np.abs(s).ravel())
    scale = v[np.searchsorted(np.cumsum(v), 0.98 * v.sum())]
    assert 0 < scale < v[-1]
    np.testing.assert_allclose(shown, np.clip(s / scale, -1, 1), atol=1e-6)
    matplotlib.pyplot.close(fig)


def test_captum_sensitivity_metric_takes_it(trained_bcos, correct_batch):
    x, y = correct_batch[0][:4], correct_batch[1][:4]
    attribute = BcosAttribution(trained_bcos).attribute

    def sens(radius: float) -> torch.Tensor:
        torch.manual_seed(0)
        return sensitivity_max(attribute, x, perturb_radius=radius, n_perturb_samples=3,
                               target=y)

    small, large = sens(1e-4), sens(0.1)
    assert small.shape == (4,) and (small > 0).all() and (large > 5 * small).all()
