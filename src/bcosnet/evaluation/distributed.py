"""Evaluation over several processes (``torchrun``): how the ranks agree before any
work, and how they share it.

    torchrun --nproc-per-node 8 -m bcosnet evaluate localisation --checkpoint m.pt --out pg

The library side: :func:`~bcosnet.evaluation.grid_pointing_game`,
:func:`~bcosnet.evaluation.evaluate_faithfulness` and
:func:`~bcosnet.evaluation.accuracy` take ``ranks=`` (a
:class:`~bcosnet.training.distributed.DistEnv`, e.g. from
:func:`~bcosnet.training.distributed.init_distributed`).  With it

1. every rank's settings are compared with rank 0's (:func:`agree`): a difference
   is a :class:`RanksDisagreeError` on every rank, naming each setting and rank;
2. rank 0 opens the results folder — its ``store.json`` checked, as in one process —
   and makes (or loads) what every rank needs: the grid set (``grids.json``) or the
   image sample; then the other ranks open the folder and load it
   (:func:`main_first`), and check that they see rank 0's folder
   (:func:`check_shared_folder`: several machines need a shared file system);
3. the work is a list of chunks (a method × a run of grids or images), each one
   item of the folder's store; rank 0 lists the chunks not yet finished, and rank r
   takes chunks r, r + N, r + 2N, ... of that list (:func:`share`) — so a re-run
   with any number of ranks (1 included) computes exactly the missing chunks;
4. rank 0 merges each method's chunks into the item one process writes, and every
   rank returns the whole result.

An error on one rank inside these steps is an error on every rank
(:func:`together`): the others do not wait for it until the time-out.
"""

from __future__ import annotations

import datetime
import json
import os
import secrets
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from .._utils.io import atomic_write_json
from .._utils.store import SettingsMismatchError, plain, settings_differences
from .._utils.validate import check_int
from ..training.distributed import DistEnv, broadcast_object, gather_objects

__all__ = ["RankFailedError", "RanksDisagreeError", "WAIT", "agree", "check_chunk",
           "check_shared_folder", "chunk_ranges", "main_first", "share", "together"]

T = TypeVar("T")

#: How long a rank waits in a collective for the others (e.g. at the end of its share
#: for the slowest rank): a share of a large model's pointing game takes hours.
WAIT = datetime.timedelta(hours=12)

#: The file by which the ranks check that they see one results folder.
RANKS_FILE = ".ranks.json"


class RankFailedError(RuntimeError):
    """Another rank failed; this one stops too (its finished chunks are saved).

    Attributes: ``rank`` (the rank that failed first) and ``message`` (its error)."""

    def __init__(self, message: str, rank: int, error: str) -> None:
        super().__init__(message)
        self.rank, self.message = rank, error


class RanksDisagreeError(SettingsMismatchError):
    """The ranks were given different settings (``.differences``: setting →
    ``(rank 0's, the first differing rank's)``; ``.ranks``: the differing ranks)."""

    def __init__(self, message: str, differences: Mapping[str, tuple[Any, Any]] | None = None,
                 path: str | os.PathLike | None = None, ranks: Sequence[int] = ()) -> None:
        super().__init__(message, differences, path)
        self.ranks = list(ranks)

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (str(self), self.differences, self.path, self.ranks)


def together(ranks: DistEnv, fn: Callable[[], T], *, what: str, only: int | None = None
             ) -> T | None:
    """``fn()`` on every rank (or on rank ``only``; the others get None), then the
    ranks compare notes: a rank whose ``fn`` raised re-raises its error; every other
    rank raises a :class:`RankFailedError` naming the first rank that failed and its
    error.  ``what`` says what the ranks were doing, for that message."""
    result: T | None = None
    error: Exception | None = None
    if only is None or ranks.rank == only:
        try:
            result = fn()
        except Exception as e:  # every rank hears of it; KeyboardInterrupt ends the job
            error = e
    if not ranks.distributed:
        if error is not None:
            raise error
        return result
    notes = gather_objects(None if error is None else f"{type(error).__name__}: {error}", ranks)
    if error is not None:
        raise error
    failed = [(r, note) for r, note in enumerate(notes) if note is not None]
    if failed:
        r, note = failed[0]
        raise RankFailedError(f"rank {r} of {ranks.world_size} failed while {what}, so rank "
                              f"{ranks.rank} stops too: {note}", r, note)
    return result


def main_first(ranks: DistEnv, fn: Callable[[], T], *, what: str,
               folder: str | os.PathLike | None = None) -> T:
    """``fn()`` on rank 0, then (once it succeeded) on every other rank: rank 0 makes
    what the others then load (the results folder's ``store.json``, ``grids.json``,
    a merged item).  With ``folder``, the ranks check in between that they see the
    folder rank 0 wrote to (:func:`check_shared_folder`).  An error on any rank is
    an error on every rank."""
    first = together(ranks, fn, what=what, only=0)
    if not ranks.distributed:
        return first  # type: ignore[return-value]
    if folder is not None:
        check_shared_folder(ranks, folder)
    return together(ranks, (lambda: first) if ranks.is_main else fn,  # type: ignore[return-value]
                    what=what)


def agree(ranks: DistEnv, settings: Mapping[str, Any], *, what: str, fix: str) -> None:
    """Check that every rank was given rank 0's ``settings`` (JSON-able), before any
    work; else a :class:`RanksDisagreeError` on every rank naming each differing
    setting, its value on rank 0 and on the first differing rank, and ``fix``."""
    if not ranks.distributed:
        return
    every = gather_objects(plain(dict(settings)), ranks)
    bad = {r: d for r, s in enumerate(every) if (d := settings_differences(every[0], s))}
    if not bad:
        return
    r, diff = next(iter(bad.items()))
    said = "; ".join(f"{k}: {a!r} on rank 0, {b!r} on rank {r}" for k, (a, b) in diff.items())
    raise RanksDisagreeError(
        f"the {ranks.world_size} ranks were given different {what} (rank(s) "
        f"{', '.join(map(str, bad))} differ from rank 0) — {said}; {fix}",
        diff, None, list(bad))


def check_shared_folder(ranks: DistEnv, folder: str | os.PathLike) -> None:
    """Check that every rank sees the results folder rank 0 writes to (one folder on
    a shared file system when the ranks run on several machines): rank 0 writes a
    token of this run in ``folder/.ranks.json``, every rank reads it back."""
    if not ranks.distributed:
        return
    path = Path(folder) / RANKS_FILE
    token = broadcast_object(secrets.token_hex(8) if ranks.is_main else None, ranks)

    def write() -> None:
        atomic_write_json(path, {"token": token, "world_size": ranks.world_size}, indent=2)

    def read() -> None:
        try:
            seen = json.loads(path.read_text(encoding="utf-8")).get("token")
        except (OSError, ValueError):
            seen = None
        if seen != token:
            raise ValueError(
                f"rank {ranks.rank} does not see the results folder {folder} that rank 0 "
                f"writes to ({path} with this run's token is missing there): every rank "
                "must write to one folder — on several machines, a folder on a shared file "
                "system (NFS, Lustre, ...) mounted at the same path")

    together(ranks, write, what="writing the results folder", only=0)
    together(ranks, read, what="checking the results folder")


def check_chunk(chunk: int | None, batch_size: int, *, names: tuple[str, str] = (
        "chunk", "batch_size"), default_batches: int = 4) -> int:
    """The chunk size (elements per work item): ``default_batches`` batches when
    None; else it must be a multiple of ``batch_size``, so that every attribution call
    holds the same images as in one process (the results are then the same)."""
    if chunk is None:
        return default_batches * batch_size
    check_int(names[0], chunk, 1)
    if chunk % batch_size:
        raise ValueError(
            f"{names[0]}={chunk} must be a multiple of {names[1]}={batch_size} (every "
            f"attribution call then holds the images it holds in one process, so the results "
            f"are the same), e.g. {names[0]}={max(1, round(chunk / batch_size)) * batch_size}")
    return chunk


def chunk_ranges(count: int, chunk: int) -> list[tuple[int, int]]:
    """``[(0, chunk), (chunk, 2·chunk), ..., (k, count)]``: the runs of ``count``
    elements one work item each."""
    return [(a, min(a + chunk, count)) for a in range(0, count, chunk)]


def share(ranks: DistEnv, todo: Callable[[], list[T]], *, what: str) -> list[T]:
    """This rank's items of rank 0's ``todo()`` list (the unfinished work, listed once:
    finished items seen by one rank only would split the list differently): items
    r, r + N, ... for rank r of N."""
    listed = together(ranks, todo, what=what, only=0)
    items: list[T] = broadcast_object(listed, ranks)
    return items[ranks.rank::ranks.world_size]
