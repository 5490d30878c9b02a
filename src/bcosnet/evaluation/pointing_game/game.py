"""The game loop: explain every cell of every grid, score it, and keep a resume
store of finished and partial methods."""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..._utils.io import atomic_write_json
from ..._utils.progress import progress as tqdm
from ._model import _eval_mode, _fingerprint, _model_device_dtype, _model_fingerprint
from .grids import GridDataset, _check_n, make_grid_dataset
from .methods import AttributionFn, _normalise_methods, make_attribution_fn, supports_multi_target
from .results import PointingGameResult, ScoreSummary
from .scoring import _check_smoothing, cell_scores

__all__ = ["grid_pointing_game", "prepare_grids"]

_GRID_KEYS = ("n", "seed", "confidence_threshold", "confidence_score")


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "method"


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
    device, dtype = _model_device_dtype(model)
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
            with _eval_mode(model):
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
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise ValueError(f"grids_per_method[{m!r}] must be a non-negative int, got {k!r}")
        if num_grids is not None and k > num_grids:
            raise ValueError(
                f"grids_per_method[{m!r}] = {k} exceeds num_grids = {num_grids}: the grid set "
                "is made once for all methods; raise num_grids"
            )
        counts[m] = k
    return counts


def _load_or_make_grids(model: nn.Module, data: Any, wanted: dict[str, Any], *,
                        num_grids: int | None, allow_fewer: bool, batch_size: int,
                        progress: bool, grid_file: Path | None, model_fp: str | None
                        ) -> GridDataset:
    saved = None
    if grid_file is not None and grid_file.exists():
        with open(grid_file, encoding="utf-8") as f:
            saved = json.load(f)
        got = {k: saved.get(k, "sigmoid" if k == "confidence_score" else None)
               for k in _GRID_KEYS}
        if got != wanted or saved.get("model") != model_fp:
            raise ValueError(
                f"{grid_file} was made for other settings or another model "
                f"({got}, model {saved.get('model')}; now {wanted}, model {model_fp}); "
                "use another results_dir or delete it"
            )
        if saved.get("requested") == num_grids:
            return GridDataset.from_dict(saved, data)
    grids = make_grid_dataset(
        model, data, wanted["n"], num_grids, seed=wanted["seed"],
        confidence_threshold=wanted["confidence_threshold"],
        confidence_score=wanted["confidence_score"], allow_fewer=allow_fewer,
        batch_size=max(batch_size, 64), progress=progress,
    )
    if saved is not None:
        # Another grid count with the same settings: the grids are prefixes of one
        # sequence, so results of the shared grids stay valid (their keys say which).
        old = saved["source_indices"]
        k = min(len(old), len(grids))
        if grids.source_indices[:k].tolist() != old[:k]:
            raise ValueError(f"{grid_file} does not match the grids made now; delete it")
    if grid_file is not None:
        atomic_write_json(grid_file, {**grids.to_dict(), "model": model_fp})
    return grids


def prepare_grids(
    model: nn.Module,
    data: Any,
    *,
    n: int = 3,
    num_grids: int | None = 500,
    seed: int = 0,
    confidence_threshold: float | None = 0.5,
    confidence_score: str = "sigmoid",
    allow_fewer: bool = False,
    batch_size: int = 8,
    results_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> GridDataset:
    """Make the grid set :func:`grid_pointing_game` plays with these arguments, or load
    it from ``results_dir/grids.json``, and save it there — without explaining anything.

    For splitting one game over processes: prepare the grids once, then call
    :func:`grid_pointing_game` with the same arguments and a subset of the methods
    in each process (each finished method is its own file in ``results_dir``), and
    finally with every method to collect the results.  Raises as
    :func:`grid_pointing_game` does (other settings or model in ``results_dir``;
    :class:`TooFewClassesError`; no grid at all).
    """
    out_dir = Path(results_dir) if results_dir is not None else None
    return _grid_set(model, data, n=n, num_grids=num_grids, seed=seed,
                     confidence_threshold=confidence_threshold,
                     confidence_score=confidence_score, allow_fewer=allow_fewer,
                     batch_size=batch_size, progress=progress, out_dir=out_dir,
                     model_fp=_model_fingerprint(model) if out_dir is not None else None)


def _grid_set(model: nn.Module, data: Any, *, n: int, num_grids: int | None, seed: int,
              confidence_threshold: float | None, confidence_score: str, allow_fewer: bool,
              batch_size: int, progress: bool, out_dir: Path | None, model_fp: str | None
              ) -> GridDataset:
    wanted = {
        "n": _check_n(n), "seed": seed,
        "confidence_threshold": None if confidence_threshold is None
        else float(confidence_threshold),
        "confidence_score": confidence_score,
    }
    grids = _load_or_make_grids(
        model, data, wanted, num_grids=num_grids, allow_fewer=allow_fewer,
        batch_size=batch_size, progress=progress,
        grid_file=out_dir / "grids.json" if out_dir is not None else None, model_fp=model_fp,
    )
    if len(grids) == 0:
        raise ValueError(_no_grids(grids.n, confidence_threshold))
    return grids


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
    """Play the grid pointing game (SPEC §5) for one model and several methods.

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
        confidence_threshold, confidence_score, allow_fewer: see
            :func:`make_grid_dataset`.
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
            ones.  Each method's file is keyed by the model, its settings, the
            smoothing and the grids it plays; files from another model or other
            settings raise ValueError.
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
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    method_map = _normalise_methods(methods)
    method_settings = dict(method_settings or {})
    unknown = set(method_settings) - set(method_map)
    if unknown:
        raise ValueError(f"method_settings names unknown methods {sorted(unknown)}")
    counts = _grid_counts(list(method_map), grids_per_method,
                          None if isinstance(data, GridDataset) else num_grids)

    out_dir = Path(results_dir) if results_dir is not None else None
    model_fp = _model_fingerprint(model) if out_dir is not None else None

    if isinstance(data, GridDataset):
        grids = data
        if len(grids) == 0:
            raise ValueError("the GridDataset given holds no grids; make it with num_grids >= 1 "
                             "(make_grid_dataset)")
    else:
        grids = _grid_set(model, data, n=n, num_grids=num_grids, seed=seed,
                          confidence_threshold=confidence_threshold,
                          confidence_score=confidence_score, allow_fewer=allow_fewer,
                          batch_size=batch_size, progress=progress, out_dir=out_dir,
                          model_fp=model_fp)
    smoothing_used = _check_smoothing(smoothing, grids.cell_size)
    counts = {m: len(grids) if k is None else min(k, len(grids)) for m, k in counts.items()}

    settings: dict[str, Any] = {
        "n": grids.n,
        "num_grids": len(grids),
        "requested_grids": grids.requested,
        "grids_per_method": dict(counts),
        "seed": grids.seed,
        "confidence_threshold": grids.confidence_threshold,
        "confidence_score": grids.confidence_score,
        "smoothing": smoothing_used,
        "smoothing_rule": smoothing if smoothing == "auto" else "explicit",
        "cell_size": list(grids.cell_size),
        "method_settings": {k: dict(v) for k, v in method_settings.items()},
        "multi_target": {},
        "seconds_per_grid": {},
    }
    result = PointingGameResult(n=grids.n, classes=grids.classes.numpy().copy(), settings=settings)

    for name, method in method_map.items():
        extra = dict(method_settings.get(name, {}))
        count = counts[name]
        key = {
            "method": name,
            "method_spec": method if isinstance(method, str) else "callable",
            "method_settings": extra,
            "smoothing": smoothing_used,
            "grids": _fingerprint([grids.source_indices[:count].tolist(),
                                   grids.classes[:count].tolist()]),
            "model": model_fp,
        }
        key_fp = _fingerprint(key)
        final_file = partial_file = None
        done: list[float] = []
        if out_dir is not None:
            final_file = out_dir / f"{_safe_name(name)}.json"
            partial_file = out_dir / f"{_safe_name(name)}.partial.json"
            if final_file.exists():
                with open(final_file, encoding="utf-8") as f:
                    saved = json.load(f)
                _check_resume(final_file, saved, key_fp)
                result.scores[name] = np.asarray(saved["scores"], dtype=np.float64).reshape(
                    count, grids.n * grids.n
                )
                settings["multi_target"][name] = saved.get("multi_target")
                settings["seconds_per_grid"][name] = saved.get("seconds_per_grid")
                continue
            if partial_file.exists():
                with open(partial_file, encoding="utf-8") as f:
                    saved = json.load(f)
                _check_resume(partial_file, saved, key_fp)
                done = [float(v) for v in saved["scores"]]

        fn = make_attribution_fn(model, method, **extra)

        def checkpoint(scores: list[float], _p: Path | None = partial_file, _k: str = key_fp,
                       _name: str = name) -> None:
            assert _p is not None
            atomic_write_json(_p, {"key": _k, "method": _name, "scores": scores})

        scores, seconds, computed = _score_method(
            fn, grids, model, name=name, count=count, smoothing=smoothing_used,
            batch_size=batch_size, done_scores=done,
            on_checkpoint=checkpoint if partial_file is not None else None,
            checkpoint_interval_s=checkpoint_interval_s, progress=progress,
            label=f"{label}: " if label else "",
        )
        multi = supports_multi_target(fn)
        per_grid = seconds / computed if computed else None
        settings["multi_target"][name] = multi
        settings["seconds_per_grid"][name] = per_grid
        result.scores[name] = scores
        if final_file is not None and partial_file is not None:
            atomic_write_json(final_file, {
                "key": key_fp, "method": name, "settings": key, "multi_target": multi,
                "seconds_per_grid": per_grid,
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
