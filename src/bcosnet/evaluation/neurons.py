"""Neuron statistics: the most highly activating images of chosen neurons.

One pass over a data set keeps, per neuron (layer, channel), the top-N
activations with their image index and location, by merging each batch's
candidates into a running top-N (memory ``O(channels · N + batch)``).  The
result feeds the neuron figures (supplement Fig. A5/A6) and the class
distribution of a neuron's top activations (Fig. B4).

Ordering is deterministic: by value (descending), ties broken by data-set
order (image index, then row-major location), so the result equals a
brute-force sort over the whole data set.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .._utils.modules import eval_mode, resolve_layer
from .._utils.progress import progress as tqdm
from .._utils.validate import check_int, is_int

__all__ = [
    "TopActivations",
    "top_activations",
    "top_class_scores",
    "class_distribution",
]


@dataclass
class TopActivations:
    """Top-N activations of the chosen channels of one layer.

    Attributes (C chosen channels, N kept per channel, fewer if the data set is small):
        layer: the layer's name.
        channels: C channel indices.
        values: C×N activations, descending per row.
        indices: C×N data-set indices of the images (order of the loader).
        locations: C×N×2 (h, w) of each activation; (0, 0) for non-spatial layers.
        labels: C×N labels of those images (−1 where the loader gives none).
        per_image: whether each image appears at most once per channel (its max location).
    """

    layer: str
    channels: list[int]
    values: Tensor
    indices: Tensor
    locations: Tensor
    labels: Tensor
    per_image: bool

    def row(self, channel: int) -> int:
        """Row of ``channel`` in the C×N tensors."""
        try:
            return self.channels.index(channel)
        except ValueError:
            raise ValueError(
                f"channel {channel} was not recorded; recorded channels: {self.channels}"
            ) from None

    def strongest_channels(self, count: int) -> list[int]:
        """The ``count`` channels with the highest top-1 activation (descending)."""
        order = self.values[:, 0].argsort(descending=True, stable=True)
        return [self.channels[i] for i in order[:count].tolist()]


class _Stop(Exception):
    """Raised by a hook to end the forward pass once every layer is recorded."""


def _split_batch(batch: Any) -> tuple[Tensor, Tensor | None]:
    if isinstance(batch, Tensor):
        return batch, None
    if isinstance(batch, Mapping):
        x = batch.get("image", batch.get("images", batch.get("input")))
        y = batch.get("label", batch.get("labels", batch.get("target")))
        if x is None:
            raise ValueError("a dict batch needs an 'image' (or 'images'/'input') entry")
        return x, y
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], Tensor):
        y = batch[1] if len(batch) > 1 and isinstance(batch[1], Tensor) else None
        return batch[0], y
    raise TypeError(
        "each batch must be an image tensor, an (images, labels, ...) tuple or a dict; "
        f"got {type(batch).__name__}"
    )


class _RunningTopK:
    """Running top-k over a stream of (value, position) with deterministic ties.

    Candidates arrive in increasing position order; kept entries are sorted by
    value descending, position ascending.  A stable descending sort of
    [kept, new] keeps that order.
    """

    def __init__(self, rows: int, k: int) -> None:
        self.k = k
        self.values = torch.empty(rows, 0, dtype=torch.float64)
        self.pos = torch.empty(rows, 0, dtype=torch.long)  # global flat position
        self.extra = torch.empty(rows, 0, 3, dtype=torch.long)  # (h, w, label)

    def update(self, values: Tensor, pos: Tensor, extra: Tensor) -> None:
        """values/pos: rows×M (pos increasing along M), extra: rows×M×3."""
        if values.shape[1] > self.k:  # pre-select within the batch, same ordering
            o = values.sort(dim=1, descending=True, stable=True).indices[:, : self.k]
            values, pos = values.gather(1, o), pos.gather(1, o)
            extra = extra.gather(1, o.unsqueeze(-1).expand(-1, -1, 3))
        v = torch.cat([self.values, values.to(torch.float64)], 1)
        p = torch.cat([self.pos, pos], 1)
        e = torch.cat([self.extra, extra], 1)
        o = v.sort(dim=1, descending=True, stable=True).indices[:, : self.k]
        self.values, self.pos = v.gather(1, o), p.gather(1, o)
        self.extra = e.gather(1, o.unsqueeze(-1).expand(-1, -1, 3))


def _resolve_layers(
    model: nn.Module, layers: str | Mapping[str, Sequence[int] | None]
) -> dict[str, list[int] | None]:
    spec = {layers: None} if isinstance(layers, str) else dict(layers)
    if not spec:
        raise ValueError("name at least one layer")
    for name, chans in spec.items():
        resolve_layer(model, name)  # a clear error for an unknown name
        if chans is not None:
            chans = [chans] if isinstance(chans, int) else list(chans)
            if not chans or not all(is_int(c) for c in chans):
                raise TypeError(
                    f"channels for layer {name!r} must be a list of ints, got {chans!r}"
                )
            spec[name] = chans
    return spec  # type: ignore[return-value]


@torch.no_grad()
def top_activations(
    model: nn.Module,
    data: Iterable[Any],
    layers: str | Mapping[str, Sequence[int] | None],
    channels: Sequence[int] | None = None,
    *,
    k: int = 100,
    per_image: bool = True,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> TopActivations | dict[str, TopActivations]:
    """Stream ``data`` once and keep the top-``k`` activations per neuron.

    Args:
        model: any module; it is run in eval mode (restored afterwards).
        data: an iterable of batches (a DataLoader *without shuffling*: image
            indices count batches in order): image tensors N×C×H×W,
            ``(images, labels, ...)`` tuples or dicts with 'image'/'label'.
        layers: a layer name (then ``channels`` picks its channels, default
            all), or a mapping ``{layer name: channels or None}`` for several
            layers in the same pass.
        k: activations kept per neuron.
        per_image: if True each image counts once per neuron, with its largest
            activation over locations (and that location); if False every
            (image, location) is a candidate.
        device: where to run (default: the model's parameters' device).

    Returns:
        A :class:`TopActivations` for a single layer name, else a dict of them.
    """
    check_int("k", k, 1)
    single = isinstance(layers, str)
    if single and channels is not None:
        spec = _resolve_layers(model, {layers: channels})  # type: ignore[dict-item]
    else:
        if not single and channels is not None:
            raise ValueError("with a mapping of layers, give the channels inside the mapping")
        spec = _resolve_layers(model, layers)
    if device is None:
        p = next(model.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
    records = {name: _LayerRecord(name, spec[name], k, per_image) for name in spec}
    offset = 0
    with _captured(model, list(spec)) as captured, eval_mode(model):
        for batch in tqdm(data, desc="neuron statistics", disable=not progress):
            x, y = _split_batch(batch)
            x = x.to(device)
            captured.clear()
            with contextlib.suppress(_Stop):
                model(x)
            for name, record in records.items():
                if name not in captured:
                    raise RuntimeError(f"layer {name!r} was not called in the forward pass")
                record.update(captured[name], y, offset)
            offset += x.shape[0]
    if offset == 0:
        raise ValueError("the data set yielded no batches")
    results = {name: record.result() for name, record in records.items()}
    return results[next(iter(spec))] if single else results


@contextlib.contextmanager
def _captured(model: nn.Module, names: list[str]) -> Iterator[dict[str, Tensor]]:
    """Forward hooks on the layers ``names``: each forward pass fills the yielded dict
    with their outputs and stops (:class:`_Stop`) once every one is recorded."""
    modules = dict(model.named_modules())
    captured: dict[str, Tensor] = {}

    def make_hook(name: str) -> Callable[..., None]:
        def hook(_m: nn.Module, _inp: tuple, out: Any) -> None:
            if name in captured:
                return
            if isinstance(out, (tuple, list)):
                out = out[0]
            captured[name] = out
            if len(captured) == len(names):
                raise _Stop  # nothing after the last recorded layer is needed

        return hook

    handles = [modules[n].register_forward_hook(make_hook(n)) for n in names]
    try:
        yield captured
    finally:
        for hd in handles:
            hd.remove()


class _LayerRecord:
    """The running top-k of one layer's chosen channels."""

    def __init__(self, name: str, channels: list[int] | None, k: int, per_image: bool) -> None:
        self.name, self.wanted, self.k, self.per_image = name, channels, k, per_image
        self.channels: list[int] = []
        self.state: _RunningTopK | None = None
        self.spatial = (0, 0)

    def _start(self, c_all: int, h: int, w: int) -> None:
        chans = self.wanted if self.wanted is not None else list(range(c_all))
        bad = [c for c in chans if not 0 <= c < c_all]
        if bad:
            raise ValueError(f"channel(s) {bad} out of range: layer {self.name!r} has {c_all} "
                             "channels")
        self.channels = list(chans)
        self.state = _RunningTopK(len(self.channels), self.k)
        self.spatial = (h, w)

    def update(self, act: Tensor, y: Tensor | None, offset: int) -> None:
        """Merge one batch's activations (N×C or N×C×H×W) of images ``offset``.. in."""
        if act.dim() == 2:
            act = act[:, :, None, None]
        if act.dim() != 4:
            raise ValueError(f"layer {self.name!r} outputs shape {tuple(act.shape)}; expected "
                             "N×C or N×C×H×W")
        n, c_all, h, w = act.shape
        if self.state is None:
            self._start(c_all, h, w)
        elif (h, w) != self.spatial:
            # Different image sizes: flat positions would not be comparable.
            raise ValueError(f"layer {self.name!r} changed its output size from "
                             f"{self.spatial} to {(h, w)}; feed images of one size")
        a = act[:, self.channels].detach().cpu()  # n×C×h×w
        cc = a.shape[1]
        lab = (y.reshape(-1).to("cpu", torch.long) if y is not None
               else torch.full((n,), -1, dtype=torch.long))
        if self.per_image:
            vals, loc = a.flatten(2).max(2)  # first max location on ties
            img = torch.arange(n).expand(cc, n)
            vals, loc = vals.T, loc.T  # C×n
        else:
            vals = a.permute(1, 0, 2, 3).reshape(cc, n * h * w)
            flat = torch.arange(n * h * w)
            img = (flat // (h * w)).expand(cc, -1)
            loc = (flat % (h * w)).expand(cc, -1)
        pos = (offset + img) * (h * w) + loc
        self.state.update(vals, pos, torch.stack([loc // w, loc % w, lab[img]], -1))  # type: ignore[union-attr]

    def result(self) -> TopActivations:
        assert self.state is not None
        h, w = self.spatial
        return TopActivations(layer=self.name, channels=self.channels, values=self.state.values,
                              indices=self.state.pos // (h * w),
                              locations=self.state.extra[..., :2],
                              labels=self.state.extra[..., 2], per_image=self.per_image)


def top_class_scores(
    model: nn.Module,
    data: Iterable[Any],
    classes: Sequence[int] | None = None,
    *,
    k: int = 3,
    correct_only: bool = True,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> TopActivations:
    """The ``k`` most confidently classified images per class (Fig. A3/A4).

    Runs the model over ``data`` once and keeps, per class ``c``, the images
    with the highest logit ``c`` — among images of label ``c`` that the model
    classifies as ``c`` when ``correct_only`` (needs labels), else among all
    images.  Returned as :class:`TopActivations` with ``layer="logits"`` and
    ``channels`` = the classes; images that do not qualify never enter the
    top-k (rows can have fewer than k real entries: their values are −inf).
    """
    check_int("k", k, 1)
    if device is None:
        p = next(model.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
    state: _RunningTopK | None = None
    chans: list[int] = []
    offset = 0
    with eval_mode(model):
        with torch.no_grad():
            for batch in tqdm(data, desc="class scores", disable=not progress):
                x, y = _split_batch(batch)
                if correct_only and y is None:
                    raise ValueError("correct_only=True needs labels in the batches")
                out = model(x.to(device))
                if isinstance(out, (tuple, list)):
                    out = out[0]
                logits = out.detach().to("cpu", torch.float64)
                n, kk = logits.shape
                if state is None:
                    chans = list(range(kk)) if classes is None else [int(c) for c in classes]
                    bad = [c for c in chans if not 0 <= c < kk]
                    if bad:
                        raise ValueError(
                            f"class(es) {bad} out of range: the model has {kk} outputs"
                        )
                    state = _RunningTopK(len(chans), k)
                vals = logits[:, chans].T.clone()  # C×n
                lab = (
                    y.reshape(-1).to("cpu", torch.long)
                    if y is not None
                    else torch.full((n,), -1, dtype=torch.long)
                )
                if correct_only:
                    pred = logits.argmax(1)
                    ok = (lab[None, :] == torch.tensor(chans)[:, None]) & (pred == lab)[None, :]
                    vals = torch.where(ok, vals, torch.full_like(vals, -torch.inf))
                img = torch.arange(n).expand(len(chans), n)
                zeros = torch.zeros_like(img)
                extra = torch.stack([zeros, zeros, lab[img]], -1)
                state.update(vals, offset + img, extra)
                offset += n
    if state is None:
        raise ValueError("the data set yielded no batches")
    return TopActivations(
        layer="logits",
        channels=chans,
        values=state.values,
        indices=state.pos,
        locations=state.extra[..., :2],
        labels=state.extra[..., 2],
        per_image=True,
    )


def class_distribution(
    top: TopActivations, channel: int, num_classes: int | None = None
) -> Tensor:
    """Counts of each label among ``channel``'s recorded top activations (Fig. B4).

    Returns a long tensor of length ``num_classes`` (default: max label + 1).
    Entries with unknown label (−1) are not counted.
    """
    lab = top.labels[top.row(channel)]
    lab = lab[lab >= 0]
    if num_classes is None:
        num_classes = int(lab.max().item()) + 1 if lab.numel() else 0
    if lab.numel() and lab.max() >= num_classes:
        raise ValueError(f"labels go up to {int(lab.max())}, more than num_classes={num_classes}")
    return torch.bincount(lab, minlength=num_classes)
