"""Sharing weights the way the field does: a folder holding ``config.json`` (the
model's name, its options and its record) and ``model.safetensors`` — the file
layout of huggingface_hub's ``PyTorchModelHubMixin`` and of timm — written by
:func:`save_pretrained`, uploaded by :func:`push_to_hub`, read back from a folder
or a Hugging Face Hub repo by :func:`read_pretrained`.

::

    folder/
      config.json        {"library_name": "bcosnet", "model_name": ..., "model_options": {...},
                          "num_classes": ..., "classes": [...], "model_info": {record}}
      model.safetensors  model.state_dict(); its metadata holds the same record
      README.md          a short model card (not read back)

``config.json`` holds :func:`~bcosnet.models.registry.record_meta` — what a bcosnet
checkpoint or export records besides the weights — so a folder is read by the one
reader of records, :func:`~bcosnet.models.registry.saved_record`, and built by the
one factory (``bcosnet.models.from_pretrained``, ``create_model(name,
weights="hf-hub:user/repo")``, in ``factory.py`` above this module).  This module
reads and writes files only; ``huggingface_hub`` (``pip install 'bcosnet[hub]'``)
is needed for the Hub, not for folders.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from .._utils.io import atomic_write_json, atomic_write_text
from .registry import ModelInfo, record_meta
from .weights import read_state_dict, write_safetensors

__all__ = ["CONFIG_NAME", "HUB_PREFIX", "WEIGHTS_NAME", "pretrained_location", "push_to_hub",
           "read_pretrained", "save_pretrained"]

#: huggingface_hub's names (``constants.CONFIG_NAME``, ``SAFETENSORS_SINGLE_FILE``).
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
#: timm's spelling of a Hub repo as weights: ``"hf-hub:user/repo"`` (``@revision`` optional).
HUB_PREFIX = "hf-hub:"
# huggingface_hub's repo ids: "namespace/name", letters, digits, "-", "_", ".".
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")

# ----------------------------------------------------------------------------- writing
def save_pretrained(model: nn.Module, save_directory: str | os.PathLike, *,
                    model_card: bool = True) -> Path:
    """Write ``model`` into the folder ``save_directory`` (made if missing):
    ``config.json`` (its name, options and record, ``model.model_info``) and
    ``model.safetensors`` (its ``state_dict()``, every tensor as it is: dtype and
    values kept), plus a ``README.md`` model card unless one exists or
    ``model_card=False``.  Each file is written atomically; files already there
    are replaced.  Returns the folder.

    Raises ``ValueError`` for a model without a record (built without
    :func:`bcosnet.create_model`) or a ``save_directory`` that is a file.
    """
    info = getattr(model, "model_info", None)
    if not isinstance(info, ModelInfo):
        raise ValueError(
            f"save_pretrained needs the model's record (model.model_info: its name and "
            f"options), and this {type(model).__name__} has none — build the model with "
            f"bcosnet.create_model(NAME, ...) or load it with bcosnet.from_pretrained")
    folder = Path(save_directory)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"save_directory {str(folder)!r} is a file; save_pretrained writes a "
                         f"folder (config.json + model.safetensors)")
    meta = record_meta(info)
    write_safetensors(model.state_dict(), folder / WEIGHTS_NAME, meta)
    atomic_write_json(folder / CONFIG_NAME, {"library_name": "bcosnet", **meta})
    if model_card and not (folder / "README.md").exists():
        atomic_write_text(folder / "README.md", _model_card(info))
    return folder


def _model_card(info: ModelInfo) -> str:
    return (f"---\nlibrary_name: bcosnet\ntags:\n- bcosnet\n- b-cos\n- image-classification\n"
            f"---\n\n# {info.name}\n\nA B-cos network saved by bcosnet"
            f"{'' if info.is_bcos else ' (a conventional twin)'}: {info.summary()}.\n\n"
            f"```python\nimport bcosnet\n\nmodel = bcosnet.from_pretrained(\"<this folder or "
            f"user/repo>\")\n```\n")


def push_to_hub(model: nn.Module, repo_id: str, *, private: bool | None = None,
                token: str | None = None, revision: str | None = None,
                commit_message: str = "Upload bcosnet model") -> str:
    """Save ``model`` (:func:`save_pretrained`, in a temporary folder) and upload the
    folder to the Hugging Face Hub repo ``repo_id`` (``"user/name"``; created if
    missing, ``private`` as given) — huggingface_hub's ``create_repo`` and
    ``upload_folder``, as its ``ModelHubMixin.push_to_hub``.  Returns the commit's URL."""
    hf = _huggingface_hub(f"push_to_hub({repo_id!r})")
    _check_repo_id(repo_id, "repo_id")
    with tempfile.TemporaryDirectory(prefix="bcosnet-push-") as tmp:
        save_pretrained(model, tmp)
        api = hf.HfApi(token=token)
        repo = api.create_repo(repo_id, private=private, exist_ok=True)
        commit = api.upload_folder(repo_id=getattr(repo, "repo_id", repo_id), folder_path=tmp,
                                   commit_message=commit_message, revision=revision)
    return str(getattr(commit, "commit_url", commit))


# ----------------------------------------------------------------------------- reading
def pretrained_location(source: Any, *, bare_repo_id: bool = False
                        ) -> Path | tuple[str, str | None] | None:
    """Where ``source`` points: a local folder (a ``Path``), a Hub repo
    (``(repo_id, revision)``: ``"hf-hub:user/repo[@revision]"``, or with
    ``bare_repo_id`` a ``"user/repo"`` that is no local path), or ``None`` (not a
    folder or repo: a file, a URL, a state dict, a registered name)."""
    if isinstance(source, os.PathLike):
        return Path(source) if Path(source).is_dir() else None
    if not isinstance(source, str):
        return None
    if source.startswith(HUB_PREFIX):
        repo, _, revision = source[len(HUB_PREFIX):].partition("@")
        return _check_repo_id(repo, f"{source!r}"), revision or None
    path = Path(source)
    if path.is_dir():
        return path
    if bare_repo_id and not path.exists() and _REPO_ID.match(source):
        return source, None
    return None


def read_pretrained(source: str | os.PathLike, *, bare_repo_id: bool = False,
                    **download: Any) -> tuple[dict[str, Tensor], dict[str, Any], str]:
    """Read a :func:`save_pretrained` folder, or download one from the Hub:
    ``(state_dict, meta, what)`` — ``meta`` what ``config.json`` records (read into
    a model record by :func:`~bcosnet.models.registry.saved_record`), ``what`` the
    source in words.  ``download``: huggingface_hub's ``hf_hub_download`` arguments
    (``revision``, ``cache_dir``, ``local_files_only``, ``token``; a revision in
    ``"hf-hub:user/repo@rev"`` wins).  ``bare_repo_id``: see :func:`pretrained_location`.

    Raises ``ValueError`` for a folder or repo without the two files, a config
    that is not JSON or records no bcosnet model, a config and weights file that
    record different models (one was edited), or a download that failed (the
    message says why and what to do); ``ImportError`` when a Hub repo is named and
    huggingface_hub is not installed.
    """
    where = pretrained_location(source, bare_repo_id=bare_repo_id)
    if where is None:
        raise ValueError(f"{str(source)!r} is no folder saved by save_pretrained"
                         + (" and no Hub repo id ('user/name')" if bare_repo_id else ""))
    if isinstance(where, Path):
        config, weights, what = where / CONFIG_NAME, where / WEIGHTS_NAME, str(where)
        _check_folder(where, config, weights)
    else:
        repo, rev = where
        download["revision"] = rev or download.get("revision")
        what = f"{HUB_PREFIX}{repo}" + (f"@{download['revision']}" if download["revision"]
                                        else "")
        config, weights = (_download(repo, name, **download)
                           for name in (CONFIG_NAME, WEIGHTS_NAME))
    meta = _read_config(config, what)
    state, file_meta = read_state_dict(weights)
    return state, _agreed_meta(meta, file_meta, what), what


def _check_folder(folder: Path, config: Path, weights: Path) -> None:
    missing = [p.name for p in (config, weights) if not p.is_file()]
    if not missing:
        return
    hint = ""
    if weights.is_file() or any(folder.glob("*.safetensors")) or any(folder.glob("*.pt")):
        hint = (" — to load a single checkpoint or export file, pass the file itself "
                "(from_pretrained / create_model(NAME, weights=FILE))")
    raise ValueError(f"folder {str(folder)!r} has no {' and no '.join(missing)}: it is not a "
                     f"folder written by save_pretrained{hint}")


def _read_config(path: Path, what: str) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"{what}: its {CONFIG_NAME} is not valid JSON ({e}) — the model record "
                         f"is damaged or was edited; save the model again with "
                         f"model.save_pretrained") from None
    if not isinstance(config, dict) or (config.get("model_info") is None
                                        and not config.get("model_name")):
        raise ValueError(f"{what}: its {CONFIG_NAME} records no bcosnet model (no model_info, no "
                         f"model_name): it was not written by bcosnet's save_pretrained — load "
                         f"its weights with bcosnet.create_model(NAME, weights=<its "
                         f"{WEIGHTS_NAME}>)")
    return config


def _agreed_meta(config: dict[str, Any], file_meta: dict[str, Any], what: str
                 ) -> dict[str, Any]:
    """``config.json``'s record, which must be the weights file's when both have one;
    a config without one (an earlier, minimal config) takes the file's."""
    ours, theirs = config.get("model_info"), file_meta.get("model_info")
    if ours is not None and theirs is not None and ours != theirs:
        fields = sorted(k for k in {*ours, *theirs} if ours.get(k) != theirs.get(k)) \
            if isinstance(ours, dict) and isinstance(theirs, dict) else ["model_info"]
        raise ValueError(
            f"{what}: {CONFIG_NAME} and {WEIGHTS_NAME} record different models (field(s) "
            f"{', '.join(fields)}) — one of them was edited or comes from another save; save "
            f"the model again with model.save_pretrained")
    return {**file_meta, **config} if ours is None else config


# ----------------------------------------------------------------------------- the Hub
def _huggingface_hub(what: str) -> Any:
    try:
        import huggingface_hub
        import huggingface_hub.constants  # noqa: F401  (submodules: the package loads lazily)
        import huggingface_hub.errors  # noqa: F401
    except ImportError:
        raise ImportError(f"{what} needs the huggingface_hub package: pip install "
                          f"'bcosnet[hub]' (a local folder saved by save_pretrained loads "
                          f"without it)") from None
    return huggingface_hub


def _check_repo_id(repo: str, what: str) -> str:
    if not _REPO_ID.match(repo):
        raise ValueError(f"{what} does not name a Hugging Face Hub repo: expected 'user/name' "
                         f"(letters, digits, '-', '_', '.'), as in 'hf-hub:user/name'")
    return repo


def _download(repo: str, filename: str, **download: Any) -> Path:
    hf = _huggingface_hub(f"loading the Hub repo {repo!r}")
    try:
        return Path(hf.hf_hub_download(repo, filename, **download))
    except (OSError, ValueError, hf.errors.EntryNotFoundError) as e:
        first = (str(e).strip().splitlines() or [""])[0]
        revision = download.get("revision")
        offline = download.get("local_files_only") or hf.constants.HF_HUB_OFFLINE
        advice = ("only files already in the local Hub cache are used (local_files_only=True "
                  "or HF_HUB_OFFLINE=1): download the repo once online, or pass a local folder "
                  "saved by save_pretrained" if offline else
                  "check the repo id and revision (a private repo needs token= or `hf auth "
                  "login`) and the network, or pass a local folder saved by save_pretrained")
        raise ValueError(f"could not get {filename} of the Hugging Face Hub repo {repo!r}"
                         f"{'@' + revision if revision else ''} ({type(e).__name__}: {first}); "
                         f"{advice}") from e
