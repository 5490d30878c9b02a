"""Numerics at the edges (docs/reliability.md): inputs at exactly 0 and 1,
constant images, 1×1 and large images, half-precision models."""

from __future__ import annotations

import copy

import pytest
import torch

import bcosnet

AREA = "numerics"


def _exact(ex) -> float:
    return float(ex.completeness_error.abs().max() / (1 + ex.logits.abs().max()))


def test_edge_inputs(tiny_bcos, reliability) -> None:
    for name, x in (("all pixels exactly 0", torch.zeros(2, 1, 28, 28)),
                    ("all pixels exactly 1", torch.ones(2, 1, 28, 28)),
                    ("constant grey image (0.5)", torch.full((2, 1, 28, 28), 0.5)),
                    ("pixels only 0 or 1 (binary)",
                     (torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
                      > 0.5).float())):
        ex = bcosnet.explain(tiny_bcos, x, target=("topk", 2))
        assert torch.isfinite(ex.weights).all() and _exact(ex) < 1e-5
        rgba = bcosnet.to_rgba(ex.weights, ex.inputs)
        assert torch.isfinite(rgba).all() and rgba.min() >= 0 and rgba.max() <= 1
        reliability.handled(AREA, name, "finite weights; Σ contributions + bias = logit "
                            "(rel. error < 1e-5); colours in [0, 1]")
    reliability.refused(AREA, "1×1 image", ValueError, "at least 4×4 pixels.*resize",
                        lambda: bcosnet.explain(tiny_bcos, torch.rand(1, 1, 1, 1)))
    reliability.refused(AREA, "NaN pixel", ValueError, "NaN or Inf",
                        lambda: bcosnet.explain(tiny_bcos, torch.full((1, 1, 28, 28),
                                                                      float("nan"))))


def test_large_image_and_memory_error(tiny_bcos, monkeypatch, reliability) -> None:
    x = torch.rand(1, 1, 512, 512, generator=torch.Generator().manual_seed(0))
    ex = bcosnet.explain(tiny_bcos, x)
    assert ex.weights.shape == (1, 1, 2, 512, 512) and _exact(ex) < 1e-5
    reliability.handled(AREA, "512×512 image on a 28 px network", "explained exactly")

    # Out of memory: the first layer asks torch's allocator for 1 PiB (more than any
    # address space), a real allocator failure in torch's own words.
    def oom(*a, **k):
        return torch.empty(1 << 50, dtype=torch.uint8)

    monkeypatch.setattr(tiny_bcos.features[0], "forward", oom)
    reliability.refused(AREA, "out of memory (a 1 PiB allocation by the first layer)",
                        MemoryError, r"1 image\(s\) of 512×512 pixels needs more memory.*fewer "
                        "images", lambda: bcosnet.explain(tiny_bcos, x))

    # The GPU's out-of-memory error is recognised by its type, whatever its text.
    def gpu_oom(*a, **k):
        raise torch.OutOfMemoryError("Tried to allocate 20.00 GiB")

    monkeypatch.setattr(tiny_bcos.features[0], "forward", gpu_oom)
    with pytest.raises(MemoryError, match="needs more memory.*fewer images"):
        bcosnet.explain(tiny_bcos, x)
    # Any other runtime error passes through unchanged.
    monkeypatch.setattr(tiny_bcos.features[0], "forward",
                        lambda *a, **k: torch.ones(2, 3) @ torch.ones(2, 3))
    with pytest.raises(RuntimeError, match="cannot be multiplied"):
        bcosnet.explain(tiny_bcos, x)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_reduced_and_double_precision_models(tiny_bcos, dtype, reliability) -> None:
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    ref = bcosnet.explain(tiny_bcos, x, target=2)
    model = copy.deepcopy(tiny_bcos).to(dtype)
    ex = bcosnet.explain(model, x.to(dtype), target=2)
    assert ex.weights.dtype == dtype
    tol = {torch.float64: 1e-9, torch.float16: 2e-2, torch.bfloat16: 2e-2}[dtype]
    assert _exact(ex) < tol
    cos = torch.nn.functional.cosine_similarity(ex.weights.double().flatten(1),
                                                ref.weights.double().flatten(1))
    assert cos.min() > 0.95, cos
    rgba = bcosnet.to_rgba(ex.weights, ex.inputs)
    assert torch.isfinite(rgba).all() and rgba.min() >= 0 and rgba.max() <= 1
    reliability.handled(AREA, f"{str(dtype).replace('torch.', '')} model and images",
                        f"explained; completeness rel. error < {tol:g}; weights' cosine "
                        f"similarity to float32 > 0.95; to_rgba in [0, 1]")
    reliability.refused(AREA, f"float32 images into a {str(dtype).replace('torch.', '')} "
                        "model", TypeError, "dtype is torch.float32 but the model's weights",
                        lambda: bcosnet.explain(model, x))
