"""Losses: BCE on one-hot targets (the B-cos loss), its uniform-off-label
variant, and softmax cross-entropy; plus the auxiliary-head combination."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["classification_loss", "one_hot_targets", "combined_loss"]


def one_hot_targets(labels: Tensor, num_classes: int, off_value: float = 0.0) -> Tensor:
    """N → N×K targets: 1 for the label, ``off_value`` elsewhere."""
    t = F.one_hot(labels, num_classes).to(torch.get_default_dtype())
    if off_value:
        t = t + off_value * (1.0 - t)  # the on value stays 1 (as B-cos v2)
    return t


def classification_loss(logits: Tensor, labels: Tensor, kind: str = "bce") -> Tensor:
    """Mean loss of N×K ``logits`` against N integer ``labels``.

    ``"bce"``: binary cross-entropy per class against one-hot targets (mean over
    N·K entries, as ``nn.BCEWithLogitsLoss``); ``"bce_uniform"``: the same with
    off-labels set to 1/K, on-labels 1 (B-cos v2's variant); ``"ce"``: softmax cross-entropy.
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must be N×K, got shape {tuple(logits.shape)}")
    k = logits.shape[1]
    if kind == "ce":
        return F.cross_entropy(logits.float() if logits.dtype in (torch.float16, torch.bfloat16)
                               else logits, labels)
    if kind in ("bce", "bce_uniform"):
        off = 1.0 / k if kind == "bce_uniform" else 0.0
        target = one_hot_targets(labels, k, off).to(device=logits.device)
        lg = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
        return F.binary_cross_entropy_with_logits(lg, target.to(lg.dtype))
    raise ValueError(f"unknown loss {kind!r}; use 'bce', 'bce_uniform' or 'ce'")


def combined_loss(
    output: Tensor | tuple[Tensor, ...], labels: Tensor, kind: str, aux_weight: float = 1.0
) -> tuple[Tensor, Tensor]:
    """Loss for a model output that may be ``(logits, aux_logits)`` (Inception in
    training mode): ``L(logits) + aux_weight·L(aux_logits)``.  Returns (loss, logits)."""
    if isinstance(output, (tuple, list)):
        logits, *aux = output
        loss = classification_loss(logits, labels, kind)
        for a in aux:
            if a is not None:
                loss = loss + aux_weight * classification_loss(a, labels, kind)
        return loss, logits
    return classification_loss(output, labels, kind), output
