"""The grid pointing game (SPEC §5; supplement C.2.1, Figs. B1/B2).

A localisation metric for attributions.  Correctly classified test images are
tiled into n×n grids of distinct classes; for every cell the attribution of
that cell's class logit is computed on the whole grid image, and the score is
the fraction of positive attribution that falls inside the cell:

    A      = attribution of logit c_i for the grid image, summed over channels (H×W)
    A      = box_smooth(A)                                   (optional)
    A⁺     = max(A, 0)
    score_i = Σ_{cell i} A⁺ / Σ_{grid} A⁺                     (0 when the total is 0)

A perfectly localising method scores 1; spreading attribution uniformly scores
the baseline 1/n².

Typical use::

    from bcosnet.evaluation import grid_pointing_game, plot_pointing_game
    result = grid_pointing_game(model, test_set, methods=["bcos", "ixg"], n=2,
                                num_grids=500, results_dir="runs/pg")
    result.summary()["bcos"].median
    plot_pointing_game(result, "runs/pg/boxplot.png")
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

__all__ = [
    "AttributionFn",
    "GridDataset",
    "PointingGameResult",
    "ScoreSummary",
    "cell_scores",
    "grid_pointing_game",
    "make_attribution_fn",
    "make_grid_dataset",
    "plot_pointing_game",
]

#: ``(images N×C×H×W, targets N) -> maps N×H×W or N×C'×H×W``.
AttributionFn = Callable[[Tensor, Tensor], Tensor]
MethodSpec = str | AttributionFn

_RESULT_VERSION = 1


# --------------------------------------------------------------------------- files


def _atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder + ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; results and reports are meant to be read
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _atomic_write_text(path: str | os.PathLike, text: str) -> None:
    _atomic_write_bytes(path, text.encode("utf-8"))


def _atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    _atomic_write_text(path, json.dumps(obj, indent=1, allow_nan=True) + "\n")


def _save_figure(fig: Any, path: str | os.PathLike, dpi: int = 150) -> None:
    """Save a matplotlib figure atomically; the format comes from the suffix."""
    import io

    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=dpi, bbox_inches="tight")
    _atomic_write_bytes(path, buf.getvalue())


# --------------------------------------------------------------------------- helpers


def _check_n(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n (grid side) must be a positive int such as 2 or 3, got {n!r}")
    return n


def _model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    for p in model.parameters():
        if p.is_floating_point():
            return p.device, p.dtype
    for b in model.buffers():
        if b.is_floating_point():
            return b.device, b.dtype
    return torch.device("cpu"), torch.get_default_dtype()


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Evaluate in eval mode (BatchNorm statistics fixed), restore each module's mode after."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


def _logits_of(out: Any) -> Tensor:
    if isinstance(out, (tuple, list)):  # e.g. Inception's (logits, aux)
        out = out[0]
    if not isinstance(out, Tensor) or out.dim() != 2:
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"the model must return N×K logits, got {shape}")
    return out


def _as_image(x: Any, index: int) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(
            f"dataset item {index} is a {type(x).__name__}, not a tensor — give the dataset a "
            "transform that returns C×H×W float tensors in [0, 1] (e.g. ToTensor())"
        )
    if x.dim() != 3 or not x.is_floating_point():
        raise ValueError(
            f"dataset item {index} must be a C×H×W float image tensor, got shape "
            f"{tuple(x.shape)} and dtype {x.dtype}"
        )
    return x


class _TensorSource:
    """Random access to a pair of tensors ``(images N×C×H×W, labels N)``."""

    def __init__(self, images: Tensor, labels: Tensor) -> None:
        if not isinstance(images, Tensor) or images.dim() != 4:
            raise ValueError("a tensor data set must be (images N×C×H×W, labels N)")
        labels = torch.as_tensor(labels)
        if labels.dim() != 1 or labels.shape[0] != images.shape[0]:
            raise ValueError(
                f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}"
            )
        self.images, self.labels = images, labels.long()

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return self.images[i], int(self.labels[i])


def _as_source(dataset: Any) -> Any:
    if isinstance(dataset, (tuple, list)) and len(dataset) == 2 and isinstance(dataset[0], Tensor):
        return _TensorSource(dataset[0], dataset[1])
    if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
        raise TypeError(
            "dataset must be a map-style data set (len() and [i] -> (image, label)) or a pair "
            f"(images N×C×H×W, labels N), got {type(dataset).__name__}"
        )
    return dataset


def _iter_batches(source: Any, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
    """(images, labels) batches in data-set order."""
    if isinstance(source, _TensorSource):
        for s in range(0, len(source), batch_size):
            yield source.images[s : s + batch_size], source.labels[s : s + batch_size]
        return
    loader = torch.utils.data.DataLoader(source, batch_size=batch_size, shuffle=False)
    for batch in loader:
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise ValueError("dataset items must be (image, label) pairs")
        yield batch[0], torch.as_tensor(batch[1])


def _fetch_image(source: Any, index: int) -> Tensor:
    if isinstance(source, _TensorSource):
        return source.images[index]
    item = source[index]
    if not isinstance(item, (tuple, list)) or len(item) < 2:
        raise ValueError("dataset items must be (image, label) pairs")
    return _as_image(item[0], index)


def _fingerprint(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _model_fingerprint(model: nn.Module) -> str:
    """A hash of the model's parameters and buffers (resuming with another model is an error)."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------- grids


@dataclass
class GridDataset:
    """n×n grid images of distinct, correctly classified classes.

    The grid images are built on demand from ``source`` (so 500 ImageNet grids
    need not sit in memory); :attr:`images` materialises all of them.

    Attributes (G grids, n² cells per grid, row-major cell order):
        source: the data set the cell images come from.
        n: cells per side.
        source_indices: G×n² long, the data-set index of each cell's image.
        classes: G×n² long, each cell's (true and predicted) class.
        confidences: G×n² float, the model's true-class logit of each cell's image.
        cell_size: (H, W) of one cell in pixels.
        requested: number of grids asked for (None: as many as possible).
        seed, confidence_threshold: the construction settings.
    """

    source: Any
    n: int
    source_indices: Tensor
    classes: Tensor
    confidences: Tensor
    cell_size: tuple[int, int]
    requested: int | None = None
    seed: int = 0
    confidence_threshold: float | None = None

    def __len__(self) -> int:
        return int(self.source_indices.shape[0])

    @property
    def num_grids(self) -> int:
        """How many grids were made (may be fewer than :attr:`requested`)."""
        return len(self)

    @property
    def boxes(self) -> Tensor:
        """n²×4 long: each cell's box ``(top, left, bottom, right)`` in pixels (end-exclusive)."""
        h, w = self.cell_size
        return torch.tensor(
            [
                [r * h, c * w, (r + 1) * h, (c + 1) * w]
                for r in range(self.n)
                for c in range(self.n)
            ],
            dtype=torch.long,
        )

    def get_images(self, indices: Sequence[int] | Tensor) -> Tensor:
        """len(indices)×C×nH×nW grid images for the given grid indices."""
        idx = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
        flat = self.source_indices[idx].reshape(-1).tolist()
        if isinstance(self.source, _TensorSource):
            cells = self.source.images[torch.tensor(flat, dtype=torch.long)]
        else:
            cells = torch.stack([_fetch_image(self.source, i) for i in flat])
        n = self.n
        g, c, h, w = len(idx), cells.shape[1], cells.shape[2], cells.shape[3]
        if (h, w) != tuple(self.cell_size):
            raise ValueError(
                f"data-set images are {h}×{w}, the grids were made from {self.cell_size} images"
            )
        # g·n·n×C×H×W -> g×C×(n·H)×(n·W), cell k at row k // n, column k % n
        return cells.reshape(g, n, n, c, h, w).permute(0, 3, 1, 4, 2, 5).reshape(g, c, n * h, n * w)

    @property
    def images(self) -> Tensor:
        """G×C×nH×nW: all grid images (materialised on each access)."""
        return self.get_images(range(len(self)))

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        """(grid image C×nH×nW, classes n²)."""
        if not -len(self) <= i < len(self):
            raise IndexError(f"grid {i} out of range (0..{len(self) - 1})")
        return self.get_images([i])[0], self.classes[i]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable description (everything but the source data set)."""
        return {
            "n": self.n,
            "cell_size": list(self.cell_size),
            "requested": self.requested,
            "seed": self.seed,
            "confidence_threshold": self.confidence_threshold,
            "source_indices": self.source_indices.tolist(),
            "classes": self.classes.tolist(),
            "confidences": self.confidences.tolist(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: Any) -> GridDataset:
        """Rebuild from :meth:`to_dict` output and the same source data set."""
        n = int(d["n"])
        sq = n * n
        return cls(
            source=_as_source(source),
            n=n,
            source_indices=torch.tensor(d["source_indices"], dtype=torch.long).reshape(-1, sq),
            classes=torch.tensor(d["classes"], dtype=torch.long).reshape(-1, sq),
            confidences=torch.tensor(d["confidences"], dtype=torch.float64).reshape(-1, sq),
            cell_size=(int(d["cell_size"][0]), int(d["cell_size"][1])),
            requested=d.get("requested"),
            seed=int(d.get("seed", 0)),
            confidence_threshold=d.get("confidence_threshold"),
        )


def _class_rankings(
    model: nn.Module,
    source: Any,
    *,
    confidence_threshold: float | None,
    batch_size: int,
    progress: bool,
) -> tuple[dict[int, list[int]], dict[int, list[float]], tuple[int, int], int]:
    """Per class: correctly classified data-set indices, most confident first."""
    device, dtype = _model_device_dtype(model)
    logits_true: list[Tensor] = []
    correct: list[Tensor] = []
    labels_all: list[Tensor] = []
    cell_size: tuple[int, int] | None = None
    num_classes = 0
    with _eval_mode(model), torch.no_grad():
        bar = tqdm(total=len(source), desc="grid data: classifying", disable=not progress)
        for images, labels in _iter_batches(source, batch_size):
            if images.dim() != 4 or not images.is_floating_point():
                raise ValueError(
                    "dataset images must be C×H×W float tensors in [0, 1], got a batch of "
                    f"shape {tuple(images.shape)} and dtype {images.dtype}"
                )
            if cell_size is None:
                cell_size = (int(images.shape[2]), int(images.shape[3]))
            labels = labels.long().reshape(-1)
            out = _logits_of(model(images.to(device=device, dtype=dtype))).detach().cpu()
            num_classes = out.shape[1]
            if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
                raise ValueError(
                    f"labels must lie in 0..{num_classes - 1} (the model has {num_classes} "
                    f"outputs), got {int(labels.min())}..{int(labels.max())}"
                )
            true = out.gather(1, labels[:, None])[:, 0]
            ok = out.argmax(1) == labels
            if confidence_threshold is not None:
                ok &= torch.sigmoid(true) > confidence_threshold
            logits_true.append(true.double())
            correct.append(ok)
            labels_all.append(labels)
            bar.update(len(labels))
        bar.close()
    if cell_size is None:
        raise ValueError("the data set is empty")
    conf = torch.cat(logits_true).numpy()
    ok_all = torch.cat(correct).numpy()
    lab = torch.cat(labels_all).numpy()
    ranking: dict[int, list[int]] = {}
    scores: dict[int, list[float]] = {}
    for c in range(num_classes):
        idx = np.flatnonzero((lab == c) & ok_all)
        # Descending confidence; the stable sort breaks ties by data-set order.
        order = idx[np.argsort(-conf[idx], kind="stable")]
        if len(order):
            ranking[c] = order.tolist()
            scores[c] = conf[order].tolist()
    return ranking, scores, cell_size, num_classes


def make_grid_dataset(
    model: nn.Module,
    dataset: Any,
    n: int = 3,
    num_grids: int | None = 500,
    *,
    seed: int = 0,
    confidence_threshold: float | None = None,
    batch_size: int = 64,
    progress: bool = True,
) -> GridDataset:
    """Build the pointing-game grids (SPEC §5).

    For each class, the test images that ``model`` classifies correctly are
    ranked by confidence (true-class logit, descending); with
    ``confidence_threshold=p`` only those with ``sigmoid(logit) > p`` are kept
    (the paper's 0.5).  Each grid draws n² distinct classes at random among the
    classes that still have an unused image (a ``torch.Generator`` seeded with
    ``seed``) and takes each class's most confident unused image; cell k of the
    grid (row-major) holds the k-th drawn class.  No image is used twice.

    Args:
        model: classifier taking images in [0, 1], returning N×K logits.  Run in
            eval mode (its modes are restored afterwards) on its own device.
        dataset: map-style data set of ``(image C×H×W in [0, 1], label)`` with
            equal-sized images and deterministic transforms, or a pair
            ``(images N×C×H×W, labels N)``.
        n: cells per side (the paper: 3 on ImageNet, 2 on CIFAR-10).
        num_grids: how many grids to make; None: as many as possible.  When
            fewer than n² classes have an unused image left, construction stops
            with a warning; :attr:`GridDataset.num_grids` says how many were made.
        seed: seed of the class sampling.
        confidence_threshold: None, or p in (0, 1): keep images with sigmoid(logit) > p.
        batch_size: images per forward pass when ranking.
        progress: show tqdm progress bars.

    Returns:
        A :class:`GridDataset`.
    """
    n = _check_n(n)
    if num_grids is not None and (
        isinstance(num_grids, bool) or not isinstance(num_grids, int) or num_grids < 0
    ):
        raise ValueError(f"num_grids must be a non-negative int or None, got {num_grids!r}")
    if confidence_threshold is not None and not 0.0 <= float(confidence_threshold) < 1.0:
        raise ValueError(
            f"confidence_threshold must be None or a probability in [0, 1) such as 0.5, "
            f"got {confidence_threshold!r}"
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    source = _as_source(dataset)
    ranking, conf, cell_size, num_classes = _class_rankings(
        model, source, confidence_threshold=confidence_threshold, batch_size=batch_size,
        progress=progress,
    )
    sq = n * n
    if num_classes < sq:
        raise ValueError(
            f"a {n}×{n} grid needs {sq} distinct classes but the model has {num_classes}; "
            f"use a smaller n"
        )
    gen = torch.Generator().manual_seed(seed)
    next_unused = dict.fromkeys(ranking, 0)
    grids_idx: list[list[int]] = []
    grids_cls: list[list[int]] = []
    grids_conf: list[list[float]] = []
    while num_grids is None or len(grids_idx) < num_grids:
        available = sorted(c for c, k in next_unused.items() if k < len(ranking[c]))
        if len(available) < sq:
            break
        pick = torch.randperm(len(available), generator=gen)[:sq].tolist()
        chosen = [available[p] for p in pick]
        grids_cls.append(chosen)
        grids_idx.append([ranking[c][next_unused[c]] for c in chosen])
        grids_conf.append([conf[c][next_unused[c]] for c in chosen])
        for c in chosen:
            next_unused[c] += 1
    made = len(grids_idx)
    if num_grids is not None and made < num_grids:
        warnings.warn(
            f"made {made} of {num_grids} requested {n}×{n} grids: fewer than {sq} classes have "
            "a correctly classified image left (use a larger test set, a smaller n, or no "
            "confidence threshold)",
            stacklevel=2,
        )
    return GridDataset(
        source=source,
        n=n,
        source_indices=torch.tensor(grids_idx, dtype=torch.long).reshape(made, sq),
        classes=torch.tensor(grids_cls, dtype=torch.long).reshape(made, sq),
        confidences=torch.tensor(grids_conf, dtype=torch.float64).reshape(made, sq),
        cell_size=cell_size,
        requested=num_grids,
        seed=seed,
        confidence_threshold=None if confidence_threshold is None else float(confidence_threshold),
    )


# --------------------------------------------------------------------------- scoring


def _check_smoothing(smoothing: int | None) -> int | None:
    if smoothing is None or smoothing == 1:
        return None
    if isinstance(smoothing, bool) or not isinstance(smoothing, int) or smoothing < 1:
        raise ValueError(f"smoothing must be None or an odd kernel size >= 1, got {smoothing!r}")
    if smoothing % 2 == 0:
        raise ValueError(
            f"smoothing kernel size must be odd (so the map keeps its size), got {smoothing}; "
            f"use {smoothing + 1}"
        )
    return smoothing


def cell_scores(
    maps: Tensor, cells: Tensor | Sequence[int] | int, n: int, *, smoothing: int | None = None
) -> Tensor:
    """Pointing-game scores of attribution maps for their target cells.

    Args:
        maps: B×H×W or B×C×H×W attributions of B grid images (summed over C);
            H and W must be divisible by ``n``.
        cells: B cell indices (row-major, 0..n²−1) or one index for all maps: the
            cell whose class each map explains.
        n: cells per side.
        smoothing: None, or an odd box-filter size k: the summed map is averaged
            over k×k windows (stride 1, zero padding, same size) before clamping.

    Returns:
        B float64 scores in [0, 1]: ``Σ_cell max(A, 0) / Σ_grid max(A, 0)``, 0 when
        the map has no positive attribution.
    """
    n = _check_n(n)
    k = _check_smoothing(smoothing)
    if not isinstance(maps, Tensor):
        raise TypeError(f"maps must be a tensor, got {type(maps).__name__}")
    if maps.dim() == 4:
        a = maps.double().sum(1)
    elif maps.dim() == 3:
        a = maps.double()
    else:
        raise ValueError(f"maps must be B×H×W or B×C×H×W, got shape {tuple(maps.shape)}")
    b, h, w = a.shape
    if h % n or w % n:
        raise ValueError(f"map size {h}×{w} is not divisible into a {n}×{n} grid")
    cells_t = torch.as_tensor(cells, dtype=torch.long, device=a.device).reshape(-1)
    if cells_t.numel() == 1:
        cells_t = cells_t.expand(b)
    if cells_t.numel() != b:
        raise ValueError(f"need one cell index per map ({b}), got {cells_t.numel()}")
    if b and (cells_t.min() < 0 or cells_t.max() >= n * n):
        raise ValueError(f"cell indices must lie in 0..{n * n - 1}")
    if not torch.isfinite(a).all():
        raise ValueError("attribution maps contain NaN or Inf")
    if k is not None:
        a = F.avg_pool2d(a[:, None], k, stride=1, padding=k // 2, count_include_pad=True)[:, 0]
    pos = a.clamp(min=0)
    # B×n×(H/n)×n×(W/n) -> positive mass per cell, B×n²
    per_cell = pos.reshape(b, n, h // n, n, w // n).sum((2, 4)).reshape(b, n * n)
    total = per_cell.sum(1)
    inside = per_cell.gather(1, cells_t[:, None])[:, 0]
    return torch.where(total > 0, inside / total.clamp(min=torch.finfo(a.dtype).tiny), 0.0)


# --------------------------------------------------------------------------- methods


def _bcos_fn(model: nn.Module) -> AttributionFn:
    from ..explanations import explain

    def bcos(images: Tensor, targets: Tensor) -> Tensor:
        # The model-inherent explanation: contributions W_c(x) ⊙ x summed over channels.
        return explain(model, images, target=targets).contributions

    return bcos


def make_attribution_fn(model: nn.Module, method: MethodSpec, **settings: Any) -> AttributionFn:
    """An attribution callable ``(images N×C×H×W, targets N) -> maps`` for ``method``.

    ``method`` is a callable (returned as is; ``settings`` must be empty),
    ``"bcos"`` (the model-inherent contributions from :func:`bcosnet.explain`),
    or any other name, resolved with ``bcosnet.attribution.get(method, model,
    **settings).attribute(images, target=targets)``.
    """
    if callable(method):
        if settings:
            raise ValueError("settings apply to named methods only; bind them into your callable")
        return method
    if not isinstance(method, str):
        raise TypeError(f"method must be a name or a callable, got {type(method).__name__}")
    if method == "bcos" and not settings:
        return _bcos_fn(model)
    try:
        from .. import attribution as _attribution

        get = _attribution.get  # type: ignore[attr-defined]
    except (ImportError, AttributeError) as e:
        raise ValueError(
            f"method {method!r} needs bcosnet.attribution.get, which is not available ({e}); "
            "pass an attribution callable (images, targets) -> maps instead"
        ) from e
    impl = get(method, model, **settings)

    def fn(images: Tensor, targets: Tensor) -> Tensor:
        return impl.attribute(images, target=targets)

    fn.__name__ = method
    return fn


def _method_name(method: MethodSpec) -> str:
    if isinstance(method, str):
        return method
    return getattr(method, "__name__", None) or type(method).__name__


def _normalise_methods(methods: Any) -> dict[str, MethodSpec]:
    if isinstance(methods, str) or callable(methods):
        return {_method_name(methods): methods}
    if isinstance(methods, Mapping):
        out = dict(methods)
    elif isinstance(methods, Sequence):
        out = {}
        for m in methods:
            name = _method_name(m)
            if name in out:
                raise ValueError(f"method name {name!r} appears twice; pass a dict name -> method")
            out[name] = m
    else:
        raise TypeError(
            "methods must be a name, a callable, a list of them, or a dict name -> method, "
            f"got {type(methods).__name__}"
        )
    if not out:
        raise ValueError("no methods given")
    for name, m in out.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"method names must be non-empty strings, got {name!r}")
        if not (isinstance(m, str) or callable(m)):
            raise TypeError(f"method {name!r} must be a name or a callable, got {type(m).__name__}")
    return out


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class ScoreSummary:
    """Distribution of pointing-game scores (quartiles by linear interpolation)."""

    count: int
    mean: float
    std: float
    median: float
    q1: float
    q3: float
    min: float
    max: float

    @classmethod
    def of(cls, scores: np.ndarray) -> ScoreSummary:
        s = np.asarray(scores, dtype=np.float64).reshape(-1)
        if s.size == 0:
            nan = float("nan")
            return cls(0, nan, nan, nan, nan, nan, nan, nan)
        q1, med, q3 = np.percentile(s, [25, 50, 75])
        return cls(
            count=int(s.size),
            mean=float(s.mean()),
            std=float(s.std()),
            median=float(med),
            q1=float(q1),
            q3=float(q3),
            min=float(s.min()),
            max=float(s.max()),
        )

    def to_dict(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class PointingGameResult:
    """Scores of a grid pointing game.

    Attributes (G grids, n² cells each, row-major):
        n: cells per side; ``baseline`` = 1/n² is the score of a uniform map.
        classes: G×n² int array, each cell's class.
        scores: method name -> G×n² float array of scores in [0, 1].
        settings: the evaluation settings (seed, smoothing, threshold, ...).
    """

    n: int
    classes: np.ndarray
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def baseline(self) -> float:
        return 1.0 / (self.n * self.n)

    @property
    def num_grids(self) -> int:
        return int(self.classes.shape[0])

    @property
    def methods(self) -> list[str]:
        return list(self.scores)

    def summary(self) -> dict[str, ScoreSummary]:
        """Method name -> :class:`ScoreSummary` over all cells of all grids."""
        return {m: ScoreSummary.of(s) for m, s in self.scores.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": _RESULT_VERSION,
            "n": self.n,
            "num_grids": self.num_grids,
            "baseline": self.baseline,
            "settings": self.settings,
            "classes": self.classes.tolist(),
            "methods": {
                m: {"summary": ScoreSummary.of(s).to_dict(), "scores": s.tolist()}
                for m, s in self.scores.items()
            },
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PointingGameResult:
        n = int(d["n"])
        classes = np.asarray(d["classes"], dtype=np.int64).reshape(-1, n * n)
        scores = {
            m: np.asarray(v["scores"], dtype=np.float64).reshape(-1, n * n)
            for m, v in d.get("methods", {}).items()
        }
        return cls(n=n, classes=classes, scores=scores, settings=dict(d.get("settings", {})))

    def save(self, path: str | os.PathLike) -> None:
        """Write as JSON (atomically)."""
        _atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> PointingGameResult:
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))

    def plot(self, path: str | os.PathLike | None = None, **kwargs: Any) -> Any:
        """Box plot of the scores per method; see :func:`plot_pointing_game`."""
        return plot_pointing_game(self, path, **kwargs)


# --------------------------------------------------------------------------- the game


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "method"


def _score_method(
    fn: AttributionFn,
    grids: GridDataset,
    model: nn.Module,
    *,
    name: str,
    smoothing: int | None,
    batch_size: int,
    start: int,
    done_scores: list[float],
    on_checkpoint: Callable[[list[float]], None] | None,
    checkpoint_interval_s: float,
    progress: bool,
) -> np.ndarray:
    """Scores of all (grid, cell) pairs, in grid-major order, from pair ``start`` on."""
    device, dtype = _model_device_dtype(model)
    sq = grids.n * grids.n
    total = len(grids) * sq
    scores = list(done_scores[:start])
    last_save = time.monotonic()
    bar = tqdm(total=total, initial=start, desc=f"pointing game [{name}]", disable=not progress)
    try:
        for s in range(start, total, batch_size):
            pairs = torch.arange(s, min(s + batch_size, total))
            g_idx, c_idx = pairs // sq, pairs % sq
            uniq, local = torch.unique(g_idx, return_inverse=True)
            images = grids.get_images(uniq)[local].to(device=device, dtype=dtype)
            targets = grids.classes[g_idx, c_idx].to(device)
            with _eval_mode(model):
                maps = fn(images, targets)
            if not isinstance(maps, Tensor):
                raise TypeError(f"method {name!r} returned {type(maps).__name__}, not a tensor")
            maps = maps.detach()
            if maps.dim() not in (3, 4) or maps.shape[0] != len(pairs):
                raise ValueError(
                    f"method {name!r} must return N×H×W or N×C×H×W maps for N={len(pairs)} "
                    f"images, got shape {tuple(maps.shape)}"
                )
            if tuple(maps.shape[-2:]) != tuple(images.shape[-2:]):
                raise ValueError(
                    f"method {name!r} returned {maps.shape[-2]}×{maps.shape[-1]} maps for "
                    f"{images.shape[-2]}×{images.shape[-1]} grid images — upsample the maps to "
                    "the image size (e.g. F.interpolate) in the attribution callable"
                )
            scores.extend(cell_scores(maps, c_idx.to(maps.device), grids.n, smoothing=smoothing)
                          .cpu().tolist())
            bar.update(len(pairs))
            if on_checkpoint is not None and time.monotonic() - last_save >= checkpoint_interval_s:
                on_checkpoint(scores)
                last_save = time.monotonic()
    finally:
        bar.close()
    return np.asarray(scores, dtype=np.float64).reshape(len(grids), sq)


def grid_pointing_game(
    model: nn.Module,
    data: Any,
    methods: Any = "bcos",
    *,
    n: int = 3,
    num_grids: int | None = 500,
    seed: int = 0,
    confidence_threshold: float | None = None,
    smoothing: int | None = None,
    batch_size: int = 16,
    method_settings: Mapping[str, Mapping[str, Any]] | None = None,
    results_dir: str | os.PathLike | None = None,
    checkpoint_interval_s: float = 60.0,
    progress: bool = True,
) -> PointingGameResult:
    """Play the grid pointing game (SPEC §5) for one model and several methods.

    Args:
        model: the classifier (images in [0, 1] -> N×K logits); evaluated in eval
            mode on its own device and dtype; modes are restored afterwards.
        data: a test data set (see :func:`make_grid_dataset`) or a ready
            :class:`GridDataset` (then ``n``/``num_grids``/``seed``/
            ``confidence_threshold`` are taken from it).
        methods: a method name (``"bcos"`` or a ``bcosnet.attribution`` name), an
            attribution callable ``(images N×C×H×W, targets N) -> maps N×[C×]H×W``,
            a list of these, or a dict display name -> method.
        smoothing: None or an odd box-filter size applied to each summed map.
        batch_size: (grid, cell) pairs explained per attribution call.
        method_settings: method name -> keyword settings for ``attribution.get``.
        results_dir: if given, the grids (``grids.json``), each finished method
            (``<method>.json``), in-progress methods (``<method>.partial.json``,
            every ``checkpoint_interval_s`` seconds) and the combined result
            (``pointing_game.json``) are saved there atomically; calling again
            with the same arguments skips finished methods and resumes partial
            ones.  Files from another model or other settings raise ValueError.
        progress: show tqdm progress bars.

    Returns:
        A :class:`PointingGameResult` with every method's G×n² scores.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    smoothing = _check_smoothing(smoothing)
    method_map = _normalise_methods(methods)
    method_settings = dict(method_settings or {})
    unknown = set(method_settings) - set(method_map)
    if unknown:
        raise ValueError(f"method_settings names unknown methods {sorted(unknown)}")

    out_dir = Path(results_dir) if results_dir is not None else None
    model_fp = _model_fingerprint(model) if out_dir is not None else None

    if isinstance(data, GridDataset):
        grids = data
    else:
        grids = None
        grid_file = out_dir / "grids.json" if out_dir is not None else None
        wanted = {
            "n": _check_n(n), "requested": num_grids, "seed": seed,
            "confidence_threshold": None if confidence_threshold is None
            else float(confidence_threshold),
        }
        if grid_file is not None and grid_file.exists():
            with open(grid_file, encoding="utf-8") as f:
                saved = json.load(f)
            got = {k: saved.get(k) for k in wanted}
            if got != wanted or saved.get("model") != model_fp:
                raise ValueError(
                    f"{grid_file} was made for other settings or another model "
                    f"({got}, model {saved.get('model')}; now {wanted}, model {model_fp}); "
                    "use another results_dir or delete it"
                )
            grids = GridDataset.from_dict(saved, data)
        if grids is None:
            grids = make_grid_dataset(
                model, data, n, num_grids, seed=seed, confidence_threshold=confidence_threshold,
                batch_size=max(batch_size, 64), progress=progress,
            )
            if grid_file is not None:
                _atomic_write_json(grid_file, {**grids.to_dict(), "model": model_fp})
    if len(grids) == 0:
        raise ValueError(
            "no grids could be made (fewer than n² classes have a correctly classified image); "
            "check the model's accuracy, use a smaller n or drop the confidence threshold"
        )

    settings = {
        "n": grids.n,
        "num_grids": len(grids),
        "requested_grids": grids.requested,
        "seed": grids.seed,
        "confidence_threshold": grids.confidence_threshold,
        "smoothing": smoothing,
        "cell_size": list(grids.cell_size),
    }
    grid_fp = _fingerprint([grids.source_indices.tolist(), grids.classes.tolist()])
    result = PointingGameResult(n=grids.n, classes=grids.classes.numpy().copy(), settings=settings)
    result.settings["method_settings"] = {k: dict(v) for k, v in method_settings.items()}

    for name, method in method_map.items():
        extra = dict(method_settings.get(name, {}))
        key = {
            "method": name,
            "method_spec": method if isinstance(method, str) else "callable",
            "method_settings": extra,
            "smoothing": smoothing,
            "grids": grid_fp,
            "model": model_fp,
        }
        key_fp = _fingerprint(key)
        final_file = partial_file = None
        start, done = 0, []
        if out_dir is not None:
            final_file = out_dir / f"{_safe_name(name)}.json"
            partial_file = out_dir / f"{_safe_name(name)}.partial.json"
            if final_file.exists():
                with open(final_file, encoding="utf-8") as f:
                    saved = json.load(f)
                _check_resume(final_file, saved, key_fp)
                result.scores[name] = np.asarray(saved["scores"], dtype=np.float64).reshape(
                    len(grids), grids.n * grids.n
                )
                continue
            if partial_file.exists():
                with open(partial_file, encoding="utf-8") as f:
                    saved = json.load(f)
                _check_resume(partial_file, saved, key_fp)
                done = [float(v) for v in saved["scores"]]
                start = len(done)

        fn = make_attribution_fn(model, method, **extra)

        def checkpoint(scores: list[float], _p: Path | None = partial_file, _k: str = key_fp,
                       _name: str = name) -> None:
            assert _p is not None
            _atomic_write_json(_p, {"key": _k, "method": _name, "scores": scores})

        scores = _score_method(
            fn, grids, model, name=name, smoothing=smoothing, batch_size=batch_size,
            start=start, done_scores=done,
            on_checkpoint=checkpoint if partial_file is not None else None,
            checkpoint_interval_s=checkpoint_interval_s, progress=progress,
        )
        result.scores[name] = scores
        if final_file is not None and partial_file is not None:
            _atomic_write_json(final_file, {
                "key": key_fp, "method": name, "settings": key,
                "summary": ScoreSummary.of(scores).to_dict(), "scores": scores.tolist(),
            })
            with contextlib.suppress(FileNotFoundError):
                partial_file.unlink()
    if out_dir is not None:
        result.save(out_dir / "pointing_game.json")
    return result


def _check_resume(path: Path, saved: Mapping[str, Any], key_fp: str) -> None:
    if saved.get("key") != key_fp:
        raise ValueError(
            f"{path} holds results for another model, grids or settings; use another "
            "results_dir or delete the file to recompute"
        )


# --------------------------------------------------------------------------- plotting


def plot_pointing_game(
    results: PointingGameResult | Mapping[str, PointingGameResult],
    path: str | os.PathLike | None = None,
    *,
    methods: Sequence[str] | None = None,
    title: str | None = None,
    dpi: int = 150,
) -> Any:
    """Box plots of the scores per method (Fig. B1/B2 style).

    Args:
        results: one result, or a dict label -> result (e.g. ``{"B-cos": r1,
            "standard": r2}``) drawn as side-by-side groups per method.
        path: if given, the figure is saved there atomically (format from the suffix).
        methods: which methods, in this order (default: all, in first-seen order).
        title: figure title.

    Returns:
        The matplotlib ``Figure`` (drawn with the Agg backend; no pyplot state).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    groups = {"": results} if isinstance(results, PointingGameResult) else dict(results)
    if not groups or not all(isinstance(r, PointingGameResult) for r in groups.values()):
        raise TypeError("results must be a PointingGameResult or a dict label -> result")
    if methods is None:
        methods = []
        for r in groups.values():
            methods += [m for m in r.methods if m not in methods]
    methods = list(methods)
    if not methods:
        raise ValueError("no methods to plot")
    ns = {r.n for r in groups.values()}
    k = len(groups)
    width = 0.8 / k
    fig = Figure(figsize=(max(4.0, 0.7 * len(methods) * (1 + 0.5 * (k - 1)) + 1.5), 3.6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    colours = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]
    handles = []
    for gi, (label, r) in enumerate(groups.items()):
        data, pos = [], []
        for mi, m in enumerate(methods):
            if m in r.scores:
                data.append(r.scores[m].reshape(-1))
                pos.append(mi + (gi - (k - 1) / 2) * width)
        if not data:
            continue
        colour = colours[gi % len(colours)]
        ax.boxplot(
            data, positions=pos, widths=width * 0.85, patch_artist=True, showmeans=True,
            boxprops={"facecolor": colour, "alpha": 0.55},
            medianprops={"color": "black"},
            meanprops={"marker": "^", "markerfacecolor": "white", "markeredgecolor": "black"},
            flierprops={"markersize": 2, "alpha": 0.4},
        )
        if label:
            handles.append(Patch(facecolor=colour, alpha=0.55, label=label))
    for nn_ in sorted(ns):
        ax.axhline(1.0 / (nn_ * nn_), ls="--", color="grey", lw=1)
        ax.text(len(methods) - 0.5, 1.0 / (nn_ * nn_), f" uniform 1/{nn_ * nn_}",
                va="bottom", ha="right", fontsize=7, color="grey")
    ax.set_xticks(range(len(methods)))
    ax.set_xticklabels(methods, rotation=30 if len(methods) > 5 else 0)
    ax.set_xlim(-0.6, len(methods) - 0.4)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("localisation score")
    ax.grid(axis="y", alpha=0.3)
    if handles:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    ax.set_title(title or f"Grid pointing game ({'/'.join(f'{x}×{x}' for x in sorted(ns))})")
    if path is not None:
        _save_figure(fig, path, dpi=dpi)
    return fig
