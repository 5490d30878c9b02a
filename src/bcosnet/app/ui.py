"""The page: shared controls (model, image) above one tab per view, each wired to
a callback of :mod:`bcosnet.app.views` (gradio's ``blocks_xray`` layout).

Every callback runs inside :func:`_guard`: a problem with what the user chose
(a non-image upload, a checkpoint of another architecture, a channel out of
range, ...) becomes a message in the page's status line, the other outputs keep
what they showed, and the app keeps serving."""

from __future__ import annotations

import functools
import inspect
import os
import tempfile
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ._offline import quiet_gradio

quiet_gradio()
import gradio as gr  # noqa: E402 - after the offline settings

from . import views  # noqa: E402
from .workspace import AppError, LoadedModel, Workspace, load_model  # noqa: E402

__all__ = ["build_app", "TITLE"]

TITLE = "bcosnet — look at a model's reasoning"

#: Errors that are the user's input, shown in the page (the rest are shown too, as
#: an internal error with its type, and printed on the server's terminal).
_USER_ERRORS = (AppError, ValueError, FileNotFoundError, TypeError, MemoryError, OSError)

_CSS = """
#explanation img, #neuron-panel img, #preview img, #grid-image img { image-rendering: pixelated; }
.status-line { min-height: 1.5em; }
"""


def _message(e: BaseException) -> str:
    if isinstance(e, _USER_ERRORS):
        return f"⚠️ **Error:** {e}"
    traceback.print_exc()
    return f"⚠️ **Internal error** ({type(e).__name__}): {e} — the app keeps running"


def _guard(n_out: int, status: int) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Wrap a callback with ``n_out`` outputs, output ``status`` being the status
    line: on an error every other output is left as it was and the status says why.
    On success the status is cleared unless the callback set it."""

    def fail(e: BaseException) -> tuple[Any, ...]:
        out: list[Any] = [gr.update() for _ in range(n_out)]
        out[status] = _message(e)
        return tuple(out)

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.isgeneratorfunction(fn):
            @functools.wraps(fn)
            def gen(*args: Any, **kwargs: Any) -> Any:
                try:
                    yield from fn(*args, **kwargs)
                except Exception as e:  # noqa: BLE001 - every failure becomes a message
                    yield fail(e)
            return gen

        @functools.wraps(fn)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except Exception as e:  # noqa: BLE001 - every failure becomes a message
                return fail(e)
        return wrapped

    return deco


def _locked(ws: Workspace, steps: Iterator[Any]) -> Iterator[Any]:
    """Each step of a generator under the workspace's lock, the lock released while
    the page receives the step (gradio may resume a generator in another thread,
    and a comparison the page abandoned must not keep the lock)."""
    while True:
        with ws.lock:
            try:
                item = next(steps)
            except StopIteration:
                return
        yield item


#: gradio fills a parameter whose default is a ``gr.Progress`` with the event's progress bar.
_PROGRESS = gr.Progress()


def _figure_rgb(fig: Any) -> np.ndarray:
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def build_app(ws: Workspace, *, figure_dir: str | os.PathLike | None = None) -> Any:
    """The gradio Blocks app of workspace ``ws`` (not launched).  ``figure_dir``:
    where downloadable figures are written (default: a new temporary folder)."""
    fig_dir = Path(figure_dir) if figure_dir is not None else Path(
        tempfile.mkdtemp(prefix="bcosnet-app-"))
    return _Page(ws, fig_dir).build()


# Outputs of the callbacks (the status line is the last of each).
_IMAGE_OUT = 10  # state, preview, notes, top 5, rule, classes, panel, completeness, class, status
_EXPLAIN_OUT = 5  # state, classes, panel, completeness, status
_MODEL_OUT = 9  # model text, test class, classes, compare class, layer, smoothing, state, notes,
#                 status
_LOAD_OUT = 1 + _MODEL_OUT  # the model list first


class _Page:
    """The components of the page and the callbacks wired to them."""

    def __init__(self, ws: Workspace, fig_dir: Path) -> None:
        self.ws = ws
        self.fig_dir = fig_dir
        photos = views.sample_photos()
        self.photos = [p for p in views.SAMPLE_PHOTOS if p in photos] + sorted(
            p for p in photos if p not in views.SAMPLE_PHOTOS)
        self.first = ws.default_label()
        self.lm0 = ws.get(self.first) if ws.models else None

    # ------------------------------------------------------------------ helpers
    def model_text(self, lm: LoadedModel) -> str:
        return f"**Model:** {lm.describe()}"

    @staticmethod
    def smooth_default(lm: LoadedModel | None) -> int:
        from ..explanations.figures import default_smooth

        return default_smooth(int(lm.info.image_size[0])) if lm is not None else 1

    @staticmethod
    def layer_choices(lm: LoadedModel | None) -> list[tuple[str, str]]:
        if lm is None or not lm.is_bcos:
            return []
        return [(f"{n} ({s[0]} channels, {s[1]}×{s[2]})", n) for n, s in lm.layers()]

    def model_choices(self) -> list[tuple[str, str]]:
        return [(label if label.startswith(lm.info.name) else f"{label}: {lm.info.name}", label)
                for label, lm in self.ws.models.items()]

    def classes0(self) -> list[str]:
        return self.lm0.class_names if self.lm0 is not None else []

    # ------------------------------------------------------------------ layout
    def build(self) -> Any:
        with gr.Blocks(title="bcosnet app", analytics_enabled=False) as demo:
            self.state = gr.State(None)  # {"chosen": Chosen, "view": ExplainView}
            gr.Markdown(f"# {TITLE}\nExact explanations of a B-cos network — any class, any "
                        "inner neuron — beside the post-hoc methods, and the pointing game's "
                        "grids.")
            self._model_controls()
            self._image_controls()
            with gr.Tabs():
                self._explain_tab()
                self._compare_tab()
                self._neurons_tab()
                self._pointing_tab()
            self._wire()
            demo.load(self.on_pg_load, None, [self.pg_table, self.pg_box, self.pg_status])
        demo.queue(default_concurrency_limit=1)
        return demo

    def _model_controls(self) -> None:
        from ..models import list_models

        with gr.Row():
            self.model_dd = gr.Dropdown(self.model_choices(), value=self.first, label="Model",
                                        elem_id="model", scale=1)
            self.model_md = gr.Markdown(self.model_text(self.lm0) if self.lm0 else
                                        "No model loaded: load one below.", elem_id="model-info")
        with gr.Accordion("Load another model", open=not self.ws.models):
            with gr.Row():
                self.ckpt_tb = gr.Textbox(label="Checkpoint or weights file",
                                          elem_id="load-path",
                                          placeholder="runs/fmnist/checkpoint.pt")
                self.arch_dd = gr.Dropdown([""] + list_models(), value="",
                                           label="Architecture (for a plain state dict, or "
                                           "alone: random init)", elem_id="load-arch")
                self.load_btn = gr.Button("Load", elem_id="load")
            self.model_status = gr.Markdown("", elem_id="model-status",
                                            elem_classes="status-line")

    def _image_controls(self) -> None:
        names = self.classes0()
        with gr.Row():
            with gr.Column(scale=1):
                with gr.Tab("Upload"):
                    self.upload = gr.File(label="An image file (any format PIL reads)",
                                          elem_id="upload", type="filepath")
                with gr.Tab("Test image"):
                    self.test_cls = gr.Dropdown(names, value=names[0] if names else None,
                                                label="Class", elem_id="test-class")
                    self.test_idx = gr.Number(0, precision=0, minimum=0,
                                              label="Index within the class",
                                              elem_id="test-index")
                    self.test_btn = gr.Button("Show this test image", elem_id="test-go")
                with gr.Tab("Photo"):
                    self.photo_dd = gr.Dropdown(self.photos, value=self.photos[0] if
                                                self.photos else None,
                                                label="A photo scikit-image bundles",
                                                elem_id="photo")
                    self.photo_btn = gr.Button("Use this photo", elem_id="photo-go")
            with gr.Column(scale=1):
                self.preview = gr.Image(label="What the model sees", elem_id="preview",
                                        interactive=False, height=240, type="numpy")
            with gr.Column(scale=1):
                self.notes_md = gr.Markdown("Choose an image: upload one, a test image of the "
                                            "model's data set, or a bundled photo.",
                                            elem_id="image-notes")
        self.status = gr.Markdown("", elem_id="status", elem_classes="status-line")

    def _explain_tab(self) -> None:
        with gr.Tab("Explain", id="explain"), gr.Row():
            with gr.Column(scale=1):
                self.top_label = gr.Label(label="Top classes (click one to explain it)",
                                          elem_id="top5")
                self.rule_md = gr.Markdown("", elem_id="prob-rule")
                self.classes_dd = gr.Dropdown(self.classes0(), multiselect=True,
                                              label="Explained classes (side by side)",
                                              elem_id="classes")
                self.smooth_sl = gr.Slider(1, 31, value=self.smooth_default(self.lm0), step=2,
                                           label="Alpha smoothing (box kernel; 1 = none)",
                                           elem_id="smooth")
                self.pct_sl = gr.Slider(90, 100, value=99.5, step=0.1,
                                        label="Alpha percentile", elem_id="percentile")
            with gr.Column(scale=2):
                self.panel = gr.Image(label="Per class (columns): colour explanation W(x) · "
                                      "contributions (red +, blue −) · laid over the image",
                                      elem_id="explanation", interactive=False, type="numpy")
                self.completeness_md = gr.Markdown("", elem_id="completeness")
                self.download = gr.DownloadButton("Download the figure (PNG)",
                                                  elem_id="download", value=None)

    def _compare_tab(self) -> None:
        with gr.Tab("Compare", id="compare"):
            gr.Markdown("The same image and class under every post-hoc method next to `bcos` "
                        "(Fig. A2 of the paper): per-pixel maps, red + / blue −, each with its "
                        "time. Methods run one after another with the library's default "
                        "settings; **Cancel** stops after the running method.")
            with gr.Row():
                self.cmp_cls = gr.Dropdown(self.classes0(), label="Class",
                                           elem_id="compare-class")
                self.cmp_btn = gr.Button("Compare all methods", elem_id="compare-go")
                self.cmp_cancel = gr.Button("Cancel", elem_id="compare-cancel")
            self.cmp_status = gr.Markdown("", elem_id="compare-status",
                                          elem_classes="status-line")
            self.cmp_gallery = gr.Gallery(label="Methods", columns=5, elem_id="compare-gallery",
                                          height="auto", object_fit="contain")
            self.cmp_table = gr.Dataframe(headers=["method", "seconds"],
                                          elem_id="compare-table", interactive=False)

    def _neurons_tab(self) -> None:
        with gr.Tab("Neurons", id="neurons"):
            with gr.Row():
                self.layer_dd = gr.Dropdown(self.layer_choices(self.lm0), label="Layer",
                                            elem_id="layer")
                self.chan_nb = gr.Number(0, precision=0, minimum=0, label="Channel",
                                         elem_id="channel")
                self.neuron_btn = gr.Button("Explain this neuron", elem_id="neuron-go")
            self.neuron_status = gr.Markdown("", elem_id="neuron-status",
                                             elem_classes="status-line")
            with gr.Row():
                self.neuron_panel = gr.Image(label="The neuron (summed over locations) for "
                                             "this image: W(x) · contributions · overlay",
                                             elem_id="neuron-panel", interactive=False,
                                             type="numpy")
                self.neuron_md = gr.Markdown("", elem_id="neuron-completeness")
            gr.Markdown("### Test images that activate it most")
            with gr.Row():
                self.top_src = gr.Radio([("computed now", "compute"),
                                         ("a saved `bcosnet neurons` run", "saved")],
                                        value="compute", label="Source", elem_id="top-source")
                self.top_limit = gr.Number(2000, precision=0, minimum=1,
                                           label="Rank the first N test images",
                                           elem_id="top-limit")
                self.top_btn = gr.Button("Show top images", elem_id="top-go")
            self.top_note = gr.Markdown("", elem_id="top-note")
            self.top_gallery = gr.Gallery(label="image | its explanation of the neuron",
                                          columns=4, elem_id="top-gallery", height="auto")

    def _pointing_tab(self) -> None:
        dirs = list(self.ws.pointing_game_dirs())
        with gr.Tab("Pointing game", id="pointing"):
            gr.Markdown("The main job's grid pointing game: n×n grids of confidently, correctly "
                        "classified test images; every method's map of one cell's class, with "
                        "its score (the share of positive attribution in that cell) computed "
                        "here and as the game saved it." if dirs else
                        "No pointing game here: start the app with a main job's folder "
                        "(`bcosnet app outputs/main`).")
            with gr.Row():
                self.pg_net = gr.Dropdown(dirs, value=dirs[0] if dirs else None,
                                          label="Network", elem_id="pg-network")
                self.pg_grid = gr.Number(0, precision=0, minimum=0, label="Grid",
                                         elem_id="pg-grid")
                self.pg_cell = gr.Number(4, precision=0, minimum=0,
                                         label="Cell (row-major: 0 top left, 4 the centre of "
                                         "a 3×3 grid)", elem_id="pg-cell")
                self.pg_btn = gr.Button("Show grid", elem_id="pg-go")
                self.pg_cancel = gr.Button("Cancel", elem_id="pg-cancel")
            self.pg_status = gr.Markdown("", elem_id="pg-status", elem_classes="status-line")
            with gr.Row():
                self.pg_image = gr.Image(label="Grid (explained cell framed)",
                                         elem_id="grid-image", interactive=False,
                                         type="numpy", scale=1)
                self.pg_gallery = gr.Gallery(label="Every method's map of the framed cell's "
                                             "class", columns=4, elem_id="pg-gallery",
                                             height="auto", scale=3)
            self.pg_cells = gr.Dataframe(label="Saved scores of this grid (method × cell)",
                                         elem_id="pg-cells", interactive=False)
            gr.Markdown("### Results")
            self.pg_table = gr.Dataframe(headers=["network", "method", "grids", "median",
                                                  "mean", "q1", "q3"], elem_id="pg-results",
                                         interactive=False)
            self.pg_box = gr.Image(label="Box plot", elem_id="pg-boxplot", interactive=False,
                                   type="numpy")

    # ------------------------------------------------------------------ wiring
    def _wire(self) -> None:
        image_out = [self.state, self.preview, self.notes_md, self.top_label, self.rule_md,
                     self.classes_dd, self.panel, self.completeness_md, self.cmp_cls,
                     self.status]
        explain_out = [self.state, self.classes_dd, self.panel, self.completeness_md,
                       self.status]
        model_out = [self.model_md, self.test_cls, self.classes_dd, self.cmp_cls,
                     self.layer_dd, self.smooth_sl, self.state, self.notes_md,
                     self.model_status]
        assert (len(image_out), len(explain_out), len(model_out)) == (
            _IMAGE_OUT, _EXPLAIN_OUT, _MODEL_OUT)
        settings = [self.smooth_sl, self.pct_sl]
        figure = ([self.model_dd, self.state, *settings], [self.download, self.status])
        self.upload.upload(self.on_upload, [self.model_dd, self.upload, *settings], image_out,
                           show_progress="minimal").then(
            lambda: None, None, self.upload).then(self.on_figure, *figure)  # next file
        self.test_btn.click(self.on_test, [self.model_dd, self.test_cls, self.test_idx,
                                           *settings], image_out).then(self.on_figure, *figure)
        self.photo_btn.click(self.on_photo, [self.model_dd, self.photo_dd, *settings],
                             image_out).then(self.on_figure, *figure)
        chosen = [self.model_dd, self.state, self.classes_dd, *settings]
        self.top_label.select(self.on_class_click, chosen, explain_out).then(
            self.on_figure, *figure)
        self.classes_dd.input(self.on_classes, chosen, explain_out).then(
            self.on_figure, *figure)
        for sl in settings:
            sl.release(self.on_render, [self.state, *settings], [self.panel, self.status]
                       ).then(self.on_figure, *figure)
        self.model_dd.input(self.on_model, [self.model_dd], model_out)
        self.load_btn.click(self.on_load, [self.ckpt_tb, self.arch_dd],
                            [self.model_dd, *model_out])
        cmp_event = self.cmp_btn.click(self.on_compare, [self.model_dd, self.state,
                                                         self.cmp_cls],
                                       [self.cmp_gallery, self.cmp_table, self.cmp_status])
        self.cmp_cancel.click(lambda: "cancelled", None, [self.cmp_status], cancels=[cmp_event])
        self.neuron_btn.click(self.on_neuron, [self.model_dd, self.state, self.layer_dd,
                                               self.chan_nb, *settings],
                              [self.neuron_panel, self.neuron_md, self.neuron_status])
        self.top_btn.click(self.on_top, [self.model_dd, self.layer_dd, self.chan_nb,
                                         self.top_src, self.top_limit, *settings],
                           [self.top_gallery, self.top_note, self.neuron_status])
        pg_event = self.pg_btn.click(self.on_grid, [self.pg_net, self.pg_grid, self.pg_cell],
                                     [self.pg_image, self.pg_gallery, self.pg_cells,
                                      self.pg_status])
        self.pg_cancel.click(lambda: "cancelled", None, [self.pg_status], cancels=[pg_event])

    # ------------------------------------------------------------------ image callbacks
    def _shown(self, lm: LoadedModel, chosen: views.Chosen, smooth: Any,
               pct: Any) -> tuple[Any, ...]:
        view = views.explain_image(lm, chosen, None, smooth=int(smooth),
                                   percentile=float(pct))
        why = ("a B-cos network is trained with binary cross-entropy"
               if view.rule == "sigmoid" else "a conventional network")
        rule = f"Probabilities: the {view.rule} of the logits ({why})."
        notes = f"**{chosen.name}**\n\n" + "\n\n".join(f"- {n}" for n in chosen.notes)
        return ({"chosen": chosen, "view": view}, chosen.preview(), notes, view.top, rule,
                gr.update(choices=lm.class_names, value=view.classes), view.panel,
                view.text(), gr.update(choices=lm.class_names, value=view.classes[0]), "")

    @_guard(_IMAGE_OUT, _IMAGE_OUT - 1)
    def on_upload(self, label: str, path: str | None, smooth: Any, pct: Any) -> Any:
        if not path:
            raise AppError("no file received")
        lm = self.ws.get(label)
        with self.ws.lock:
            return self._shown(lm, views.choose_file(lm, path), smooth, pct)

    @_guard(_IMAGE_OUT, _IMAGE_OUT - 1)
    def on_test(self, label: str, cls: str, idx: Any, smooth: Any, pct: Any) -> Any:
        lm = self.ws.get(label)
        if idx is None:
            raise AppError("give an index within the class (0 = its first test image)")
        with self.ws.lock:
            return self._shown(lm, views.choose_test_image(self.ws, lm, cls, int(idx)),
                               smooth, pct)

    @_guard(_IMAGE_OUT, _IMAGE_OUT - 1)
    def on_photo(self, label: str, name: str, smooth: Any, pct: Any) -> Any:
        lm = self.ws.get(label)
        with self.ws.lock:
            return self._shown(lm, views.choose_sample(lm, name), smooth, pct)

    def _reexplain(self, label: str, st: Any, classes: list[str], smooth: Any,
                   pct: Any) -> Any:
        if not st:
            raise AppError("choose an image first")
        lm = self.ws.get(label)
        with self.ws.lock:
            view = views.explain_image(lm, st["chosen"], classes, smooth=int(smooth),
                                       percentile=float(pct))
        return ({**st, "view": view}, gr.update(value=view.classes), view.panel, view.text(),
                "")

    @_guard(_EXPLAIN_OUT, _EXPLAIN_OUT - 1)
    def on_class_click(self, label: str, st: Any, classes: list[str], smooth: Any, pct: Any,
                       evt: gr.SelectData) -> Any:
        name = evt.value if isinstance(evt.value, str) else str(evt.value)
        return self._reexplain(label, st, views.toggle_class(classes or [], name), smooth,
                               pct)

    @_guard(_EXPLAIN_OUT, _EXPLAIN_OUT - 1)
    def on_classes(self, label: str, st: Any, classes: list[str], smooth: Any,
                   pct: Any) -> Any:
        if not classes:
            raise AppError("choose at least one class to explain")
        return self._reexplain(label, st, classes, smooth, pct)

    @_guard(2, 1)
    def on_render(self, st: Any, smooth: Any, pct: Any) -> Any:
        if not st:
            return gr.update(), ""
        return views.render_explanation(st["view"].explanation, st["chosen"].image,
                                        smooth=int(smooth), percentile=float(pct)), ""

    @_guard(2, 1)
    def on_figure(self, label: str, st: Any, smooth: Any, pct: Any) -> Any:
        if not st:
            return gr.update(), gr.update()
        path = views.explanation_figure(self.ws.get(label), st["chosen"], st["view"],
                                        smooth=int(smooth), percentile=float(pct),
                                        folder=self.fig_dir)
        return gr.update(value=str(path)), gr.update()

    # ------------------------------------------------------------------ model callbacks
    def _model_shown(self, lm: LoadedModel) -> tuple[Any, ...]:
        names = lm.class_names
        layers = self.layer_choices(lm)
        return (self.model_text(lm), gr.update(choices=names, value=names[0]),
                gr.update(choices=names, value=[]), gr.update(choices=names, value=None),
                gr.update(choices=layers, value=layers[0][1] if layers else None),
                self.smooth_default(lm), None,
                f"Choose an image for {lm.label}: upload one, a test image of its data set, "
                "or a bundled photo.")

    @_guard(_MODEL_OUT, _MODEL_OUT - 1)
    def on_model(self, label: str) -> Any:
        lm = self.ws.get(label)
        extra = "" if lm.is_bcos else ("ℹ️ a conventional network: no W(x) explanation; its "
                                       "post-hoc maps are in Compare")
        return (*self._model_shown(lm), extra)

    @_guard(_LOAD_OUT, _LOAD_OUT - 1)
    def on_load(self, path: str, arch: str) -> Any:
        path = (path or "").strip() or None
        arch = (arch or "").strip() or None
        with self.ws.lock:
            model = load_model(checkpoint=path, model=arch)
        name = model.model_info.name
        label = f"{name} ({Path(path).name})" if path else f"{name} (random init)"
        note = "" if path else ("randomly initialised: its explanations show the plumbing, "
                                "not a trained model")
        lm = self.ws.add(label, model, path or "random initialisation", note)
        return (gr.update(choices=self.model_choices(), value=label), *self._model_shown(lm),
                f"loaded {label}")

    # ------------------------------------------------------------------ compare, neurons
    @_guard(3, 2)
    def on_compare(self, label: str, st: Any, cls: str, progress: Any = _PROGRESS) -> Any:
        if not st:
            raise AppError("choose an image first")
        lm = self.ws.get(label)
        cls = cls or st["view"].classes[0]

        def prog(i: int, n: int, text: str) -> None:
            progress((i, n), desc=text)

        for panels, total in _locked(self.ws, views.compare_methods(lm, st["chosen"], cls,
                                                                    progress=prog)):
            rows = [[p.method, round(p.seconds, 3)] for p in panels
                    if p.caption.startswith(p.method + " —")]
            done = (f"all {total} methods done" if len(rows) == total else
                    f"{len(rows)} of {total} methods done…")
            yield [(p.image, p.caption) for p in panels], rows, f"{done} — class {cls}"

    @_guard(3, 2)
    def on_neuron(self, label: str, st: Any, layer: str, ch: Any, smooth: Any,
                  pct: Any) -> Any:
        if not st:
            raise AppError("choose an image first")
        lm = self.ws.get(label)
        with self.ws.lock:
            nv = views.neuron_view(lm, st["chosen"], layer, ch, smooth=int(smooth),
                                   percentile=float(pct))
        return nv.panel, nv.text(), ""

    @_guard(3, 2)
    def on_top(self, label: str, layer: str, ch: Any, src: str, limit: Any, smooth: Any,
               pct: Any, progress: Any = _PROGRESS) -> Any:
        lm = self.ws.get(label)
        with self.ws.lock:
            items, note = views.top_images(self.ws, lm, layer, ch, source=src,
                                           limit=int(limit or 2000), smooth=int(smooth),
                                           percentile=float(pct), progress=progress)
        return items, note, ""

    # ------------------------------------------------------------------ pointing game
    @_guard(4, 3)
    def on_grid(self, net: str, grid: Any, cell: Any, progress: Any = _PROGRESS) -> Any:
        if not net:
            raise AppError("no pointing game here: start the app with a main job's folder")

        def prog(i: int, n: int, text: str) -> None:
            progress((i, n), desc=text)

        g = int(grid or 0)
        for img, panels, table, total in _locked(self.ws, views.grid_view(
                self.ws, net, g, None if cell is None else int(cell), progress=prog)):
            headers = (["method"] + [f"cell {i}" for i in range(len(table[0]) - 1)]
                       if table else [])
            done = (f"grid {g}: all {total} methods shown" if len(panels) == total else
                    f"grid {g}: {len(panels)} of {total} methods…")
            yield (img, panels, gr.update(value=table, headers=headers) if table
                   else gr.update(), done)

    @_guard(3, 2)
    def on_pg_load(self) -> Any:
        if not self.ws.pointing_game_dirs():
            return gr.update(), gr.update(), ""
        rows, fig = views.pointing_game_summary(self.ws)
        return rows, _figure_rgb(fig), ""
