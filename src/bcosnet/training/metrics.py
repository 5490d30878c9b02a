"""Classification counts on a data set — the one place where accuracy is counted.
:func:`bcosnet.training.evaluate_model` (top-1 accuracy and loss while training,
summed over processes) and :func:`bcosnet.evaluation.accuracy` (top-k and
per-class accuracy) both read these counts."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .._utils.modules import eval_mode, first_output
from .._utils.validate import check_int

__all__ = ["ClassificationCounts", "count_classifications", "top_ks"]


@dataclass
class ClassificationCounts:
    """Sums over the images seen (one process's share when sharded).

    Attributes:
        n: images.
        hits: k → images whose label is among their k highest logits (k = 1 and each
            k of :func:`top_ks`); the top-1 hit is the first of the sorted logits.
        per_class_hits / per_class_counts: K top-1 hits / images per label.
        loss_sum: Σ over batches of the batch's mean loss × its size (0 without ``loss``).
        num_classes: K, the model's number of outputs (0 when no batch was seen).
    """

    n: int
    hits: dict[int, int]
    per_class_hits: list[int]
    per_class_counts: list[int]
    loss_sum: float
    num_classes: int


def top_ks(topk: tuple[int, ...] | None, num_classes: int) -> list[int]:
    """1 and the requested k below ``num_classes`` (default: 5 when it fits); top-k of
    K classes with k ≥ K is 100 % by definition, so asking for it is an error."""
    if topk is None:
        return [1, 5] if num_classes > 5 else [1]
    bad = sorted(k for k in set(topk) if k >= num_classes and k != 1)
    if bad:
        raise ValueError(
            f"top-{bad[0]} accuracy of a {num_classes}-class model is 100 % by definition: "
            f"topk values must be below the number of classes ({num_classes}), got "
            f"{tuple(topk)}; leave topk=None for the default (top-5 when there are more "
            "than 5 classes)")
    return sorted(set(topk) | {1})


@torch.no_grad()
def count_classifications(
    model: nn.Module,
    batches: Iterable[Any],
    *,
    topk: tuple[int, ...] | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    autocast_dtype: torch.dtype | None = None,
    loss: Callable[[Tensor, Tensor], Tensor] | None = None,
) -> ClassificationCounts:
    """Run ``model`` (in eval mode, restored afterwards) over ``(images, labels)``
    ``batches`` and count its correct classifications.

    Args:
        model: maps N×C×H×W images to N×K logits (a tuple output: its first element).
        batches: ``(images N×C×H×W, labels N)`` pairs, e.g. a ``DataLoader``.
        topk: the k counted besides 1 (see :func:`top_ks`; default: 5 when K > 5).
        device, dtype: where and in which dtype the images go (default: the model's
            first parameter's; float32 for a model without floating-point parameters).
        autocast_dtype: run the forward pass under ``torch.autocast`` with this dtype.
        loss: ``loss(logits N×K, labels N)`` → the batch's mean loss, summed into
            ``loss_sum`` weighted by the batch size.
    """
    if topk is not None:
        for k in topk:
            check_int("topk values", k, 1)
    param = next(model.parameters(), None)
    dev = torch.device(device) if device is not None else (
        param.device if param is not None else torch.device("cpu"))
    if dtype is None:
        dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    ac = (torch.autocast(dev.type, dtype=autocast_dtype) if autocast_dtype is not None
          else contextlib.nullcontext())
    sums: dict[str, Any] = {"n": 0, "loss": torch.zeros((), dtype=torch.float64, device=dev)}
    with eval_mode(model):
        for x, y in batches:
            x, y = x.to(dev, dtype), torch.as_tensor(y).to(dev)
            with ac:
                out = first_output(model(x))
            if loss is not None:
                sums["loss"] += loss(out, y).double() * len(y)
            _count_batch(sums, out, y, topk)
    if sums["n"] == 0:
        return ClassificationCounts(0, {}, [], [], 0.0, 0)
    return ClassificationCounts(
        n=sums["n"], hits={k: int(v) for k, v in sums["hits"].items()},
        per_class_hits=sums["per_hit"].tolist(), per_class_counts=sums["per_cnt"].tolist(),
        loss_sum=float(sums["loss"]), num_classes=int(sums["num_classes"]))


def _count_batch(sums: dict[str, Any], out: Tensor, y: Tensor, topk: tuple[int, ...] | None
                 ) -> None:
    """Add one batch's hits (top-k and per class) to ``sums``."""
    num_classes = out.shape[1]
    if "hits" not in sums:
        ks = top_ks(topk, num_classes)
        sums.update(num_classes=num_classes, ks=ks,
                    hits={k: torch.zeros((), dtype=torch.long, device=out.device) for k in ks},
                    per_hit=torch.zeros(num_classes, dtype=torch.long, device=out.device),
                    per_cnt=torch.zeros(num_classes, dtype=torch.long, device=out.device))
    top = out.topk(min(max(sums["ks"]), num_classes), dim=1).indices
    correct = top == y[:, None]
    for k in sums["ks"]:
        sums["hits"][k] += correct[:, :k].any(1).sum()
    sums["per_cnt"] += torch.bincount(y, minlength=num_classes)[:num_classes]
    sums["per_hit"] += torch.bincount(y[correct[:, 0]], minlength=num_classes)[:num_classes]
    sums["n"] += len(y)
