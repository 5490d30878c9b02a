"""benchmarks/bench_memory_methods.py's pass counts per grid image (``grid_passes``):
hand-computed values for the default settings, and the passes a small model
really receives (``attribution.count_passes``, hooks) for every method."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch

import bcosnet
from bcosnet import attribution
from bcosnet.pipeline import ALL_METHODS

BENCH = Path(__file__).parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(BENCH))
        yield importlib.import_module("bench_memory_methods")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return bcosnet.create_model("fmnist_bcos", num_classes=10).eval()


def test_default_settings_per_grid_by_hand(bench, model) -> None:
    get = {m: attribution.get(m, model) for m in ALL_METHODS}
    # Occlusion, 16 px patches at stride 8: row starts 0, 8, ..., 656 on 672 px (83),
    # 0, 8, ..., 208 on 224 px (27); on 50 px 0, 8, ..., 32 and the flush 34 (6).
    assert bench.grid_passes(get["occlusion"], (672, 672)) == (1 + 83 * 83, 0)
    assert bench.grid_passes(get["occlusion"], (224, 224)) == (1 + 27 * 27, 0)
    assert bench.grid_passes(get["occlusion"], (50, 672)) == (1 + 6 * 83, 0)
    assert bench.grid_passes(get["intgrad"], (672, 672)) == (51, 450)  # 50 steps × 9 targets
    assert bench.grid_passes(get["rise"], (672, 672)) == (501, 0)
    assert bench.grid_passes(get["lime"], (672, 672)) == (501, 0)
    assert bench.grid_passes(get["deeplift"], (672, 672)) == (2, 18)
    for m in ("bcos", "grad", "ixg", "gradcam"):
        assert bench.grid_passes(get[m], (672, 672), targets=4) == (1, 4)


@pytest.mark.parametrize("name", ALL_METHODS)
def test_counts_what_the_model_receives(bench, model, name) -> None:
    settings = {"intgrad": {"n_steps": 3, "batch_size": 2}, "rise": {"n_masks": 5},
                "lime": {"n_samples": 6, "max_dist": 4}}.get(name, {})
    method = attribution.get(name, model, **settings)
    image = torch.rand(1, 1, 50, 56, generator=torch.Generator().manual_seed(0))
    with attribution.count_passes(model) as count:
        method.attribute(image, target=torch.arange(7)[None])
    assert (count.forward, count.backward) == bench.grid_passes(method, (50, 56), targets=7)


def test_measured_occlusion_keeps_the_patch_and_covers_the_batch(bench, model) -> None:
    for batch in (1, 2, 3, 8):
        s = bench.measured_settings("occlusion", batch, (672, 672))
        method = attribution.get("occlusion", model, **s)
        windows = bench.grid_passes(method, (672, 672))[0] - 1
        assert method.patch_size == (16, 16) and method.batch_size == batch
        assert batch <= windows <= max(4, batch + 1)
