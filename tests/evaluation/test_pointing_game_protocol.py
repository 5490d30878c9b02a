"""Grid pointing game, the paper's protocol: all cells of a grid from one call,
the smoothing rule, per-method grid counts, and a cross-check against Quantus."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import bcosnet
from bcosnet.evaluation import (
    cell_scores,
    grid_pointing_game,
    make_attribution_fn,
    make_grid_dataset,
    paper_smoothing,
)
from bcosnet.evaluation.pointing_game import grid_maps, supports_multi_target


def tiny_bcos_net(num_classes: int = 9, seed: int = 0) -> nn.Module:
    from bcosnet.nn import AddInverse, BcosConv2d, LogitLayer

    torch.manual_seed(seed)
    return nn.Sequential(
        AddInverse(1),
        BcosConv2d(2, 8, 3, padding=1, b=2.0),
        BcosConv2d(8, num_classes, 3, padding=1, b=2.0),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        LogitLayer(temperature=0.1),
    ).double().eval()


class LabelModel(nn.Module):
    """Logits read off the image: channel 1 holds the label, so every image is classified
    correctly with logit 5 (sigmoid > 0.5); channel 0 only carries pixel content."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k
        self.dummy = nn.Parameter(torch.zeros(1, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lab = x[:, 1, 0, 0].round().long()
        return 5.0 * nn.functional.one_hot(lab, self.k).double() + 0 * self.dummy


def label_data(num: int, k: int, size: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(num) % k
    images = torch.zeros(num, 2, size, size, dtype=torch.float64)
    images[:, 0] = torch.rand(num, size, size, generator=g, dtype=torch.float64)
    images[:, 1] = labels.double()[:, None, None]
    return images, labels


def oracle(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-target: mass on the target's cell, plus texture so scores are not all 1."""
    return ((images[:, 1] == targets.to(images)[:, None, None]).double() + 0.3 * images[:, 0]
            - 0.1)[:, None]


class MultiOracle:
    """The same maps, all N×T targets in one call (and it counts its calls)."""

    supports_multi_target = True
    __name__ = "oracle"

    def __init__(self) -> None:
        self.calls: list[tuple[int, ...]] = []

    def __call__(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        self.calls.append(tuple(targets.shape))
        if targets.dim() == 1:
            return oracle(images, targets)
        return torch.stack([oracle(images, targets[:, j]) for j in range(targets.shape[1])], 1)


# --------------------------------------------------------------------------- smoothing rule


@pytest.mark.parametrize("cell, k", [(224, 15), (112, 7), (64, 3), (32, None), (28, None),
                                     (448, 29), (8, None)])
def test_paper_smoothing_rule(cell: int, k) -> None:
    # the largest odd integer <= 15·cell/224; 1 means none (paper: 15 at 224, none at CIFAR)
    x = 15 * cell / 224
    odd = max([1] + [o for o in range(1, 64, 2) if o <= x])
    assert paper_smoothing(cell) == (None if odd == 1 else odd) == k
    assert paper_smoothing((cell, cell + 10)) == k


def test_default_smoothing_follows_the_cell_size() -> None:
    model = LabelModel(4)
    small = grid_pointing_game(model, label_data(8, 4, 4), oracle, n=2, num_grids=2,
                               progress=False)
    big = grid_pointing_game(model, label_data(8, 4, 64), oracle, n=2, num_grids=2,
                             progress=False)
    assert small.settings["smoothing"] is None and big.settings["smoothing"] == 3
    assert small.settings["smoothing_rule"] == "auto"
    with pytest.raises(ValueError, match="'auto', None or an odd int"):
        grid_pointing_game(model, label_data(8, 4, 4), oracle, n=2, num_grids=2,
                           smoothing="paper", progress=False)


# --------------------------------------------------------------------------- all cells at once


def test_multi_target_call_equals_per_target_loop_one_call_per_batch() -> None:
    model = LabelModel(9)
    data = label_data(60, 9, 4)
    multi = MultiOracle()
    assert supports_multi_target(multi) and not supports_multi_target(oracle)
    res = grid_pointing_game(model, data, {"multi": multi, "loop": oracle}, n=3, num_grids=5,
                             batch_size=2, progress=False)
    assert multi.calls == [(2, 9), (2, 9), (1, 9)]  # one call per batch of grids, all 9 cells
    assert res.settings["multi_target"] == {"multi": True, "loop": False}
    assert res.scores["multi"].shape == (5, 9)
    np.testing.assert_array_equal(res.scores["multi"], res.scores["loop"])
    # independent: cell k's score from the definition on the grid image
    grids = make_grid_dataset(model, data, n=3, num_grids=5, progress=False)
    img = grids.images
    for g in range(5):
        for k in range(9):
            a = oracle(img[g:g + 1], grids.classes[g, k:k + 1])[0, 0].clamp(min=0)
            r, c = divmod(k, 3)
            want = a[4 * r:4 * r + 4, 4 * c:4 * c + 4].sum() / a.sum()
            assert res.scores["loop"][g, k] == pytest.approx(float(want), rel=1e-12)


def test_bcos_explains_all_cells_in_one_call_like_the_per_target_loop() -> None:
    model = tiny_bcos_net(9)
    gen = torch.Generator().manual_seed(1)
    images = torch.rand(2, 1, 12, 12, dtype=torch.float64, generator=gen)
    targets = torch.tensor([[3, 1, 4, 0, 5, 2, 8, 6, 7], [0, 1, 2, 3, 4, 5, 6, 7, 8]])
    fn = make_attribution_fn(model, "bcos")
    assert supports_multi_target(fn)
    one_call = grid_maps(fn, images, targets)
    loop = grid_maps(fn, images, targets, multi_target=False)
    assert one_call.shape == (2, 9, 12, 12)
    torch.testing.assert_close(one_call, loop, rtol=1e-10, atol=1e-14)
    # the maps are explain()'s contributions (W(x) ⊙ x summed over the encoded channels)
    torch.testing.assert_close(one_call, bcosnet.explain(model, images, targets).contributions,
                               rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(one_call, loop, rtol=1e-10, atol=1e-12)
    # and both equal autograd of each logit times the encoded input, summed over channels
    x = images.clone().requires_grad_(True)
    enc = torch.cat([x, 1 - x], 1)
    from bcosnet.nn import explanation_mode

    with explanation_mode(model):
        out = model[1:](enc)
        for j in range(9):
            (g,) = torch.autograd.grad(out.gather(1, targets[:, j:j + 1]).sum(), enc,
                                       retain_graph=True)
            torch.testing.assert_close(one_call[:, j], (g * enc).sum(1).detach(),
                                       rtol=1e-9, atol=1e-12)


def test_multi_target_output_of_the_wrong_shape_says_so() -> None:
    model = LabelModel(4)

    def bad(images, targets):
        return torch.ones(len(images), 1, *images.shape[-2:])  # ignores the T targets

    bad.supports_multi_target = True
    with pytest.raises(ValueError, match=r"must return 2×4×H×W or 2×4×C×H×W maps, got shape "
                                         r"\(2, 1, 8, 8\)"):
        grid_pointing_game(model, label_data(20, 4, 4), bad, n=2, num_grids=2, batch_size=2,
                           progress=False)

    def small(images, targets):
        return torch.ones(*targets.shape, 2, 2)

    small.supports_multi_target = True
    with pytest.raises(ValueError, match="returned 2×2 maps for 8×8 grid images"):
        grid_pointing_game(model, label_data(20, 4, 4), small, n=2, num_grids=2, progress=False)


# --------------------------------------------------------------------------- grid counts


def test_grids_per_method_play_the_first_grids(tmp_path) -> None:
    model = LabelModel(4)
    data = label_data(40, 4, 4)
    full = grid_pointing_game(model, data, {"a": oracle, "b": oracle}, n=2, num_grids=6,
                              progress=False)
    part = grid_pointing_game(model, data, {"a": oracle, "b": oracle}, n=2, num_grids=6,
                              grids_per_method={"b": 2}, results_dir=tmp_path, progress=False)
    assert part.grids_per_method == {"a": 6, "b": 2}
    assert part.settings["grids_per_method"] == {"a": 6, "b": 2}
    np.testing.assert_array_equal(part.scores["b"], full.scores["b"][:2])
    # a larger grid set with the same settings reuses both finished results (same grids)
    calls = []

    def counting(images, targets):
        calls.append(1)
        return oracle(images, targets)

    again = grid_pointing_game(model, data, {"a": counting, "b": counting}, n=2, num_grids=8,
                               grids_per_method={"a": 6, "b": 2}, results_dir=tmp_path,
                               progress=False)
    assert calls == [] and again.num_grids == 8
    np.testing.assert_array_equal(again.scores["a"], full.scores["a"])
    with pytest.raises(ValueError, match="exceeds num_grids"):
        grid_pointing_game(model, data, oracle, n=2, num_grids=2, grids_per_method={"oracle": 3},
                           progress=False)
    with pytest.raises(ValueError, match="unknown method"):
        grid_pointing_game(model, data, oracle, n=2, num_grids=2, grids_per_method={"x": 1},
                           progress=False)


def test_too_few_classes_for_the_grid_says_how_many() -> None:
    with pytest.raises(ValueError, match=r"needs 9 distinct classes \(n² for n=3\), but the "
                                         r"model has 4; n=2 fits \(a 2×2 grid, 4 classes\)"):
        grid_pointing_game(LabelModel(4), label_data(40, 4, 4), oracle, n=3, num_grids=2,
                           progress=False)
    # 3 classes: no n fits, for any n asked (issue #24: it said "use a smaller n" for every n)
    for n in (2, 3, 5):
        with pytest.raises(ValueError, match=rf"a {n}×{n} grid needs {n * n} distinct classes "
                           r".*but the model has 3; no grid size fits: the pointing game needs "
                           r"at least 4 classes"):
            grid_pointing_game(LabelModel(3), label_data(30, 3, 4), oracle, n=n, num_grids=2,
                               progress=False)
    # 17 classes: n=4 is the largest that fits
    with pytest.raises(ValueError, match="but the model has 17; n=4 fits"):
        grid_pointing_game(LabelModel(17), label_data(34, 17, 4), oracle, n=5, num_grids=1,
                           progress=False)


# --------------------------------------------------------------------------- Quantus


def test_cell_score_equals_quantus_attribution_localisation() -> None:
    import quantus  # a test dependency (pyproject: the test extra)
    model = tiny_bcos_net(9)
    g = torch.Generator().manual_seed(3)
    images = torch.rand(4, 1, 18, 18, dtype=torch.float64, generator=g)
    targets = torch.stack([torch.randperm(9, generator=g) for _ in range(4)])
    maps = grid_maps(make_attribution_fn(model, "bcos"), images, targets)  # 4×9×18×18
    ours = cell_scores(maps.reshape(36, 18, 18), torch.arange(9).repeat(4), 3).numpy()
    masks = np.zeros((36, 1, 18, 18))
    for i in range(36):
        r, c = divmod(i % 9, 3)
        masks[i, 0, 6 * r:6 * r + 6, 6 * c:6 * c + 6] = 1
    metric = quantus.AttributionLocalisation(
        positive_attributions=True, abs=False, normalise=False, weighted=False,
        max_size=1e9, disable_warnings=True, display_progressbar=False)
    theirs = metric(
        model=model.float(), x_batch=images.repeat_interleave(9, 0).float().numpy(),
        y_batch=targets.reshape(-1).numpy(), a_batch=maps.reshape(36, 1, 18, 18).numpy(),
        s_batch=masks, channel_first=True, device="cpu")
    assert len(np.unique(ours.round(6))) > 30 and (ours > 0).all()  # not a degenerate case
    np.testing.assert_allclose(ours, np.asarray(theirs), rtol=0, atol=1e-6)


_FAST = {"intgrad": {"n_steps": 4}, "occlusion": {"patch_size": 4, "stride": 4},
         "rise": {"n_masks": 16}, "lime": {"n_samples": 16, "max_dist": 4}}


@pytest.mark.parametrize("method", ["grad", "ixg", "intgrad", "deeplift", "gradcam",
                                    "occlusion", "rise", "lime"])
def test_named_methods_explain_all_cells_in_one_call_like_the_loop(method) -> None:
    model = tiny_bcos_net(9)
    gen = torch.Generator().manual_seed(2)
    images = torch.rand(2, 1, 12, 12, dtype=torch.float64, generator=gen)
    targets = torch.stack([torch.randperm(9, generator=gen) for _ in range(2)])
    fn = make_attribution_fn(model, method, **_FAST.get(method, {}))
    assert supports_multi_target(fn)
    one_call = grid_maps(fn, images, targets)
    loop = grid_maps(fn, images, targets, multi_target=False)
    assert one_call.shape == (2, 9, 12, 12)
    torch.testing.assert_close(one_call, loop, rtol=1e-6, atol=1e-9)
