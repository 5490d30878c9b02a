"""Classification accuracy: top-1/top-k and per-class accuracy on a data set."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..training.distributed import DistEnv, ShardedSampler, gather_objects
from ..training.metrics import ClassificationCounts, count_classifications

__all__ = ["AccuracyResult", "accuracy"]


@dataclass
class AccuracyResult:
    """Accuracies as fractions in [0, 1].

    Attributes:
        top1: fraction of images whose highest logit is the label.
        topk: ``{k: fraction}`` for 1 and each k below the number of classes
            (top-k of K classes with k >= K is 100 % by definition, never listed).
        per_class: accuracy per class index (NaN for classes without images).
        counts: number of images per class.
        n: number of images.
        class_names: names, when the data set has ``.classes``.
        num_classes: the model's number of outputs K.
    """

    top1: float
    topk: dict[int, float]
    per_class: list[float]
    counts: list[int]
    n: int
    class_names: list[str] = field(default_factory=list)
    num_classes: int = 0

    def summary(self) -> str:
        ks = "  ".join(f"top-{k} {100 * v:.2f} %" for k, v in sorted(self.topk.items()))
        return f"n = {self.n}  {ks}"


def accuracy(
    model: nn.Module,
    data: Dataset | DataLoader,
    *,
    topk: tuple[int, ...] | None = None,
    batch_size: int = 256,
    num_workers: int = 0,
    device: torch.device | str | None = None,
    progress: bool = False,
    ranks: DistEnv | None = None,
) -> AccuracyResult:
    """Evaluate ``model`` (in eval mode, restored afterwards) on ``data``.

    Args:
        model: maps N×C×H×W images in [0, 1] to N×K logits (a tuple output
            takes its first element).
        data: a data set of ``(image, label)`` or a ``DataLoader`` over one.
        topk: the k of top-k accuracies besides top-1; each must be below the
            model's number of classes K (top-K is 100 % by definition).  Default
            ``None``: top-5 when K > 5, else top-1 only.
        device: where to run (default: the model's parameters' device).
        ranks: this process's place among several (``torchrun``; a
            :class:`~bcosnet.training.distributed.DistEnv`), which call this function
            with the same arguments: rank r of N counts images r, r + N, ... of
            ``data`` (a data set, not a ``DataLoader``), the counts are summed over
            the ranks, and every rank returns the whole result.

    The counting is :func:`bcosnet.training.metrics.count_classifications`, the same
    as the trainer's evaluation.
    """
    from .._utils.progress import progress as tqdm

    if ranks is not None and isinstance(data, DataLoader):
        raise TypeError("ranks= shares out the images of a data set: pass the data set "
                        "itself, not a DataLoader")
    sampler = None if ranks is None else ShardedSampler(
        len(data), ranks.world_size, ranks.rank, shuffle=False, pad=False)  # type: ignore[arg-type]
    loader = data if isinstance(data, DataLoader) else DataLoader(
        data, batch_size=batch_size, shuffle=False, num_workers=num_workers, sampler=sampler)
    counts = count_classifications(
        model, tqdm(loader, desc="accuracy", leave=False, disable=not progress), topk=topk,
        device=device)
    if ranks is not None:
        counts = _summed(gather_objects(counts, ranks))
    if counts.n == 0:
        raise ValueError("the data set is empty; nothing to evaluate")
    per_class = [(h / c) if c else float("nan")
                 for h, c in zip(counts.per_class_hits, counts.per_class_counts, strict=True)]
    names = getattr(getattr(loader, "dataset", data), "classes", None) or []
    topk_res = {k: v / counts.n for k, v in counts.hits.items()}
    return AccuracyResult(topk_res[1], topk_res, per_class, counts.per_class_counts, counts.n,
                          list(names), counts.num_classes)


def _summed(parts: list[ClassificationCounts]) -> ClassificationCounts:
    """The counts of several processes' shares added up (a share without images has
    no classes and no hits)."""
    seen = [p for p in parts if p.n]
    if not seen:
        return parts[0]
    k = seen[0].num_classes
    return ClassificationCounts(
        n=sum(p.n for p in seen),
        hits={key: sum(p.hits[key] for p in seen) for key in seen[0].hits},
        per_class_hits=[sum(p.per_class_hits[c] for p in seen) for c in range(k)],
        per_class_counts=[sum(p.per_class_counts[c] for p in seen) for c in range(k)],
        loss_sum=sum(p.loss_sum for p in seen), num_classes=k)
