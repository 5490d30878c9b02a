"""Perturbation methods (LIME, RISE, occlusion) against known answers and
independent computations, the score they explain (sigmoid on B-cos networks,
softmax on conventional ones), and all targets of an image from one set of
passes (every method).

Every expected value here is computed without the method's code: by the
``lime`` package (test-only dependency), by a direct loop over windows/masks,
or from a hand-built model whose score depends on one known image region.
None relies on an untrained network's near-uniform outputs.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bcosnet import attribution
from bcosnet.attribution import Lime, Occlusion, Rise, count_passes, rise_masks
from bcosnet.nn import AddInverse, BcosConv2d, LogitLayer


def bcos_cnn(num_classes: int = 5) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        AddInverse(3),
        BcosConv2d(6, 8, 3, padding=1),
        BcosConv2d(8, 8, 3, stride=2, padding=1, max_out=2),
        BcosConv2d(8, num_classes, 1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        LogitLayer(temperature=0.1, bias=-1.0),
    ).double().eval()


def blocky(n: int = 1, size: int = 32, seed: int = 0) -> torch.Tensor:
    """4×4 blocks of random colour with a faint texture (so that LIME's segment-mean
    fill changes the pixels): 13–16 quickshift segments at kernel 2, max_dist 10."""
    g = torch.Generator().manual_seed(seed)
    blocks = F.interpolate(torch.rand(n, 3, 4, 4, generator=g, dtype=torch.float64) * 0.8 + 0.1,
                           size=(size, size))
    return blocks + 0.1 * (torch.rand(n, 3, size, size, generator=g, dtype=torch.float64) - 0.5)


FINE = {"kernel_size": 2, "max_dist": 10}  # quickshift settings for the 32 px test images


class CentreModel(nn.Module):
    """A conventional classifier (no B-cos layers) of 48 px images whose class-0
    logit depends only on the centre cell of a 3×3 grid (rows/cols 16..31):
    logits = [w·(mean(centre) − 0.25), 0, −1]."""

    def __init__(self, w: float = 20.0) -> None:
        super().__init__()
        self.w = w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x[:, :, 16:32, 16:32].mean((1, 2, 3))
        z = torch.zeros_like(m)
        return torch.stack([self.w * (m - 0.25), z, z - 1], 1)


def grid_image() -> torch.Tensor:
    """1×3×48×48: a 3×3 grid of 16 px cells with distinct grey levels (0.2 … 0.9)."""
    levels = torch.linspace(0.2, 0.9, 9, dtype=torch.float64)[torch.tensor(
        [3, 7, 1, 5, 8, 0, 6, 2, 4])].view(1, 1, 3, 3)
    return levels.repeat_interleave(16, 2).repeat_interleave(16, 3).expand(1, 3, 48, 48).clone()


CENTRE = torch.zeros(48, 48, dtype=torch.bool)
CENTRE[16:32, 16:32] = True


# ----------------------------------------------------------------------------- LIME


def _lime_package_mask(model, image, seg, target, n_samples, seed, score):
    """The paper's LIME: lime's LimeImageExplainer + get_image_and_mask(positive_only=True,
    num_features=5), on our segments; returns (0/1 mask H×W, {segment: coefficient})."""
    from lime import lime_image

    def classifier_fn(batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(batch).permute(0, 3, 1, 2).to(torch.float64)
        with torch.no_grad():
            return score(model(x)).numpy()

    explainer = lime_image.LimeImageExplainer(kernel_width=0.25, random_state=seed)
    exp = explainer.explain_instance(
        image.permute(1, 2, 0).numpy(), classifier_fn, labels=(target,), top_labels=None,
        num_samples=n_samples, batch_size=50, segmentation_fn=lambda _img: seg.numpy(),
        random_seed=seed,
    )
    _, mask = exp.get_image_and_mask(target, positive_only=True, num_features=5,
                                     hide_rest=False)
    return torch.from_numpy(mask.astype(np.float64)), dict(exp.local_exp[target])


@pytest.mark.parametrize("case", ["bcos-sigmoid", "conventional-softmax"])
def test_lime_is_the_lime_package_positive_top5_mask(case):
    """Our LIME = lime's explain_instance + get_image_and_mask(positive_only=True,
    num_features=5) on the same segments and seed: a 0/1 union of at most 5
    super-pixels, every one with a positive ridge coefficient, and no positive
    segment left out that is stronger than one kept."""
    if case == "bcos-sigmoid":
        model, score, images = bcos_cnn(), torch.sigmoid, blocky(2, seed=1)
        targets = [1, 3]
    else:
        a = torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(5), dtype=torch.float64)

        class Lin(nn.Module):  # no B-cos layers: LIME explains the softmax
            def forward(self, x):
                s = (x * a).flatten(1).sum(1) / 50
                return torch.stack([s, -s, 0 * s], 1)

        model, score, images = Lin(), lambda z: z.softmax(1), blocky(2, seed=2)
        targets = [0, 1]
    lime = Lime(model, n_samples=200, **FINE)
    maps = lime.attribute(images, target=torch.tensor(targets))
    weights = Lime(model, n_samples=200, num_features=None, **FINE).attribute(
        images, target=torch.tensor(targets))
    assert maps.shape == (2, 1, 32, 32)
    for i, t in enumerate(targets):
        seg = lime.segments(images[i])
        n_seg = int(seg.max()) + 1
        assert n_seg > 5
        expected, coef = _lime_package_mask(model, images[i], seg, t, 200, 0, score)
        torch.testing.assert_close(maps[i, 0], expected, rtol=0, atol=0)
        # num_features=None: every segment's ridge coefficient, as lime's.
        lime_w = torch.tensor([coef[s] for s in range(n_seg)], dtype=torch.float64)[seg]
        torch.testing.assert_close(weights[i, 0], lime_w, rtol=1e-6, atol=1e-12)
        kept = {int(s) for s in seg[maps[i, 0] == 1].unique()}
        assert 1 <= len(kept) <= 5
        assert all(coef[s] > 0 for s in kept)
        assert all(coef[s] <= min(coef[k] for k in kept) for s in coef if s not in kept)
        # The map is constant 0/1 on every super-pixel.
        for s in range(n_seg):
            assert maps[i, 0][seg == s].unique().numel() == 1
        # This case has negative coefficients, and more positive ones than 5 where noted.
        assert any(c < 0 for c in coef.values())


def test_lime_puts_its_mask_on_the_region_the_score_depends_on():
    """CentreModel's class-0 score depends on the centre cell only.  With a black
    fill, switching the centre super-pixel off lowers the score, nothing else
    changes it: the strongest positive segment is the centre cell (its ridge
    weight dominates every other by > 5×)."""
    model, img = CentreModel(), grid_image()
    lime = Lime(model, n_samples=300, fill="black", num_features=1, **FINE)
    seg = lime.segments(img[0])
    assert int(seg.max()) + 1 == 9
    assert seg[CENTRE].unique().numel() == 1 and (seg[~CENTRE] != seg[CENTRE][0]).all()
    top1 = lime.attribute(img, target=0)[0, 0]
    torch.testing.assert_close(top1, CENTRE.double(), rtol=0, atol=0)
    weights = Lime(model, n_samples=300, fill="black", num_features=None,
                   **FINE).attribute(img, 0)[0, 0]
    centre_w = weights[CENTRE][0]
    assert centre_w > 0
    assert weights[~CENTRE].abs().max() < centre_w / 5
    # Default num_features=5: the centre is in the mask, every kept segment is positive.
    top5 = Lime(model, n_samples=300, fill="black", **FINE).attribute(img, target=0)[0, 0]
    assert (top5[CENTRE] == 1).all() and ((top5 == 1) <= (weights > 0)).all()


def test_lime_with_fewer_segments_or_no_positive_weight():
    """Fewer than 5 super-pixels give fewer (never an error); a score that every
    super-pixel lowers has no positive weight: an all-zero map."""
    img = torch.zeros(1, 3, 48, 48, dtype=torch.float64)
    img[..., :16], img[..., 16:32], img[..., 32:] = 0.2, 0.5, 0.8  # three stripes

    class Bright(nn.Module):  # logit 0 = 4·mean(x) − 1: every stripe raises it
        def __init__(self, sign: float) -> None:
            super().__init__()
            self.sign = sign

        def forward(self, x):
            s = self.sign * (4 * x.mean((1, 2, 3)) - 1)
            return torch.stack([s, 0 * s], 1)

    lime = Lime(Bright(1.0), n_samples=100, fill="black", output="logit")
    assert int(lime.segments(img[0]).max()) + 1 == 3
    up = lime.attribute(img, target=0)
    torch.testing.assert_close(up, torch.ones_like(up))  # all 3 segments, 3 < 5
    down = Lime(Bright(-1.0), n_samples=100, fill="black", output="logit").attribute(img, 0)
    assert torch.equal(down, torch.zeros_like(down))
    weights = Lime(Bright(-1.0), n_samples=100, fill="black", output="logit",
                   num_features=None).attribute(img, 0)
    assert (weights < 0).all()  # the reason: every coefficient is negative
    flat = torch.full((1, 3, 32, 32), 0.5, dtype=torch.float64)  # one segment
    assert Lime(Bright(1.0), n_samples=20, fill="black").attribute(flat, 0).shape == (1, 1, 32, 32)


# ----------------------------------------------------------------------------- RISE, occlusion


def _occlusion_reference(model, images, t, patch, stride, score):
    """Direct loop over windows (black patch): mean drop of score(model)[t] per pixel."""
    n, _c, h, w = images.shape
    ys = sorted(set(list(range(0, h - patch + 1, stride)) + [h - patch]))
    xs = sorted(set(list(range(0, w - patch + 1, stride)) + [w - patch]))
    with torch.no_grad():
        s0 = score(model(images))[torch.arange(n), t]
        total = torch.zeros(n, h, w, dtype=images.dtype)
        cover = torch.zeros(h, w, dtype=images.dtype)
        for y in ys:
            for x in xs:
                occ = images.clone()
                occ[:, :, y : y + patch, x : x + patch] = 0
                drop = s0 - score(model(occ))[torch.arange(n), t]
                total[:, y : y + patch, x : x + patch] += drop[:, None, None]
                cover[y : y + patch, x : x + patch] += 1
    return (total / cover)[:, None]


def _rise_reference(model, images, t, n_masks, p, score):
    """Σ_i score(x ⊙ M_i)[t] · M_i / (n·p) with the masks RISE draws from seed 0."""
    masks = rise_masks(n_masks, images.shape[-2:], s=8, p=p,
                       generator=torch.Generator().manual_seed(0)).double()
    n = images.shape[0]
    sal = torch.zeros(n, 1, *images.shape[-2:], dtype=images.dtype)
    with torch.no_grad():
        for m in masks:
            sal += score(model(images * m))[torch.arange(n), t].view(n, 1, 1, 1) * m
    return sal / (n_masks * p)


@pytest.mark.parametrize("method", ["rise", "occlusion"])
def test_bcos_net_perturbation_explains_sigmoid_scores(method):
    """On a B-cos network (BCE-trained) RISE and occlusion explain sigmoid(logits)
    by default (output="auto"); explicit output= still chooses."""
    model, images, t = bcos_cnn(), blocky(2, seed=3), torch.tensor([2, 4])
    assert attribution.is_bcos_model(model) and attribution.default_output(model) == "sigmoid"
    if method == "rise":
        kw = {"n_masks": 40}

        def ref(score):
            return _rise_reference(model, images, t, 40, 0.1, score)
    else:
        kw = {"patch_size": 8, "stride": 6}

        def ref(score):
            return _occlusion_reference(model, images, t, 8, 6, score)
    got = attribution.get(method, model, **kw).attribute(images, t)
    torch.testing.assert_close(got, ref(torch.sigmoid))
    soft = attribution.get(method, model, output="softmax", **kw).attribute(images, t)
    torch.testing.assert_close(soft, ref(lambda z: z.softmax(1)))
    assert not torch.allclose(got, soft)


def test_conventional_net_perturbation_explains_softmax():
    model = CentreModel()
    assert not attribution.is_bcos_model(model)
    assert attribution.default_output(model) == "softmax"
    img = grid_image()
    got = Rise(model, n_masks=30).attribute(img, target=0)
    torch.testing.assert_close(got, _rise_reference(model, img, torch.tensor([0]), 30, 0.1,
                                                    lambda z: z.softmax(1)))
    with pytest.raises(ValueError, match="output"):
        Rise(model, output="probability")


def test_occlusion_on_the_centre_model_is_the_drop_in_the_centre():
    """Windows aligned with the 3×3 grid: only the centre window changes the
    score, by p(x) − p(x with a black centre) (softmax of CentreModel, by hand)."""
    model, img = CentreModel(), grid_image()
    occ = Occlusion(model, patch_size=16, stride=16).attribute(img, target=0)[0, 0]

    def p0(m: float) -> float:
        z = torch.tensor([20 * (m - 0.25), 0.0, -1.0], dtype=torch.float64)
        return float(z.softmax(0)[0])

    drop = p0(float(img[0, 0, 20, 20])) - p0(0.0)
    assert drop > 0.1
    torch.testing.assert_close(occ, drop * CENTRE.double())


def test_rise_puts_its_mass_on_the_region_the_score_depends_on():
    """CentreModel: RISE's map is highest in the centre cell; its mean there
    exceeds the mean elsewhere by at least a third of the map's range."""
    model, img = CentreModel(), grid_image()
    sal = Rise(model, n_masks=500).attribute(img, target=0)[0, 0]
    inside, outside = sal[CENTRE].mean(), sal[~CENTRE].mean()
    assert sal.argmax() in CENTRE.flatten().nonzero()
    assert inside - outside > (sal.max() - sal.min()) / 3


# ----------------------------------------------------------------------------- all targets at once

SETTINGS = {
    "intgrad": {"n_steps": 6},
    "lime": {"n_samples": 40, **FINE, "num_features": None},
    "rise": {"n_masks": 24},
    "occlusion": {"patch_size": 8, "stride": 8},
}


@pytest.mark.parametrize("method", attribution.available())
def test_n_by_t_targets_equal_one_call_per_target(method):
    """An N×T target gives N×T×C×H×W; map [:, j] equals a call with target[:, j]
    (a 1-D target gives N×C×H×W); ("topk", k) equals the N×k tensor of the top-k."""
    model, images = bcos_cnn(), blocky(2, seed=4)
    expl = attribution.get(method, model, **SETTINGS.get(method, {}))
    tt = torch.tensor([[0, 3, 4], [2, 2, 1]])
    maps = expl.attribute(images, target=tt)
    single = expl.attribute(images, target=tt[:, 0])
    assert maps.shape[:2] == (2, 3) and maps.shape[2:] == single.shape[1:]
    assert single.dim() == 4
    for j in range(3):
        torch.testing.assert_close(maps[:, j], expl.attribute(images, target=tt[:, j]))
    with torch.no_grad():
        top = model(images).topk(2, 1).indices
    torch.testing.assert_close(expl.attribute(images, target=("topk", 2)),
                               expl.attribute(images, target=top))
    as_lists = expl.attribute(images, target=tt.tolist())
    torch.testing.assert_close(as_lists, maps)


@pytest.mark.parametrize("method", attribution.available())
def test_all_targets_share_the_forward_passes(method):
    """9 targets cost the forward passes of one: perturbation methods run the
    same perturbed images once; gradient methods one forward and one backward
    per target (Grad-CAM's first call also searches its layer, so it is warmed up)."""
    model, images = bcos_cnn(num_classes=9), blocky(1, seed=5)
    expl = attribution.get(method, model, **SETTINGS.get(method, {}))
    expl.attribute(images, target=0)
    with count_passes(model) as one:
        expl.attribute(images, target=0)
    with count_passes(model) as nine:
        expl.attribute(images, target=torch.arange(9)[None])
    assert nine.forward == one.forward and nine.forward_calls == one.forward_calls
    assert nine.backward == 9 * one.backward


@pytest.mark.parametrize("method", ["lime", "rise", "occlusion"])
def test_internal_batch_size_does_not_change_maps(method):
    model, images = bcos_cnn(), blocky(2, seed=6)
    kw = SETTINGS[method]
    t = torch.tensor([[1, 2], [3, 0]])
    a = attribution.get(method, model, batch_size=5, **kw).attribute(images, t)
    b = attribution.get(method, model, batch_size=500, **kw).attribute(images, t)
    torch.testing.assert_close(a, b)
