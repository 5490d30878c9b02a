"""Grid data: the n×n grid images of distinct, confidently and correctly
classified classes (docs/protocol.md, section 5), the per-class confidence
rankings, the confidence threshold, and the grid set's file in a results folder."""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..._utils.modules import eval_mode, first_output
from ..._utils.progress import progress as tqdm
from ..._utils.store import ResultStore, model_fingerprint
from ..._utils.validate import check_choice, check_int
from ._model import model_device_dtype

__all__ = ["GridDataset", "TooFewClassesError", "grid_settings", "grid_size_advice",
           "grid_store", "largest_grid_n", "make_grid_dataset"]


class TooFewClassesError(ValueError):
    """Fewer classes than n² have a usable (correct, confident) image: no grid can be made.

    Attributes: ``needed`` (n²), ``usable`` (class -> number of usable images),
    ``confidence_threshold``.
    """

    def __init__(self, message: str, *, needed: int, usable: dict[int, int],
                 confidence_threshold: float | None) -> None:
        super().__init__(message)
        self.needed, self.usable = needed, usable
        self.confidence_threshold = confidence_threshold


def largest_grid_n(classes: int) -> int:
    """The largest n whose n×n grid fits ``classes`` distinct classes (n² ≤ classes);
    0 when none does, i.e. fewer than 4 classes: the game needs n ≥ 2."""
    n = math.isqrt(max(classes, 0))
    return n if n >= 2 else 0


def grid_size_advice(n: int, classes: int, whose: str) -> str:
    """``"a 3×3 grid needs 9 distinct classes (n² for n=3), but <whose> 5; n=2 fits
    (a 2×2 grid, 4 classes)"`` — or that no grid fits (fewer than 4 classes)."""
    need = f"a {n}×{n} grid needs {n * n} distinct classes (n² for n={n}), but {whose} {classes}"
    fit = largest_grid_n(classes)
    if fit == 0:
        return (f"{need}; no grid size fits: the pointing game needs at least 4 classes "
                "(n=2, a 2×2 grid)")
    return f"{need}; n={fit} fits (a {fit}×{fit} grid, {fit * fit} classes)"


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
        seed, confidence_threshold, confidence_score: the construction settings.
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
    confidence_score: str = "sigmoid"

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
            "confidence_score": self.confidence_score,
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
            confidence_score=str(d.get("confidence_score", "sigmoid")),
        )


def _class_rankings(
    model: nn.Module,
    source: Any,
    *,
    confidence_threshold: float | None,
    confidence_score: str,
    batch_size: int,
    progress: bool,
) -> tuple[dict[int, list[int]], dict[int, list[float]], tuple[int, int], int]:
    """Per class: correctly classified data-set indices, most confident first."""
    device, dtype = model_device_dtype(model)
    logits_true: list[Tensor] = []
    correct: list[Tensor] = []
    labels_all: list[Tensor] = []
    cell_size: tuple[int, int] | None = None
    num_classes = 0
    with eval_mode(model), torch.no_grad():
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
            out = first_output(model(images.to(device=device, dtype=dtype)), logits=True)
            out = out.detach().cpu()
            num_classes = out.shape[1]
            if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
                raise ValueError(
                    f"labels must lie in 0..{num_classes - 1} (the model has {num_classes} "
                    f"outputs), got {int(labels.min())}..{int(labels.max())}"
                )
            true = out.gather(1, labels[:, None])[:, 0]
            ok = out.argmax(1) == labels
            if confidence_threshold is not None:
                prob = torch.sigmoid(true) if confidence_score == "sigmoid" else (
                    out.double().softmax(1).gather(1, labels[:, None])[:, 0])
                ok &= prob > confidence_threshold
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
    confidence_threshold: float | None = 0.5,
    confidence_score: str = "sigmoid",
    allow_fewer: bool = False,
    batch_size: int = 64,
    progress: bool = True,
    results_dir: str | os.PathLike | None = None,
) -> GridDataset:
    """Build the pointing-game grids (docs/protocol.md, section 5).

    For each class, the test images that ``model`` classifies correctly are
    ranked by confidence (true-class logit, descending).  With the default
    ``confidence_threshold=0.5`` only images with ``sigmoid(logit) > 0.5``
    (logit > 0) take part — the official CVPR 2022 code's rule, applied to
    B-cos and conventional networks alike: a class takes part only while its
    next unused image passes.  Each grid draws n² distinct classes at random
    among the classes that still have an unused image (a ``torch.Generator``
    seeded with ``seed``) and takes each class's most confident unused image;
    cell k of the grid (row-major) holds the k-th drawn class.  No image is used
    twice, and the grids for ``num_grids=m`` are the first m of those for any
    larger request.

    Args:
        model: classifier taking images in [0, 1], returning N×K logits.  Run in
            eval mode (its modes are restored afterwards) on its own device.
        dataset: map-style data set of ``(image C×H×W in [0, 1], label)`` with
            equal-sized images and deterministic transforms, or a pair
            ``(images N×C×H×W, labels N)``.
        n: cells per side (the paper: 3 on ImageNet, 2 on CIFAR-10).
        num_grids: how many grids to make; None: as many as possible.  When
            fewer can be made (fewer than n² classes have an unused image left),
            this raises ValueError saying how many are available, unless
            ``allow_fewer`` (then a warning; :attr:`GridDataset.num_grids` says
            how many were made).
        seed: seed of the class sampling.
        confidence_threshold: p in [0, 1) (default 0.5, the paper's), or None
            for no threshold (every correctly classified image).
        confidence_score: what the threshold applies to: ``"sigmoid"`` of the
            true-class logit (default; the official code, for every model) or
            ``"softmax"`` probability of the true class (an option for
            conventional softmax networks).
        allow_fewer: make as many grids as possible when fewer than requested
            are available, with a warning, instead of raising.
        batch_size: images per forward pass when ranking.
        progress: show tqdm progress bars.
        results_dir: a results folder (that of :func:`grid_pointing_game`): the grid
            set is loaded from ``grids.json`` there when it was made with these
            settings and this model (no classification pass), else made and saved
            there; a folder of other settings or another model raises
            :class:`~bcosnet._utils.store.SettingsMismatchError` first.  For
            splitting one game over processes: make the grids once, then play a
            subset of the methods in each process with the same folder.

    Returns:
        A :class:`GridDataset`.
    """
    wanted = grid_settings(n, num_grids, seed, confidence_threshold, confidence_score)
    check_int("batch_size", batch_size, 1)
    store = None if results_dir is None else grid_store(results_dir, wanted,
                                                         model_fingerprint(model))
    return _grid_set(model, dataset, wanted, store, num_grids=num_grids,
                     allow_fewer=allow_fewer, batch_size=batch_size, progress=progress)


#: The settings a grid set is made with (with the model: a results folder's settings).
GRID_KEYS = ("n", "seed", "confidence_threshold", "confidence_score")


def grid_settings(n: int, num_grids: int | None, seed: int,
                  confidence_threshold: float | None, confidence_score: str) -> dict[str, Any]:
    """The checked settings of a grid set: ``n``, ``seed``, ``confidence_threshold``
    (a float or None) and ``confidence_score`` (``num_grids`` is checked, not kept: more
    or fewer grids extend or cut one sequence)."""
    if num_grids is not None:
        check_int("num_grids", num_grids, 0)
    if confidence_threshold is not None and not 0.0 <= float(confidence_threshold) < 1.0:
        raise ValueError(
            f"confidence_threshold must be None or a probability in [0, 1) such as 0.5, "
            f"got {confidence_threshold!r}"
        )
    check_choice("confidence_score", confidence_score, ("sigmoid", "softmax"))
    return {"n": check_int("n", n, 1), "seed": check_int("seed", seed),
            "confidence_threshold": None if confidence_threshold is None
            else float(confidence_threshold), "confidence_score": confidence_score}


def _legacy_grid_settings(folder: Path) -> dict[str, Any] | None:
    """The settings of a results folder written before ``store.json`` (read off its
    ``grids.json``), or None."""
    f = folder / "grids.json"
    if not f.is_file():
        return None
    saved = json.loads(f.read_text(encoding="utf-8"))
    then = {k: saved.get(k, "sigmoid" if k == "confidence_score" else None) for k in GRID_KEYS}
    return {**then, "model": saved["model"]} if "model" in saved else then


def grid_store(results_dir: str | os.PathLike, settings: dict[str, Any], model_fp: str
               ) -> ResultStore:
    """The results folder of a pointing game: grid settings and model fingerprint
    checked (or recorded) before any work."""
    return ResultStore(results_dir, {**settings, "model": model_fp},
                       what="pointing-game results", legacy_settings=_legacy_grid_settings)


def _grid_set(model: nn.Module, dataset: Any, wanted: dict[str, Any], store: ResultStore | None,
              *, num_grids: int | None, allow_fewer: bool, batch_size: int, progress: bool
              ) -> GridDataset:
    """The grid set of ``wanted`` settings: loaded from ``store`` when it holds the one
    asked for, else made (and saved there)."""
    saved = store.load("grids") if store is not None else None
    if saved is not None and saved.get("requested") == num_grids:
        return GridDataset.from_dict(saved, dataset)
    grids = _make_grids(model, _as_source(dataset), wanted, num_grids=num_grids,
                        allow_fewer=allow_fewer, batch_size=batch_size, progress=progress)
    if saved is not None:
        # Another grid count with the same settings: the grids are prefixes of one
        # sequence, so results of the shared grids stay valid (their keys say which).
        old = saved["source_indices"]
        k = min(len(old), len(grids))
        if grids.source_indices[:k].tolist() != old[:k]:
            raise ValueError(f"{store.path('grids')} does not match the grids made now; "  # type: ignore[union-attr]
                             "delete it")
    if store is not None:
        store.save("grids", {**grids.to_dict(), "model": store.settings["model"]})  # type: ignore[index]
    return grids


def _per_class(model: nn.Module, counts: Mapping[int, int]) -> dict[Any, int]:
    """``counts`` keyed by the class names the model records (else by index)."""
    from ...explanations.core import model_class_names

    names = model_class_names(model)
    return {(names[c] if names and c < len(names) else c): k for c, k in sorted(counts.items())}


def _make_grids(model: nn.Module, source: Any, wanted: dict[str, Any], *,
                num_grids: int | None, allow_fewer: bool, batch_size: int, progress: bool
                ) -> GridDataset:
    n, threshold, score = wanted["n"], wanted["confidence_threshold"], wanted["confidence_score"]
    ranking, conf, cell_size, num_classes = _class_rankings(
        model, source, confidence_threshold=threshold, confidence_score=score,
        batch_size=batch_size, progress=progress)
    sq = n * n
    if num_classes < sq:
        raise ValueError(grid_size_advice(n, num_classes, "the model has"))
    usable = {c: len(r) for c, r in ranking.items()}
    thr = "" if threshold is None else (
        f" with {score}(logit) > {threshold:g}" if score == "sigmoid"
        else f" with softmax > {threshold:g}")
    if len(usable) < sq:
        more = "a better-trained model" + ("" if threshold is None
                                           else " or confidence_threshold=None")
        raise TooFewClassesError(
            grid_size_advice(n, len(usable), f"only {len(usable)} of the model's {num_classes} "
                             f"classes have a correctly classified image{thr}: usable classes")
            + f" (images per class: {_per_class(model, usable)}); for more usable classes: "
            f"{more}",
            needed=sq, usable=usable, confidence_threshold=threshold,
        )
    idx, cls, confs = _draw_grids(ranking, conf, sq, num_grids, wanted["seed"])
    made = len(idx)
    if num_grids is not None and made < num_grids:
        msg = (
            f"only {made} {n}×{n} grids can be made, {num_grids} were requested: after "
            f"{made} grids fewer than {sq} classes have a correctly classified image{thr} left "
            f"(usable images per class: {_per_class(model, usable)})"
        )
        if not allow_fewer:
            raise ValueError(f"{msg}; pass {_shortfall_fixes(made, n, threshold)}")
        warnings.warn(msg, stacklevel=4)  # the caller of make_grid_dataset
    return GridDataset(
        source=source, n=n,
        source_indices=torch.tensor(idx, dtype=torch.long).reshape(made, sq),
        classes=torch.tensor(cls, dtype=torch.long).reshape(made, sq),
        confidences=torch.tensor(confs, dtype=torch.float64).reshape(made, sq),
        cell_size=cell_size, requested=num_grids, seed=wanted["seed"],
        confidence_threshold=threshold, confidence_score=score,
    )


def _draw_grids(ranking: dict[int, list[int]], conf: dict[int, list[float]], sq: int,
                num_grids: int | None, seed: int
                ) -> tuple[list[list[int]], list[list[int]], list[list[float]]]:
    """Data-set indices, classes and confidences of the grids: each draws ``sq``
    distinct classes among those with an unused image left and takes each class's
    most confident unused image."""
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
    return grids_idx, grids_cls, grids_conf


def _shortfall_fixes(made: int, n: int, confidence_threshold: float | None) -> str:
    """The arguments that make a request for more grids than can be made pass."""
    fixes = [f"num_grids={made}", "allow_fewer=True"]
    if n > 2:
        fixes.append(f"a smaller grid (n={n - 1} needs {(n - 1) ** 2} classes per grid)")
    if confidence_threshold is not None:
        fixes.append("confidence_threshold=None (more usable images)")
    return f"{', '.join(fixes[:-1])} or {fixes[-1]}"
