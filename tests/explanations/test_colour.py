"""to_rgba / contribution_to_rgba on constructed weights with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import bcosnet
from bcosnet.explanations.colour import contribution_to_rgba, decode_colour, hue_of, to_rgba
from bcosnet.nn import AddInverse


def _encode(img: torch.Tensor) -> torch.Tensor:
    return AddInverse()(img)


def test_exported_at_top_level():
    assert bcosnet.to_rgba is to_rgba
    assert bcosnet.explanations.to_rgba is to_rgba


def test_weights_proportional_to_pixel_give_pixel_colour_full_alpha():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(2, 3, 5, 7, generator=g, dtype=torch.float64)
    x = _encode(img)
    # Per-pixel positive scale λ: the colour depends only on the direction.
    lam = torch.rand(2, 1, 5, 7, generator=g, dtype=torch.float64) + 0.5
    w = (lam * x).unsqueeze(1)  # N×T×6×H×W, T = 1
    rgba = to_rgba(w, x, percentile=1.0)
    assert rgba.shape == (2, 1, 5, 7, 4)
    torch.testing.assert_close(rgba[:, 0, ..., :3], img.permute(0, 2, 3, 1))
    # Alpha = ‖W‖ / percentile: with percentile 1, all but the weakest pixel saturate.
    alpha = rgba[..., 3]
    assert (alpha == 1).float().mean() > 0.9
    # percentile 100: alpha is ‖W‖ / max ‖W‖ exactly.
    rgba100 = to_rgba(w, x, percentile=100)
    norms = torch.linalg.vector_norm(w, dim=2)
    expect = norms / norms.flatten(-2).amax(-1)[..., None, None]
    torch.testing.assert_close(rgba100[..., 3], expect)


def test_uniform_strength_gives_full_alpha_everywhere():
    img = torch.rand(1, 3, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x = _encode(img)
    w = x / torch.linalg.vector_norm(x, dim=1, keepdim=True)  # unit norm per pixel
    rgba = to_rgba(w, x)  # N×C×H×W form (no T dim)
    assert rgba.shape == (1, 4, 4, 4)
    torch.testing.assert_close(rgba[..., 3], torch.ones(1, 4, 4, dtype=torch.float64))
    torch.testing.assert_close(rgba[..., :3], img.permute(0, 2, 3, 1))


def test_negative_contribution_pixels_get_zero_alpha():
    img = torch.rand(1, 3, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    x = _encode(img)
    sign = torch.ones(1, 1, 6, 6, dtype=torch.float64)
    sign[..., :3, :] = -1  # top half contributes negatively
    w = sign * x
    rgba = to_rgba(w, x)
    contrib = (w * x).sum(1)
    assert (contrib[..., :3, :] < 0).all()
    assert (rgba[..., :3, :, 3] == 0).all()
    assert (rgba[..., 3:, :, 3] > 0).all()
    # Without masking, the negated pixels are shown at full strength.
    assert (to_rgba(w, x, positive_only=False)[..., :3, :, 3] > 0).all()


def test_grey_two_channel_weights_decode_to_grey():
    v = torch.rand(3, 1, 4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    x = _encode(v)
    assert x.shape[1] == 2
    rgba = to_rgba(x.unsqueeze(1) * 2.0, x)
    assert rgba.shape == (3, 1, 4, 5, 4)
    for k in range(3):
        torch.testing.assert_close(rgba[:, 0, ..., k], v[:, 0])
    assert decode_colour(x).shape == (3, 1, 4, 5)


def test_batched_equals_per_map():
    g = torch.Generator().manual_seed(4)
    w = torch.randn(2, 3, 6, 8, 8, generator=g, dtype=torch.float64)
    x = _encode(torch.rand(2, 3, 8, 8, generator=g, dtype=torch.float64))
    full = to_rgba(w, x, smooth=3, percentile=90)
    for n in range(2):
        for t in range(3):
            one = to_rgba(w[n, t], x[n], smooth=3, percentile=90)
            torch.testing.assert_close(full[n, t], one)


def test_explanation_object_accepted():
    class Ex:
        weights = torch.ones(1, 1, 6, 2, 2)
        inputs = torch.full((1, 6, 2, 2), 0.5)

    out = to_rgba(Ex())
    torch.testing.assert_close(out[..., :3], torch.full((1, 1, 2, 2, 3), 0.5))


def test_smoothing_is_box_mean_with_zero_padding():
    # One strong pixel: a 3×3 box spreads 1/9 of its alpha to each neighbour.
    x = torch.full((1, 6, 5, 5), 0.5, dtype=torch.float64)
    w = torch.zeros(1, 6, 5, 5, dtype=torch.float64)
    w[..., 2, 2] = 1.0
    rgba = to_rgba(w, x, smooth=3, percentile=100)
    a = rgba[0, ..., 3]
    assert torch.allclose(a[1:4, 1:4], torch.ones(3, 3, dtype=torch.float64))
    assert (a[0] == 0).all() and (a[:, 0] == 0).all()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(smooth=4), "odd"),
        (dict(smooth=-1), "non-negative"),
        (dict(percentile=0), "percentile"),
        (dict(percentile=101), "percentile"),
    ],
)
def test_bad_options(kwargs, match):
    x = torch.rand(1, 6, 4, 4)
    with pytest.raises(ValueError, match=match):
        to_rgba(x, x, **kwargs)


def test_bad_shapes():
    with pytest.raises(ValueError, match="even number of channels"):
        to_rgba(torch.rand(1, 3, 4, 4), torch.rand(1, 3, 4, 4))
    with pytest.raises(ValueError, match="do not match"):
        to_rgba(torch.rand(1, 6, 4, 4), torch.rand(1, 6, 4, 5))
    with pytest.raises(ValueError, match="inputs"):
        to_rgba(torch.rand(1, 6, 4, 4))
    with pytest.raises(TypeError):
        to_rgba(np.zeros((1, 6, 4, 4)), None)


@settings(max_examples=40, deadline=None)
@given(
    st.floats(0, 1),
    st.floats(0, 1),
    st.floats(0, 1),
    st.floats(0.01, 100),
)
def test_property_positive_multiple_of_encoded_pixel_decodes_exactly(r, g, b, lam):
    img = torch.tensor([r, g, b], dtype=torch.float64).view(1, 3, 1, 1)
    x = _encode(img)
    rgba = to_rgba(lam * x, x, percentile=100)
    torch.testing.assert_close(rgba[0, 0, 0], torch.tensor([r, g, b, 1.0], dtype=torch.float64))


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_property_output_in_unit_range(seed):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(1, 2, 6, 5, 5, generator=g) * 10 ** torch.randn(1, generator=g).item()
    x = _encode(torch.rand(1, 3, 5, 5, generator=g))
    rgba = to_rgba(w, x, smooth=3)
    assert torch.isfinite(rgba).all()
    assert rgba.min() >= 0 and rgba.max() <= 1


def test_zero_weights_are_transparent_not_nan():
    x = _encode(torch.rand(1, 3, 3, 3))
    rgba = to_rgba(torch.zeros(1, 6, 3, 3), x)
    assert torch.isfinite(rgba).all()
    assert (rgba[..., 3] == 0).all()


def test_contribution_map_diverging_centred_at_zero():
    m = torch.tensor([[-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    out = contribution_to_rgba(m, percentile=100)
    assert out.shape == (2, 3, 4)
    # bwr: 0 → white, +max → red, −max → blue; symmetric around 0.
    np.testing.assert_allclose(out[0, 1, :3], [1, 1, 1], atol=0.01)
    np.testing.assert_allclose(out[0, 2, :3], [1, 0, 0], atol=0.01)
    np.testing.assert_allclose(out[0, 0, :3], [0, 0, 1], atol=0.01)
    # |−1| and |1| are equally far from white.
    d_neg = np.abs(out[1, 0, :3] - 1).sum()
    d_pos = np.abs(out[1, 2, :3] - 1).sum()
    assert d_neg == pytest.approx(d_pos, abs=0.02)
    # A fixed vmax applies the same scale to several maps.
    two = contribution_to_rgba(torch.stack([m, m * 0.5]), vmax=2.0)
    np.testing.assert_allclose(two[1, 0, 2, :3], out[1, 2, :3], atol=0.01)


def test_hue_of_primaries_and_grey():
    rgb = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1], [1, 0, 1], [0.5, 0.5, 0.5]])
    hue, chroma = hue_of(rgb)
    np.testing.assert_allclose(hue, [0, 60, 120, 240, 300, 0])
    np.testing.assert_allclose(chroma, [1, 1, 1, 1, 1, 0])


# ----------------------------------------------------------------------------- PNG, overlay


def _tiny_rgb_bcos(n_classes=4):
    from torch import nn

    from bcosnet.nn import BcosConv2d, LogitLayer

    torch.manual_seed(0)
    return nn.Sequential(AddInverse(3), BcosConv2d(6, 8, 3, padding=1),
                         BcosConv2d(8, n_classes, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         LogitLayer()).eval()


def _read_png(path):
    from PIL import Image

    with Image.open(path) as im:
        return im.mode, np.asarray(im).copy()


def test_save_explanation_writes_the_rgba_explanation(tmp_path):
    """The plain PNG is to_rgba's map, targets side by side, quantised to 8 bits."""
    model = _tiny_rgb_bcos()
    x = torch.rand(2, 3, 12, 10)
    ex = bcosnet.explain(model, x, target=[[1, 3]] * 2)
    path = bcosnet.save_explanation(ex, tmp_path / "new" / "e.png", index=1)  # folder made
    mode, a = _read_png(path)
    assert mode == "RGBA" and a.shape == (12, 20, 4)
    rgba = to_rgba(ex)[1]  # T×H×W×4
    expected = np.concatenate([rgba[0].numpy(), rgba[1].numpy()], axis=1)
    assert np.abs(a.astype(np.float64) - expected * 255).max() <= 0.5 + 1e-6


def test_overlay_formula_and_png(tmp_path):
    """overlay(): explanation colour where its alpha is 1, the faded grey image
    where it is 0, linear in between; save_explanation(overlay=True) writes it."""
    img = torch.tensor([[[1.0, 0.0]], [[0.0, 0.0]], [[0.0, 1.0]]])  # 3×1×2: red, blue
    rgba = torch.tensor([[[0.0, 1.0, 0.0, 1.0], [0.0, 1.0, 0.0, 0.0]]])  # green, alpha 1 / 0
    out = bcosnet.overlay(img, rgba, fade=0.5)
    torch.testing.assert_close(out[0, 0], torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))
    grey_blue = 0.5 + 0.5 * 0.114
    torch.testing.assert_close(out[0, 1], torch.full((3,), grey_blue, dtype=torch.float64))
    half = bcosnet.overlay(img, rgba, alpha=0.5, fade=0.0, grey=False)
    torch.testing.assert_close(half[0, 0], torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64))
    # numpy uint8 H×W×C images work the same
    u8 = (img.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    torch.testing.assert_close(bcosnet.overlay(u8, rgba, fade=0.5), out)

    model = _tiny_rgb_bcos()
    x = torch.rand(1, 3, 9, 9)
    ex = bcosnet.explain(model, x, target=2)
    mode, a = _read_png(bcosnet.save_explanation(ex, tmp_path / "o.png", overlay=True,
                                                 alpha=0.7))
    # the image is recovered from the encoded input [x, 1 − x]
    expected = bcosnet.overlay(x[0], to_rgba(ex)[0, 0], alpha=0.7).numpy()
    assert mode == "RGB" and a.shape == (9, 9, 3)
    assert np.abs(a.astype(np.float64) - expected * 255).max() <= 0.5 + 1e-4


def test_save_explanation_errors(tmp_path):
    model = _tiny_rgb_bcos()
    ex = bcosnet.explain(model, torch.rand(2, 3, 8, 8), target=0)
    with pytest.raises(ValueError, match="index must be an int in 0..1"):
        bcosnet.save_explanation(ex, tmp_path / "e.png", index=2)
    with pytest.raises(ValueError, match="overlay_image=True"):
        bcosnet.save_explanation(ex, tmp_path / "e.png", image=torch.rand(3, 8, 8))
    with pytest.raises(ValueError, match="8×8 pixels but the image 5×5"):
        bcosnet.save_explanation(ex, tmp_path / "e.png", overlay=True, image=torch.rand(3, 5, 5))
    assert not (tmp_path / "e.png").exists()
