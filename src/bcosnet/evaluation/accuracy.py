"""Classification accuracy: top-1/top-k and per-class accuracy on a data set."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .._utils.modules import eval_mode, first_output

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


@torch.no_grad()
def accuracy(
    model: nn.Module,
    data: Dataset | DataLoader,
    *,
    topk: tuple[int, ...] | None = None,
    batch_size: int = 256,
    num_workers: int = 0,
    device: torch.device | str | None = None,
    progress: bool = False,
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
    """
    from .._utils.progress import progress as tqdm

    if topk is not None and any(
            isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in topk):
        raise ValueError(f"topk values must be ints >= 1, got {topk}")
    param = next(model.parameters(), None)
    dev = torch.device(device) if device is not None else (
        param.device if param is not None else torch.device("cpu"))
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    loader = data if isinstance(data, DataLoader) else DataLoader(
        data, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    ks: list[int] = []
    hits: dict[int, int] = {}
    num_classes = 0
    per_hit: torch.Tensor | None = None
    per_cnt: torch.Tensor | None = None
    n = 0
    with eval_mode(model):
        for x, y in tqdm(loader, desc="accuracy", leave=False, disable=not progress):
            x, y = x.to(dev, dtype), torch.as_tensor(y).to(dev)
            out = first_output(model(x))
            num_classes = out.shape[1]
            if per_hit is None:
                per_hit = torch.zeros(num_classes, dtype=torch.long)
                per_cnt = torch.zeros(num_classes, dtype=torch.long)
                ks = _top_ks(topk, num_classes)
                hits = dict.fromkeys(ks, 0)
            top = out.topk(min(max(ks), num_classes), dim=1).indices
            correct = top == y[:, None]
            for k in ks:
                hits[k] += int(correct[:, :k].any(1).sum())
            yc = y.cpu()
            per_cnt += torch.bincount(yc, minlength=num_classes)[:num_classes]  # type: ignore[operator]
            per_hit += torch.bincount(yc[correct[:, 0].cpu()], minlength=num_classes)[
                :num_classes]
            n += len(y)
    if n == 0:
        raise ValueError("the data set is empty; nothing to evaluate")
    assert per_hit is not None and per_cnt is not None
    per_class = [
        (h / c) if c else float("nan") for h, c in zip(per_hit.tolist(), per_cnt.tolist(),
                                                        strict=True)
    ]
    names = getattr(getattr(loader, "dataset", data), "classes", None) or []
    topk_res = {k: hits[k] / n for k in ks}
    return AccuracyResult(topk_res[1], topk_res, per_class, per_cnt.tolist(), n, list(names),
                          num_classes)


def _top_ks(topk: tuple[int, ...] | None, num_classes: int) -> list[int]:
    """1 and the requested k below ``num_classes`` (default: 5 when it fits)."""
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
