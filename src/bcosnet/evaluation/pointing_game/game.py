"""The game loop: explain every cell of every grid and score it.  With a results
folder each method is one item of a :class:`~bcosnet._utils.store.ResultStore`
(the folder's settings: the grid settings and the model): finished methods are
loaded, an interrupted one resumes from its partial file.  With ``ranks`` (several
processes, :mod:`bcosnet.evaluation.distributed`) each method is played in chunks of
grids, one store item each, shared out among the ranks and merged by rank 0."""

from __future__ import annotations

import dataclasses
import functools
import math
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
from ...training.distributed import DistEnv
from ..distributed import agree, check_chunk, chunk_ranges, main_first, share, together
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
    ranks: DistEnv | None = None,
    chunk: int | None = None,
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
        ranks: this process's place among several (``torchrun``; a
            :class:`~bcosnet.training.distributed.DistEnv`), which call this
            function with the same arguments and ``results_dir``: the ranks check
            that they agree, rank 0 makes the grid set, each method is played in
            chunks of ``chunk`` grids — one item of the results folder each, shared
            out among the ranks — and rank 0 merges them into the method's item
            (:mod:`bcosnet.evaluation.distributed`).  The scores are those of one
            process; a re-run with any number of ranks plays only the missing chunks.
        chunk: grids per chunk with ``ranks``: a multiple of ``batch_size``
            (default: 4 × ``batch_size``).

    Returns:
        A :class:`PointingGameResult` with every method's G_m×n² scores (on every
        rank with ``ranks``); its ``settings`` record the settings used, the grids
        per method and the seconds per grid measured in this call.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    check_int("batch_size", batch_size, 1)
    method_map = _normalise_methods(methods)
    method_settings = _check_method_settings(method_settings, method_map)
    counts = _grid_counts(list(method_map), grids_per_method,
                          None if isinstance(data, GridDataset) else num_grids)
    open_grids = functools.partial(
        _grids_and_store, model, data, results_dir, n=n, num_grids=num_grids, seed=seed,
        confidence_threshold=confidence_threshold, confidence_score=confidence_score,
        allow_fewer=allow_fewer, batch_size=batch_size, progress=progress)
    if ranks is None:
        grids, store = open_grids()
    else:
        chunk = _agree_on_game(ranks, model, data, results_dir, chunk, batch_size, {
            "n": n, "num_grids": num_grids, "seed": seed, "allow_fewer": allow_fewer,
            "confidence_threshold": confidence_threshold, "smoothing": smoothing,
            "confidence_score": confidence_score, "grids_per_method": counts,
            "method_settings": method_settings, "methods": _method_specs(method_map)})
        grids, store = main_first(ranks, open_grids, folder=results_dir,
                                  what="opening the results folder and making the grid set")
        progress = progress and ranks.is_main
    smoothing_used = _check_smoothing(smoothing, grids.cell_size)
    counts = {m: len(grids) if k is None else min(k, len(grids)) for m, k in counts.items()}
    result = PointingGameResult(n=grids.n, classes=grids.classes.numpy().copy(),
                                settings=_result_settings(grids, counts, smoothing,
                                                          smoothing_used, method_settings))

    def make_plans() -> list[_Plan]:  # every stored method is checked before any work
        return [_plan(store, name, method, method_settings.get(name, {}), counts[name], grids,
                      smoothing_used) for name, method in method_map.items()]

    plans = make_plans() if ranks is None else together(ranks, make_plans,
                                                         what="checking the stored methods")
    play = functools.partial(_play, model=model, grids=grids, result=result, store=store,
                             smoothing=smoothing_used, batch_size=batch_size,
                             checkpoint_interval_s=checkpoint_interval_s, progress=progress,
                             label=f"{label}: " if label else "")
    if ranks is not None:
        _play_chunks(ranks, plans, play, chunk)  # type: ignore[arg-type]
    for plan in plans:  # type: ignore[union-attr]
        play(plan)
    if store is not None and (ranks is None or ranks.is_main):
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
        store.save(name, _method_record(name, scores, multi, per_grid), plan.key)


def _method_record(name: str, scores: np.ndarray, multi: bool, per_grid: float | None
                   ) -> dict[str, Any]:
    """A finished method's item: its G×n² scores, their summary, whether all cells were
    explained in one call and the seconds per grid."""
    return {"method": name, "multi_target": multi, "seconds_per_grid": per_grid,
            "summary": ScoreSummary.of(scores).to_dict(), "scores": scores.tolist()}


# ----------------------------------------------------------------------------- several ranks
def _method_specs(method_map: Mapping[str, Any]) -> dict[str, str]:
    """Method name → its name in the library, or ``"callable"``."""
    return {k: m if isinstance(m, str) else "callable" for k, m in method_map.items()}


def _agree_on_game(ranks: DistEnv, model: nn.Module, data: Any,
                   results_dir: str | os.PathLike | None, chunk: int | None, batch_size: int,
                   settings: dict[str, Any]) -> int:
    """The chunk size, once every rank was found to play the same game (the model, the
    data set's length and ``settings``)."""
    if results_dir is None:
        raise ValueError("ranks= needs results_dir: the ranks share the work through the "
                         "results folder (one folder every rank sees)")
    chunk = check_chunk(chunk, batch_size)
    agree(ranks, {**settings, "model": model_fingerprint(model), "batch_size": batch_size,
                  "chunk": chunk, "data": len(data) if hasattr(data, "__len__") else None},
          what="pointing-game settings",
          fix="start every rank with the same arguments, model and data")
    return chunk


def _grid_slice(grids: GridDataset, start: int, stop: int) -> GridDataset:
    """Grids ``start``–``stop`` of ``grids`` (the same source data set)."""
    return dataclasses.replace(grids, source_indices=grids.source_indices[start:stop],
                               classes=grids.classes[start:stop],
                               confidences=grids.confidences[start:stop])


def _unfinished_chunks(plans: list[_Plan], store: ResultStore, chunk: int, sq: int
                       ) -> list[tuple[str, int, int]]:
    """``(method, start, stop)`` of every chunk not in ``store`` yet; chunks an earlier
    one-process run finished (its partial file) are stored as chunks here."""
    todo = []
    for p in plans:
        if p.saved is not None:
            continue
        for a, b in chunk_ranges(p.count, chunk):
            if store.load_chunk(p.name, a, b, p.key) is not None:
                continue
            if b * sq <= len(p.done):
                store.save_chunk(p.name, a, b, {"scores": p.done[a * sq:b * sq],
                                                "seconds": 0.0, "grids": 0}, p.key)
                continue
            todo.append((p.name, a, b))
    return todo


def _play_chunks(ranks: DistEnv, plans: list[_Plan], play: functools.partial, chunk: int
                 ) -> None:
    """Play this rank's share of the unfinished chunks, then (rank 0) merge each
    method's chunks into its item; every rank's ``plans`` then hold the merged items."""
    kw = play.keywords
    store, grids, model = kw["store"], kw["grids"], kw["model"]
    sq = grids.n * grids.n
    by_name = {p.name: p for p in plans}
    mine = share(ranks, lambda: _unfinished_chunks(plans, store, chunk, sq),
                 what="listing the unfinished chunks")

    def work() -> None:
        fns: dict[str, AttributionFn] = {}
        for name, a, b in mine:
            p = by_name[name]
            if name not in fns:
                fns[name] = make_attribution_fn(model, p.method, **p.extra)
            scores, seconds, done = _score_method(
                fns[name], _grid_slice(grids, a, b), model, name=name, count=b - a,
                smoothing=kw["smoothing"], batch_size=kw["batch_size"], done_scores=[],
                on_checkpoint=None, checkpoint_interval_s=math.inf, progress=kw["progress"],
                label=f"{kw['label']}grids {a}-{b} ")
            store.save_chunk(name, a, b, {"scores": scores.reshape(-1).tolist(),
                                          "seconds": seconds, "grids": done}, p.key)

    together(ranks, work, what="playing its share of the pointing game")
    main_first(ranks, lambda: [_merge_chunks(p, store, model, chunk, sq, ranks.is_main)
                               for p in plans], what="merging the chunks")


def _merge_chunks(plan: _Plan, store: ResultStore, model: nn.Module, chunk: int, sq: int,
                  merge: bool) -> None:
    """``plan.saved``: the method's item — merged from its chunks first when ``merge``."""
    if plan.saved is None:
        plan.saved = store.load(plan.name, plan.key)
    if plan.saved is None and merge:
        parts = store.load_chunks(plan.name, chunk_ranges(plan.count, chunk), plan.key)
        scores = np.asarray([v for c in parts for v in c["scores"]],
                            dtype=np.float64).reshape(plan.count, sq)
        seconds, grids = sum(c["seconds"] for c in parts), sum(c["grids"] for c in parts)
        multi = supports_multi_target(make_attribution_fn(model, plan.method, **plan.extra))
        store.save(plan.name, _method_record(plan.name, scores, multi,
                                             seconds / grids if grids else None), plan.key)
        store.drop_chunks(plan.name)
        plan.saved = store.load(plan.name, plan.key)
    if plan.saved is None:
        raise ValueError(f"{store.path(plan.name)} is missing after rank 0 merged the chunks: "
                         "every rank must see the same results folder")
