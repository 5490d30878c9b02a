"""The main job's worker pool: independent jobs in this process, or in spawned
worker processes that this pool starts, feeds and stops itself.

A job is ``(label, fn, args)`` with ``fn`` a picklable top-level function.  The
workers take jobs from one queue in the order given (a free worker takes the next),
so a list sorted longest first keeps them busy to the end.  The first job that
raises is raised in the caller, and then every worker is stopped at once (its work
so far is saved by the job itself: finished methods, partial results, training
checkpoints — a re-run resumes); so is a worker that dies.  Each worker sets its
torch threads, ignores Ctrl-C (the main process stops it) and exits by itself
within a second when the main process is gone, even after a SIGKILL.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import queue
import signal
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["Job", "WorkerPool"]

#: ``(label, fn, args)``: ``fn(*args)`` is the job, its result is returned under ``label``.
Job = tuple[str, Callable[..., Any], tuple[Any, ...]]

_POLL_S = 0.5  # how often the caller checks that its workers are alive


def _watch_parent(parent: int) -> None:
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(1)


def _worker_init(threads: int, parent: int) -> None:
    import torch

    from .._utils.malloc import tune_malloc

    os.environ["BCOSNET_PROGRESS_LINES"] = "1"  # bars of two processes would overwrite
    torch.set_num_threads(threads)
    tune_malloc()  # as the bcosnet command does for itself (a spawned process starts afresh)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    threading.Thread(target=_watch_parent, args=(parent,), name="bcosnet-parent-watch",
                     daemon=True).start()


def _sendable(e: BaseException) -> BaseException:
    """``e`` if it survives pickling, else a RuntimeError with its text and traceback."""
    try:
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:
        text = "".join(traceback.format_exception(type(e), e, e.__traceback__))
        return RuntimeError(f"a job raised {type(e).__name__}: {e}\n{text}")


def _worker_main(threads: int, parent: int, tasks: Any, results: Any) -> None:
    """A worker process: run ``(job id, fn, args)`` from ``tasks`` until ``None``,
    putting ``(job id, ok, result or exception)`` on ``results``."""
    _worker_init(threads, parent)
    while True:
        task = tasks.get()
        if task is None:
            return
        job_id, fn, args = task
        try:
            results.put((job_id, True, fn(*args)))
        except BaseException as e:  # the caller decides; KeyboardInterrupt included
            results.put((job_id, False, _sendable(e)))


class WorkerPool:
    """Runs jobs in this process (``workers`` ≤ 1) or in ``workers`` spawned processes
    of ``threads`` torch threads each (started at the first call of :meth:`run` that
    has more than one job, reused by later calls, stopped by :meth:`close` or the
    end of the ``with`` block).

    Args:
        workers: worker processes (1: none; jobs run in the caller's process).
        threads: torch threads of each worker process.
    """

    def __init__(self, workers: int, threads: int = 1) -> None:
        self.workers, self.threads = workers, threads
        self._procs: list[Any] = []
        self._tasks: Any = None
        self._results: Any = None
        self._next_id = 0

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        self.close(wait=exc_type is None)

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the running worker processes (empty when none is started)."""
        return [p.pid for p in self._procs if p.pid is not None]

    def _start(self) -> None:
        if self._procs:
            return
        ctx = multiprocessing.get_context("spawn")
        self._tasks, self._results = ctx.Queue(), ctx.Queue()
        for i in range(self.workers):
            p = ctx.Process(target=_worker_main, name=f"bcosnet-worker-{i}",
                            args=(self.threads, os.getpid(), self._tasks, self._results))
            p.start()
            self._procs.append(p)

    def close(self, *, wait: bool = True) -> None:
        """Stop the workers: after their current jobs (``wait``) or at once."""
        procs, self._procs = self._procs, []
        if not procs:
            return
        if wait:
            for _ in procs:
                self._tasks.put(None)
        else:
            self._tasks.cancel_join_thread()  # jobs never taken stay behind, unsent
            for p in procs:
                p.terminate()
        for p in procs:
            p.join(timeout=None if wait else 10)
        self._tasks = self._results = None

    def run(self, jobs: Sequence[Job]) -> dict[str, Any]:
        """``{label: fn(*args)}`` for ``(label, fn, args)`` in ``jobs``, in their order.
        The first job that raises is raised here, after the workers were stopped."""
        if self.workers <= 1 or len(jobs) <= 1:
            return {label: fn(*args) for label, fn, args in jobs}
        for label, fn, args in jobs:
            try:
                pickle.dumps((fn, args))
            except Exception as e:
                raise TypeError(f"job {label!r} cannot be sent to a worker process ({e}): "
                                "use a top-level function and picklable arguments") from e
        self._start()
        ids = list(range(self._next_id, self._next_id + len(jobs)))
        self._next_id += len(jobs)
        for job_id, (_, fn, args) in zip(ids, jobs, strict=True):
            self._tasks.put((job_id, fn, args))
        try:
            done = self._collect(set(ids), {job_id: label for job_id, (label, _, _)
                                            in zip(ids, jobs, strict=True)})
        except BaseException:
            self.close(wait=False)
            raise
        return {label: done[job_id] for job_id, (label, _, _) in zip(ids, jobs, strict=True)}

    def _collect(self, ids: set[int], labels: dict[int, str]) -> dict[int, Any]:
        done: dict[int, Any] = {}
        while len(done) < len(ids):
            try:
                job_id, ok, value = self._results.get(timeout=_POLL_S)
            except queue.Empty:
                dead = [p for p in self._procs if not p.is_alive()]
                if dead:
                    running = sorted(set(labels.values()) - {labels[i] for i in done})
                    raise RuntimeError(
                        f"worker process {dead[0].pid} exited (code {dead[0].exitcode}) while "
                        f"these jobs were unfinished: {', '.join(running)}; finished work is "
                        "saved — re-run to resume") from None
                continue
            if job_id not in ids:
                continue
            if not ok:
                raise value
            done[job_id] = value
        return done
