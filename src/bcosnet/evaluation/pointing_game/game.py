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
from tqdm.auto import tqdm

from ..._utils.io import atomic_write_json
from ._model import _eval_mode, _fingerprint, _model_device_dtype, _model_fingerprint
from .grids import GridDataset, _check_n, make_grid_dataset
from .methods import AttributionFn, _normalise_methods, make_attribution_fn
from .results import PointingGameResult, ScoreSummary
from .scoring import _check_smoothing, cell_scores

__all__ = ["grid_pointing_game"]


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
                atomic_write_json(grid_file, {**grids.to_dict(), "model": model_fp})
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
            atomic_write_json(_p, {"key": _k, "method": _name, "scores": scores})

        scores = _score_method(
            fn, grids, model, name=name, smoothing=smoothing, batch_size=batch_size,
            start=start, done_scores=done,
            on_checkpoint=checkpoint if partial_file is not None else None,
            checkpoint_interval_s=checkpoint_interval_s, progress=progress,
        )
        result.scores[name] = scores
        if final_file is not None and partial_file is not None:
            atomic_write_json(final_file, {
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


