"""evaluation.accuracy: top-k only where it means something (k below the class count)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bcosnet.evaluation.accuracy import accuracy


def _data(n: int, k: int, seed: int = 0):
    """A random linear classifier on random 2×2 images, its logits and random labels."""
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, k))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    images = torch.rand(n, 1, 2, 2, generator=g)
    labels = torch.randint(0, k, (n,), generator=g)
    with torch.no_grad():
        logits = model(images)
    return model, list(zip(images, labels.tolist(), strict=True)), logits, labels


def _topk_reference(logits: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """From the definition: the label is among the k largest logits (sorted by hand)."""
    hits = 0
    for row, y in zip(logits.tolist(), labels.tolist(), strict=True):
        order = sorted(range(len(row)), key=lambda c: -row[c])
        hits += y in order[:k]
    return hits / len(labels)


def test_three_classes_report_top1_only():
    model, ds, logits, labels = _data(40, 3)
    res = accuracy(model, ds, batch_size=7)
    assert list(res.topk) == [1] and res.num_classes == 3
    assert res.top1 == pytest.approx(_topk_reference(logits, labels, 1))
    assert "top-5" not in res.summary() and "top-1" in res.summary()
    with pytest.raises(ValueError, match=r"top-3 accuracy of a 3-class model is 100 % by "
                                         r"definition: topk values must be below the number "
                                         r"of classes \(3\)"):
        accuracy(model, ds, topk=(1, 3))


def test_many_classes_report_top5_by_default():
    model, ds, logits, labels = _data(50, 10, seed=1)
    res = accuracy(model, ds, batch_size=16)
    assert list(res.topk) == [1, 5]
    for k in (1, 5):
        assert res.topk[k] == pytest.approx(_topk_reference(logits, labels, k))
    assert f"top-5 {100 * res.topk[5]:.2f} %" in res.summary()
    assert list(accuracy(model, ds, topk=(2, 9)).topk) == [1, 2, 9]


def test_the_trainer_counts_accuracy_as_evaluation_does():
    """One accuracy: the trainer's evaluation (top-1 and mean loss) and
    evaluation.accuracy agree with the definition on a random linear classifier, also
    in float64."""
    from bcosnet.training import evaluate_model

    model, ds, logits, labels = _data(45, 6, seed=2)
    want = _topk_reference(logits, labels, 1)
    bce = nn.functional.binary_cross_entropy_with_logits(
        logits, nn.functional.one_hot(labels, 6).float()).item()
    res = evaluate_model(model, ds, batch_size=8, loss="bce")
    assert res["acc"] == pytest.approx(want) and res["n"] == 45
    assert res["loss"] == pytest.approx(bce, rel=1e-5)
    assert accuracy(model, ds, batch_size=8).top1 == pytest.approx(want)
    model64 = model.double()
    assert evaluate_model(model64, ds, dtype=torch.float64)["acc"] == pytest.approx(want)
