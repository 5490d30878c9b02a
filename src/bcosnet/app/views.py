"""The app's callbacks, without gradio: each takes what the page holds (a model,
the chosen image, the controls) and returns what it shows (images as uint8
arrays, Markdown, table rows).  They call the public API — :func:`bcosnet.explain`,
:func:`bcosnet.to_rgba`, :func:`bcosnet.overlay`, :func:`bcosnet.data.to_model_input`,
``bcosnet.attribution``, :func:`bcosnet.evaluation.top_activations`, the
pointing game's :func:`~bcosnet.evaluation.pointing_game.grid_maps` and
:func:`~bcosnet.evaluation.pointing_game.cell_scores` — and never re-implement it.

A problem with what the user chose raises :class:`~bcosnet.app.workspace.AppError`
(a ``ValueError``) worded for the page.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .workspace import AppError, LoadedModel, Workspace

__all__ = [
    "Chosen", "ComparePanel", "ExplainView", "NeuronView", "SAMPLE_PHOTOS", "choose_file",
    "choose_sample", "choose_test_image", "compare_methods", "completeness_rows",
    "explain_image", "explanation_figure", "grid_view", "neuron_view", "pointing_game_summary",
    "render_explanation", "sample_photos", "top_images",
]

#: Progress callback: ``progress(done, total, text)``.
Progress = Callable[[int, int, str], None]

#: Shown size (pixels, shorter side) small images are enlarged to (nearest neighbour).
DISPLAY_SIZE = 224


# ----------------------------------------------------------------------------- images
def _u8(a: Tensor | np.ndarray) -> np.ndarray:
    """H×W×3 float in [0, 1] → uint8."""
    a = a.detach().cpu().numpy() if isinstance(a, Tensor) else np.asarray(a)
    return np.round(np.clip(a, 0, 1) * 255).astype(np.uint8)


def _enlarge(a: np.ndarray, size: int = DISPLAY_SIZE) -> np.ndarray:
    """Enlarge a small H×W×C image by an integer factor (nearest: pixels stay sharp)."""
    f = max(1, size // max(1, min(a.shape[:2])))
    return a.repeat(f, 0).repeat(f, 1) if f > 1 else a


def _image_rgb(x: Tensor) -> np.ndarray:
    """C×H×W in [0, 1] (C = 1 or 3) → H×W×3 uint8."""
    x = x.detach().float().cpu().clamp(0, 1)
    return _u8(x.expand(3, -1, -1).permute(1, 2, 0) if x.shape[0] == 1 else x.permute(1, 2, 0))


def _on_white(rgba: Tensor) -> np.ndarray:
    """An H×W×4 explanation composited over white (transparent = not looked at)."""
    rgba = rgba.detach().float().cpu()
    a = rgba[..., 3:]
    return _u8(rgba[..., :3] * a + (1 - a))


def _tile(rows: Sequence[Sequence[np.ndarray]], gap: int = 4) -> np.ndarray:
    """Images (equal sizes) in a grid with white gaps."""
    h, w = rows[0][0].shape[:2]
    nr, nc = len(rows), max(len(r) for r in rows)
    out = np.full((nr * h + (nr - 1) * gap, nc * w + (nc - 1) * gap, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, im in enumerate(row):
            out[i * (h + gap): i * (h + gap) + h, j * (w + gap): j * (w + gap) + w] = im
    return out


def _heat(m: Tensor, percentile: float = 99.5) -> np.ndarray:
    """An H×W signed map in the library's red (+) / blue (−) colours, as uint8 RGB."""
    from ..explanations import contribution_to_rgba

    return _u8(contribution_to_rgba(m, percentile=percentile)[..., :3])


# ----------------------------------------------------------------------------- choosing
@dataclass
class Chosen:
    """The image the page explains: model input as the model's record prescribes."""

    image: Tensor  # C×H×W in [0, 1]
    name: str
    notes: list[str] = field(default_factory=list)
    label: int | None = None  # its true class, when known (a test image)
    model: str = ""  # the model's label it was prepared for

    def preview(self) -> np.ndarray:
        """The image as the model sees it (enlarged when small), H×W×3 uint8."""
        return _enlarge(_image_rgb(self.image))


def _clean(message: str, path: Path) -> str:
    """A library message about ``path`` with the file's name instead of the
    upload's temporary path."""
    return message.replace(str(path), path.name)


def _file_notes(path: Path, lm: LoadedModel, x: Tensor) -> list[str]:
    """What happened to the file on its way to the model (read from its header,
    after :func:`bcosnet.data.open_image` decoded it)."""
    from PIL import Image

    info = lm.info
    notes: list[str] = []
    with Image.open(path) as im:
        w, h, mode, fmt = im.width, im.height, im.mode, im.format
        frames = getattr(im, "n_frames", 1)
        orientation = im.getexif().get(0x0112, 1)
    notes.append(f"{path.name}: {fmt} {w}×{h} px, mode {mode}")
    if orientation not in (None, 1):
        notes.append(f"EXIF orientation {orientation} applied: the image is explained as a "
                     "viewer shows it")
    if frames > 1:
        notes.append(f"an animation of {frames} frames: its first frame is explained")
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        notes.append(f"{'16-bit' if mode.startswith('I;16') else mode} grey values scaled to "
                     "0–255 (not clipped)")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in
                                                      getattr(im, "info", {})):
        notes.append("transparency composited over white")
    grey_file = mode in ("L", "1", "I", "I;16", "I;16B", "I;16L", "I;16N", "F", "LA", "La")
    if info.in_channels == 3 and grey_file:
        notes.append("a grey image: its grey value is repeated in R, G and B (the model "
                     "takes colour images)")
    if info.in_channels == 1 and not grey_file:
        notes.append("a colour image converted to grey (the model takes 1-channel images)")
    size = tuple(info.image_size)
    rotated = orientation in (5, 6, 7, 8)
    shown = (w, h) if not rotated else (h, w)
    if (shown[1], shown[0]) != size:
        from ..data import model_preprocess

        notes.append(
            f"**another size than the model was trained on:** {shown[0]}×{shown[1]} px, the "
            f"model was trained on {size[1]}×{size[0]} px images — fitted by the model's rule "
            f"({model_preprocess(info).describe()}); the preview shows what the model sees")
    return notes


def choose_file(lm: LoadedModel, path: str | os.PathLike) -> Chosen:
    """An image file (an upload) as the model's input: :func:`bcosnet.data.to_model_input`
    (the library's decoder and the record's preprocessing).  A file that is no
    image, is damaged or is a decompression bomb raises :class:`AppError`."""
    from ..data import to_model_input

    p = Path(path)
    try:
        x = to_model_input(p, lm.model)
    except (ValueError, FileNotFoundError, OSError) as e:
        raise AppError(_clean(str(e), p)) from e
    return Chosen(x, f"upload {p.name}", _file_notes(p, lm, x), None, lm.label)


def sample_photos() -> dict[str, Path]:
    """The photos scikit-image bundles (no download): name → file."""
    from skimage import data

    root = Path(data.data_dir)
    return {p.stem: p for p in sorted(root.iterdir())
            if p.suffix.lower() in (".png", ".jpg", ".jpeg") and p.is_file()}


#: The bundled photos offered first (the rest follow in name order).
SAMPLE_PHOTOS = ("chelsea", "astronaut", "coffee", "rocket", "camera", "coins", "moon")


def choose_sample(lm: LoadedModel, name: str) -> Chosen:
    """A photo scikit-image bundles, fed as an upload would be."""
    photos = sample_photos()
    if name not in photos:
        from .._utils.validate import did_you_mean

        raise AppError(f"no bundled photo {name!r}{did_you_mean(name, photos)}")
    ch = choose_file(lm, photos[name])
    ch.name = f"scikit-image photo {name!r}"
    return ch


def choose_test_image(ws: Workspace, lm: LoadedModel, class_name: str | int,
                      index: int) -> Chosen:
    """The ``index``-th test image of class ``class_name`` of the model's data set
    (fed as the model was tested: the data set's transform is the record's)."""
    c = lm.class_index(class_name)
    by = ws.test_indices(lm.label)
    have = by.get(c, [])
    name = lm.class_names[c]
    if not have:
        raise AppError(f"the test set has no image of class {name!r}")
    if index is None or not 0 <= int(index) < len(have):
        raise AppError(f"class {name!r} has {len(have)} test images: choose an index in "
                       f"0..{len(have) - 1} (got {index})")
    i = have[int(index)]
    x, y = ws.test_data(lm.label).test[i]
    splits = ws.test_data(lm.label)
    where = splits.dataset.describe() if splits.dataset is not None else "the test set"
    return Chosen(x.float(), f"test image #{i} ({name}, number {int(index)} of its class)",
                  [f"from {where}, fed as the model was tested"], int(y), lm.label)


# ----------------------------------------------------------------------------- explain
def _dtype(lm: LoadedModel) -> torch.dtype:
    return next((p.dtype for p in lm.model.parameters() if p.is_floating_point()),
                torch.float32)


def _device(lm: LoadedModel) -> torch.device:
    return next((p.device for p in lm.model.parameters()), torch.device("cpu"))


def _batch(lm: LoadedModel, x: Tensor) -> Tensor:
    if x.shape[0] != lm.info.in_channels:
        raise AppError(f"the image has {x.shape[0]} channels but {lm.label} takes "
                       f"{lm.info.in_channels}: choose the image again for this model")
    return x[None].to(_device(lm), _dtype(lm))


def output_rule(lm: LoadedModel) -> str:
    """How logits become the probabilities shown (the library's rule)."""
    from ..attribution import default_output

    return default_output(lm.model)


def probabilities(lm: LoadedModel, logits: Tensor) -> Tensor:
    """K logits → K probabilities: sigmoid for B-cos networks (trained with binary
    cross-entropy), softmax for conventional ones."""
    return logits.sigmoid() if output_rule(lm) == "sigmoid" else logits.softmax(-1)


def completeness_rows(ex: Any, names: Sequence[str]) -> list[dict[str, Any]]:
    """Per explained target: ``Σ contributions``, ``bias``, their sum, the logit
    (or neuron value) and the difference, as floats (image 0 of ``ex``)."""
    s = ex.contributions[0].double().sum((-2, -1))
    b = ex.bias[0].double()
    v = ex.logits[0].double()
    rows = []
    for t in range(ex.targets.shape[1]):
        c = int(ex.targets[0, t])
        rows.append({"target": c, "name": names[c] if 0 <= c < len(names) else str(c),
                     "sum": float(s[t]), "bias": float(b[t]), "total": float(s[t] + b[t]),
                     "value": float(v[t]), "difference": float(s[t] + b[t] - v[t])})
    return rows


def completeness_text(rows: Sequence[dict[str, Any]], what: str = "logit") -> str:
    """Markdown lines ``Σ contributions + bias = logit`` with the difference."""
    lines = []
    for r in rows:
        lines.append(
            f"**{r['name']}** — Σ contributions {r['sum']:.6f} + bias {r['bias']:.6f} = "
            f"{r['total']:.6f}; {what} {r['value']:.6f}; difference {r['difference']:.2e}")
    return "\n\n".join(lines)


def render_explanation(ex: Any, image: Tensor, *, smooth: int = 0,
                       percentile: float = 99.5) -> np.ndarray:
    """Image 0's explanations side by side (one column per target): the colour
    explanation W(x) (over white), the contribution map (red +, blue −) and the
    explanation laid over the image — uint8, enlarged when small."""
    from ..explanations import overlay, to_rgba

    rgba = to_rgba(ex, smooth=int(smooth), percentile=float(percentile))[0]  # T×H×W×4
    img = image.detach().float().cpu().clamp(0, 1)
    cols = []
    for t in range(rgba.shape[0]):
        cols.append([_on_white(rgba[t]), _heat(ex.contributions[0, t], percentile),
                     _u8(overlay(img, rgba[t].float()))])
    rows = [[_enlarge(c[k]) for c in cols] for k in range(3)]
    return _tile(rows)


@dataclass
class ExplainView:
    """What the Explain view shows for one image."""

    top: dict[str, float]  # top-k class name → probability
    rule: str  # "sigmoid" / "softmax"
    classes: list[str]  # the explained classes
    panel: np.ndarray  # render_explanation
    rows: list[dict[str, Any]]  # completeness_rows
    explanation: Any  # the Explanation (image 0)

    def text(self) -> str:
        return completeness_text(self.rows)


def explain_image(lm: LoadedModel, chosen: Chosen, classes: Sequence[str | int] | None = None,
                  *, smooth: int = 0, percentile: float = 99.5, top: int = 5) -> ExplainView:
    """Explain ``classes`` (default: the predicted class) of the chosen image with
    :func:`bcosnet.explain` (one forward pass, one backward pass per class)."""
    from ..explanations import explain

    if not lm.is_bcos:
        raise AppError(f"{lm.label} is a conventional network: it has no model-inherent "
                       "explanation W(x) (use the Compare view's post-hoc methods, e.g. ixg)")
    x = _batch(lm, chosen.image)
    names = lm.class_names
    if not classes:
        with torch.no_grad():
            logits = lm.model(x)
        idx = [int(logits[0].argmax())]
    else:
        idx = [lm.class_index(c) for c in classes]
    ex = explain(lm.model, x, target=torch.tensor([idx]))
    assert ex.all_logits is not None
    p = probabilities(lm, ex.all_logits[0].double())
    k = min(top, p.numel())
    vals, order = p.topk(k)
    top_d = {names[int(i)]: float(v) for v, i in zip(vals, order)}
    return ExplainView(top_d, output_rule(lm), [names[i] for i in idx],
                       render_explanation(ex, chosen.image, smooth=smooth, percentile=percentile),
                       completeness_rows(ex, names), ex)


def toggle_class(selected: Sequence[str], name: str, *, most: int = 6) -> list[str]:
    """The explained classes after a click on class ``name`` in the top-k list: an
    unexplained class is added (side by side; the ``most`` most recent are kept), an
    explained one is removed — unless it is the only one."""
    sel = [s for s in selected if s != name]
    if len(sel) == len(selected) or not sel:
        sel = [*sel, name]
    return sel[-most:]


def explanation_figure(lm: LoadedModel, chosen: Chosen, view: ExplainView, *,
                       smooth: int = 0, percentile: float = 99.5,
                       folder: str | os.PathLike | None = None) -> Path:
    """The explanation as a labelled PNG figure (the library's
    :func:`~bcosnet.explanations.figures.plot_explanations`): image | colour
    explanation | contribution map per class, each titled with its completeness."""
    from ..explanations.figures import plot_explanations, save_figure

    x = chosen.image[None].float()
    fig = plot_explanations(x, view.explanation, class_names=lm.class_names,
                            smooth=int(smooth), percentile=float(percentile),
                            title=f"{lm.label}: {chosen.name}")
    folder = Path(folder) if folder is not None else Path(tempfile.mkdtemp(prefix="bcosnet-app-"))
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{lm.label}_{chosen.name}").strip("_")[:80]
    path = save_figure(fig, folder / f"explanation_{stem}.png")
    fig.clear()
    return path


# ----------------------------------------------------------------------------- compare
@dataclass
class ComparePanel:
    """One method's map of the compared class."""

    method: str
    image: np.ndarray
    seconds: float
    caption: str


def _method(name: str, model: Any) -> Any:
    import inspect

    from .. import attribution

    cls = attribution.METHODS[name]
    quiet = {"progress": False} if "progress" in inspect.signature(cls.__init__).parameters \
        else {}
    return attribution.get(name, model, **quiet)


def compare_methods(lm: LoadedModel, chosen: Chosen, class_name: str | int, *,
                    methods: Sequence[str] | None = None, percentile: float = 100.0,
                    progress: Progress | None = None
                    ) -> Iterator[tuple[list[ComparePanel], int]]:
    """``bcos`` and every post-hoc method (``bcosnet.attribution``) on the chosen
    image and class, one after another; yields the panels so far and the number of
    methods after each method (so a page shows them as they come and can stop
    between methods).
    Each map is the per-pixel attribution (summed over channels) in red (+) /
    blue (−), scaled to its own largest magnitude (``percentile`` of |map|, as the
    pointing game's panel); ``bcos`` adds its colour explanation.  Times are wall-clock seconds
    of each method's call."""
    from .. import attribution
    from ..explanations import explain, to_rgba

    c = lm.class_index(class_name)
    x = _batch(lm, chosen.image)
    names = list(methods) if methods is not None else attribution.available()
    if not lm.is_bcos:
        names = [m for m in names if m != "bcos"]
    panels: list[ComparePanel] = []
    for i, m in enumerate(names):
        if progress is not None:
            progress(i, len(names), f"{m} ({i + 1} of {len(names)})")
        t0 = time.perf_counter()
        if m == "bcos":
            ex = explain(lm.model, x, target=c)
            sec = time.perf_counter() - t0
            panels.append(ComparePanel("bcos", _enlarge(_on_white(to_rgba(ex)[0, 0])), sec,
                                       f"bcos W(x) colour — {sec:.2f} s"))
            amap = ex.contributions[0, 0]
        else:
            out = _method(m, lm.model).attribute(x, target=c)
            sec = time.perf_counter() - t0
            amap = out[0].sum(0)
        panels.append(ComparePanel(m, _enlarge(_heat(amap, percentile)), sec,
                                   f"{m} — {sec:.2f} s"))
        yield list(panels), len(names)
    if progress is not None:
        progress(len(names), len(names), "done")


# ----------------------------------------------------------------------------- neurons
@dataclass
class NeuronView:
    layer: str
    channel: int
    panel: np.ndarray
    rows: list[dict[str, Any]]

    def text(self) -> str:
        return completeness_text(self.rows, "neuron value")


def _check_neuron(lm: LoadedModel, layer: str, channel: int) -> int:
    layers = dict(lm.layers())
    if layer not in layers:
        from .._utils.validate import did_you_mean

        raise AppError(f"{lm.label} has no spatial layer {layer!r}"
                       f"{did_you_mean(layer, layers)}")
    k = layers[layer][0]
    if channel is None or not 0 <= int(channel) < k:
        raise AppError(f"layer {layer} has {k} channels: choose a channel in 0..{k - 1} "
                       f"(got {channel})")
    return int(channel)


def neuron_view(lm: LoadedModel, chosen: Chosen, layer: str, channel: int, *,
                smooth: int = 0, percentile: float = 99.5) -> NeuronView:
    """Channel ``channel`` of ``layer`` (summed over locations) explained for the
    chosen image: :func:`bcosnet.explain` with ``layer=``/``channel=``."""
    from ..explanations import explain

    if not lm.is_bcos:
        raise AppError(f"{lm.label} is a conventional network: its neurons have no "
                       "model-inherent explanation")
    ch = _check_neuron(lm, layer, channel)
    ex = explain(lm.model, _batch(lm, chosen.image), layer=layer, channel=ch)
    rows = completeness_rows(ex, [])
    for r in rows:
        r["name"] = f"{layer} channel {ch}"
    return NeuronView(layer, ch, render_explanation(ex, chosen.image, smooth=smooth,
                                                    percentile=percentile), rows)


def saved_neuron_runs(ws: Workspace, layer: str) -> list[Path]:
    """Saved ``bcosnet neurons`` records (``top_<layer>.json``) of ``layer``."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", layer)
    return [d / f"top_{safe}.json" for d in ws.neuron_dirs if (d / f"top_{safe}.json").is_file()]


def top_images(ws: Workspace, lm: LoadedModel, layer: str, channel: int, *,
               source: str = "compute", limit: int = 2000, count: int = 8,
               record: str | os.PathLike | None = None, smooth: int = 0,
               percentile: float = 99.5, progress: Any = None
               ) -> tuple[list[tuple[np.ndarray, str]], str]:
    """The test images that activate the neuron most, each with its explanation
    of the neuron (overlaid).

    ``source="saved"``: from a ``bcosnet neurons`` record (``record``, default the
    first saved run of ``layer``); ``"compute"``: one pass of
    :func:`bcosnet.evaluation.top_activations` over the first ``limit`` test
    images (``progress``: a gradio-style progress object whose ``tqdm`` wraps the
    loader, or None).  Returns (image, caption) pairs and a Markdown note saying
    where they came from."""
    import json

    from ..explanations import explain, overlay, to_rgba

    ch = _check_neuron(lm, layer, channel)
    splits = ws.test_data(lm.label)
    test = splits.test
    names = list(splits.classes)
    if source == "saved":
        files = [Path(record)] if record else saved_neuron_runs(ws, layer)
        if not files:
            raise AppError(f"no saved `bcosnet neurons` run of layer {layer} (looked in "
                           f"{', '.join(map(str, ws.neuron_dirs)) or 'no folder'}); compute "
                           "the top images instead, or run bcosnet neurons --layer "
                           f"{layer} --out DIR and start the app with that folder")
        rec = json.loads(files[0].read_text())
        if rec.get("layer") != layer:
            raise AppError(f"{files[0]} records layer {rec.get('layer')!r}, not {layer}")
        if rec.get("split", "test") != "test":
            raise AppError(f"{files[0]} ranks the {rec.get('split')} split; the app shows "
                           "test images")
        neuron = rec.get("neurons", {}).get(str(ch))
        if neuron is None:
            raise AppError(f"{files[0]} holds channels {', '.join(rec.get('neurons', {}))} "
                           f"of {layer}, not {ch}: compute channel {ch} instead")
        idx = [int(i) for i in neuron["indices"][:count]]
        values = [float(v) for v in neuron["values"][:count]]
        note = (f"from the saved run {files[0]} ({rec.get('dataset')}, top "
                f"{len(neuron['indices'])} kept)")
        if len(test) <= max(idx, default=0):
            raise AppError(f"{files[0]} names test image {max(idx)} but the model's test set "
                           f"has {len(test)}: the run was made on other data")
    else:
        from torch.utils.data import DataLoader, Subset

        from ..evaluation.neurons import top_activations

        n = min(int(limit), len(test))
        if n < 1:
            raise AppError("limit must be at least 1 image")
        loader: Any = DataLoader(Subset(test, range(n)), batch_size=256, shuffle=False)
        if progress is not None:
            loader = progress.tqdm(loader, desc=f"ranking {n} test images")
        top = top_activations(lm.model, loader, layer, [ch], k=count, progress=False,
                              device=_device(lm))
        idx = top.indices[0].tolist()
        values = top.values[0].tolist()
        note = (f"computed now: the {len(idx)} highest activations (each image's maximum over "
                f"locations) among the first {n} test images")
    if not idx:
        return [], note
    xs = torch.stack([test[i][0] for i in idx]).to(_device(lm), _dtype(lm))
    labels = [int(test[i][1]) for i in idx]
    ex = explain(lm.model, xs, layer=layer, channel=ch)
    rgba = to_rgba(ex, smooth=int(smooth), percentile=float(percentile))[:, 0]
    items = []
    for j, i in enumerate(idx):
        img = _enlarge(_image_rgb(xs[j]), 112)
        ov = _enlarge(_u8(overlay(xs[j].float(), rgba[j].float())), 112)
        cap = f"#{i} ({names[labels[j]] if 0 <= labels[j] < len(names) else labels[j]}), " \
              f"activation {values[j]:.3g}"
        items.append((np.concatenate([img, np.full((img.shape[0], 4, 3), 255, np.uint8), ov],
                                     1), cap))
    return items, note


# ----------------------------------------------------------------------------- pointing game
def _network_model(ws: Workspace, network: str) -> LoadedModel:
    base = network.split("-")[0]
    for label in (network, base):
        if label in ws.models:
            return ws.models[label]
    raise AppError(f"no network {base!r} loaded for the pointing game folder {network!r}")


def load_grids(ws: Workspace, network: str) -> tuple[Any, Any, LoadedModel]:
    """The grids, saved result and network of ``pointing_game/<network>``."""
    import json

    from ..evaluation.pointing_game import GridDataset, PointingGameResult

    dirs = ws.pointing_game_dirs()
    if network not in dirs:
        raise AppError(f"no pointing game {network!r} in {ws.main_dir} (found: "
                       f"{', '.join(dirs) or 'none'})")
    lm = _network_model(ws, network)
    test = ws.test_data(lm.label).test
    grids = GridDataset.from_dict(json.loads((dirs[network] / "grids.json").read_text()), test)
    f = dirs[network] / "pointing_game.json"
    result = PointingGameResult.load(f) if f.is_file() else None
    return grids, result, lm


def _frame(img: np.ndarray, box: tuple[int, int, int, int], width: int = 2) -> np.ndarray:
    out = img.copy()
    t, l, b, r = box
    col = np.array([255, 200, 0], np.uint8)
    out[t:t + width, l:r] = col
    out[b - width:b, l:r] = col
    out[t:b, l:l + width] = col
    out[t:b, r - width:r] = col
    return out


def grid_view(ws: Workspace, network: str, grid: int, cell: int | None = None, *,
              methods: Sequence[str] | None = None, progress: Progress | None = None
              ) -> Iterator[tuple[np.ndarray, list[tuple[np.ndarray, str]], list[list[Any]],
                                  int]]:
    """Grid ``grid`` of a main job's pointing game: the grid image (explained cell
    framed), every method's map of that cell's class with its score (computed here
    with the game's own functions and settings) beside the score the game saved,
    and the saved scores of every cell (one row per method).  Yields these and the
    number of methods after each method."""
    from ..evaluation.pointing_game import cell_scores, grid_maps, make_attribution_fn

    grids, result, lm = load_grids(ws, network)
    if not 0 <= int(grid) < len(grids):
        raise AppError(f"{network} has {len(grids)} grids: choose one in 0..{len(grids) - 1}")
    grid = int(grid)
    sq = grids.n * grids.n
    cell = sq // 2 if cell is None else int(cell)
    if not 0 <= cell < sq:
        raise AppError(f"a {grids.n}×{grids.n} grid has cells 0..{sq - 1}, got {cell}")
    settings = result.settings if result is not None else {}
    msettings = settings.get("method_settings") or {}
    smoothing = settings.get("smoothing")
    names = list(methods) if methods is not None else (
        result.methods if result is not None else ["bcos"])
    image = grids.get_images([grid]).to(_device(lm), _dtype(lm))
    classes = grids.classes[grid]
    k = int(classes[cell])
    cls_names = lm.class_names
    h, w = grids.cell_size
    r, c = divmod(cell, grids.n)
    big = _enlarge(_image_rgb(image[0]), 336)
    f = big.shape[0] // image.shape[-2]
    framed = _frame(big, (r * h * f, c * w * f, (r + 1) * h * f, (c + 1) * w * f))
    table: list[list[Any]] = []
    if result is not None:
        for m in result.methods:
            s = result.scores[m]
            row = [m] + ([round(float(v), 3) for v in s[grid]] if grid < s.shape[0]
                         else ["—"] * sq)
            table.append(row)
    panels: list[tuple[np.ndarray, str]] = []
    target = torch.tensor([[k]])
    for i, m in enumerate(names):
        if progress is not None:
            progress(i, len(names), f"{m} ({i + 1} of {len(names)})")
        fn = make_attribution_fn(lm.model, m, **dict(msettings.get(m, {})))
        t0 = time.perf_counter()
        amap = grid_maps(fn, image, target.to(image.device), name=m)[0, 0]  # H×W
        sec = time.perf_counter() - t0
        score = float(cell_scores(amap[None], cell, grids.n, smoothing=smoothing)[0])
        saved = ""
        if result is not None and m in result.scores and grid < result.scores[m].shape[0]:
            saved = f", saved {float(result.scores[m][grid, cell]):.3f}"
        panels.append((_frame(_enlarge(_heat(amap, 100.0), 336),
                              (r * h * f, c * w * f, (r + 1) * h * f, (c + 1) * w * f)),
                       f"{m}: score {score:.3f}{saved} ({sec:.2f} s)"))
        yield framed, list(panels), table, len(names)
    if not names:
        yield framed, panels, table, 0
    if progress is not None:
        progress(len(names), len(names), f"cell {cell}: {cls_names[k]}")


def pointing_game_summary(ws: Workspace) -> tuple[list[list[Any]], Any]:
    """The results table (network, method, grids, median, mean, q1, q3 of the cell
    scores) and a box plot
    figure (:func:`~bcosnet.evaluation.pointing_game.plot_pointing_game`) of the
    main job's pointing games."""
    from ..evaluation.pointing_game import PointingGameResult, plot_pointing_game

    results: dict[str, Any] = {}
    for network, d in ws.pointing_game_dirs().items():
        f = d / "pointing_game.json"
        if f.is_file():
            results[network] = PointingGameResult.load(f)
    if not results:
        raise AppError(f"no finished pointing game in {ws.main_dir or 'this app (no main-job '}"
                       f"{'' if ws.main_dir else 'folder given)'}: run bcosnet main first")
    rows = []
    for network, res in results.items():
        for m, s in res.summary().items():
            rows.append([network, m, res.grids_per_method[m],
                         *(round(float(v), 3) for v in (s.median, s.mean, s.q1, s.q3))])
    fig = plot_pointing_game(results)
    return rows, fig
