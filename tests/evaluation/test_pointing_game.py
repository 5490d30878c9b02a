"""Grid pointing game (docs/protocol.md §5): scoring, grid construction, the game, resuming,
plotting."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from bcosnet._utils.store import SettingsMismatchError
from bcosnet.evaluation import (
    GridDataset,
    PointingGameResult,
    TooFewClassesError,
    cell_scores,
    grid_pointing_game,
    make_attribution_fn,
    make_grid_dataset,
    plot_pointing_game,
)

# --------------------------------------------------------------------------- scoring


def _cell_slice(n: int, h: int, w: int, i: int) -> tuple[slice, slice]:
    ch, cw = h // n, w // n
    r, c = divmod(i, n)
    return slice(r * ch, (r + 1) * ch), slice(c * cw, (c + 1) * cw)


@settings(max_examples=40, deadline=None)
@given(n=st.sampled_from([1, 2, 3]), cell=st.integers(1, 5), seed=st.integers(0, 10_000),
       data=st.data())
def test_all_positive_mass_in_cell_scores_one(n: int, cell: int, seed: int, data) -> None:
    i = data.draw(st.integers(0, n * n - 1))
    g = torch.Generator().manual_seed(seed)
    h = w = n * cell
    a = -torch.rand(2, 3, h, w, generator=g, dtype=torch.float64)  # negative everywhere ...
    ys, xs = _cell_slice(n, h, w, i)
    a[:, :, ys, xs] = torch.rand(2, 3, cell, cell, generator=g, dtype=torch.float64) + 0.1
    s = cell_scores(a, i, n)  # ... positive only in cell i
    assert s.dtype == torch.float64
    torch.testing.assert_close(s, torch.ones(2, dtype=torch.float64))


@pytest.mark.parametrize("n", [2, 3])
def test_uniform_map_scores_one_over_n_squared(n: int) -> None:
    a = torch.full((n * n, 6 * n, 6 * n), 0.7, dtype=torch.float64)
    s = cell_scores(a, torch.arange(n * n), n)
    torch.testing.assert_close(s, torch.full((n * n,), 1 / (n * n), dtype=torch.float64))


def test_negative_only_and_zero_maps_score_zero() -> None:
    a = torch.zeros(3, 1, 4, 4, dtype=torch.float64)
    a[0] = -torch.rand(1, 4, 4, dtype=torch.float64) - 0.1
    a[2, 0, 0, 0] = 5.0
    a[2, 1:, 0, 0] = 0.0
    # channel 0 positive in cell 0, but a second channel cancels it to exactly 0 after summing
    b = torch.cat([a[2:], -a[2:]], 1)
    s = cell_scores(a[:2], [0, 3], 2)
    assert s.tolist() == [0.0, 0.0]
    assert cell_scores(b, 0, 2).tolist() == [0.0]
    assert cell_scores(a[2:], 0, 2).tolist() == [1.0]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.sampled_from([2, 3]), seed=st.integers(0, 10_000), smoothing=st.sampled_from([None, 3]))
def test_fractions_over_all_cells_of_one_map_sum_to_one(n: int, seed: int, smoothing) -> None:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(1, 2, 4 * n, 4 * n, generator=g, dtype=torch.float64)
    sq = n * n
    s = cell_scores(a.expand(sq, -1, -1, -1), torch.arange(sq), n, smoothing=smoothing)
    assert ((s >= 0) & (s <= 1)).all()
    # independent computation with explicit slicing
    m = a[0].sum(0)
    if smoothing:
        m = torch.nn.functional.avg_pool2d(m[None, None], 3, 1, 1)[0, 0]
    pos = m.clamp(min=0)
    expect = [pos[_cell_slice(n, 4 * n, 4 * n, i)].sum() / pos.sum() for i in range(sq)]
    torch.testing.assert_close(s, torch.stack(expect))
    assert math.isclose(float(s.sum()), 1.0, rel_tol=1e-12)


def test_smoothing_spreads_mass_across_a_cell_border() -> None:
    # 2×2 grid of 6×6 cells; a unit point on the last column of cell 0, mid-height.
    a = torch.zeros(1, 12, 12, dtype=torch.float64)
    a[0, 2, 5] = 1.0
    assert cell_scores(a, 0, 2).item() == 1.0
    # a 3×3 box moves 3 of its 9 samples into cell 1 (column 6)
    assert math.isclose(cell_scores(a, 0, 2, smoothing=3).item(), 2 / 3, rel_tol=1e-12)
    assert math.isclose(cell_scores(a, 1, 2, smoothing=3).item(), 1 / 3, rel_tol=1e-12)
    # a point well inside the cell stays inside under 3×3 smoothing
    b = torch.zeros(1, 12, 12, dtype=torch.float64)
    b[0, 8, 8] = 1.0
    assert cell_scores(b, 3, 2, smoothing=3).item() == 1.0
    # smoothing=1 is no smoothing
    assert cell_scores(a, 0, 2, smoothing=1).item() == 1.0


def test_smoothing_happens_before_clamping() -> None:
    # +1 on the last column of cell 0, −1 right next to it in cell 1.  Smoothed first,
    # the two cancel near the border and the positive mass stays in cell 0 (score 1);
    # clamping first would let 1/3 of the positive mass leak into cell 1.
    a = torch.zeros(1, 12, 12, dtype=torch.float64)
    a[0, 2, 5], a[0, 2, 6] = 1.0, -1.0
    assert math.isclose(cell_scores(a, 0, 2, smoothing=3).item(), 1.0, rel_tol=1e-12)
    assert cell_scores(a, 1, 2, smoothing=3).item() == 0.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"maps": torch.zeros(1, 5, 6), "cells": 0, "n": 2}, "divisible"),
        ({"maps": torch.zeros(2, 4, 4), "cells": [0, 1, 2], "n": 2}, "one cell index per map"),
        ({"maps": torch.zeros(1, 4, 4), "cells": 4, "n": 2}, "0..3"),
        ({"maps": torch.zeros(4, 4), "cells": 0, "n": 2}, "B×H×W"),
        ({"maps": torch.zeros(1, 4, 4), "cells": 0, "n": 2, "smoothing": 2}, "odd"),
        ({"maps": torch.full((1, 4, 4), float("nan")), "cells": 0, "n": 2}, "NaN"),
        ({"maps": torch.zeros(1, 4, 4), "cells": 0, "n": 0}, "n must be an int >= 1"),
    ],
)
def test_cell_scores_rejects_bad_input(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        cell_scores(**kwargs)


# --------------------------------------------------------------------------- grids


class LookupModel(nn.Module):
    """Logits looked up by image id: channel 0 of every image holds its index."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("table", table)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.table[x[:, 0, 0, 0].round().long()]


def make_fake(seed: int = 0, num: int = 80, k: int = 6, size: int = 2):
    """A model whose logits we control and a data set of ``num`` images.

    Channel 0 = image index (read by the model), channel 1 = label (read by oracles).
    About 3/4 of the images are classified correctly; image-wise offsets make some
    correct images have a negative true logit (sigmoid < 0.5).
    """
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, k, (num,), generator=g)
    table = torch.randn(num, k, generator=g, dtype=torch.float64)
    boost = torch.rand(num, generator=g) < 0.75
    table[torch.arange(num), labels] += 3.0 * boost
    table += (torch.rand(num, 1, generator=g, dtype=torch.float64) - 0.5) * 8
    images = torch.zeros(num, 2, size, size, dtype=torch.float64)
    images[:, 0] = torch.arange(num, dtype=torch.float64)[:, None, None]
    images[:, 1] = labels.double()[:, None, None]
    return LookupModel(table), (images, labels), table


def _expected_rankings(table, labels, threshold):
    k = table.shape[1]
    true = table[torch.arange(len(labels)), labels]
    ok = table.argmax(1) == labels
    if threshold is not None:
        ok &= torch.sigmoid(true) > threshold
    rank = {}
    for c in range(k):
        idx = [i for i in range(len(labels)) if labels[i] == c and ok[i]]
        rank[c] = sorted(idx, key=lambda i: (-float(true[i]), i))
    return rank


def _check_grid_properties(grids: GridDataset, table, labels, threshold) -> None:
    n2 = grids.n * grids.n
    rank = _expected_rankings(table, labels, threshold)
    used = grids.source_indices.reshape(-1).tolist()
    assert len(used) == len(set(used)), "an image was used twice"
    for g in range(len(grids)):
        cls = grids.classes[g].tolist()
        assert len(set(cls)) == n2, "classes within a grid must be distinct"
        for k_, i in enumerate(grids.source_indices[g].tolist()):
            assert labels[i] == cls[k_]
            assert int(table[i].argmax()) == cls[k_], "only correctly classified images"
            if threshold is not None:
                assert torch.sigmoid(table[i, cls[k_]]) > threshold
            assert grids.confidences[g, k_] == table[i, cls[k_]]
    # per class, the images used (in grid order) are its most confident ones, in order
    for c, ranked in rank.items():
        used_c = [
            i
            for g in range(len(grids))
            for k_, i in enumerate(grids.source_indices[g].tolist())
            if grids.classes[g, k_] == c
        ]
        assert used_c == ranked[: len(used_c)]


@pytest.mark.parametrize("threshold", [None, 0.5])
@pytest.mark.parametrize("n", [1, 2])
def test_grid_construction_properties(n: int, threshold) -> None:
    model, data, table = make_fake(seed=3)
    grids = make_grid_dataset(model, data, n=n, num_grids=None, seed=1,
                              confidence_threshold=threshold, batch_size=7, progress=False)
    assert len(grids) > 0
    _check_grid_properties(grids, table, data[1], threshold)
    # construction stopped because fewer than n² classes had an unused image left
    rank = _expected_rankings(table, data[1], threshold)
    used = torch.bincount(grids.classes.reshape(-1), minlength=table.shape[1]).tolist()
    left = sum(1 for c, r in rank.items() if len(r) > used[c])
    assert left < n * n


def test_threshold_excludes_correct_but_unconfident_images() -> None:
    model, data, table = make_fake(seed=3)
    no_thr = _expected_rankings(table, data[1], None)
    thr = _expected_rankings(table, data[1], 0.5)
    assert sum(map(len, thr.values())) < sum(map(len, no_thr.values()))  # the data has such images
    all_used = make_grid_dataset(model, data, n=1, num_grids=None, confidence_threshold=None,
                                 progress=False)
    thr_used = make_grid_dataset(model, data, n=1, num_grids=None, progress=False)  # default 0.5
    assert thr_used.confidence_threshold == 0.5 and thr_used.confidence_score == "sigmoid"
    assert len(all_used) == sum(map(len, no_thr.values()))
    assert len(thr_used) == sum(map(len, thr.values()))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), n=st.sampled_from([1, 2]), k=st.integers(4, 7),
       threshold=st.sampled_from([None, 0.5]), num_grids=st.one_of(st.none(), st.integers(0, 12)))
def test_grid_construction_invariants_hold_for_random_data(seed, n, k, threshold, num_grids):
    model, data, table = make_fake(seed=seed, num=40, k=k)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        grids = make_grid_dataset(model, data, n=n, num_grids=num_grids, seed=seed,
                                  confidence_threshold=threshold, allow_fewer=True,
                                  progress=False)
    if num_grids is not None:
        assert len(grids) <= num_grids
    _check_grid_properties(grids, table, data[1], threshold)


def test_seed_reproducibility() -> None:
    model, data, _ = make_fake(seed=5, num=120, k=8)
    a = make_grid_dataset(model, data, n=2, num_grids=10, seed=11, progress=False)
    b = make_grid_dataset(model, data, n=2, num_grids=10, seed=11, progress=False)
    c = make_grid_dataset(model, data, n=2, num_grids=10, seed=12, progress=False)
    assert torch.equal(a.source_indices, b.source_indices) and torch.equal(a.classes, b.classes)
    assert not torch.equal(a.classes, c.classes)


def test_too_few_confident_images_is_an_error_that_says_how_many_grids_are_available() -> None:
    model, data, table = make_fake(seed=0, num=30, k=5)
    available = len(make_grid_dataset(model, data, n=2, num_grids=None, progress=False))
    assert 0 < available < 1000
    with pytest.raises(ValueError, match=f"only {available} 2×2 grids can be made, 1000 were "
                                         r"requested.*sigmoid\(logit\) > 0.5.*num_grids="
                                         f"{available}"):
        make_grid_dataset(model, data, n=2, num_grids=1000, progress=False)
    with pytest.warns(UserWarning, match=f"only {available} 2×2 grids"):
        grids = make_grid_dataset(model, data, n=2, num_grids=1000, allow_fewer=True,
                                  progress=False)
    assert grids.num_grids == len(grids) == available and grids.requested == 1000
    # the usable images are counted per class, by name where the model records names
    ok = table.argmax(1) == data[1]
    conf = table.gather(1, data[1][:, None])[:, 0].sigmoid()
    counts = {c: int((ok & (data[1] == c) & (conf > 0.5)).sum()) for c in range(5)}
    model.class_names = ["ant", "bee", "cat", "dog", "eel"]
    want = {n: counts[c] for c, n in enumerate(model.class_names) if counts[c]}
    with pytest.raises(ValueError) as e:
        make_grid_dataset(model, data, n=2, num_grids=1000, progress=False)
    assert f"(usable images per class: {want})" in str(e.value)


def test_too_few_confident_classes_is_an_error_that_says_how_many_there_are() -> None:
    model, data, table = make_fake(seed=0, num=30, k=5)
    # a threshold only the single most confident image of each class passes
    conf = table.gather(1, data[1][:, None])[:, 0].sigmoid()
    ok = table.argmax(1) == data[1]
    per_class = {c: conf[ok & (data[1] == c)].max().item() for c in range(5)
                 if (ok & (data[1] == c)).any()}
    strict = sorted(per_class.values())[-3] - 1e-9  # 3 classes keep an image
    with pytest.raises(TooFewClassesError, match=r"only 3 of the model's 5 classes have a "
                       r"correctly classified image with sigmoid\(logit\) > .*: usable classes 3;"
                       r" no grid size fits.*confidence_threshold=None") as e:
        make_grid_dataset(model, data, n=2, confidence_threshold=float(strict), progress=False)
    assert e.value.needed == 4 and len(e.value.usable) == 3


def test_grid_needs_enough_classes() -> None:
    model, data, _ = make_fake(num=20, k=3)
    with pytest.raises(ValueError, match="needs 4 distinct classes"):
        make_grid_dataset(model, data, n=2, progress=False)


def test_grid_images_tile_cells_row_major_and_restore_train_mode() -> None:
    model, (images, labels), _ = make_fake(seed=2, num=60, k=6, size=3)
    model.train()
    grids = make_grid_dataset(model, (images, labels), n=2, num_grids=4, progress=False)
    assert model.training
    tiled = grids.images
    assert tiled.shape == (4, 2, 6, 6)
    boxes = grids.boxes
    assert boxes.tolist() == [[0, 0, 3, 3], [0, 3, 3, 6], [3, 0, 6, 3], [3, 3, 6, 6]]
    for g in range(4):
        for k_, (t, left, b, r) in enumerate(boxes.tolist()):
            torch.testing.assert_close(tiled[g, :, t:b, left:r],
                                       images[grids.source_indices[g, k_]])
    # round trip through the JSON form with a map-style data set
    ds = torch.utils.data.TensorDataset(images, labels)
    again = GridDataset.from_dict(json.loads(json.dumps(grids.to_dict())), ds)
    torch.testing.assert_close(again.images, tiled)


def test_map_style_dataset_gives_same_grids_as_tensors() -> None:
    model, (images, labels), _ = make_fake(seed=4, num=50, k=6)
    a = make_grid_dataset(model, (images, labels), n=2, num_grids=5, progress=False)
    b = make_grid_dataset(model, torch.utils.data.TensorDataset(images, labels), n=2,
                          num_grids=5, batch_size=8, progress=False)
    assert torch.equal(a.source_indices, b.source_indices)
    torch.testing.assert_close(a.images, b.images)


# --------------------------------------------------------------------------- the game


def oracle(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Attribution exactly on the pixels of the target class's cell (channel 1 = label)."""
    return (images[:, 1] == targets.to(images)[:, None, None]).double()[:, None]


def uniform(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return torch.ones_like(images[:, :1])


def negative(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return -torch.ones_like(images)


def test_game_scores_known_methods() -> None:
    model, data, _ = make_fake(seed=7, num=100, k=6)
    res = grid_pointing_game(model, data, [oracle, uniform, negative], n=2, num_grids=6,
                             batch_size=5, progress=False)
    assert res.methods == ["oracle", "uniform", "negative"]
    assert res.scores["oracle"].shape == (6, 4)
    assert (res.scores["oracle"] == 1.0).all()  # targets line up with cells
    np.testing.assert_allclose(res.scores["uniform"], 0.25)
    assert (res.scores["negative"] == 0.0).all()
    assert res.baseline == 0.25
    summ = res.summary()
    assert summ["oracle"].median == 1.0 and summ["uniform"].mean == pytest.approx(0.25)


def test_summary_statistics() -> None:
    r = PointingGameResult(n=1, classes=np.zeros((5, 1), dtype=np.int64),
                           scores={"m": np.array([[0.0], [1.0], [0.25], [0.75], [0.5]])})
    s = r.summary()["m"]
    assert (s.count, s.median, s.q1, s.q3, s.mean, s.min, s.max) == (5, 0.5, 0.25, 0.75, 0.5,
                                                                     0.0, 1.0)
    assert r.baseline == 1.0


def test_method_map_size_mismatch_is_explained() -> None:
    model, data, _ = make_fake(seed=7, num=60, k=6)

    def coarse(images, targets):
        return torch.ones(len(images), 1, 1, 1)

    with pytest.raises(ValueError, match="upsample"):
        grid_pointing_game(model, data, coarse, n=2, num_grids=2, progress=False)


def test_make_attribution_fn_passes_callables_and_rejects_settings_for_them() -> None:
    model, _, _ = make_fake()
    assert make_attribution_fn(model, oracle) is oracle
    with pytest.raises(ValueError, match="settings"):
        make_attribution_fn(model, oracle, n_steps=3)
    with pytest.raises(ValueError, match="unknown methods"):
        grid_pointing_game(model, (torch.zeros(1, 2, 2, 2), torch.zeros(1)), oracle,
                           method_settings={"lime": {}}, progress=False)


def test_resume_after_interruption_and_skip_finished(tmp_path) -> None:
    model, data, _ = make_fake(seed=9, num=120, k=6)
    kw = dict(n=2, num_grids=5, batch_size=2, confidence_threshold=None, progress=False)
    fresh = grid_pointing_game(model, data, {"m": oracle, "u": uniform}, **kw)
    total_batches = math.ceil(5 / 2)  # batches of 2 grids, one call per cell (per-target loop)

    calls = {"n": 0}

    def failing(images, targets):
        calls["n"] += 1
        if calls["n"] == 2 * 4 + 1:  # the first call of the third batch
            raise RuntimeError("interrupted")
        return oracle(images, targets)

    failing.__name__ = "m"
    with pytest.raises(RuntimeError, match="interrupted"):
        grid_pointing_game(model, data, {"m": failing, "u": uniform}, results_dir=tmp_path,
                           checkpoint_interval_s=0, **kw)
    partial = json.loads((tmp_path / "m.partial.json").read_text())
    assert len(partial["scores"]) == 2 * 2 * 4  # two batches of two grids of four cells
    assert (tmp_path / "grids.json").exists()

    counted = {"m": 0, "u": 0}

    def count(fn, key):
        def wrapped(images, targets):
            counted[key] += 1
            return fn(images, targets)
        return wrapped

    forwards = model.calls
    res = grid_pointing_game(model, data, {"m": count(oracle, "m"), "u": count(uniform, "u")},
                             results_dir=tmp_path, checkpoint_interval_s=0, **kw)
    assert model.calls == forwards  # grids were loaded, not rebuilt
    assert counted == {"m": (total_batches - 2) * 4, "u": total_batches * 4}
    for name in ("m", "u"):
        np.testing.assert_array_equal(res.scores[name], fresh.scores[name])
    assert not (tmp_path / "m.partial.json").exists()
    assert (tmp_path / "m.json").exists() and (tmp_path / "pointing_game.json").exists()

    # finished methods are skipped entirely
    counted.update(m=0, u=0)
    res2 = grid_pointing_game(model, data, {"m": count(oracle, "m"), "u": count(uniform, "u")},
                              results_dir=tmp_path, **kw)
    assert counted == {"m": 0, "u": 0}
    np.testing.assert_array_equal(res2.scores["m"], fresh.scores["m"])

    # other settings against the same folder are refused, not silently mixed: each
    # differing setting named, before anything is computed
    with pytest.raises(SettingsMismatchError, match="other settings or another model — "
                       "smoothing: None then, 3 now") as e:
        grid_pointing_game(model, data, {"m": count(oracle, "m")}, results_dir=tmp_path,
                           smoothing=3, **kw)
    assert e.value.differences == {"smoothing": (None, 3)} and counted["m"] == 0
    with pytest.raises(SettingsMismatchError, match="seed: 0 then, 1 now") as e:
        grid_pointing_game(model, data, {"m": oracle}, results_dir=tmp_path, seed=1, **kw)
    assert list(e.value.differences) == ["seed"] and model.calls == forwards
    other, _, _ = make_fake(seed=10, num=120, k=6)
    with pytest.raises(SettingsMismatchError, match="other settings or another model") as e:
        grid_pointing_game(other, data, {"m": oracle}, results_dir=tmp_path, **kw)
    assert list(e.value.differences) == ["model"]
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*tmp"))


def test_prepared_grids_split_one_game_over_calls(tmp_path) -> None:
    """make_grid_dataset with the results folder makes the grid set once; calls with a
    subset of the methods each compute only theirs (as the main job's worker processes
    do); a call with every method collects them without computing anything — the
    one-call result."""
    model, data, _ = make_fake(seed=9, num=120, k=6)
    kw = dict(n=2, num_grids=5, confidence_threshold=None, progress=False)
    whole = grid_pointing_game(model, data, {"m": oracle, "u": uniform}, **kw)
    grids = make_grid_dataset(model, data, results_dir=tmp_path, **kw)
    assert (tmp_path / "grids.json").exists() and not list(tmp_path.glob("[mu]*.json"))
    assert torch.equal(grids.source_indices, whole_grids(model, data, kw).source_indices)
    forwards = model.calls
    grid_pointing_game(model, data, {"u": uniform}, results_dir=tmp_path, **kw)
    grid_pointing_game(model, data, {"m": oracle}, results_dir=tmp_path, **kw)
    assert model.calls == forwards  # the grids were loaded, not rebuilt

    def never(images, targets):
        raise AssertionError("a finished method was computed again")

    res = grid_pointing_game(model, data, {"m": never, "u": never}, results_dir=tmp_path, **kw)
    for name in ("m", "u"):
        np.testing.assert_array_equal(res.scores[name], whole.scores[name])
    # the prepared grid set is keyed like the game's: other settings are refused
    with pytest.raises(SettingsMismatchError, match="seed: 0 then, 1 now"):
        make_grid_dataset(model, data, results_dir=tmp_path, **{**kw, "seed": 1})


def test_a_results_folder_of_the_version_before_the_store_is_read(tmp_path) -> None:
    """A folder written before ``store.json`` existed (grids.json with its settings at
    the top level, partial files keyed by a fingerprint only) is loaded, not
    recomputed; one of other settings is refused by its grids.json."""
    model, data, _ = make_fake(seed=9, num=120, k=6)
    kw = dict(n=2, num_grids=5, batch_size=2, confidence_threshold=None, progress=False)
    whole = grid_pointing_game(model, data, {"m": oracle, "u": uniform}, results_dir=tmp_path,
                               **kw)
    # the layout of that version: no store.json; grids.json as GridDataset.to_dict + model
    (tmp_path / "store.json").unlink()
    grids = json.loads((tmp_path / "grids.json").read_text())
    (tmp_path / "grids.json").write_text(json.dumps(
        {k: v for k, v in grids.items() if k not in ("key", "settings")}))
    # ... and an unfinished method as it saved it: key (fingerprint), method, scores
    u = json.loads((tmp_path / "u.json").read_text())
    (tmp_path / "u.json").unlink()
    (tmp_path / "u.partial.json").write_text(json.dumps(
        {"key": u["key"], "method": "u", "scores": sum(u["scores"][:2], [])}))  # 2 grids done
    calls = {"u": 0}

    def counted_uniform(images, targets):
        calls["u"] += 1
        return uniform(images, targets)

    counted_uniform.__name__ = "u"

    def never(images, targets):
        raise AssertionError("a finished method was computed again")

    forwards = model.calls
    res = grid_pointing_game(model, data, {"m": never, "u": counted_uniform},
                             results_dir=tmp_path, **kw)
    assert model.calls == forwards  # the grids were loaded, not remade
    assert calls["u"] == 2 * 4  # grids 2-4 in two batches, one call per cell
    for name in ("m", "u"):
        np.testing.assert_array_equal(res.scores[name], whole.scores[name])
    (tmp_path / "store.json").unlink()
    with pytest.raises(SettingsMismatchError, match="seed: 0 then, 1 now"):
        grid_pointing_game(model, data, {"m": never}, results_dir=tmp_path, seed=1, **kw)


def whole_grids(model, data, kw):
    return make_grid_dataset(model, data, n=kw["n"], num_grids=kw["num_grids"],
                             confidence_threshold=kw["confidence_threshold"], progress=False)


def test_result_json_round_trip_and_box_plot(tmp_path) -> None:
    model, data, _ = make_fake(seed=7, num=100, k=6)
    res = grid_pointing_game(model, data, [oracle, uniform], n=2, num_grids=4, progress=False)
    res.save(tmp_path / "r.json")
    back = PointingGameResult.load(tmp_path / "r.json")
    assert back.methods == res.methods and back.n == 2
    np.testing.assert_array_equal(back.classes, res.classes)
    np.testing.assert_array_equal(back.scores["uniform"], res.scores["uniform"])
    assert back.summary() == res.summary()
    fig = plot_pointing_game({"B-cos": res, "standard": back}, tmp_path / "box.png")
    assert (tmp_path / "box.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(fig.axes) == 1 and fig.axes[0].get_ylim()[1] > 1
    res.plot(tmp_path / "one.svg")
    assert b"<svg" in (tmp_path / "one.svg").read_bytes()[:500]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["box.png", "one.svg", "r.json"]


# --------------------------------------------------------------------------- end to end


def tiny_bcos_net(num_classes: int = 4) -> nn.Module:
    from bcosnet.nn import AddInverse, BcosConv2d, LogitLayer

    return nn.Sequential(
        AddInverse(1),
        BcosConv2d(2, 8, 3, padding=1, b=2.0),
        BcosConv2d(8, num_classes, 3, padding=1, b=2.0),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        LogitLayer(temperature=0.1),
    )


_PATTERNS = torch.tensor(
    [
        [[0, 0, 0], [1, 1, 1], [0, 0, 0]],  # horizontal bar
        [[0, 1, 0], [0, 1, 0], [0, 1, 0]],  # vertical bar
        [[1, 0, 0], [0, 1, 0], [0, 0, 1]],  # diagonal
        [[0, 0, 1], [0, 1, 0], [1, 0, 0]],  # anti-diagonal
    ],
    dtype=torch.float64,
)


def generated_pattern_set(num: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """8×8 grey images: dim noise plus a bright 3×3 stroke pattern (4 classes) anywhere."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(num) % 4
    images = 0.3 * torch.rand(num, 1, 8, 8, generator=g, dtype=torch.float64)
    pos = torch.randint(0, 6, (num, 2), generator=g)
    for i, c in enumerate(labels.tolist()):
        y, x = int(pos[i, 0]), int(pos[i, 1])
        patch = images[i, 0, y : y + 3, x : x + 3]
        images[i, 0, y : y + 3, x : x + 3] = torch.maximum(patch, _PATTERNS[c])
    return images, labels


@pytest.fixture(scope="module")
def trained_tiny_net():
    """A tiny B-cos net trained briefly on the generated pattern set, and a test set."""
    torch.manual_seed(0)
    model = tiny_bcos_net(4).double()
    images, labels = generated_pattern_set(96, seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):  # a few full-batch steps suffice for this easy task
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        opt.step()
    model.eval()
    test_images, test_labels = generated_pattern_set(64, seed=1)
    with torch.no_grad():
        acc = (model(test_images).argmax(1) == test_labels).double().mean().item()
    assert acc > 0.6, f"the tiny net did not learn the generated task (accuracy {acc:.2f})"
    return model, (test_images, test_labels)


def test_end_to_end_bcos_net_with_model_inherent_explanations(trained_tiny_net) -> None:
    import bcosnet

    model, (images, labels) = trained_tiny_net
    res = grid_pointing_game(model, (images, labels), "bcos", n=2, num_grids=6, seed=0,
                             batch_size=8, progress=False)
    s = res.scores["bcos"]
    assert s.shape == (6, 4)
    assert ((s >= 0) & (s <= 1)).all()
    assert len(np.unique(s)) > 1  # not a constant: the maps differ per class
    assert s.mean() > res.baseline  # a trained B-cos net localises better than uniform
    # independent check of one grid: explain each cell's class, split the positive mass
    grids = make_grid_dataset(model, (images, labels), n=2, num_grids=6, seed=0, progress=False)
    grid0 = grids.images[:1].expand(4, -1, -1, -1)
    ex = bcosnet.explain(model, grid0, target=grids.classes[0])
    for k in range(4):
        pos = ex.contributions[k, 0].clamp(min=0)
        fractions = [float(pos[r * 8:(r + 1) * 8, c * 8:(c + 1) * 8].sum() / pos.sum())
                     for r in range(2) for c in range(2)]
        assert math.isclose(sum(fractions), 1.0, rel_tol=1e-9)  # one map's fractions sum to 1
        assert math.isclose(s[0, k], fractions[k], rel_tol=1e-9, abs_tol=1e-12)


def test_named_methods_resolve_through_bcosnet_attribution(trained_tiny_net) -> None:
    from bcosnet import attribution

    model, data = trained_tiny_net
    d_bcos = attribution.get("bcos", model)
    res = grid_pointing_game(
        model, data,
        {"bcos": "bcos", "attribution.bcos": lambda x, t: d_bcos.attribute(x, target=t),
         "ixg": "ixg", "occlusion": "occlusion"},
        n=2, num_grids=4, method_settings={"occlusion": {}}, progress=False,
    )
    for name, s in res.scores.items():
        assert s.shape == (4, 4) and ((s >= 0) & (s <= 1)).all(), name
    # the built-in "bcos" (explain().contributions) and the attribution package's agree
    np.testing.assert_allclose(res.scores["bcos"], res.scores["attribution.bcos"], atol=1e-12)
    with pytest.raises(ValueError, match="unknown attribution method"):
        grid_pointing_game(model, data, "no-such-method", n=2, num_grids=1, progress=False)
