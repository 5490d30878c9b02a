"""Progress reporting that behaves on and off a terminal.

Use :func:`progress` wherever a loop wants a progress bar::

    from bcosnet._utils.progress import progress

    for batch in progress(loader, total=len(loader), desc="eval", disable=not show):
        ...

On a terminal it is a :mod:`tqdm` bar.  When the stream is not a TTY (CI, ``nohup``,
a log file) there is no carriage-return spam: one plain line every ``interval_s``
seconds (default 30; environment variable ``BCOSNET_PROGRESS_INTERVAL``) and one
when the loop ends, e.g. ``epoch 3/90: 469/469 (100%) 61.2 it/s loss=0.1234 acc=0.912``.
``BCOSNET_PROGRESS_LINES=1`` asks for these lines on a terminal too (the main job's
worker processes set it: bars of several processes on one terminal overwrite each other).
The returned object supports what the code base uses of tqdm's interface:
iteration, ``update``, ``set_postfix``, ``set_description``, ``close``, ``write``
(also :func:`progress.write`) and use as a context manager.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any

__all__ = ["progress", "LineProgress", "is_terminal", "CallProgress", "AUTO_PROGRESS_SECONDS"]

#: ``progress=None`` (auto) shows a bar once a call is expected to take longer than this.
AUTO_PROGRESS_SECONDS = 2.0


def is_terminal(stream: IO[str] | None = None) -> bool:
    """Whether ``stream`` (default: stderr, where bars go) is an interactive terminal
    (False when the environment variable ``BCOSNET_PROGRESS_LINES`` is ``1``)."""
    if os.environ.get("BCOSNET_PROGRESS_LINES") == "1":
        return False
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _default_interval() -> float:
    try:
        return max(float(os.environ.get("BCOSNET_PROGRESS_INTERVAL", "30")), 0.0)
    except ValueError:
        return 30.0


class LineProgress:
    """tqdm-like progress that prints whole lines, at most one every ``interval_s`` seconds."""

    def __init__(self, iterable: Iterable[Any] | None = None, total: int | None = None,
                 desc: str | None = None, *, initial: int = 0, disable: bool = False,
                 interval_s: float | None = None, file: IO[str] | None = None,
                 final_line: bool = True, **_ignored: Any) -> None:
        self.iterable = iterable
        if total is None and iterable is not None:
            try:
                total = len(iterable)  # type: ignore[arg-type]
            except TypeError:
                total = None
        self.total = total
        self.desc = desc or ""
        self.n = initial
        self.disable = disable
        self.interval_s = _default_interval() if interval_s is None else float(interval_s)
        self.file = file
        self.final_line = final_line
        self.postfix = ""
        self._start_n = initial
        self._t0 = self._last = time.monotonic()
        self._closed = False

    # -- tqdm interface
    def __iter__(self) -> Iterator[Any]:
        if self.iterable is None:
            raise TypeError("this progress object was created without an iterable")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __len__(self) -> int:
        return self.total or 0

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        if self.disable:
            return
        self.n += n
        now = time.monotonic()
        if now - self._last >= self.interval_s:
            self._last = now
            self._print()

    def set_postfix(self, ordered_dict: dict[str, Any] | None = None, refresh: bool = True,
                    **kwargs: Any) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = " ".join(f"{k}={v}" for k, v in items.items())

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or ""

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self.disable and self.final_line and self.n > self._start_n:
            self._print()

    @staticmethod
    def write(msg: str, file: IO[str] | None = None, end: str = "\n", nolock: bool = False) -> None:
        stream = sys.stdout if file is None else file
        stream.write(msg + end)
        stream.flush()

    # -- output
    def _print(self) -> None:
        elapsed = max(time.monotonic() - self._t0, 1e-9)
        rate = (self.n - self._start_n) / elapsed
        done = f"{self.n}/{self.total} ({100 * self.n / self.total:.0f}%)" if self.total else (
            f"{self.n}")
        line = f"{self.desc + ': ' if self.desc else ''}{done} {rate:.3g} it/s {elapsed:.0f} s"
        if self.postfix:
            line += " " + self.postfix
        stream = sys.stderr if self.file is None else self.file
        stream.write(line + "\n")
        stream.flush()


def progress(iterable: Iterable[Any] | None = None, total: int | None = None,
             desc: str | None = None, *, disable: bool = False, leave: bool = False,
             interval_s: float | None = None, file: IO[str] | None = None,
             **kwargs: Any) -> Any:
    """A progress bar on a terminal (tqdm), periodic plain lines off one (:class:`LineProgress`).

    Args: as :class:`tqdm.tqdm` (``iterable``, ``total``, ``desc``, ``initial``,
    ``disable``, ``leave``, ...); ``interval_s``: seconds between lines off a terminal.
    """
    if is_terminal(file):
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, desc=desc, disable=disable, leave=leave, file=file,
                    **kwargs)
    return LineProgress(iterable, total=total, desc=desc, disable=disable,
                        interval_s=interval_s, file=file, **kwargs)


def _write(msg: str, file: IO[str] | None = None, end: str = "\n") -> None:
    """Print a line without breaking a bar (``tqdm.write`` on a terminal)."""
    if is_terminal(file):
        from tqdm.auto import tqdm

        tqdm.write(msg, file=file, end=end)
    else:
        LineProgress.write(msg, file=file, end=end)


progress.write = _write  # type: ignore[attr-defined]


class CallProgress:
    """Progress of one library call of ``total`` steps (``update(k)`` as it goes).

    ``show=True``: a bar from the start (:func:`progress`: tqdm on a terminal, plain
    lines off one); ``False``: nothing; ``None`` (auto): a tqdm bar only on a
    terminal, and only once the elapsed time per step says the call will take more
    than :data:`AUTO_PROGRESS_SECONDS` — so tests, logs and the main job's worker
    processes (``BCOSNET_PROGRESS_LINES=1``) see nothing, and quick calls never
    flash a bar.  Use as a context manager (the bar closes on exit).
    """

    def __init__(self, total: int, desc: str, show: bool | None = None) -> None:
        if show is not None and not isinstance(show, bool):
            raise TypeError(f"progress must be True, False or None (auto), got {show!r}")
        self.total, self.desc, self.show = total, desc, show
        self.done = 0
        self._t0 = time.monotonic()
        self._bar: Any = None
        self._auto = show is None and total > 1 and is_terminal()
        if show:
            self._bar = progress(total=total, desc=desc)

    def update(self, k: int = 1) -> None:
        self.done += k
        if self._bar is not None:
            self._bar.update(k)
        elif self._auto and self.done < self.total:
            elapsed = time.monotonic() - self._t0
            if elapsed / self.done * self.total > AUTO_PROGRESS_SECONDS:
                self._auto = False
                self._bar = progress(total=self.total, desc=self.desc, initial=self.done)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> CallProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
