"""Deletion and insertion (Petsiuk, Das, Saenko, "RISE", BMVC 2018): is an
explanation *faithful* — does removing what it marks as most important hurt the
class score most?

For every image, pixels are ranked by their attribution (summed over channels,
most relevant first; ties in a seeded random order).  In ``steps`` equal steps:

* **deletion**: the top-ranked fraction ``k/steps`` of pixels is replaced by
  the baseline image (black by default); the curve is the class score after
  each step, starting from the intact image.  Lower area under the curve =
  the explanation found what the score depends on;
* **insertion**: the top-ranked fraction is revealed on the baseline; the curve
  starts at the baseline's score.  Higher area = better.

The score is what the model was trained to output: ``sigmoid`` of the logit for
B-cos networks (binary cross-entropy), ``softmax`` for conventional ones
(``output="auto"``, the rule the perturbation attribution methods follow).
The area is the trapezoid rule over the removed fraction in [0, 1].  A random
order gives the baseline row every method should beat.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .._utils.modules import eval_mode, first_output

__all__ = ["DeletionInsertion", "auto_output", "deletion_insertion", "faithfulness_table",
           "pixel_order"]

_OUTPUTS = ("auto", "logit", "sigmoid", "softmax")


def auto_output(model: nn.Module) -> str:
    """``"sigmoid"`` for a B-cos network (it has B-cos layers and was trained with
    BCE), ``"softmax"`` otherwise."""
    from ..nn import BcosConv2d, BcosLinear

    return "sigmoid" if any(isinstance(m, (BcosConv2d, BcosLinear)) for m in model.modules()) \
        else "softmax"


@dataclass
class DeletionInsertion:
    """Curves and areas of one method.

    Attributes:
        fractions: ``steps + 1`` removed (deletion) / revealed (insertion) fractions.
        deletion, insertion: N×(steps + 1) class scores along the curves (or ``None``).
        output: the score used ("sigmoid", "softmax" or "logit").
    """

    fractions: Tensor
    deletion: Tensor | None
    insertion: Tensor | None
    output: str

    @staticmethod
    def _auc(curve: Tensor, x: Tensor) -> Tensor:
        return torch.trapezoid(curve, x.to(curve), dim=-1)

    @property
    def deletion_auc(self) -> Tensor:
        """Area under each image's deletion curve, N (lower = more faithful)."""
        if self.deletion is None:
            raise ValueError("deletion was not computed (modes excluded it)")
        return self._auc(self.deletion, self.fractions)

    @property
    def insertion_auc(self) -> Tensor:
        """Area under each image's insertion curve, N (higher = more faithful)."""
        if self.insertion is None:
            raise ValueError("insertion was not computed (modes excluded it)")
        return self._auc(self.insertion, self.fractions)


def pixel_order(maps: Tensor, *, seed: int = 0) -> Tensor:
    """Pixel indices (N×H·W, long) from most to least relevant; equal values in a
    seeded random order (so a constant map gives a random order)."""
    if maps.dim() != 3:
        raise ValueError(f"maps must be N×H×W (sum attributions over channels), got "
                         f"{tuple(maps.shape)}")
    n = maps.shape[0]
    flat = maps.detach().reshape(n, -1).double()
    g = torch.Generator().manual_seed(seed)
    perm = torch.stack([torch.randperm(flat.shape[1], generator=g) for _ in range(n)])
    perm = perm.to(flat.device)
    # Sort a random permutation of the pixels stably by value: ties keep the random order.
    shuffled = flat.gather(1, perm)
    idx = torch.sort(shuffled, dim=1, descending=True, stable=True).indices
    return perm.gather(1, idx)


def _scores(model: nn.Module, x: Tensor, targets: Tensor, output: str) -> Tensor:
    out = first_output(model(x))
    if output == "sigmoid":
        out = out.sigmoid()
    elif output == "softmax":
        out = out.softmax(1)
    return out.gather(1, targets[:, None])[:, 0]


@torch.no_grad()
def deletion_insertion(
    model: nn.Module,
    images: Tensor,
    maps: Tensor,
    target: Tensor | int,
    *,
    steps: int = 20,
    baseline: str | float | Tensor = "black",
    output: str = "auto",
    modes: tuple[str, ...] = ("deletion", "insertion"),
    batch_size: int = 256,
    seed: int = 0,
) -> DeletionInsertion:
    """Deletion and insertion curves of attribution ``maps`` for ``images``.

    Args:
        model: the classifier (images in [0, 1] → logits); evaluated in eval mode
            without gradients (its mode is restored).
        images: N×C×H×W in [0, 1].
        maps: attributions, N×H×W or N×C'×H×W (summed over channels): the pixel
            ranking.  A constant map gives a seeded random order (the baseline row).
        target: the explained class per image (N) or one int for all.
        steps: number of equal steps (≥ 1); ``steps + 1`` points per curve.
        baseline: what deleted pixels become / what insertion starts from
            (``"black"``, ``"white"``, ``"mean"``, ``"blur"``, a grey level, an image).
        output: ``"auto"`` (sigmoid for B-cos networks, softmax otherwise),
            ``"sigmoid"``, ``"softmax"`` or ``"logit"``.
        modes: which curves to compute.
        batch_size: perturbed images per forward pass.
        seed: tie-breaking order of equal attributions.
    """
    from ..attribution.base import make_baseline

    if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[0] == 0:
        raise ValueError("images must be a non-empty N×C×H×W tensor in [0, 1]")
    n, _, h, w = images.shape
    if maps.dim() == 4:
        maps = maps.sum(1)
    if tuple(maps.shape) != (n, h, w):
        raise ValueError(
            f"maps must be N×H×W = {(n, h, w)} (or N×C×H×W) to rank the images' pixels, got "
            f"{tuple(maps.shape)} — upsample coarse maps (e.g. Grad-CAM) to the image size first"
        )
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    if output not in _OUTPUTS:
        raise ValueError(f"output must be one of {', '.join(_OUTPUTS)}, got {output!r}")
    bad = [m for m in modes if m not in ("deletion", "insertion")]
    if bad or not modes:
        raise ValueError(f"modes must be a non-empty subset of ('deletion', 'insertion'), got "
                         f"{modes!r}")
    if output == "auto":
        output = auto_output(model)
    t = torch.as_tensor(target, device=images.device).long()
    t = t.expand(n) if t.dim() == 0 else t
    if t.shape != (n,):
        raise ValueError(f"target must be an int or one class per image ({n}), got shape "
                         f"{tuple(t.shape)}")

    base = make_baseline(images, baseline)
    order = pixel_order(maps, seed=seed)
    hw = h * w
    counts = [round(k * hw / steps) for k in range(steps + 1)]
    # rank[i, p] = position of pixel p in image i's order.
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(hw, device=order.device).expand(n, -1))

    with eval_mode(model):
        curves: dict[str, Tensor] = {}
        for mode in modes:
            out = torch.empty(n, steps + 1, dtype=torch.float64)
            jobs = [(i, k) for i in range(n) for k in range(steps + 1)]
            for start in range(0, len(jobs), batch_size):
                chunk = jobs[start:start + batch_size]
                ii = torch.tensor([i for i, _ in chunk], device=images.device)
                kk = torch.tensor([counts[k] for _, k in chunk], device=images.device)
                # top-k pixels of each job's image: rank < count
                top = (rank[ii] < kk[:, None]).view(-1, 1, h, w)
                # deletion: top pixels → baseline; insertion: top pixels ← image on baseline
                if mode == "deletion":
                    x = torch.where(top, base[ii], images[ii])
                else:
                    x = torch.where(top, images[ii], base[ii])
                s = _scores(model, x, t[ii], output).double().cpu()
                for (i, k), v in zip(chunk, s.tolist()):
                    out[i, k] = v
            curves[mode] = out
    return DeletionInsertion(
        fractions=torch.tensor(counts, dtype=torch.float64) / hw,
        deletion=curves.get("deletion"), insertion=curves.get("insertion"), output=output,
    )


def faithfulness_table(
    model: nn.Module,
    images: Tensor,
    target: Tensor,
    methods: Mapping[str, Callable[[Tensor, Tensor], Tensor] | str],
    **kwargs: object,
) -> dict[str, DeletionInsertion]:
    """:func:`deletion_insertion` for several methods on the same images.

    ``methods``: name → ``fn(images, target) -> maps`` (N×H×W or N×C×H×W), or the
    string ``"random"`` for the random-order row (a constant map: ties are broken
    in a seeded random order)."""
    out: dict[str, DeletionInsertion] = {}
    for name, fn in methods.items():
        if fn == "random":
            maps = torch.zeros(images.shape[0], *images.shape[-2:])
        else:
            maps = fn(images, target)  # type: ignore[operator]
        out[name] = deletion_insertion(model, images, maps, target, **kwargs)  # type: ignore[arg-type]
    return out
