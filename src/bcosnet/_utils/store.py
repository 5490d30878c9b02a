"""A keyed result store: one folder of results, each result (an *item*) one JSON
file written atomically, all made with one set of settings.

    store = ResultStore("runs/pg", {"model": fp, "n": 3, "seed": 0})  # checked first
    saved = store.load("grad", {"smoothing": None})     # None: not computed yet
    if saved is None:
        store.save_partial("grad", {"scores": first_half}, {"smoothing": None})
        ...
        store.save("grad", {"scores": scores}, {"smoothing": None})

The folder holds

* ``store.json``: the settings every result in the folder was made with (and
  their fingerprint), written once, by whichever process opens the folder first;
  opening it again with other settings raises :class:`SettingsMismatchError`
  naming each differing setting — before any work is done;
* ``<item>.json``: a finished item: its own settings (``"settings"``), their
  fingerprint (``"key"``) and the caller's fields;
* ``<item>.partial.json``: an item in progress, saved as often as the caller
  likes; a re-run resumes from it.  Saving the finished item removes it.

Every file goes through a temporary file and ``os.replace`` (see
:mod:`bcosnet._utils.io`): a killed writer leaves the previous version or the
new one, never half a file.  Several processes may add items to one store at
the same time (each item is its own file; ``store.json`` is created with a hard
link, which fails if another process made it first — then its settings are
compared like any re-run's).  Two processes computing the *same* item write the
same result; the last rename wins.

An item may also be made in *chunks* — e.g. by several processes, each a share of
its elements: chunk ``[start, stop)`` of item ``name`` is an item of its own,
``<name>.chunk-<start>-<stop>.json`` (:meth:`ResultStore.save_chunk`), made with
the item's settings plus its range.  :meth:`ResultStore.load_chunks` gives the
payloads of a run of chunks once all are there; the caller merges them into the
finished item and :meth:`ResultStore.drop_chunks` removes them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NoReturn

from .io import atomic_write_json

__all__ = ["UNSET", "ResultStore", "SettingsMismatchError", "describe_differences",
           "file_fingerprint", "fingerprint", "model_fingerprint", "settings_differences"]

SETTINGS_FILE = "store.json"
_RESERVED = ("key", "settings")


class _Unset:
    """The value of a setting one side does not have."""

    def __repr__(self) -> str:
        return "(unset)"

    def __reduce__(self) -> str:
        return "UNSET"  # pickled as the module's one instance


#: A setting recorded on one side of a comparison only.
UNSET: Any = _Unset()


class SettingsMismatchError(ValueError):
    """Results on disk were made with other settings than the ones asked for.

    Attributes:
        differences: setting name (dotted for nested settings, e.g.
            ``"method_settings.n_steps"``) → ``(then, now)``: the value the results
            were made with and the value asked for now (:data:`UNSET` where one side
            has no such setting).
        path: the file or folder holding the results (None when not on disk).
    """

    def __init__(self, message: str, differences: Mapping[str, tuple[Any, Any]] | None = None,
                 path: str | os.PathLike | None = None) -> None:
        super().__init__(message)
        self.differences: dict[str, tuple[Any, Any]] = dict(differences or {})
        self.path = None if path is None else str(path)

    def __reduce__(self) -> tuple[Any, ...]:  # raised in a worker process, caught in the main one
        return type(self), (str(self), self.differences, self.path)


def plain(obj: Any) -> Any:
    """``obj`` as JSON gives it back (tuples → lists, unknown types → ``str``)."""
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def fingerprint(obj: Any) -> str:
    """16 hex digits of the SHA-256 of ``obj``'s canonical JSON (sorted keys)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def model_fingerprint(model: Any) -> str:
    """16 hex digits of the SHA-256 of a torch module's parameters and buffers (names,
    shapes and bytes): results of another model in a results folder are refused."""
    import torch  # here, not at the top: the store itself does not need torch

    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def file_fingerprint(*paths: str | os.PathLike) -> str:
    """16 hex digits of the SHA-256 of the files' bytes, in the order given."""
    h = hashlib.sha256()
    for p in paths:
        h.update(Path(p).read_bytes())
    return h.hexdigest()[:16]


def _flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def settings_differences(then: Mapping[str, Any], now: Mapping[str, Any]
                         ) -> dict[str, tuple[Any, Any]]:
    """Setting name → ``(then, now)`` for every setting whose value differs (nested
    mappings compared entry by entry under dotted names), sorted by name."""
    a, b = _flat(plain(dict(then))), _flat(plain(dict(now)))
    return {k: (a.get(k, UNSET), b.get(k, UNSET)) for k in sorted(set(a) | set(b))
            if k not in a or k not in b or a[k] != b[k]}


def describe_differences(differences: Mapping[str, tuple[Any, Any]]) -> str:
    """``"seed: 0 then, 1 now; n: 3 then, 2 now"``."""
    return "; ".join(f"{k}: {then!r} then, {now!r} now" for k, (then, now) in differences.items())


def _read(path: Path) -> dict[str, Any] | None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a result file of this version (not a JSON object); "
                         "delete it to recompute it")
    return data


def _create(path: Path, obj: Any) -> bool:
    """Write ``obj`` as JSON to ``path`` unless it exists (atomically: a hard link of a
    complete temporary file); False when another writer made it first."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(obj, indent=2, default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links: last writer wins
            if path.exists():
                return False
            os.replace(tmp, path)
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


class ResultStore:
    """A folder of results made with one set of settings (see the module docstring).

    Args:
        folder: the results folder (created).
        settings: what every result in the folder depends on (JSON-able): checked
            against ``store.json`` now, before any work, and recorded there if the
            folder has none.  None: no folder-wide settings (items carry their own).
        what: what the results are, for messages (e.g. ``"pointing-game results"``).
        hint: how to get past a mismatch, in the caller's words (default: use
            another ``results_dir`` or delete the folder / file).
        legacy_settings: for folders written before ``store.json`` existed:
            ``folder → the settings they were made with`` (or None when unknown),
            checked like ``store.json`` as far as they go (a setting they do not
            record is not a difference).

    Raises:
        SettingsMismatchError: the folder holds results of other ``settings``.
    """

    def __init__(self, folder: str | os.PathLike, settings: Mapping[str, Any] | None = None, *,
                 what: str = "results", hint: str | None = None,
                 legacy_settings: Callable[[Path], Mapping[str, Any] | None] | None = None
                 ) -> None:
        self.folder = Path(folder)
        self.what = what
        self.hint = hint
        self.settings = None if settings is None else plain(dict(settings))
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.settings is not None:
            self._claim(legacy_settings)

    # ------------------------------------------------------------------ settings
    def _refuse(self, where: Path, differences: dict[str, tuple[Any, Any]]) -> NoReturn:
        fix = self.hint or f"use another results_dir or delete {where}"
        raise SettingsMismatchError(
            f"{where} holds {self.what} made with other settings or another model — "
            f"{describe_differences(differences)}; {fix}", differences, where)

    def _claim(self, legacy: Callable[[Path], Mapping[str, Any] | None] | None) -> None:
        path = self.folder / SETTINGS_FILE
        saved = _read(path)
        if saved is None:
            then = legacy(self.folder) if legacy is not None else None
            diff = {k: v for k, v in settings_differences(then or {}, self.settings or {}).items()
                    if v[0] is not UNSET}  # what an earlier version recorded
            if diff:
                self._refuse(self.folder, diff)
            record = {"key": fingerprint(self.settings), "what": self.what,
                      "settings": self.settings}
            if _create(path, record):
                return
            saved = _read(path) or {}
        diff = settings_differences(saved.get("settings") or {}, self.settings or {})
        if diff:
            self._refuse(self.folder, diff)

    # ------------------------------------------------------------------ items
    def path(self, name: str) -> Path:
        """The file of finished item ``name``."""
        return self.folder / f"{_file_name(name)}.json"

    def partial_path(self, name: str) -> Path:
        """The file of item ``name`` in progress."""
        return self.folder / f"{_file_name(name)}.partial.json"

    def _load(self, path: Path, settings: Mapping[str, Any] | None, stale_ok: bool
              ) -> dict[str, Any] | None:
        saved = _read(path)
        if saved is None:
            return None
        diff = _item_differences(saved, settings or {})
        if diff:
            if stale_ok:
                return None
            self._refuse(path, diff)
        return {k: v for k, v in saved.items() if k not in _RESERVED}

    def load(self, name: str, settings: Mapping[str, Any] | None = None, *,
             stale_ok: bool = False) -> dict[str, Any] | None:
        """Finished item ``name`` (its fields, less ``key``/``settings``), or None when it
        is not there.  Made with other ``settings``: a :class:`SettingsMismatchError`,
        or None with ``stale_ok`` (the caller recomputes and overwrites it)."""
        return self._load(self.path(name), settings, stale_ok)

    def load_partial(self, name: str, settings: Mapping[str, Any] | None = None
                     ) -> dict[str, Any] | None:
        """Item ``name`` in progress (as saved by :meth:`save_partial`), or None.
        Made with other ``settings``: a :class:`SettingsMismatchError`."""
        return self._load(self.partial_path(name), settings, False)

    def _write(self, path: Path, payload: Mapping[str, Any],
               settings: Mapping[str, Any] | None) -> Path:
        clash = [k for k in _RESERVED if k in payload]
        if clash:
            raise ValueError(f"an item's fields may not be named {clash}: the store records "
                             "the item's settings under these names")
        s = plain(dict(settings or {}))
        return atomic_write_json(path, {"key": fingerprint(s), "settings": s, **payload},
                                 indent=None)  # type: ignore[arg-type]

    def save(self, name: str, payload: Mapping[str, Any],
             settings: Mapping[str, Any] | None = None) -> Path:
        """Write finished item ``name`` (JSON-able ``payload`` fields, made with
        ``settings``) atomically and remove its partial file; returns its path."""
        path = self._write(self.path(name), payload, settings)
        with contextlib.suppress(FileNotFoundError):
            self.partial_path(name).unlink()
        return path

    def save_partial(self, name: str, payload: Mapping[str, Any],
                     settings: Mapping[str, Any] | None = None) -> Path:
        """Write the progress of item ``name`` atomically (replacing the last)."""
        return self._write(self.partial_path(name), payload, settings)

    # ------------------------------------------------------------------ chunks
    @staticmethod
    def chunk_name(name: str, start: int, stop: int) -> str:
        """The item name of elements ``[start, stop)`` of item ``name``."""
        return f"{name}.chunk-{start:06d}-{stop:06d}"

    def save_chunk(self, name: str, start: int, stop: int, payload: Mapping[str, Any],
                   settings: Mapping[str, Any] | None = None) -> Path:
        """Write chunk ``[start, stop)`` of item ``name`` (made with the item's
        ``settings``; the range is recorded with them) atomically."""
        return self.save(self.chunk_name(name, start, stop), payload,
                         {**(settings or {}), "chunk": [start, stop]})

    def load_chunk(self, name: str, start: int, stop: int,
                   settings: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        """Chunk ``[start, stop)`` of item ``name``, or None when it is not there (made
        with other ``settings``: a :class:`SettingsMismatchError`)."""
        return self.load(self.chunk_name(name, start, stop),
                         {**(settings or {}), "chunk": [start, stop]})

    def load_chunks(self, name: str, ranges: list[tuple[int, int]],
                    settings: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """The payloads of chunks ``ranges`` of item ``name``, in order.  A missing one
        is a ValueError naming it (the run that should have made it did not finish:
        run again to make it)."""
        out = []
        for start, stop in ranges:
            part = self.load_chunk(name, start, stop, settings)
            if part is None:
                raise ValueError(
                    f"{self.path(self.chunk_name(name, start, stop))} is missing: the process "
                    f"that had to make elements {start}–{stop} of {name!r} did not finish, or "
                    f"does not write to this folder ({self.folder}: every process must see "
                    "the same folder); run again to make it")
            out.append(part)
        return out

    def drop_chunks(self, name: str) -> None:
        """Remove every chunk file of item ``name`` (after merging them)."""
        for p in self.folder.glob(f"{_file_name(name)}.chunk-*.json"):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()


def _item_differences(saved: Mapping[str, Any], settings: Mapping[str, Any]
                      ) -> dict[str, tuple[Any, Any]]:
    """How the settings ``saved`` was made with differ from ``settings``: compared
    setting by setting where they were recorded, by fingerprint where only that was
    (an earlier version's partial files); an item without either has no settings of
    its own (the folder's hold)."""
    if "settings" in saved:
        return settings_differences(saved["settings"] or {}, settings)
    if "key" in saved:
        fp = fingerprint(plain(dict(settings)))
        return {} if saved["key"] == fp else {"settings fingerprint": (saved["key"], fp)}
    return {}


def _file_name(name: str) -> str:
    """``name`` as a file name: runs of other characters than letters, digits and
    ``_.-`` become ``_``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"an item name must be a non-empty string, got {name!r}")
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "item"
