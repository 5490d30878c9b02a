"""Helpers of the model tests: comparing a bcosnet model with the ``bcos`` package's
model of the same weights; batch-norm statistics from one batch."""

from __future__ import annotations

import torch

import bcosnet


def bcos_explanation(ref: torch.nn.Module, enc: torch.Tensor, target: int):
    """(output, W(x)) of the reference for class ``target`` with the bcos package's own
    explanation mode, on the encoded input ``enc`` ([x, 1 − x])."""
    enc = enc.clone().requires_grad_(True)
    with ref.explanation_mode():
        out = ref(enc)
        (grad,) = torch.autograd.grad(out[:, target].sum(), enc)
    return out.detach(), grad


def assert_same_as_bcos(ours: torch.nn.Module, ref: torch.nn.Module, x: torch.Tensor,
                        target: int) -> None:
    """Same logits (no-grad forward) and the same W(x) for ``target`` (1e-4 relative)."""
    x6 = torch.cat([x, 1 - x], 1)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x6), rtol=1e-4, atol=1e-6)
    _, w_ref = bcos_explanation(ref, x6, target)
    ex = bcosnet.explain(ours, x, target=target)
    torch.testing.assert_close(ex.weights[:, 0], w_ref, rtol=1e-4, atol=1e-8)


def calibrate_norms(model: torch.nn.Module, images: torch.Tensor) -> torch.nn.Module:
    """Every batch norm's running statistics from one batch of ``images`` (fresh
    ones, running_var = 1, shrink a v2 net's signal towards 0 layer by layer, or let
    it explode); returns the model in eval mode."""
    norms = [m for m in model.modules() if getattr(m, "running_var", None) is not None]
    model.eval()  # the rest stays in eval mode: e.g. Inception's auxiliary head needs 299 px
    for m in norms:
        m.momentum = 1.0
        m.train()
    with torch.no_grad():
        model(images)
    return model.eval()
