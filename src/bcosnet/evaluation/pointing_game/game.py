"""The game loop: explain every cell of every grid and score it.  With a results
folder each method is one item of a :class:`~bcosnet._utils.store.ResultStore`
(the folder's settings: the grid settings and the model): finished methods are
loaded, an interrupted one resumes from its partial file."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..._utils.modules import eval_mode
from ..._utils.progress import progress as tqdm
from ..._utils.store import ResultStore, fingerprint, model_fingerprint
from ..._utils.validate import check_int
from ._model import model_device_dtype
from .grids import GridDataset, _grid_set, grid_settings, grid_store, make_grid_dataset
from .methods import AttributionFn, _normalise_methods, make_attribution_fn, supports_multi_target
from .results import PointingGameResult, ScoreSummary
from .scoring import _check_smoothing, cell_scores

__all__ = ["grid_maps", "grid_pointing_game", "prepare_grids"]

#: The earlier name of :func:`make_grid_dataset` with ``results_dir`` (kept).
prepare_grids = make_grid_dataset

def _summed_maps(maps: Any, name: str, lead: tuple[int, ...], size: tuple[int, int]) -> Tensor:
    """Check a method's output (lead + [C×]H×W) and sum it over channels: lead + H×W."""
    if not isinstance(maps, Tensor):
        raise TypeError(f"method {name!r} returned {type(maps).__name__}, not a tensor")
    maps = maps.detach()
    k = len(lead)
    if maps.dim() not in (k + 2, k + 3) or tuple(maps.shape[:k]) != lead:
        form = "×".join(str(v) for v in lead)
        raise ValueError(
            f"method {name!r} must return {form}×H×W or {form}×C×H×W maps, got shape "
            f"{tuple(maps.shape)}"
        )
    if tuple(maps.shape[-2:]) != tuple(size):
        raise ValueError(
            f"method {name!r} returned {maps.shape[-2]}×{maps.shape[-1]} maps for "
            f"{size[0]}×{size[1]} grid images — upsample the maps to the image size "
            "(e.g. F.interpolate) in the attribution callable"
        )
    return maps.sum(k) if maps.dim() == k + 3 else maps


def grid_maps(fn: AttributionFn, images: Tensor, targets: Tensor, *, name: str = "method",
              multi_target: bool | None = None) -> Tensor:
    """G×T×H×W per-pixel maps of T targets for each of G grid images.

    With ``multi_target`` (default: :func:`supports_multi_target` of ``fn``)
    all G×T maps come from one call ``fn(images, targets)``; otherwise ``fn``
    is called once per target column (the per-target loop).
    """
    g, t = targets.shape
    size = (int(images.shape[-2]), int(images.shape[-1]))
    if multi_target is None:
        multi_target = supports_multi_target(fn)
    if multi_target:
        return _summed_maps(fn(images, targets), name, (g, t), size)
    return torch.stack(
        [_summed_maps(fn(images, targets[:, j].contiguous()), name, (g,), size)
         for j in range(t)], 1)


def _score_method(
    fn: AttributionFn,
    grids: GridDataset,
    model: nn.Module,
    *,
    name: str,
    count: int,
    smoothing: int | None,
    batch_size: int,
    done_scores: list[float],
    on_checkpoint: Callable[[list[float]], None] | None,
    checkpoint_interval_s: float,
    progress: bool,
    label: str = "",
) -> tuple[np.ndarray, float, int]:
    """Scores of the first ``count`` grids (G×n², row-major cells), resuming after the
    complete grids in ``done_scores``; also the seconds spent and the grids computed."""
    device, dtype = model_device_dtype(model)
    sq = grids.n * grids.n
    start = min(len(done_scores) // sq, count)
    scores = list(done_scores[: start * sq])
    multi = supports_multi_target(fn)
    cells = torch.arange(sq)
    last_save = t0 = time.monotonic()
    bar = tqdm(total=count, initial=start, unit="grid", disable=not progress,
               desc=f"pointing game [{label}{name}]" + ("" if multi else " (per-target loop)"))
    try:
        for s in range(start, count, batch_size):
            idx = torch.arange(s, min(s + batch_size, count))
            images = grids.get_images(idx).to(device=device, dtype=dtype)
            targets = grids.classes[idx].to(device)
            with eval_mode(model):
                maps = grid_maps(fn, images, targets, name=name, multi_target=multi)
            b = len(idx)
            flat = maps.reshape(b * sq, *maps.shape[-2:])
            sc = cell_scores(flat, cells.repeat(b).to(flat.device), grids.n, smoothing=smoothing)
            scores.extend(sc.cpu().tolist())
            bar.update(b)
            if on_checkpoint is not None and time.monotonic() - last_save >= checkpoint_interval_s:
                on_checkpoint(scores)
                last_save = time.monotonic()
    finally:
        bar.close()
    seconds = time.monotonic() - t0
    return np.asarray(scores, dtype=np.float64).reshape(count, sq), seconds, count - start


def _grid_counts(method_names: list[str], grids_per_method: Mapping[str, int] | None,
                 num_grids: int | None) -> dict[str, int | None]:
    counts: dict[str, int | None] = dict.fromkeys(method_names, num_grids)
    for m, k in (grids_per_method or {}).items():
        if m not in counts:
            raise ValueError(f"grids_per_method names unknown method {m!r}; methods: "
                             f"{method_names}")
        check_int(f"grids_per_method[{m!r}]", k, 0)
        if num_grids is not None and k > num_grids:
            raise ValueError(
                f"grids_per_method[{m!r}] = {k} exceeds num_grids = {num_grids}: the grid set "
                "is made once for all methods; raise num_grids"
            )
        counts[m] = k
    return counts


def _no_grids(n: int, confidence_threshold: float | None) -> str:
    """The error for a game without grids (e.g. ``num_grids=0``)."""
    more = "" if confidence_threshold is None else ", or confidence_threshold=None"
    return (f"no grids to play: none were made or requested (an {n}×{n} grid needs {n * n} "
            f"classes with a correctly classified image); pass num_grids >= 1 (or None: as "
            f"many as can be made), check the model's accuracy{more}")


def grid_pointing_game(
    model: nn.Module,
    data: Any,
    methods: Any = "bcos",
    *,
    n: int = 3,
    num_grids: int | None = 500,
    grids_per_method: Mapping[str, int] | None = None,
    seed: int = 0,
    confidence_threshold: float | None = 0.5,
    confidence_score: str = "sigmoid",
    allow_fewer: bool = False,
    smoothing: int | str | None = "auto",
    batch_size: int = 8,
    method_settings: Mapping[str, Mapping[str, Any]] | None = None,
    results_dir: str | os.PathLike | None = None,
    checkpoint_interval_s: float = 60.0,
    progress: bool = True,
    label: str | None = None,
) -> PointingGameResult:
    """Play the grid pointing game (docs/protocol.md, section 5) for one model and
    several methods.

    The defaults are the paper's protocol: 3×3 grids of the most confidently
    and correctly classified test images with sigmoid(logit) > 0.5, 500 grids,
    the smoothing rule of :func:`paper_smoothing` for the cell size.

    Args:
        model: the classifier (images in [0, 1] -> N×K logits); evaluated in eval
            mode on its own device and dtype; modes are restored afterwards.
        data: a test data set (see :func:`make_grid_dataset`) or a ready
            :class:`GridDataset` (then ``n``/``num_grids``/``seed``/
            ``confidence_threshold``/``confidence_score`` are taken from it).
        methods: a method name (``"bcos"`` or a ``bcosnet.attribution`` name), an
            attribution callable ``(images N×C×H×W, targets N) -> maps N×[C×]H×W``,
            a list of these, or a dict display name -> method.  A method whose
            callable supports N×T targets (:func:`supports_multi_target`)
            explains all n² cells of a grid in one call; others are called
            once per cell.
        num_grids: grids in the grid set (None: as many as can be made).
        grids_per_method: method name -> how many of the grids (the first k)
            it plays; default: all.  E.g. fewer for the perturbation methods.
        confidence_threshold: see :func:`make_grid_dataset`.
        confidence_score: see :func:`make_grid_dataset`.
        allow_fewer: see :func:`make_grid_dataset`.
        smoothing: ``"auto"`` (the paper's rule for the cell size: 15 at 224 px,
            none at 28–32 px, see :func:`paper_smoothing`), None, or an odd
            box-filter size applied to each summed map.
        batch_size: grid images per attribution call.
        method_settings: method name -> keyword settings for ``attribution.get``.
        results_dir: if given, the grids (``grids.json``), each finished method
            (``<method>.json``), in-progress methods (``<method>.partial.json``,
            every ``checkpoint_interval_s`` seconds) and the combined result
            (``pointing_game.json``) are saved there atomically; calling again
            with the same arguments skips finished methods and resumes partial
            ones.  The folder is keyed by the model and the grid settings
            (``store.json``), each method's file by its settings, the smoothing
            and the grids it plays; results of other settings raise
            :class:`~bcosnet._utils.store.SettingsMismatchError` (a ValueError
            naming each difference) before anything is computed.
        progress: show tqdm progress bars (grids done, rate and ETA per method).
        label: shown before the method name in the progress bars (e.g. the network's
            name when several games run at once).

    Returns:
        A :class:`PointingGameResult` with every method's G_m×n² scores; its
        ``settings`` record the settings used, the grids per method and the
        seconds per grid measured in this call.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    check_int("batch_size", batch_size, 1)
    method_map = _normalise_methods(methods)
    method_settings = _check_method_settings(method_settings, method_map)
    counts = _grid_counts(list(method_map), grids_per_method,
                          None if isinstance(data, GridDataset) else num_grids)
    grids, store = _grids_and_store(model, data, results_dir, n=n, num_grids=num_grids,
                                    seed=seed, confidence_threshold=confidence_threshold,
                                    confidence_score=confidence_score, allow_fewer=allow_fewer,
                                    batch_size=batch_size, progress=progress)
    smoothing_used = _check_smoothing(smoothing, grids.cell_size)
    counts = {m: len(grids) if k is None else min(k, len(grids)) for m, k in counts.items()}
    result = PointingGameResult(n=grids.n, classes=grids.classes.numpy().copy(),
                                settings=_result_settings(grids, counts, smoothing,
                                                          smoothing_used, method_settings))
    # Every stored method is checked before anything is computed.
    plans = [_plan(store, name, method, method_settings.get(name, {}), counts[name], grids,
                   smoothing_used) for name, method in method_map.items()]
    for plan in plans:
        _play(plan, model, grids, result, store, smoothing=smoothing_used,
              batch_size=batch_size, checkpoint_interval_s=checkpoint_interval_s,
              progress=progress, label=f"{label}: " if label else "")
    if store is not None:
        result.save(store.folder / "pointing_game.json")
    return result


def _result_settings(grids: GridDataset, counts: dict[str, int], smoothing: int | str | None,
                     smoothing_used: int | None, method_settings: dict[str, dict[str, Any]]
                     ) -> dict[str, Any]:
    """What a result records of how it was computed (``multi_target`` and
    ``seconds_per_grid`` are filled in per method)."""
    return {
        "n": grids.n, "num_grids": len(grids), "requested_grids": grids.requested,
        "grids_per_method": dict(counts), "seed": grids.seed,
        "confidence_threshold": grids.confidence_threshold,
        "confidence_score": grids.confidence_score, "smoothing": smoothing_used,
        "smoothing_rule": smoothing if smoothing == "auto" else "explicit",
        "cell_size": list(grids.cell_size), "method_settings": method_settings,
        "multi_target": {}, "seconds_per_grid": {},
    }


def _check_method_settings(method_settings: Mapping[str, Mapping[str, Any]] | None,
                           method_map: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    out = {k: dict(v) for k, v in (method_settings or {}).items()}
    unknown = set(out) - set(method_map)
    if unknown:
        raise ValueError(f"method_settings names unknown methods {sorted(unknown)}")
    return out


def _grids_and_store(model: nn.Module, data: Any, results_dir: str | os.PathLike | None, *,
                     n: int, num_grids: int | None, seed: int,
                     confidence_threshold: float | None, confidence_score: str,
                     allow_fewer: bool, batch_size: int, progress: bool
                     ) -> tuple[GridDataset, ResultStore | None]:
    """The grid set (``data`` itself when it is one, else loaded or made) and the
    results folder's store (its settings checked before the grids are made)."""
    if isinstance(data, GridDataset):
        if len(data) == 0:
            raise ValueError("the GridDataset given holds no grids; make it with num_grids >= 1 "
                             "(make_grid_dataset)")
        wanted = {"n": data.n, "seed": data.seed,
                  "confidence_threshold": data.confidence_threshold,
                  "confidence_score": data.confidence_score}
    else:
        wanted = grid_settings(n, num_grids, seed, confidence_threshold, confidence_score)
    store = None if results_dir is None else grid_store(results_dir, wanted,
                                                        model_fingerprint(model))
    if isinstance(data, GridDataset):
        return data, store
    grids = _grid_set(model, data, wanted, store, num_grids=num_grids, allow_fewer=allow_fewer,
                      batch_size=max(batch_size, 64), progress=progress)
    if len(grids) == 0:
        raise ValueError(_no_grids(grids.n, confidence_threshold))
    return grids, store


@dataclass
class _Plan:
    """One method's work: its settings (the key of its stored result), a stored
    result to load, or the scores of the grids an interrupted run finished."""

    name: str
    method: Any
    extra: dict[str, Any]
    count: int
    key: dict[str, Any]
    saved: dict[str, Any] | None = None
    done: list[float] = field(default_factory=list)


def _plan(store: ResultStore | None, name: str, method: Any, extra: dict[str, Any], count: int,
          grids: GridDataset, smoothing: int | None) -> _Plan:
    key = {
        "method": name,
        "method_spec": method if isinstance(method, str) else "callable",
        "method_settings": extra,
        "smoothing": smoothing,
        "grids": fingerprint([grids.source_indices[:count].tolist(),
                              grids.classes[:count].tolist()]),
        "model": store.settings["model"] if store is not None else None,  # type: ignore[index]
    }
    plan = _Plan(name, method, extra, count, key)
    if store is not None:
        plan.saved = store.load(name, key)
        partial = store.load_partial(name, key) if plan.saved is None else None
        plan.done = [float(v) for v in (partial or {}).get("scores", [])]
    return plan


def _play(plan: _Plan, model: nn.Module, grids: GridDataset, result: PointingGameResult,
          store: ResultStore | None, *, smoothing: int | None, batch_size: int,
          checkpoint_interval_s: float, progress: bool, label: str) -> None:
    """Score ``plan``'s method into ``result`` (loaded when stored), saving its
    progress and its finished result in ``store``."""
    name, sq, runs = plan.name, grids.n * grids.n, result.settings
    if plan.saved is not None:
        result.scores[name] = np.asarray(plan.saved["scores"], dtype=np.float64).reshape(
            plan.count, sq)
        runs["multi_target"][name] = plan.saved.get("multi_target")
        runs["seconds_per_grid"][name] = plan.saved.get("seconds_per_grid")
        return
    fn = make_attribution_fn(model, plan.method, **plan.extra)

    def checkpoint(scores: list[float]) -> None:
        assert store is not None
        store.save_partial(name, {"method": name, "scores": scores}, plan.key)

    scores, seconds, computed = _score_method(
        fn, grids, model, name=name, count=plan.count, smoothing=smoothing,
        batch_size=batch_size, done_scores=plan.done,
        on_checkpoint=checkpoint if store is not None else None,
        checkpoint_interval_s=checkpoint_interval_s, progress=progress, label=label)
    multi = supports_multi_target(fn)
    per_grid = seconds / computed if computed else None
    runs["multi_target"][name], runs["seconds_per_grid"][name] = multi, per_grid
    result.scores[name] = scores
    if store is not None:
        store.save(name, {"method": name, "multi_target": multi, "seconds_per_grid": per_grid,
                          "summary": ScoreSummary.of(scores).to_dict(),
                          "scores": scores.tolist()}, plan.key)
