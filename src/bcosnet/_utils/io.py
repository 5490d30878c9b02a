"""Atomic file writes: checkpoints, results, reports, figures, the main job's files.

A reader never sees a half-written file: each writer goes through a temporary
file in the same folder, ``fsync`` and ``os.replace`` (then an ``fsync`` of the
folder) — a crash leaves either the old file or the new one, and no temporary
file behind.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = ["FolderBusyError", "atomic_write", "atomic_write_bytes", "atomic_write_json",
           "atomic_write_text", "folder_lock", "save_figure"]

_FIGURE_FORMATS = (".png", ".pdf", ".svg")


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[str], Any], *, sync: bool = True
                 ) -> Path:
    """Write ``path`` through ``write(tmp_path)`` (which creates the temporary file's
    content), then fsync and ``os.replace``.  Returns the path.

    ``sync=False`` skips the two fsyncs: still never half-written when a process
    dies (the rename is atomic), but not proof against a power cut — for many
    small, re-creatable files (``bcosnet explain`` on a folder).

    A full disk (``ENOSPC``/``EDQUOT``) raises an ``OSError`` naming the file and
    saying that its previous content, if any, is intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        if sync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; results and reports are meant to be read
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        no_space = isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)
        if not no_space and isinstance(e, RuntimeError):  # torch.save hides the OSError
            with contextlib.suppress(OSError):
                no_space = ("No space left on device" in str(e)
                            or shutil.disk_usage(path.parent).free < (1 << 20))
        if no_space:
            raise OSError(
                errno.ENOSPC,
                f"no space left on the device while writing {path}; "
                + ("its previous version is intact" if path.exists() else "nothing was written")
                + " and earlier results are kept — free some space and re-run (finished "
                "work is reused)",
                str(path),
            ) from e
        raise
    if sync:
        _fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, sync: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write` for ``sync``)."""
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data), sync=sync)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int = 1) -> Path:
    """Write ``obj`` as JSON atomically (NaN allowed; unknown types via ``str``)."""
    return atomic_write_text(
        path, json.dumps(obj, indent=indent, allow_nan=True, default=str) + "\n")


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 150) -> Path:
    """Save a matplotlib figure atomically; the format comes from the suffix
    (.png, .pdf or .svg)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _FIGURE_FORMATS:
        raise ValueError(
            f"cannot tell the figure format from {str(path)!r}; use a name ending in "
            f"{', '.join(_FIGURE_FORMATS)}"
        )
    buf = io.BytesIO()
    fig.savefig(buf, format=suffix[1:], dpi=dpi, bbox_inches="tight")
    return atomic_write_bytes(path, buf.getvalue())


class FolderBusyError(ValueError):
    """Another process holds the lock of an output folder (a ``ValueError``: the
    output folder given is the value to change)."""


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, what: str = "run") -> Iterator[Path]:
    """Hold an exclusive lock on ``folder`` (``folder/.lock``, ``flock``) for the
    block; a second process that wants the same folder gets a
    :class:`FolderBusyError` at once (no waiting, no corrupted files).  The
    operating system drops the lock when the holder exits, even on SIGKILL, so
    an interrupted run can simply be re-run."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock_path = folder / ".lock"
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no locking
        yield folder
        return
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = ""
            with contextlib.suppress(OSError, ValueError):
                holder = os.pread(fd, 200, 0).decode().strip()
            raise FolderBusyError(
                f"{folder} is in use by another {what} ({holder or 'another process'}); "
                f"wait for it to finish or use another output folder"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}".encode(), 0)
        yield folder
    finally:
        os.close(fd)  # closing the descriptor releases the flock
