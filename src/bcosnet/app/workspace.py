"""What the app shows: the models (with their records), their test data, the
main job's folder and saved ``bcosnet neurons`` runs — loaded through the public
API (:func:`bcosnet.create_model`, :func:`bcosnet.training.load_checkpoint_model`,
:func:`bcosnet.data.datasets_for`).  No gradio here."""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["AppError", "LoadedModel", "Workspace", "find_main_job", "load_model",
           "main_job_checkpoints"]

#: The main job's output folder, opened by ``bcosnet app`` without arguments.
DEFAULT_MAIN_DIR = Path("outputs") / "main"


class AppError(ValueError):
    """A problem with what the user chose, worded for the page (shown there)."""


def load_model(checkpoint: str | os.PathLike | None = None, model: str | None = None,
               weights: str | None = None, *, num_classes: int | None = None,
               seed: int = 0) -> nn.Module:
    """A model in eval mode with its record (``model.model_info``).

    ``checkpoint`` alone: a bcosnet training checkpoint or ``.safetensors`` export
    (it names its architecture; :func:`bcosnet.training.load_checkpoint_model`).
    ``model`` with ``weights`` (or with ``checkpoint``): any weights of that
    architecture — a bcosnet checkpoint, a plain state dict, a ``bcos`` v2 file
    or a registered entry (:func:`bcosnet.create_model`).  ``model`` alone: randomly
    initialised (``seed``).  Errors are the library's (ValueError /
    FileNotFoundError naming the file and the fix)."""
    from ..models import create_model

    if checkpoint is not None and weights is not None:
        raise ValueError("give the weights once: a checkpoint, or a model name with weights")
    weights = weights if weights is not None else checkpoint
    if weights is None and model is None:
        raise ValueError("give a checkpoint, or a model name (with or without weights)")
    if model is None:
        from ..training import load_checkpoint_model

        return load_checkpoint_model(str(weights)).eval()
    if weights is None:
        torch.manual_seed(seed)
    if isinstance(weights, str) and not Path(weights).exists() and (
            os.sep in weights or weights.endswith((".pt", ".pth", ".safetensors"))):
        raise FileNotFoundError(f"weights file {weights} not found")
    return create_model(model, num_classes, weights=weights).eval()


def main_job_checkpoints(folder: str | os.PathLike) -> dict[str, Path]:
    """The networks of a main job's output folder: sub-folder name → its
    ``checkpoint.pt`` (``bcos/``, ``standard/``; also ``runs/*/``), B-cos first."""
    root = Path(folder)
    found = sorted(root.glob("*/checkpoint.pt")) + sorted(root.glob("runs/*/checkpoint.pt"))
    out = {p.parent.name: p for p in found}
    return dict(sorted(out.items(), key=lambda kv: (kv[0] != "bcos", kv[0])))


def find_main_job(default: str | os.PathLike = DEFAULT_MAIN_DIR) -> Path | None:
    """``default`` when it holds a trained network, else None."""
    p = Path(default)
    return p if p.is_dir() and main_job_checkpoints(p) else None


@dataclass
class LoadedModel:
    """A model the app can show, with where it came from."""

    label: str
    model: nn.Module
    source: str
    note: str = ""
    _layers: list[tuple[str, tuple[int, ...]]] | None = field(default=None, repr=False)

    @property
    def info(self) -> Any:
        return self.model.model_info  # type: ignore[union-attr]

    @property
    def is_bcos(self) -> bool:
        from ..nn import is_bcos_model

        return is_bcos_model(self.model)

    @property
    def class_names(self) -> list[str]:
        """One name per output: the record's, else ``"class i"``."""
        k = int(self.info.num_classes)
        names = list(getattr(self.model, "class_names", None) or [])
        return names if len(names) == k else [f"class {i}" for i in range(k)]

    def class_index(self, name: str | int) -> int:
        if isinstance(name, int):
            return name
        names = self.class_names
        if name in names:
            return names.index(name)
        from .._utils.validate import did_you_mean

        raise AppError(f"{self.label} has no class {name!r}{did_you_mean(name, names)}")

    def layers(self) -> list[tuple[str, tuple[int, ...]]]:
        """(name, output shape C×h×w) of every layer with a spatial output, in
        forward order (one pass of a blank image of the model's size)."""
        if self._layers is None:
            from ..attribution import spatial_layers

            h, w = self.info.image_size
            x = torch.zeros(1, int(self.info.in_channels), h, w,
                            dtype=next(self.model.parameters()).dtype)
            self._layers = [(n, tuple(s[1:])) for n, s in spatial_layers(self.model, x)]
        return self._layers

    def describe(self) -> str:
        """The model's record in one line, and where it came from."""
        text = f"{self.info.summary()} — from {self.source}"
        return text + (f". {self.note}" if self.note else "")


class Workspace:
    """The models and folders one app serves (shared by every browser tab).

    Args:
        models: label → model (built by :func:`load_model`), shown in this order.
        main_dir: a main job's output folder (its pointing game, its networks), or None.
        neuron_dirs: folders of saved ``bcosnet neurons`` runs (``top_<layer>.json``).
        data_root: where the models' data sets are, when not where their records say.
    """

    def __init__(self, models: dict[str, LoadedModel] | None = None, *,
                 main_dir: str | os.PathLike | None = None,
                 neuron_dirs: list[str | os.PathLike] | None = None,
                 data_root: str | os.PathLike | None = None) -> None:
        self.models: dict[str, LoadedModel] = dict(models or {})
        self.main_dir = Path(main_dir) if main_dir is not None else None
        self.neuron_dirs = [Path(d) for d in (neuron_dirs or [])]
        self.data_root = data_root
        self._data: dict[str, Any] = {}
        self._by_class: dict[str, dict[int, list[int]]] = {}
        self.lock = threading.RLock()  # one torch computation at a time

    # ------------------------------------------------------------------ models
    @classmethod
    def from_main_job(cls, folder: str | os.PathLike, **kwargs: Any) -> Workspace:
        """Every network of a main job's folder (B-cos first)."""
        root = Path(folder)
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: no such folder")
        found = main_job_checkpoints(root)
        if not found:
            raise ValueError(f"{root} holds no trained network (no */checkpoint.pt): is it a "
                             "main job's output folder (bcosnet main --out DIR)?")
        models = {name: LoadedModel(name, load_model(path), str(path))
                  for name, path in found.items()}
        dirs = kwargs.pop("neuron_dirs", None) or neuron_run_dirs(root)
        return cls(models, main_dir=root, neuron_dirs=dirs, **kwargs)

    def add(self, label: str, model: nn.Module, source: str, note: str = "") -> LoadedModel:
        """Add (or replace) a model under ``label``."""
        if getattr(model, "model_info", None) is None:
            raise AppError(f"{source}: the model has no record (model_info); build it with "
                           "bcosnet.create_model")
        with self.lock:
            lm = LoadedModel(label, model.eval(), source, note)
            self.models[label] = lm
            self._data.pop(label, None)
            self._by_class.pop(label, None)
        return lm

    def get(self, label: str | None) -> LoadedModel:
        if not self.models:
            raise AppError("no model loaded: load one under 'Model' (a checkpoint, or a model "
                           "name)")
        if label is None or label not in self.models:
            return next(iter(self.models.values()))
        return self.models[label]

    def default_label(self, *, bcos: bool = True) -> str | None:
        """The first B-cos model's label (else the first model's)."""
        for label, lm in self.models.items():
            if not bcos or lm.is_bcos:
                return label
        return next(iter(self.models), None)

    # ------------------------------------------------------------------ data
    def test_data(self, label: str) -> Any:
        """The model's test split as its record says (cached), or AppError saying why not."""
        with self.lock:
            if label not in self._data:
                from ..data import datasets_for

                lm = self.get(label)
                if getattr(lm.info, "dataset", None) is None:
                    raise AppError(
                        f"{lm.label} records no data set (a model trained with bcosnet "
                        "records it in its checkpoint), so it has no test images here: "
                        "upload an image or use a bundled photo")
                try:
                    self._data[label] = datasets_for(lm.model, root=self.data_root)
                except (ValueError, FileNotFoundError, OSError) as e:
                    raise AppError(f"the test images of {lm.label} are not available: {e}"
                                   ) from e
            return self._data[label]

    def test_indices(self, label: str) -> dict[int, list[int]]:
        """Class index → test-set indices of that class (in data-set order)."""
        with self.lock:
            if label not in self._by_class:
                test = self.test_data(label).test
                targets = getattr(test, "targets", None)
                if targets is None:
                    targets = [int(test[i][1]) for i in range(len(test))]
                by: dict[int, list[int]] = {}
                for i, t in enumerate(torch.as_tensor(targets).tolist()):
                    by.setdefault(int(t), []).append(i)
                self._by_class[label] = by
            return self._by_class[label]

    # ------------------------------------------------------------------ main job
    def pointing_game_dirs(self) -> dict[str, Path]:
        """Network → its pointing-game folder (``pointing_game/<network>``)."""
        if self.main_dir is None:
            return {}
        pg = self.main_dir / "pointing_game"
        return {d.name: d for d in sorted(pg.glob("*")) if (d / "grids.json").is_file()}

    def results(self) -> dict[str, Any] | None:
        """The main job's ``results.json``, or None."""
        if self.main_dir is None or not (self.main_dir / "results.json").is_file():
            return None
        return json.loads((self.main_dir / "results.json").read_text())


def neuron_run_dirs(root: str | os.PathLike) -> list[Path]:
    """Folders under ``root`` (itself and one level down) holding a saved
    ``bcosnet neurons`` run (``top_<layer>.json``)."""
    r = Path(root)
    cands = [r, *sorted(p for p in r.glob("*") if p.is_dir())]
    return [d for d in cands if any(d.glob("top_*.json"))]
